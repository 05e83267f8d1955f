"""Video: ``POST /predict/video`` (who appears when), its background jobs, and the /video page.

Same access policy as /predict. The upload is kept in the incoming folder only while it is
analysed (an flocked file, see ``utils.jobs``: a killed worker's copy is removed at the next
start) and removed however the request or the job ends. A video up to
``video.direct_seconds`` long is answered at once; a longer one runs as a job whose progress
``GET /predict/video/jobs/<id>`` reports, as training's does. "Up to" is what is decoded, not
what the header says: one that decodes longer becomes a job too.

Anonymous callers get ``video.anonymous_max_seconds`` of video per upload and one job slot
between them; token holders have their own slot, so an anonymous job never makes them wait.
Whoever started a job (its client address, for an anonymous caller) or an admin may cancel it
with ``DELETE /predict/video/jobs/<id>``. Anonymous callers never see a job's worker pid or owner.
"""
from __future__ import annotations

import logging

from flask import Blueprint, request, url_for
from flask_limiter.util import get_remote_address

from api.auth import is_authorized, predict_access_required
from api.context import current_service
from api.faces import face_source
from api.limits import limit
from api.negotiation import render_page
from api.pages import model_summary
from api.rest import stored_upload
from datastructure.errors import MissingFile, NotYours
from datastructure.response import envelope
from utils.video import LongerThanDeclared, timeline_envelope

log = logging.getLogger(__name__)

blueprint = Blueprint("video", __name__)
PRIVATE_FIELDS = ("pid", "owner", "slot")  # of a job: shown to token holders only (/health hides the pid too)


def with_urls(result: dict | None) -> dict | None:
    """Return a video result with the URL of each row's thumbnail (the result stores file names)."""
    for entry in (result or {}).get("timeline", []):
        entry["thumbnail_url"] = url_for("rest.upload", name=entry["thumbnail"]) if entry.get("thumbnail") else None
    return result


def job_owner() -> str:
    """Who starts a job now, as kept in it: "token" for a token holder, else the client address."""
    return "token" if is_authorized() else f"address:{get_remote_address()}"


def shown(job: dict) -> dict:
    """A job as the caller may see it: without its pid and owner for an anonymous one."""
    return job if is_authorized() else {key: value for key, value in job.items() if key not in PRIVATE_FIELDS}


@blueprint.post("/predict/video")
@limit("predict")
@predict_access_required("to predict")
def predict_video():
    """Who appears when in the uploaded video: at once for a short one, else a job (202)."""
    service = current_service()
    trusted = is_authorized()
    limits = service.video_limits if trusted else service.video_limits.within(service.config.video.anonymous_max_seconds)
    direct = service.config.video.direct_seconds
    source = face_source("video", getattr(request.files.get("file"), "filename", None))  # a record per track
    with stored_upload(".video") as (path, _, remove):
        job = None
        try:
            if not path.stat().st_size:
                raise MissingFile("the uploaded file is empty")
            info = service.video_info(path, limits)  # a bad or hostile file is refused here, before any work
            if 0 < info.seconds <= direct:
                try:
                    return timeline_envelope(with_urls(service.predict_video(path, limits=limits, budget=direct,
                                                                             source=source)))
                except LongerThanDeclared as exc:  # the header lied: the rest is a job's work
                    log.warning("a video said to last %.1f s decodes longer (%s): analysed as a job", info.seconds, exc)
            service.active.current()  # no model: say so now, not in a failed job
            job = service.video_jobs.start(
                "video", lambda progress: service.predict_video(path, progress=progress, limits=limits, source=source),
                cleanup=remove, slot="token" if trusted else "anonymous", owner=job_owner())
        finally:
            if job is None:
                remove()
    return envelope(shown(job), description=f"video job {job['id']} started",
                    job_url=url_for("video.video_job", job_id=job["id"])), 202


@blueprint.get("/predict/video/jobs/<job_id>")
@predict_access_required("to follow a video job")
def video_job(job_id: str):
    """A video job: state, progress (frames decoded / total) and, when done, the result."""
    job = current_service().video_jobs.get(job_id)
    with_urls(job.get("result"))
    return envelope(shown(job), description=f"video job {job['state']}")


@blueprint.delete("/predict/video/jobs/<job_id>")
@predict_access_required("to cancel a video job")
def cancel_video_job(job_id: str):
    """Cancel a video job: for whoever started it, or an admin. It stops within a second or so."""
    jobs = current_service().video_jobs
    if not is_authorized() and jobs.get(job_id).get("owner") != job_owner():
        raise NotYours("only whoever started this video job, or an admin, may cancel it")
    job = jobs.cancel(job_id)
    return envelope(shown(job), description=f"video job {'cancelling' if job.get('cancel_requested') else job['state']}")


def video_page_with(answer: dict | None = None):
    """The video page; with ``answer`` (the envelope of POST /predict/video) it shows that result,
    or the job started, to a browser that posted the form without JavaScript."""
    service = current_service()
    response = (answer or {}).get("response") or {}
    data = response.get("data") or {}
    return render_page("video.html", model=model_summary(service.store.active_id()),
                       direct_seconds=service.config.video.direct_seconds,
                       result=data if "timeline" in data else None,
                       job_url=response.get("job_url"))


@blueprint.get("/video")
def video_page():
    """GET /video: choose or drop a video, follow the analysis, see who appears when."""
    return video_page_with()


# What a browser posting the form without JavaScript gets instead of the envelope (api.negotiation).
PAGES = {"video.predict_video": video_page_with}
