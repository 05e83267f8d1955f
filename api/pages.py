"""The HTML pages: server-rendered Jinja templates, one stylesheet and a little plain JavaScript.

The pages post to the same REST endpoints as API clients do (see static/app.js): the
JavaScript asks for JSON and turns every answer, error or not, into words in the page. They
need no inline script, no inline style and nothing from another origin, so they work offline
and under the strict Content-Security-Policy the app sends (see api/app.py).

``PAGES`` names, for the REST endpoints, what a browser posting a form without JavaScript
sees instead of the envelope (see ``api.negotiation``); ``api.errors`` renders its errors.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime

from flask import Blueprint, current_app, flash, has_request_context, redirect, request, session, url_for

from api.auth import is_authorized
from api.context import current_service
from api.negotiation import render_page
from datastructure.errors import PyRecognizerError

log = logging.getLogger(__name__)

blueprint = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/static")

# What a person reads for each error code: a title and what to do. The JavaScript reads the
# same table from the page (base.html), so a message is written once.
MESSAGES = {
    "NO_FACE_FOUND": ("No face found in this photo",
                      "Try a photo where the face is larger, sharp, well lit and turned towards the camera."),
    "IMAGE_NOT_RECOGNIZED": ("Nobody the model knows",
                             "Faces were found, but none is close enough to the people the model was "
                             "trained on. Train a model that includes them to recognise them."),
    "CLASSIFIER_NOT_LOADED": ("There is no model yet",
                              "Train a model from a zip of photos first, then come back here."),
    "FILE_NOT_VALID": ("This file is not a photo the service can read",
                       "Choose a JPEG, PNG, WebP, GIF, BMP or TIFF photo."),
    "MISSING_FILE": ("No file was sent", "Choose a file, or drop it on the dashed area, then try again."),
    "IMAGE_TOO_LARGE": ("This photo is too large", "It has too many pixels: scale it down and try again."),
    "REQUEST_TOO_LARGE": ("This file is too large", "It is over the service's upload limit."),
    "ARCHIVE_NOT_VALID": ("This file is not a zip the service can use",
                          "Upload a .zip (not .rar or .7z) with no password, no archive inside it and no links."),
    "ARCHIVE_TOO_LARGE": ("This zip is too large", "Split the photos into a smaller zip, or remove very large photos."),
    "DATASET_NOT_VALID": ("The photos in this zip cannot make a model",
                          "Put each person's photos in a folder named after them, with at least one clear face "
                          "per photo."),
    "TRAINING_IN_PROGRESS": ("A training is already running",
                             "Only one training runs at a time: its progress is shown below."),
    "MODELS_BUSY": ("The models are being changed", "Another change or a training is running: try again in a moment."),
    "MODEL_ACTIVE": ("This model is active", "Activate another model first, then delete this one."),
    "NAME_NOT_VALID": ("This name cannot be used",
                       "Use a plain name of at most 100 characters, not 'unknown', not the name of someone else."),
    "TOO_MANY_PHOTOS": ("Too many photos at once", "Add up to the limit at a time, or train a model from a zip."),
    "ERASURE_INCOMPLETE": ("Not everything could be erased",
                           "The person is gone from every model, but some files could not be changed: forget them again."),
    "JOB_INTERRUPTED": ("The training was interrupted",
                        "The service stopped while it ran: upload the zip again."),
    "MODEL_NOT_VALID": ("This model cannot be used", ""),
    "VIDEO_NOT_VALID": ("This file is not a video the service can read",
                        "It may be damaged or cut short. Choose an MP4, MOV, MKV, WebM or AVI video."),
    "VIDEO_FORMAT_NOT_SUPPORTED": ("This kind of file is not taken",
                                   "Choose an MP4, MOV, MKV, WebM or AVI video."),
    "NO_VIDEO_STREAM": ("There is no picture in this file", "It holds sound only: choose a video."),
    "VIDEO_TOO_LARGE": ("This video is too large",
                        "Its frames, length or number of frames are over the service's limits: cut or scale it down."),
    "VIDEO_IN_PROGRESS": ("A long video is already being analysed",
                          "Only one long video is analysed at a time: try again when it has finished."),
    "CAMERA_NOT_VALID": ("This camera cannot be watched", "Check its name and stream URL (rtsp://, rtsps:// or an "
                         "http(s):// MJPEG stream) and its settings."),
    "CAMERA_EXISTS": ("A camera of that name exists", "Choose another name, or remove the other camera first."),
    "CAMERA_IN_CONFIG": ("This camera is defined in the configuration file", "Change it there, then restart the service."),
    "EVENTS_BUSY": ("Too many live event streams", "Close another Cameras page, or wait a moment."),
    "CSRF_FAILED": ("This page has expired", "Reload the page and try again."),
    "UNAUTHORIZED": ("You need to log in", "Log in with the admin password, then try again."),
    "FORBIDDEN": ("This is not allowed", "The service refuses this action, whoever asks."),
    "NOT_FOUND": ("Not found", "The page or item does not exist (any more)."),
    "METHOD_NOT_ALLOWED": ("This action is not available here", "Go back and use the buttons of the page."),
    "UNSUPPORTED_MEDIA_TYPE": ("The service cannot read what was sent", "Go back and try again."),
    "BAD_REQUEST": ("The request was not understood", "Go back and try again."),
    "TOO_MANY_REQUESTS": ("Too many requests", "Wait a moment, then try again."),
    "FACE_LIBRARY_MISSING": ("The face library is not installed", "Tell the administrator of the service."),
    "INTERNAL_ERROR": ("Something went wrong in the service",
                       "Try again; if it happens again, tell the administrator (the details are in the service log)."),
    "NETWORK": ("The service cannot be reached", "Check the connection, then try again."),
}


# Codes whose message says it all: the service's own description (written for programs,
# e.g. "train one first (POST /train)") is not shown under them.
QUIET_CODES = ("NO_FACE_FOUND", "IMAGE_NOT_RECOGNIZED", "CLASSIFIER_NOT_LOADED", "MISSING_FILE", "CSRF_FAILED",
               "UNAUTHORIZED", "TRAINING_IN_PROGRESS")


def can_manage() -> bool:
    """Whether the current user may train, tune, activate and delete models (api.auth decides)."""
    return is_authorized()


def login_state() -> dict:
    """What the header shows: a log-in link, or who is logged in and a log-out button."""
    views = current_app.view_functions
    logged_in = session.get("user")
    here = request.full_path.rstrip("?")
    login_url = None
    if "auth.login" in views and not logged_in:
        login_url = here if request.endpoint == "auth.login" else url_for("auth.login", next=here)
    return {"user": logged_in, "login_url": login_url,
            "logout_url": url_for("auth.logout") if "auth.logout" in views and logged_in else None}


def when(value) -> str:
    """Return an ISO date or a Unix time as '25 Nov 2025, 16:50'."""
    try:
        moment = datetime.fromtimestamp(value) if isinstance(value, (int, float)) else datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value or "–")
    return f"{moment.day} {moment:%b %Y, %H:%M}"


def duration(seconds) -> str:
    """Return seconds as '42 s' or '3 min 05 s'."""
    if seconds is None:
        return "–"
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@blueprint.app_context_processor
def page_context() -> dict:
    """What base.html needs on every page, whichever blueprint renders it (e.g. the login page)."""
    if not has_request_context():
        return {}
    config = current_service().config
    return {"error_messages": MESSAGES, "quiet_codes": QUIET_CODES, "may_manage": can_manage(), "nice_date": when, "nice_duration": duration,
            "dashboard_enabled": config.dashboard.enabled, "account": login_state(),
            "upload_limit": config.limits.max_content_length}


def initials(name: str) -> str:
    """Return up to two initials of a name: 'Ben Afflek' -> 'BA', 'alex_lacamoire' -> 'AL'."""
    words = [word for word in name.replace("_", " ").replace("-", " ").split() if word]
    return "".join(word[0] for word in words[:2]).upper() or "?"


def gallery(people: dict) -> list[dict]:
    """Return the people of a model as the gallery shows them: name, photos, initials, a colour."""
    return [{"name": name, "count": count, "initials": initials(name),
             "hue": sum(name.encode()) % 12} for name, count in sorted(people.items(), key=lambda item: item[0].lower())]


def model_summary(model_id: str | None) -> dict | None:
    """Return what the pages show of a model: people, photos, accuracy (None for no model).

    Who the model knows (``people``, ``gallery``) is for those who may manage models; anyone
    else gets how many (``count``) and no name.
    """
    if not model_id:
        return None
    try:
        meta = current_service().store.metadata(model_id)
    except PyRecognizerError as exc:
        return {"id": model_id, "people": {}, "count": 0, "photos": None, "accuracy": None,
                "problem": exc.description, "gallery": []}
    people = meta.get("people", {}) if can_manage() else {}
    return {"id": model_id, "people": people, "count": len(meta.get("people", {})), "photos": meta.get("photos"),
            "accuracy": (meta.get("metrics") or {}).get("accuracy"), "created": meta.get("created"),
            "kind": meta.get("kind"), "source": meta.get("source"), "seconds": meta.get("seconds"),
            "search": meta.get("search"), "problem": None, "gallery": gallery(people)}


def prediction_page(answer: dict | None = None, status: int = 200):
    """The predict page; with ``answer`` (a prediction envelope) it shows that result too."""
    return render_page("predict.html", status, model=model_summary(current_service().store.active_id()),
                       answer=(answer or {}).get("response"))


@blueprint.get("/")
def predict_page():
    """GET /: the predict page, the home page of the service."""
    return prediction_page()


def training_page(kind: str):
    """The train or tune page; ``?job=<id>`` shows that job (running, done or failed)."""
    service = current_service()
    job = None
    if not can_manage():
        pass  # the page asks to log in; jobs are for those who may train
    elif request.args.get("job"):
        job = service.jobs.get(request.args["job"])  # NotFound: the error page
        kind = job.get("kind", kind)
    else:
        running = [found for found in service.jobs.listing() if found["state"] in ("queued", "running")]
        job = running[0] if running else None
    finished = (job or {}).get("finished")
    candidates = 1
    for values in service.config.tune.grid().values():
        candidates *= max(1, len(values))
    return render_page("train.html", kind=kind, tuning=kind == "tune", job=job, state=(job or {}).get("state"),
                       just_finished=bool(finished and time.time() - finished < 60), now=time.time(),
                       tune_folds=service.config.tune.cv_folds, tune_candidates=candidates,
                       model=model_summary(service.store.active_id()))


@blueprint.get("/train")
def train_page():
    """GET /train: upload a zip of photos to train a model; follows a running training."""
    return training_page("train")


@blueprint.get("/tune")
def tune_page():
    """GET /tune: the same with a parameter search."""
    return training_page("tune")


def models_page(answer: dict):
    """GET /models for a browser: the models of ``answer`` (the listing envelope) and who the
    active one knows."""
    models = answer["response"]["data"]
    for summary in models:
        details = model_summary(summary["id"]) or {}
        summary["source"] = details.get("source")
        summary["search"] = details.get("search")
    return render_page("models.html", models=models, model=model_summary(answer["response"]["active"]))


def job_redirect(answer: dict):
    """Where a browser goes after starting a job (``answer`` is its envelope) with a plain form:
    the page following it."""
    job = answer["response"]["data"]
    return redirect(url_for("pages.tune_page" if job.get("kind") == "tune" else "pages.train_page", job=job["id"]), 303)


def models_changed(answer: dict):
    """After activating or deleting a model with a plain form: the models page, with a message."""
    flash(answer["response"]["description"])
    return redirect(url_for("rest.models"), 303)


def people_page(answer: dict):
    """GET /people for a browser: the people are shown on the models page."""
    return redirect(url_for("rest.models") + "#people", 303)


def person_page(answer: dict):
    """GET /people/<name> for a browser: that person's photos, each removable."""
    return render_page("person.html", person=answer["response"]["data"])


