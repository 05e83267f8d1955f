"""The CompreFace REST API (``/api/v1/...``), over this service's one engine.

What its clients send and read (from their source):
- compreface-sdk 0.6.0 (the official Python SDK): header ``x-api-key`` on every call; photos
  as multipart ``file`` (``source_image`` and ``target_image`` to verify); options in the
  query string, appended after ``?`` as ``&limit=..&det_prob_threshold=..&prediction_count=..
  &face_plugins=..&status=..`` (so ``?&limit=0``); subjects as JSON ``{"subject": ...}``
  (PUT to ``/subjects/<old>``); ``?subject=`` unencoded by the SDK, encoded by requests. It
  returns the answer's JSON whatever the status, and reads nothing itself.
- Double Take (api/src/util/detectors/compreface.js): recognise with multipart ``file``,
  ``x-api-key``, ``?face_plugins=<its setting>`` (the text "undefined" when unset) and
  ``det_prob_threshold``; reads ``result[].subjects[0].subject/similarity`` and ``box``, takes
  a body without ``result`` and with ``code`` 28 as "no face"; trains with ``POST /faces?subject=``
  and removes with ``DELETE /faces?subject=``.
- Viseron (components/compreface): the SDK; reads ``result[].subjects[0]`` (it must exist),
  ``similarity`` against its own threshold, and ``message`` of a failed ``faces.add``.
- CompreFace itself (docs/Rest-API-description.md, commonservice handler): errors are
  ``{"message": ..., "code": N}``: 28 no face found (400), 5 empty required field, 20 missing
  header, 26 validation, 33 missing parameter (400), 11 image not found (404), 27 already in
  progress, 0 undefined. Lists are paged with ``page``/``size`` and answer ``page_number``,
  ``page_size``, ``total_pages``, ``total_elements``.

Here: ``x-api-key`` is this service's API token. Recognise, detect and verify follow
/predict's access policy; faces and subjects always need the token (or the usual bearer token
or admin session); a key that is sent and wrong is refused. ``similarity`` is the calibrated
confidence of /predict, and /verify's confidence when verifying. A face the engine leaves
unknown has its best candidate with similarity 0 for a caller with the token (so
``subjects[0]`` exists once someone is enrolled, as Viseron reads it), and no subject for an
anonymous caller, who must not learn who is enrolled (/predict's ``public_answer``); CompreFace
answers an empty gallery the same way. The detector answers yes or no: ``box.probability`` is 1.0. Known
``face_plugins`` are accepted; ``calculator`` adds the 128-d ``embedding``, the others
(age, gender, mask, landmarks, pose) have no model here and add nothing; unknown names are
ignored, as CompreFace does. Image ids are the people engine's photo ids, listed and found
through the active model's photo index (``People.photo_index``: built once per model, so a page
or an id costs no gallery scan). Adding a photo the subject already has answers 201 with its
image id, as a retry or Double Take's "retrain" expects; under another subject it is refused.
Deleting a subject forgets it (``People.forget``: CompreFace keeps no versions, a deleted
subject is gone); deleting one example removes that photo from the active model.
"""
from __future__ import annotations

import base64
import binascii
import time

from flask import Blueprint, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from api.auth import dialect_caller_authorized, dialect_key_checked
from api.context import current_service
from api.errors import register_dialect_errors
from api.faces import face_source
from api.limits import limit
from api.verify import faces_of
from datastructure.classifier import UNKNOWN
from datastructure.errors import (DatasetNotValid, FileNotValid, ImageTooLarge, MissingFile, ModelsBusy, NotFound,
                                  PyRecognizerError, TooManyPhotos, TrainingInProgress)
from datastructure.names import checked_name
from utils.faces import Face
from utils.people import Upload
from utils.verification import central_face, face_distance, same_probability

blueprint = Blueprint("compreface", __name__, url_prefix="/api/v1")


