"""The inbox endpoints: face records, clusters of unknown faces, and the actions on them
(assign, ignore, not this person, undo). Each view reads the request, calls the engine
(``utils.inbox.Inbox``) and returns the envelope; every action answers with its action id
(for ``POST /faces/undo/<action id>``) and the new model. Token or admin login only.

``face_source`` is what the recognising routes (predict, the dialects) hand the service so
that each face they decide is kept as a record.
"""
from __future__ import annotations

from flask import Blueprint, request, url_for

from api.auth import is_admin_session, is_authorized, login_required
from api.context import current_service
from datastructure.errors import DatasetNotValid, NameNotValid
from datastructure.names import shown
from datastructure.response import envelope
from utils.inbox import Source

blueprint = Blueprint("faces", __name__)

MAX_PAGE = 200
MAX_OFFSET = 10**9  # more records than any inbox keeps
MAX_LABEL = 100  # characters of a source label kept


def face_source(route: str, file: str | None = None) -> Source:
    """The Source of this request's faces: the route, who asked, the label given in the form
    or query field ``source`` (a camera's or client's name) and the uploaded file's name."""
    if is_admin_session():
        client = "admin"
    elif is_authorized():
        client = "token"
    elif request.form.get("api_key") or request.headers.get("x-api-key"):
        client = "key"  # a dialect's key, checked by the route's own decorator
    else:
        client = "anonymous"
    label = request.values.get("source") or None
    return Source(route=route, client=client, label=label[:MAX_LABEL] if label else None,
                  file=(file or None) and str(file)[:255])


def paging() -> tuple[int, int]:
    """(offset, limit) of the query string; 422 when they are not small whole numbers."""
    try:
        offset, limit = int(request.args.get("offset", 0)), int(request.args.get("limit", 50))
    except ValueError:
        raise DatasetNotValid("offset and limit must be whole numbers", {"offset": shown(request.args.get("offset", "")),
                                                                         "limit": shown(request.args.get("limit", ""))}) from None
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:  # SQLite's integers end at 2^63
        raise DatasetNotValid(f"offset must be between 0 and {MAX_OFFSET:,} and limit between 1 and {MAX_PAGE}",
                              {"offset": offset, "limit": limit})
    return offset, limit


def body() -> dict:
    """The JSON body (or the form, for pages without JavaScript)."""
    found = request.get_json(silent=True) if request.is_json else request.form.to_dict(flat=True)
    return found if isinstance(found, dict) else {}


def name_sent() -> str:
    """The ``name`` of the body; 422 NAME_NOT_VALID without one."""
    name = body().get("name")
    if not isinstance(name, str):
        raise NameNotValid("send the name as JSON {\"name\": \"...\"}", {"name": None, "problems": ["no name sent"]})
    return name


def with_urls(record: dict) -> dict:
    """A record with the URL of its crop."""
    return {**record, "crop_url": url_for("faces.crop", record_id=record["id"])}


@blueprint.get("/faces")
@login_required
def listing():
    """Face records, newest first: ``state``, ``name``, ``since``, ``source`` and ``cluster`` filters, paged."""
    offset, limit = paging()
    cluster = request.args.get("cluster")
    found = current_service().inbox.records(state=request.args.get("state") or None, name=request.args.get("name"),
                                            since=request.args.get("since"), source=request.args.get("source"),
                                            cluster=cluster if cluster not in (None, "") else None,
                                            offset=offset, limit=limit)
    found["records"] = [with_urls(record) for record in found["records"]]
    return envelope(found, description=f"{len(found['records'])} of {found['total']} face records")


@blueprint.get("/faces/clusters")
@login_required
def clusters():
    """Clusters of unknown faces, largest first, paged (``state=ignored``: the known strangers)."""
    offset, limit = paging()
    found = current_service().inbox.clusters(state=request.args.get("state") or "unknown", offset=offset, limit=limit)
    return envelope(found, description=f"{len(found['clusters'])} of {found['total']} clusters")


