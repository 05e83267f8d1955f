"""The DeepStack face API (kept by CodeProject.AI Server), over this service's one engine.

What its clients send and read (from their source):
- deepstack-python 0.9 (Home Assistant's deepstack_face integration): every call is a
  multipart POST with the form fields ``api_key`` (always, "" when none is configured) and
  ``min_confidence`` (0.45 by default), the photo in the file field ``image``; ``register``
  adds ``userid`` and reads ``success`` then ``message`` (or ``error``); ``recognize`` and
  ``detect`` read ``predictions`` (``userid``, ``confidence``, ``x_min``...); ``/face/list``
  reads ``faces``. Any status but 200 is an error to it; 404 reads "bad url".
- Double Take (api/src/util/detectors/deepstack.js): ``/face/recognize`` with ``image`` (and
  ``api_key`` when configured), treats ``success: false`` as no result, reads ``userid``,
  ``confidence`` x 100 and the box; ``/face/register`` with ``image`` + ``userid``;
  ``/face/delete`` with ``userid``. Its CodeProject.AI detector ("aiserver") sends the same
  without ``api_key``.
- DeepStack's server (server/middlewares.go, intelligencelayer/shared/face.py) answers errors
  as ``{"success": false, "error": "...", "duration": 0}`` with 400 (no ``image``, no
  ``userid``, a bad ``min_confidence``, an unreadable image, no face to register), 401
  ("Incorrect api key") and 500; a photo without a face recognises as ``predictions: []``.
- CodeProject.AI Server (modules/FaceProcessing/intelligencelayer/face.py) keeps these shapes,
  adds ``count``, ``message`` and timings, and answers a photo without a face with ``success:
  false`` ("No face found in image"); here a photo without a face answers DeepStack's way.

Here: ``api_key`` is this service's API token. Recognition, detection and match follow
/predict's access policy (``security.predict_requires_token``); register, list and delete
always need the token (the form field, or the usual bearer token or admin session). A key
that is sent and wrong is refused everywhere, as DeepStack does. ``confidence`` of a
recognised face is the calibrated confidence of /predict; ``min_confidence`` only makes a
name with less confidence ``unknown``. Detection confidence is 1.0: dlib's detector says
yes or no. ``match`` answers /verify's confidence as ``similarity``. People are the people
engine's (``utils/people.py``): register enrols, delete forgets (DeepStack keeps no versions,
a deleted face is gone). No recognition happens in this module.
"""
from __future__ import annotations

import re

from flask import Blueprint, request

from api.auth import dialect_key_checked
from api.context import current_service
from api.errors import register_dialect_errors
from api.faces import face_source
from api.limits import limit
from api.verify import faces_of
from datastructure.classifier import UNKNOWN
from datastructure.errors import DatasetNotValid, MissingFile, NotFound, PyRecognizerError
from utils.people import Upload
from utils.verification import central_face, face_distance, same_probability

blueprint = Blueprint("deepstack", __name__, url_prefix="/v1/vision")


class DeepStackError(PyRecognizerError):
    """An error DeepStack itself answers (its own words and status)."""

    code, status = "BAD_REQUEST", 400


class IncorrectApiKey(PyRecognizerError):
    """A wrong ``api_key``, in DeepStack's words."""

    code, status = "UNAUTHORIZED", 401


def answer(body: dict, status: int = 200):
    """A DeepStack answer: ``success`` first, as its server writes it."""
    return {"success": status < 400, **body}, status


def rendered_error(exc, status: int, headers: list):
    """DeepStack's error answer: ``success`` false and its words (see api.errors.register_dialect_errors)."""
    return (*answer({"error": exc.description, "duration": 0}, status), headers)


register_dialect_errors(blueprint, rendered_error)


def api_key_checked(*, required: bool):
    """Decorate a view with DeepStack's ``api_key`` form field = the API token (see
    api.auth.dialect_key_checked)."""
    return dialect_key_checked(lambda: request.form.get("api_key", ""), required=required, refused=lambda why: IncorrectApiKey(
        "Incorrect api key" if why == "wrong" else "Incorrect api key: send the API token in the form field api_key"))


def image_bytes(field: str = "image") -> bytes:
    """The photo in the form field ``field``; DeepStack's 400 when there is none."""
    upload = request.files.get(field)
    data = upload.read() if upload is not None else b""
    if not data:
        raise MissingFile("No valid image file found")
    return data


NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # JSON's number syntax