class ImageIdConverter(BaseConverter):
    """An example's id in a path: any segment but ``delete``, so that /faces/delete is only the
    POST that deletes a list of ids (a DELETE there is 405, not "no example named delete")."""

    regex = "(?!delete/?$)[^/]+"


# recorded before the routes below, so the app knows the converter when they are added
blueprint.record_once(lambda state: state.app.url_map.converters.setdefault("image_id", ImageIdConverter))

PLUGINS = ("calculator", "age", "gender", "landmarks", "mask", "pose")
PLUGINS_VERSIONS = {"detector": "dlib.hog_face_detector", "calculator": "dlib.face_recognition_resnet_model_v1"}


class CompreFaceError(PyRecognizerError):
    """An error in CompreFace's own terms: its ``code`` number and status."""

    def __init__(self, description: str, number: int, status: int = 400):
        super().__init__(description)
        self.number, self.status = number, status


# CompreFace's code numbers for this service's typed errors (the rest: 0, "undefined")
NUMBERS = {MissingFile: 5, FileNotValid: 21, ImageTooLarge: 26, TooManyPhotos: 26, NotFound: 11,
           TrainingInProgress: 27, ModelsBusy: 27}
HTTP_NUMBERS = {400: 26, 401: 20, 404: 11, 405: 0, 413: 26, 429: 0}


def error(message: str, number: int, status: int, headers=()):
    """Return CompreFace's ``{"message", "code"}`` answer with ``status``."""
    return {"message": message, "code": number}, status, list(headers)


def rendered_error(exc, status: int, headers: list):
    """CompreFace's error answer: its message and its code number (see
    api.errors.register_dialect_errors)."""
    if isinstance(exc, HTTPException):
        number = HTTP_NUMBERS.get(exc.code, 0)
    else:
        number = getattr(exc, "number", None)
        if number is None:
            number = next((value for kind, value in NUMBERS.items() if isinstance(exc, kind)), 26 if exc.status == 422 else 0)
    return error(exc.description, number, status, headers)


register_dialect_errors(blueprint, rendered_error)


def api_key_checked(*, required: bool):
    """Decorate a view with CompreFace's ``x-api-key`` header = the API token (see
    api.auth.dialect_key_checked)."""
    return dialect_key_checked(lambda: request.headers.get("x-api-key", ""), required=required, refused=lambda why: (
        CompreFaceError("the x-api-key is not this service's API token", 1, 401) if why == "wrong"
        else CompreFaceError("Missing header: x-api-key (this service's API token)", 20, 401)))


# ---------------------------------------------------------------------------------------
# Request parts

def photo(field: str = "file") -> bytes:
    """The photo in multipart ``field``, or base64 in the JSON body's ``field``."""
    if request.is_json:
        body = request.get_json(silent=True)
        value = body.get(field) if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise CompreFaceError(f"{field} must be a base64 string in the JSON body", 5)
        try:
            data = base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
        except (binascii.Error, ValueError):
            raise CompreFaceError(f"{field} is not valid base64", 26) from None
    else:
        upload = request.files.get(field)
        data = upload.read() if upload is not None else b""
    if not data:
        raise MissingFile(f"Required request part '{field}' is not present")
    return data


def number(name: str, default, kind=int, low=0, high=None):
    """A numeric query parameter, checked as CompreFace checks it."""
    value = request.args.get(name, "")
    if value == "":
        return default
    try:
        parsed = kind(value)
    except ValueError:
        raise CompreFaceError(f"{name} must be a number, not {value!r}", 26) from None
    if parsed < low or high is not None and parsed > high:
        raise CompreFaceError(f"{name} must be between {low} and {high}" if high is not None
                              else f"{name} must be greater or equal {low}", 26)
    return parsed


def flag(name: str) -> bool:
    """Return whether the query parameter ``name`` is ``true``, as CompreFace reads its flags."""
    return request.args.get(name, "").strip().lower() == "true"


