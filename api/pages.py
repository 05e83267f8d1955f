"""The HTML pages. They post to the same endpoints as REST clients (see static/app.js)."""
from flask import Blueprint, render_template, request

from api import service

blueprint = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/static")


def wants_html() -> bool:
    """True when the client prefers a page to JSON (a browser navigating)."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes[best] > request.accept_mimetypes["application/json"]


@blueprint.get("/")
def predict_page():
    engine = service()
    return render_template("predict.html", model=engine.store.active_id())


@blueprint.get("/train")
def train_page():
    return render_template("train.html", kind="train")


@blueprint.get("/tune")
def tune_page():
    return render_template("train.html", kind="tune")


def models_page():
    engine = service()
    active = engine.store.active_id()
    people = engine.store.metadata(active).get("people", {}) if active else {}
    return render_template("models.html", models=engine.store.listing(), people=people)