def min_confidence() -> float:
    """The ``min_confidence`` form field (0 when absent), checked as DeepStack checks it."""
    value = request.form.get("min_confidence")
    if value is None:
        return 0.0
    # a number as JSON writes one: float() would also take "nan", "inf", "1_0" and non-ASCII digits
    if not NUMBER.fullmatch(value.strip()):
        raise DeepStackError("Invalid value for min_confidence")
    number = float(value)
    if number < 0.0:
        raise DeepStackError("min_confidence cannot be negative")
    if number > 1.0:
        raise DeepStackError("min_confidence cannot be greater than 1")
    return number


def corners(box) -> dict:
    """A face box (top, right, bottom, left) as DeepStack's corners."""
    top, right, bottom, left = (max(int(side), 0) for side in box)
    return {"x_min": left, "y_min": top, "x_max": right, "y_max": bottom}


@blueprint.post("/face/recognize")
@limit("predict")
@api_key_checked(required=False)
def recognize():
    """Every face with its ``userid`` (or "unknown") and confidence."""
    floor = min_confidence()
    predictions = []
    for face, decision in current_service().faces_and_decisions(image_bytes(), source=face_source("deepstack")):
        known = decision is not None and decision.name != UNKNOWN and decision.confidence >= floor
        predictions.append({"confidence": decision.confidence if known else 0,
                            "userid": decision.name if known else UNKNOWN, **corners(face.box)})
    message = "A face was recognised" if any(p["userid"] != UNKNOWN for p in predictions) else "No known faces"
    return answer({"predictions": predictions, "count": len(predictions), "message": message, "duration": 0})


@blueprint.post("/face")
@limit("predict")
@api_key_checked(required=False)
def detect():
    """Every face's box; detection confidence 1.0 (dlib's detector answers yes or no)."""
    min_confidence()
    faces, _ = faces_of(image_bytes())
    predictions = [{"confidence": 1.0, **corners(face.box)} for face in faces]
    return answer({"predictions": predictions, "count": len(predictions), "duration": 0})


@blueprint.post("/face/match")
@limit("predict")
@api_key_checked(required=False)
def match():
    """/verify's confidence that the main faces of ``image1`` and ``image2`` are one person."""
    chosen = []
    for field in ("image1", "image2"):
        faces, image = faces_of(image_bytes(field))
        if not faces:
            raise DeepStackError("No face found in one or both images")
        chosen.append(central_face(faces, image))
    similarity = same_probability(face_distance(*chosen))
    return answer({"similarity": round(similarity, 4), "duration": 0})


# ---------------------------------------------------------------------------------------
# People: the people engine (utils/people.py) enrols, lists and removes.

def image_fields() -> list:
    """Every uploaded photo of a register request (``image``, ``image1``, ``image2``...)."""
    return [(upload.filename or field, upload.read()) for field, upload in request.files.items(multi=True)]


@blueprint.post("/face/register")
@api_key_checked(required=True)
def register():
    """Add the uploaded photos to ``userid``: "face added" for someone new, else "face updated"
    (photos ``userid`` already has too: a retry succeeds; another person's are refused)."""
    userid = request.form.get("userid", "").strip()
    if not userid:
        raise DeepStackError("userid not specified")
    photos = [(name, data) for name, data in image_fields() if data]
    if not photos:
        raise MissingFile("No valid image file found")
    try:
        result = current_service().people.enrol(userid, [Upload(name, data) for name, data in photos], again_ok=True)
    except DatasetNotValid as exc:
        reasons = "; ".join(f"{item['file']}: {item['reason']}" for item in (exc.data or {}).get("skipped", []))
        raise DeepStackError(f"No face detected ({reasons})" if reasons else "No face detected") from None
    return answer({"message": "face added" if result["created"] else "face updated",
                   "userid": result["name"], "added": len(result["added"]), "skipped": result["skipped"],
                   "duration": 0})


@blueprint.post("/face/list")
@api_key_checked(required=True)
def face_list():
    """The names the active model knows."""
    people = current_service().people.listing()["people"]
    return answer({"faces": [person["name"] for person in people], "duration": 0})


@blueprint.post("/face/delete")
@api_key_checked(required=True)
def delete():
    """Erase ``userid`` everywhere (``People.forget``): DeepStack keeps no versions, a face it
    deletes is gone, so an older model version must not bring it back. Success too when nobody
    has that name, as DeepStack answers; nothing is erased then (``People.forget`` refuses a
    name no model holds: a common word must not wipe the log)."""
    userid = request.form.get("userid", "").strip()
    if not userid:
        raise DeepStackError("userid not specified")
    try:
        current_service().people.forget(userid)
    except NotFound:
        pass
    return answer({"duration": 0})
