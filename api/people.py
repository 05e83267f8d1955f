"""The people endpoints: enrol, list, remove, rename and forget people of the active model.

Each view reads the request, calls the engine (``utils.people.People``), returns the
envelope; every change answers with the new model's id. Browsers get the models page back
(see ``api.pages.PAGES``).
"""
from __future__ import annotations

from flask import Blueprint, request

from api.auth import login_required
from api.context import current_service
from datastructure.errors import DatasetNotValid, MissingFile, NameNotValid
from datastructure.names import shown
from datastructure.response import envelope
from utils.people import Upload

blueprint = Blueprint("people", __name__)


def uploads() -> list[Upload]:
    """Every file sent in the multipart field ``file`` (one or more); MissingFile if none."""
    files = [Upload(upload.filename or "photo", upload.read()) for upload in request.files.getlist("file")]
    files = [upload for upload in files if upload.data]
    if not files:
        raise MissingFile("send one or more photos, or a zip of them, as multipart/form-data in the field 'file'")
    return files


@blueprint.get("/people")
@login_required
def listing():
    """The active model's people, with their photo counts."""
    found = current_service().people.listing()
    return envelope(found["people"], description=f"{len(found['people'])} people", model=found["model"])


@blueprint.get("/people/<name>")
@login_required
def person(name: str):
    """One person: their photos' ids, source names and added dates."""
    service = current_service()
    found = person_with_faces(service, service.people.person(name))
    return envelope(found, description=f"{len(found['photos'])} photos", model=found["model"])


def person_with_faces(service, found: dict) -> dict:
    """A person (``People.person``) with each photo's face record (crop, quality, source; None
    for photos without one, e.g. imported galleries) and their negatives."""
    faces = service.inbox.faces_of_photos(photo["id"] for photo in found["photos"])
    photos = [{**photo, "face": faces.get(photo["id"])} for photo in found["photos"]]
    return {**found, "photos": photos, "negatives": service.inbox.negatives_of(found["name"])}


@blueprint.post("/people/<name>/photos")
@login_required
def enrol(name: str):
    """Add photos of a person (created if new): 201 with the new model, added and skipped photos.

    One face of a photo with several: ``face=<index>`` (its index in predict's answer) with
    one photo, or ``face_id=<record id>`` of a face record (no photo: an inbox assign)."""
    service, chosen = current_service(), request.values.get("face_id")
    if chosen:
        result = service.inbox.assign(name, faces=[chosen])
    elif request.values.get("face") not in (None, ""):
        files = uploads()
        if len(files) != 1 or not request.values["face"].isdigit():
            raise DatasetNotValid("face=<index> takes one photo and a whole number",
                                  {"photos": len(files), "face": shown(request.values["face"])})
        result = service.enrol_face(name, files[0].name, files[0].data, int(request.values["face"]))
    else:
        result = service.people.enrol(name, uploads())
    description = f"{len(result['added'])} photos added, {len(result['skipped'])} skipped"
    return envelope(result, description=description, model=result["model"]), 201


@blueprint.delete("/people/<name>/photos/<photo_id>")
@blueprint.post("/people/<name>/photos/<photo_id>/delete")  # HTML forms cannot send DELETE
@login_required
def remove_photo(name: str, photo_id: str):
    """Remove one photo of a person from the active model."""
    result = current_service().people.remove_photo(name, photo_id)
    return envelope(result, description="photo removed", model=result["model"])


@blueprint.delete("/people/<name>")
@blueprint.post("/people/<name>/delete")
@login_required
def remove(name: str):
    """Remove a person from the active model (earlier models keep them; see forget)."""
    result = current_service().people.remove(name)
    return envelope(result, description="removed from the active model", model=result["model"])


@blueprint.post("/people/<name>/forget")
@login_required
def forget(name: str):
    """Erase a person from every stored model and everything else that names them."""
    result = current_service().people.forget(name)
    if not result["forgotten"]:  # the models are scrubbed, some other place is not: say so, retry
        return envelope(result, description="erased from the models, but not from "
                        f"{', '.join(result['erased']['failed'])}: retry the forget", error="ERASURE_INCOMPLETE",
                        status="KO", model=result["erased"]["new_model"]), 500
    return envelope(result, description="forgotten everywhere", model=result["erased"]["new_model"])


@blueprint.patch("/people/<name>")
@blueprint.post("/people/<name>/rename")
@login_required
def rename(name: str):
    """Rename a person: JSON ``{"name": "..."}`` (or a form field ``name``)."""
    body = request.get_json(silent=True) if request.is_json else request.form
    new_name = body.get("name") if isinstance(body, dict) else None  # JSON may be any value: 5, [], null
    if not isinstance(new_name, str):
        raise NameNotValid("send the new name as JSON {\"name\": \"...\"}",
                           {"name": shown(str(new_name)), "problems": ["no new name sent"]})
    result = current_service().people.rename(name, new_name)
    return envelope(result, description="renamed", model=result["model"])
