"""The JSON endpoints. Each one reads the request, calls the engine, returns the envelope."""
from __future__ import annotations

import os
import re

from flask import Blueprint, flash, redirect, request, send_from_directory, url_for

from api import service
from api.auth import is_authorized, login_required, Unauthorized
from api.limits import limit
from api.pages import job_redirect, models_page, predict_page, wants_html
from datastructure.errors import MissingFile, NotFound
from datastructure.response import envelope
from utils import archive

blueprint = Blueprint("rest", __name__)

UPLOAD_NAME = re.compile(r"^[0-9a-f]{32}\.jpg$")


def uploaded_file(field: str = "file"):
    """Return the uploaded FileStorage in ``field``; MissingFile when there is none."""
    upload = request.files.get(field)
    if upload is None or not upload.filename and not upload.content_length:
        raise MissingFile(f"send the file as multipart/form-data in the field {field!r}")
    return upload


@blueprint.post("/")
@blueprint.post("/predict")
@limit("predict")
def predict():
    if service().config["security"]["predict_requires_token"] and not is_authorized():
        raise Unauthorized("this service asks for 'Authorization: Bearer <API token>' to predict")
    data = uploaded_file().read()
    if not data:
        raise MissingFile("the uploaded file is empty")
    answer = service().predict(data)
    if answer["response"]["description"]:
        answer["response"]["image_url"] = url_for("rest.upload", name=answer["response"]["description"])
    return predict_page(answer) if wants_html() else answer


def start_training(tune: bool):
    """Validate the uploaded zip now (so a bad one is refused at once), then train in the background."""
    engine = service()
    upload = uploaded_file()
    path, handle = engine.jobs.new_upload(engine.paths.tmp)

    def remove():
        path.unlink(missing_ok=True)
        handle.close()

    try:
        upload.save(handle)
        handle.flush()
        archive.photo_count(path, archive.limits_from(engine.config["limits"]))
        job = engine.jobs.start(
            "tune" if tune else "train",
            lambda progress: engine.train(path, tune=tune, progress=progress, source_name=upload.filename),
            cleanup=remove)
    except BaseException:
        remove()
        raise
    if wants_html():
        return job_redirect(job)
    return envelope(job, description=f"{job['kind']} job {job['id']} started",
                    job_url=url_for("rest.job", job_id=job["id"])), 202


@blueprint.post("/train")
@login_required
@limit("train")
def train():
    return start_training(tune=False)


@blueprint.post("/tune")
@login_required
@limit("train")
def tune():
    return start_training(tune=True)


@blueprint.get("/jobs")
@login_required
def jobs():
    return envelope(service().jobs.listing(), description="jobs, newest first")


@blueprint.get("/jobs/<job_id>")
@login_required
def job(job_id: str):
    found = service().jobs.get(job_id)
    return envelope(found, description=f"job {found['state']}")


@blueprint.get("/models")
def models():
    if wants_html():
        return models_page()
    if not is_authorized():
        raise Unauthorized("send 'Authorization: Bearer <API token>', or log in at /login")
    engine = service()
    return envelope(engine.store.listing(), description="models, newest first",
                    active=engine.store.active_id())


@blueprint.get("/models/<model_id>")
@login_required
def model(model_id: str):
    return envelope(service().store.metadata(model_id), description=f"model {model_id}")


@blueprint.post("/models/<model_id>/activate")
@login_required
def activate(model_id: str):
    engine = service()
    engine.store.activate(model_id)
    engine.active.current()
    return done_with_models(f"model {model_id} is active", {"active": model_id})


@blueprint.delete("/models/<model_id>")
@blueprint.post("/models/<model_id>/delete")  # HTML forms cannot send DELETE
@login_required
def delete(model_id: str):
    service().store.delete(model_id)
    return done_with_models(f"model {model_id} deleted", {"deleted": model_id})


def done_with_models(description: str, data: dict):
    """The envelope for API clients; for a browser's plain form, a message on the models page."""
    if wants_html():
        flash(description)
        return redirect(url_for("rest.models"), 303)
    return envelope(data, description=description)


@blueprint.get("/uploads/<name>")
def upload(name: str):
    folder = service().paths.uploads
    if not UPLOAD_NAME.match(name) or not (folder / name).is_file():
        raise NotFound("no such image")
    return send_from_directory(folder, name, mimetype="image/jpeg", max_age=3600)


@blueprint.get("/health")
def health():
    engine = service()
    try:
        model_id = engine.active.current().id
    except Exception:  # health must answer whatever state the model is in
        model_id = None
    return envelope({"up": True, "model_loaded": model_id is not None, "model": model_id, "pid": os.getpid()},
                    description="up")


@blueprint.get("/openapi.json")
def openapi():
    from api.openapi import specification

    return specification()