def face_plugins() -> set[str]:
    """The known plugin names asked for; unknown ones are ignored, as CompreFace does."""
    return {name.strip() for name in request.args.get("face_plugins", "").split(",")} & set(PLUGINS)


def face_options() -> dict:
    """limit, det_prob_threshold, face_plugins and status of the query string."""
    number("det_prob_threshold", 0.0, float, 0.0, 1.0)  # every face found has probability 1.0
    return {"limit": number("limit", 0), "plugins": face_plugins(), "status": flag("status")}


def box(face) -> dict:
    """Return a face's box in CompreFace's form (detection probability 1.0: dlib says yes or no)."""
    top, right, bottom, left = (max(int(side), 0) for side in face.box)
    return {"probability": 1.0, "x_max": right, "y_max": bottom, "x_min": left, "y_min": top}


def largest_first(pairs, limit: int):
    """Keep the ``limit`` largest faces (0: all), CompreFace's order of preference."""
    if not limit:
        return pairs
    area = lambda pair: (pair[0].box[1] - pair[0].box[3]) * (pair[0].box[2] - pair[0].box[0])  # noqa: E731
    return sorted(pairs, key=area, reverse=True)[:limit]


def described(face, options: dict, started: float, **fields) -> dict:
    """One face of a result: box, the asked fields, the embedding for ``calculator``."""
    result = {"box": box(face), **fields}
    if "calculator" in options["plugins"]:
        result["embedding"] = [round(float(v), 8) for v in face.encoding]
    if options["status"]:
        result["execution_time"] = {"detector": round((time.perf_counter() - started) * 1000, 1)}
    return result


def results(items: list, options: dict) -> dict:
    """Return the ``result`` body, with the plugins' versions when ``status`` is asked."""
    body = {"result": items}
    if options["status"]:
        body["plugins_versions"] = PLUGINS_VERSIONS
    return body


def no_face() -> CompreFaceError:
    """Return CompreFace's "no face" error (code 28)."""
    return CompreFaceError("No face is found in the given image", 28)


# ---------------------------------------------------------------------------------------
# Recognition, detection, verification

@blueprint.post("/recognition/recognize")
@limit("predict")
@api_key_checked(required=False)
def recognize():
    """Every face with its subject and similarity (the calibrated confidence)."""
    options = face_options()
    count = number("prediction_count", 1)
    started = time.perf_counter()
    pairs = largest_first(current_service().faces_and_decisions(photo(), source=face_source("compreface")), options["limit"])
    if not pairs:
        raise no_face()
    items = []
    authorized = dialect_caller_authorized()
    for face, decision in pairs:
        subjects = []
        if decision is not None and (decision.name != UNKNOWN or authorized):
            known = decision.name != UNKNOWN
            subjects = [{"subject": decision.name if known else decision.candidate,
                         "similarity": decision.confidence if known else 0.0}][:count]
        items.append(described(face, options, started, subjects=subjects))
    return results(items, options)


@blueprint.post("/detection/detect")
@limit("predict")
@api_key_checked(required=False)
def detect():
    """Every face's box (and embedding with ``calculator``)."""
    options = face_options()
    started = time.perf_counter()
    faces, _ = faces_of(photo())
    pairs = largest_first([(face, None) for face in faces], options["limit"])
    if not pairs:
        raise no_face()
    return results([described(face, options, started) for face, _ in pairs], options)


@blueprint.post("/verification/verify")
@limit("predict")
@api_key_checked(required=False)
def verify():
    """The source photo's main face against every face of the target: /verify's confidence."""
    options = face_options()
    started = time.perf_counter()
    source_faces, source_image = faces_of(photo("source_image"))
    target_faces, _ = faces_of(photo("target_image"))
    if not source_faces or not target_faces:
        raise no_face()
    source = central_face(source_faces, source_image)
    matches = [described(face, options, started, similarity=round(same_probability(face_distance(source, face)), 5))
               for face, _ in largest_first([(face, None) for face in target_faces], options["limit"])]
    return results([{"source_image_face": described(source, options, started), "face_matches": matches}], options)


