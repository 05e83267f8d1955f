"""The JSON endpoints. Each one reads the request, calls the service, returns the envelope.

Browsers get pages from the same views: see ``api.negotiation`` and ``api.pages.PAGES``.
"""
from __future__ import annotations

import contextlib
import errno
import os

from flask import Blueprint, request, send_file, url_for

from api.auth import is_authorized, login_required, predict_access_required
from api.context import current_service
from api.faces import face_source
from api.limits import limit
from api.openapi import specification
from datastructure.errors import InsufficientStorage, MissingFile, NotFound
from datastructure.response import envelope
from utils import archive
from utils.cameras import camera_states
from utils.importing import checked_gallery
from utils.recognition import public_answer

blueprint = Blueprint("rest", __name__)


def uploaded_file(field: str = "file"):
    """Return the uploaded FileStorage in ``field``; MissingFile when there is none."""
    upload = request.files.get(field)
    if upload is None or not upload.filename and not upload.content_length:
        raise MissingFile(f"send the file as multipart/form-data in the field {field!r}")
    return upload


@contextlib.contextmanager
def stored_upload(suffix: str = ".zip"):
    """Store the uploaded file in the incoming folder, in use while a job needs it (an flocked
    file, see ``utils.jobs``), and yield (path, upload, remove). Any error removes it (a full
    disk: 507); otherwise the caller calls ``remove`` or hands it to the job as its clean-up."""
    service = current_service()
    upload = uploaded_file()
    path, handle = service.jobs.new_upload(service.paths.incoming, suffix=suffix)

    def remove():
        path.unlink(missing_ok=True)
        handle.close()

    try:
        upload.save(handle)
        handle.flush()
        yield path, upload, remove
    except OSError as exc:
        remove()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the disk is full: the upload could not be stored") from None
        raise
    except BaseException:
        remove()
        raise


@blueprint.post("/")
@blueprint.post("/predict")
@limit("predict")
@predict_access_required("to predict")
def predict():
    """Recognise every face of the uploaded photo.

    ``description`` carries the annotated copy's file name, as the original PyRecognizer's
    envelope did; ``image_url`` is where to fetch it. Only the token or the admin login sees
    each face's candidate, runner-up and distances (``public_answer``).
    """
    upload = uploaded_file()
    data = upload.read()
    if not data:
        raise MissingFile("the uploaded file is empty")
    answer = current_service().predict(data, source=face_source("predict", upload.filename))
    if not is_authorized():
        answer = public_answer(answer)
    if answer["response"]["annotated"]["saved"]:
        answer["response"]["image_url"] = url_for("rest.upload", name=answer["response"]["description"])
    return answer


def start_training(tune: bool):
    """Validate the uploaded zip now (so a bad one is refused at once), then train in the background."""
    service = current_service()
    service.require_free_disk("to store the upload and train")
    with stored_upload() as (path, upload, remove):
        archive.photo_count(path, archive.limits_from(service.config.limits))
        job = service.jobs.start(
            "tune" if tune else "train",
            lambda progress: service.train(path, tune=tune, progress=progress, source_name=upload.filename),
            cleanup=remove)
    return envelope(job, description=f"{job['kind']} job {job['id']} started",
                    job_url=url_for("rest.job", job_id=job["id"])), 202


@blueprint.post("/train")
@login_required
@limit("train")
def train():
    """Start training a model on the uploaded zip (202, and the job to follow)."""
    return start_training(tune=False)


@blueprint.post("/tune")
@login_required
@limit("train")
def tune():
    """The same, with a cross-validated parameter search."""
    return start_training(tune=True)


@blueprint.post("/models/import")
@login_required
@limit("train")
def import_models():
    """Import a gallery of encodings (.npz or JSON, utils/importing.py): checked now (422 with
    the reasons), fitted in the background like a training (202, and the job to follow)."""
    service = current_service()
    upload = uploaded_file()
    service.require_free_disk("to import a gallery")
    gallery = checked_gallery(upload.read(), archive.limits_from(service.config.limits))
    name = upload.filename or "import"
    job = service.jobs.start("import", lambda progress: service.import_gallery(gallery, source_name=name, progress=progress))
    return envelope(job, description=f"import job {job['id']} started", job_url=url_for("rest.job", job_id=job["id"])), 202