@blueprint.get("/inbox")
def inbox_page():
    """GET /inbox: the clusters of unknown faces, to name (assign) or ignore, and the latest
    actions, to undo (utils/inbox.py); the admin login only."""
    service = current_service()
    if not can_manage():
        return render_page("inbox.html", clusters=[], total=0, people=[], actions=[])
    found = service.inbox.clusters(limit=int(request.args.get("limit", 30)))
    people = [person["name"] for person in service.people.listing()["people"]]
    return render_page("inbox.html", clusters=found["clusters"], total=found["total"], people=people,
                       actions=[action for action in service.inbox.actions(10) if action["state"] == "done"])


def inbox_changed(answer: dict):
    """After an inbox action with a plain form: the inbox page, with a message."""
    flash(answer["response"]["description"])
    return redirect(url_for("pages.inbox_page"), 303)


def negatives_changed(answer: dict):
    """After removing a person's negative with a plain form: their page, with a message."""
    flash(answer["response"]["description"])
    return redirect(url_for("people.person", name=answer["response"]["data"]["name"]), 303)


def people_changed(answer: dict):
    """After a change to the people with a plain form: the models page, with a message."""
    flash(answer["response"]["description"])
    return redirect(url_for("rest.models") + "#people", 303)


# What a browser gets instead of the envelope of these REST endpoints (see api.negotiation).
PAGES = {
    "rest.predict": prediction_page,
    "rest.train": job_redirect,
    "rest.tune": job_redirect,
    "rest.models": models_page,
    "rest.activate": models_changed,
    "rest.delete": models_changed,
    "people.listing": people_page,
    "people.person": person_page,
    "people.enrol": people_changed,
    "people.remove_photo": people_changed,
    "people.remove": people_changed,
    "people.forget": people_changed,
    "people.rename": people_changed,
    "faces.assign_cluster": inbox_changed,
    "faces.assign_faces": inbox_changed,
    "faces.ignore": inbox_changed,
    "faces.negate": inbox_changed,
    "faces.undo": inbox_changed,
    "faces.remove_negative": negatives_changed,
}