# ---------------------------------------------------------------------------------------
# Faces and subjects: the people engine (utils/people.py) enrols, lists and removes.

def subject_param() -> str:
    """Return the ``subject`` query parameter, refused when missing."""
    subject = request.args.get("subject", "").strip()
    if not subject:
        raise CompreFaceError("Required request parameter 'subject' is not present", 33)
    return subject


def photo_index():
    """The active model's photos by id (``People.photo_index``)."""
    return current_service().people.photo_index()


def subject_label(subject: str) -> str | None:
    """The stored name ``subject`` designates, or None when nobody has it."""
    try:
        return current_service().people.person_label(subject)
    except NotFound:
        return None


def refused_example(reason: str) -> CompreFaceError:
    """The people engine's reason for skipping a photo, in CompreFace's numbers."""
    if "no face" in reason:
        return no_face()
    return CompreFaceError(reason, 31 if "faces found" in reason else 26)


def enrolled(subject: str, data: bytes) -> dict:
    """Add one example photo to ``subject``: exactly one face, as CompreFace asks; a photo
    ``subject`` already has answers its image id (``People.enrol``'s ``again_ok``)."""
    try:
        result = current_service().people.enrol(subject, [Upload("example.jpg", data)], again_ok=True)
    except DatasetNotValid as exc:
        skipped = (exc.data or {}).get("skipped") or [{"reason": exc.description}]
        raise refused_example(skipped[0]["reason"]) from None
    image_id = result["added"][0]["id"] if result["added"] else result["skipped"][0]["id"]
    return {"image_id": image_id, "subject": result["name"]}


def removed_photos(image_ids) -> list[dict]:
    """Remove the photos ``image_ids`` from whoever holds them; those removed (unknown ids are skipped).

    The engine refuses to remove the active model's last photo (an empty model cannot serve):
    that photo's person is then forgotten, as CompreFace, which keeps no versions, would
    leave no one."""
    people = current_service().people
    index = people.photo_index()
    removed = []
    for image_id in dict.fromkeys(image_ids):
        owner = index.owner(image_id)
        if owner is not None:
            try:
                people.remove_photo(owner, image_id)
            except DatasetNotValid:
                people.forget(owner)
            removed.append({"image_id": image_id, "subject": owner})
    return removed


def forgotten(subject: str) -> tuple[str, int]:
    """Erase ``subject`` everywhere (``People.forget``); its stored name and the number of its
    examples in the active model. CompreFace keeps no versions: a subject it deletes is gone,
    so an older model version must not bring it back."""
    people = current_service().people
    found = people.person(subject)
    people.forget(found["name"])
    return found["name"], len(found["photos"])


def forgotten_count(subject: str) -> int:
    """The number of examples of ``subject`` erased (0 when nobody has that name)."""
    try:
        return forgotten(subject)[1]
    except NotFound:
        return 0


def everyone() -> list[str]:
    """Return the names of the active model's people."""
    return [person["name"] for person in current_service().people.listing()["people"]]


@blueprint.post("/recognition/faces")
@api_key_checked(required=True)
def add_face():
    """Add an example (one face) to ``?subject=``: ``{"image_id", "subject"}``."""
    subject = subject_param()
    number("det_prob_threshold", 0.0, float, 0.0, 1.0)
    return enrolled(subject, photo()), 201