@blueprint.get("/faces/clusters/<int:cluster>")
@login_required
def cluster(cluster: int):
    """One cluster."""
    return envelope(current_service().inbox.cluster(cluster), description=f"cluster {cluster}")


@blueprint.get("/faces/actions")
@login_required
def actions():
    """The newest inbox actions, to undo one."""
    return envelope(current_service().inbox.actions(), description="inbox actions, newest first")


@blueprint.get("/faces/<record_id>")
@login_required
def record(record_id: str):
    """One face record: decision, source, quality, cluster."""
    return envelope(with_urls(current_service().inbox.record(record_id)), description=f"face record {record_id}")


@blueprint.get("/faces/<record_id>/crop")
@login_required
def crop(record_id: str):
    """A face record's crop (JPEG)."""
    data = current_service().inbox.crop(record_id)
    return data, 200, {"Content-Type": "image/jpeg", "Cache-Control": "private, no-store"}


@blueprint.post("/faces/clusters/<int:cluster>/assign")
@login_required
def assign_cluster(cluster: int):
    """Enrol a cluster's faces as ``{"name": ...}`` (created if new): one new model version."""
    result = current_service().inbox.assign(name_sent(), cluster=cluster)
    return envelope(result, description=f"{len(result['added'])} faces enrolled as {result['name']}, "
                    f"{len(result['skipped'])} skipped", model=result["model"], action=result["action"])


@blueprint.post("/faces/assign")
@login_required
def assign_faces():
    """Enrol chosen records ``{"name": ..., "faces": [ids]}``: one new model version."""
    faces = body().get("faces") if request.is_json else request.form.getlist("faces")
    result = current_service().inbox.assign(name_sent(), faces=faces)
    return envelope(result, description=f"{len(result['added'])} faces enrolled as {result['name']}, "
                    f"{len(result['skipped'])} skipped", model=result["model"], action=result["action"])


@blueprint.post("/faces/clusters/<int:cluster>/ignore")
@login_required
def ignore(cluster: int):
    """Make a cluster a known stranger: its faces become negatives; one new model version."""
    result = current_service().inbox.ignore(cluster)
    return envelope(result, description=f"cluster {cluster} ignored", model=result["model"], action=result["action"])


@blueprint.post("/faces/<record_id>/not")
@login_required
def negate(record_id: str):
    """"Not this person": ``{"name": ...}``; the face becomes a hard negative of them."""
    result = current_service().inbox.negate(record_id, name_sent())
    return envelope(result, description=f"face {record_id} is not {result['name']}", model=result["model"],
                    action=result["action"])


@blueprint.delete("/people/<name>/negatives/<negative_id>")
@blueprint.post("/people/<name>/negatives/<negative_id>/delete")  # HTML forms cannot send DELETE
@login_required
def remove_negative(name: str, negative_id: str):
    """Remove one of a person's negatives: one new model version."""
    result = current_service().inbox.remove_negative(name, negative_id)
    return envelope(result, description="negative removed", model=result["model"], action=result["action"])


@blueprint.post("/faces/undo/<action_id>")
@login_required
def undo(action_id: str):
    """Undo an action: the model before it is active again, its records back where they were."""
    result = current_service().inbox.undo(action_id)
    return envelope(result, description=f"{result['kind']} undone", model=result["model"])


@blueprint.post("/faces/recluster")
@login_required
def recluster():
    """Group every unknown face again, in the background (202, and the job)."""
    job = current_service().recluster()
    return envelope(job, description=f"recluster job {job['id']} started",
                    job_url=url_for("faces.recluster_job", job_id=job["id"])), 202


@blueprint.get("/faces/recluster/<job_id>")
@login_required
def recluster_job(job_id: str):
    """A recluster job: its state, progress and result."""
    found = current_service().inbox_jobs.get(job_id)
    return envelope(found, description=f"job {found['state']}")
