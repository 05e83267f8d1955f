"""Video: ``POST /predict/video`` (who appears when), its background jobs, and the /video page.

Same access policy as /predict. The upload is kept in the incoming folder only while it is
analysed (an flocked file, see ``utils.jobs``: a killed worker's copy is removed at the next
start) and removed however the request or the job ends. A video up to
``video.direct_seconds`` long is answered at once; a longer one runs as a job whose progress
``GET /predict/video/jobs/<id>`` reports, as training's does.
"""
from __future__ import annotations

from flask import Blueprint, request, url_for

from api.auth import predict_access_required
from api.context import current_service
from api.faces import face_source
from api.limits import limit
from api.negotiation import render_page
from api.pages import model_summary
from api.rest import stored_upload
from datastructure.errors import MissingFile
from datastructure.response import envelope
from utils.video import timeline_envelope

blueprint = Blueprint("video", __name__)


def with_urls(result: dict | None) -> dict | None:
    """Return a video result with the URL of each row's thumbnail (the result stores file names)."""
    for entry in (result or {}).get("timeline", []):
        entry["thumbnail_url"] = url_for("rest.upload", name=entry["thumbnail"]) if entry.get("thumbnail") else None
    return result


@blueprint.post("/predict/video")
@limit("predict")
@predict_access_required("to predict")
def predict_video():
    """Who appears when in the uploaded video: at once for a short one, else a job (202)."""
    service = current_service()
    source = face_source("video", getattr(request.files.get("file"), "filename", None))  # a record per track
    with stored_upload(".video") as (path, _, remove):
        job = None
        try:
            if not path.stat().st_size:
                raise MissingFile("the uploaded file is empty")
            info = service.video_info(path)  # a bad or hostile file is refused here, before any work
            if 0 < info.seconds <= service.config.video.direct_seconds:
                return timeline_envelope(with_urls(service.predict_video(path, source=source)))
            service.active.current()  # no model: say so now, not in a failed job
            job = service.video_jobs.start("video", lambda progress: service.predict_video(path, progress=progress,
                                                                                           source=source),
                                           cleanup=remove)
        finally:
            if job is None:
                remove()
    return envelope(job, description=f"video job {job['id']} started ({info.seconds:.0f} s of video)",
                    job_url=url_for("video.video_job", job_id=job["id"])), 202


@blueprint.get("/predict/video/jobs/<job_id>")
@predict_access_required("to follow a video job")
def video_job(job_id: str):
    """A video job: state, progress (frames decoded / total) and, when done, the result."""
    job = current_service().video_jobs.get(job_id)
    with_urls(job.get("result"))
    return envelope(job, description=f"video job {job['state']}")


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