@blueprint.get("/recognition/faces")
@api_key_checked(required=True)
def list_faces():
    """The examples, a page at a time (``page`` from 0, ``size`` 20), of one ``subject`` or all."""
    page, size = number("page", 0), number("size", 20, low=1)
    subject = request.args.get("subject", "").strip()
    index = photo_index()
    label = subject_label(subject) if subject else None
    if subject and label is None:
        faces, total = [], 0
    else:
        faces, total = index.page(page * size, (page + 1) * size, label), index.count(label)
    return {"faces": [{"image_id": image_id, "subject": owner} for image_id, owner in faces], "page_number": page,
            "page_size": size, "total_pages": -(-total // size), "total_elements": total}


@blueprint.delete("/recognition/faces")
@api_key_checked(required=True)
def delete_faces():
    """Delete every example of ``?subject=`` (of everyone without it), erased everywhere:
    ``{"deleted": count}``."""
    subject = request.args.get("subject", "").strip()
    if subject:
        return {"deleted": forgotten_count(subject)}
    return {"deleted": sum(forgotten_count(name) for name in everyone())}


@blueprint.delete("/recognition/faces/<image_id:image_id>")
@api_key_checked(required=True)
def delete_face(image_id: str):
    """Delete one example: ``{"image_id", "subject"}``; 404 when there is none."""
    removed = removed_photos([image_id])
    if not removed:
        raise NotFound(f"no example has the image id {image_id}")
    return removed[0]


@blueprint.post("/recognition/faces/delete")
@api_key_checked(required=True)
def delete_faces_by_id():
    """Delete the examples whose ids the JSON list names: those deleted (unknown ids are ignored)."""
    ids = request.get_json(silent=True)
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise CompreFaceError("send a JSON list of image ids", 26)
    return removed_photos(ids)


def subject_body() -> str:
    """Return the ``subject`` of the JSON body, refused when missing."""
    body = request.get_json(silent=True)
    subject = body.get("subject") if isinstance(body, dict) else None
    if not isinstance(subject, str) or not subject.strip():
        raise CompreFaceError("subject must be a non-empty string in the JSON body", 5)
    return subject.strip()


@blueprint.get("/recognition/subjects")
@blueprint.get("/recognition/subjects/")
@api_key_checked(required=True)
def subjects():
    """The subjects (people) of the active model."""
    return {"subjects": [person["name"] for person in current_service().people.listing()["people"]]}


@blueprint.post("/recognition/subjects")
@api_key_checked(required=True)
def add_subject():
    """Accept a subject name. A model holds people with photos only: the subject is listed
    from its first example on (``POST /recognition/faces?subject=``)."""
    return {"subject": checked_name(subject_body())}, 201


@blueprint.put("/recognition/subjects/<subject>")
@api_key_checked(required=True)
def rename_subject(subject: str):
    """Rename a subject: ``{"updated": true}``."""
    current_service().people.rename(subject, subject_body())
    return {"updated": True}


@blueprint.delete("/recognition/subjects/<subject>")
@api_key_checked(required=True)
def delete_subject(subject: str):
    """Delete a subject and its examples (erased everywhere): ``{"subject"}``."""
    return {"subject": forgotten(subject)[0]}


@blueprint.delete("/recognition/subjects")
@api_key_checked(required=True)
def delete_subjects():
    """Delete every subject (each erased everywhere): ``{"deleted": count}``."""
    names = everyone()
    for name in names:
        forgotten_count(name)
    return {"deleted": len(names)}


def example(image_id: str) -> Face:
    """The stored example ``image_id`` of the active model, as a face to compare with."""
    index = photo_index()
    row = index.rows.get(image_id)
    if row is None:
        raise NotFound(f"no example has the image id {image_id}")
    return Face(box=(0, 0, 0, 0), encoding=index.encodings[row])


@blueprint.post("/recognition/faces/<image_id:image_id>/verify")
@limit("predict")
@api_key_checked(required=False)
def verify_example(image_id: str):
    """Every face of the photo against the example ``image_id``: /verify's confidence as ``similarity``."""
    options = face_options()
    started = time.perf_counter()
    faces, _ = faces_of(photo())  # the photo first: no lookup for a request that brings none
    if not faces:
        raise no_face()
    stored = example(image_id)
    pairs = largest_first([(face, None) for face in faces], options["limit"])
    return results([described(face, options, started, similarity=round(same_probability(face_distance(stored, face)), 5))
                    for face, _ in pairs], options)