@blueprint.get("/jobs")
@login_required
def jobs():
    """The jobs this service knows, newest first."""
    return envelope(current_service().jobs.listing(), description="jobs, newest first")


@blueprint.get("/jobs/<job_id>")
@login_required
def job(job_id: str):
    """One job: its state, progress and result."""
    found = current_service().jobs.get(job_id)
    return envelope(found, description=f"job {found['state']}")


@blueprint.delete("/jobs/<job_id>")
@login_required
def cancel_job(job_id: str):
    """Cancel a training, tuning or import job: it stops at its next progress report."""
    found = current_service().jobs.cancel(job_id)
    return envelope(found, description=f"job {'cancelling' if found.get('cancel_requested') else found['state']}")


@blueprint.get("/models")
@login_required
def models():
    """The saved models, newest first, and which one is active."""
    service = current_service()
    return envelope(service.store.listing(), description="models, newest first", active=service.store.active_id())


@blueprint.get("/models/<model_id>")
@login_required
def model(model_id: str):
    """One model's metadata: people, photos, parameters, metrics."""
    return envelope(current_service().store.metadata(model_id), description=f"model {model_id}")


@blueprint.post("/models/<model_id>/activate")
@login_required
def activate(model_id: str):
    """Make a saved model the one /predict uses."""
    service = current_service()
    service.store.activate(model_id)
    service.active.current()
    return envelope({"active": model_id}, description=f"model {model_id} is active")


@blueprint.delete("/models/<model_id>")
@blueprint.post("/models/<model_id>/delete")  # HTML forms cannot send DELETE
@login_required
def delete(model_id: str):
    """Delete a saved model (not the active one)."""
    current_service().store.delete(model_id)
    return envelope({"deleted": model_id}, description=f"model {model_id} deleted")


@blueprint.get("/uploads/<name>")
def upload(name: str):
    """An annotated copy that /predict wrote (its name is the envelope's ``description``)."""
    path = current_service().annotated.path_of(name)
    if path is None:
        raise NotFound("no such image")
    answer = send_file(path, mimetype="image/jpeg")
    answer.headers["Cache-Control"] = "private, no-store"  # a photo of people: no cache keeps it
    return answer


@blueprint.get("/health")
def health():
    """Whether the service is up, which model it serves, and warnings (``LOW_DISK_SPACE``,
    ``CAMERA_ERROR``); the worker's pid and each camera's state only to an authorised caller."""
    service = current_service()
    try:
        model = service.active.current()
        model_id, size_warnings = model.id, model.classifier.budget_warnings()
    except Exception:  # health must answer whatever state the model is in
        model_id, size_warnings = None, []
    # the active gallery's size puts its stranger rate or recall past the budget (issue 27)
    data = {"up": True, "model_loaded": model_id is not None, "model": model_id,
            "warnings": [f"GALLERY_{warning}" for warning in size_warnings]}
    try:
        if service.low_on_disk():
            data["warnings"].append("LOW_DISK_SPACE")
    except OSError:
        data["warnings"].append("DATA_FOLDER_UNREADABLE")
    cameras = camera_states(service.paths, service.cameras.cameras())
    if any(camera["status"]["state"].startswith("error") for camera in cameras):
        data["warnings"].append("CAMERA_ERROR")
    if is_authorized():
        data["pid"] = os.getpid()
        # each camera's state, fps and dropped frames (names and states are the admin's business)
        data["cameras"] = {camera["name"]: camera["status"] for camera in cameras}
    return envelope(data, description="up" if not data["warnings"] else "up, with warnings: " + ", ".join(data["warnings"]))


@blueprint.get("/openapi.json")
def openapi():
    """The OpenAPI 3 description of this API."""
    return specification()
