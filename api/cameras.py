"""Cameras: their definitions over REST, their snapshots and crops, the events stream, the Cameras page.

Admins and token holders only (``login_required``): a camera URL is admin input that makes
the service connect somewhere, and its answers show who walked past a camera. URLs are shown
without their credentials (``Camera.public``). The cameras themselves are watched by the
camera supervisor, another process (utils/cameras.py); these views change its cameras file
and read what it writes: its state, each camera's last frame, the face crops, and the event
journal that ``GET /events`` streams as server-sent events.
"""
from __future__ import annotations

import json
import threading
import time

from flask import Blueprint, Response, request, send_file, url_for

from api.auth import login_required
from api.context import current_service
from api.negotiation import render_page
from datastructure.errors import CameraNotValid, NotFound, PyRecognizerError
from datastructure.response import envelope
from utils.cameras import camera_states, crop_store, snapshot_path, supervisor_state
from utils.events import journal_entries, journal_path

blueprint = Blueprint("cameras", __name__)

MAX_RECENT = 100
PING_EVERY = 10.0  # seconds between two comments on a quiet stream (proxies close silent connections)
POLL_EVERY = 0.2  # seconds between two looks at the journal


class EventsBusy(PyRecognizerError):
    """Every thread this worker may give to event streams is taken: retry (EventSource does)."""

    code, status = "EVENTS_BUSY", 503

    def __init__(self, description: str, data=None, retry_after: int = 2):
        super().__init__(description, data)
        self.retry_after = retry_after


class StreamSlots:
    """Counts this worker's open event streams: each holds a thread, and a worker must keep one
    for everything else."""

    def __init__(self):
        self.open = 0
        self.lock = threading.Lock()

    def take(self, limit: int) -> bool:
        with self.lock:
            if self.open >= limit:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.open -= 1


STREAMS = StreamSlots()


def json_body() -> dict:
    """Return the request's JSON object; CameraNotValid (422) when it sent none."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise CameraNotValid("send the camera as a JSON object (Content-Type: application/json)",
                             {"problems": ["no JSON object in the request"]})
    return body


def described(camera) -> dict:
    """Return a camera with its state and the URLs of its snapshot."""
    service = current_service()
    found = camera_states(service.paths, [camera])[0]
    found["snapshot_url"] = url_for("cameras.snapshot", name=camera.name)
    return found


@blueprint.get("/cameras")
@login_required
def listing():
    """Every camera, with its state (``streaming``, ``reconnecting``, ``error: <reason>``...), fps and drops."""
    service = current_service()
    cameras = camera_states(service.paths, service.cameras.cameras())
    for camera in cameras:
        camera["snapshot_url"] = url_for("cameras.snapshot", name=camera["name"])
    running = supervisor_state(service.paths)["running"]
    return envelope(cameras, description=f"{len(cameras)} camera{'s' if len(cameras) != 1 else ''}",
                    supervisor={"running": running, "start": service.config.cameras.start})


@blueprint.post("/cameras")
@login_required
def add():
    """Add a camera: JSON ``{"name", "url", "sample_fps", "min_face_px", "enabled"}``; watched within seconds (201)."""
    camera = current_service().cameras.add(json_body())
    return envelope(described(camera), description=f"camera {camera.name} added"), 201


@blueprint.get("/cameras/<name>")
@login_required
def camera(name: str):
    """One camera and its state."""
    return envelope(described(current_service().cameras.get(name)), description=f"camera {name}")


@blueprint.patch("/cameras/<name>")
@login_required
def change(name: str):
    """Change a camera's url or settings (the reader starts again with them)."""
    camera = current_service().cameras.change(name, json_body())
    return envelope(described(camera), description=f"camera {name} changed")


@blueprint.delete("/cameras/<name>")
@login_required
def remove(name: str):
    """Stop watching a camera and forget its definition."""
    camera = current_service().cameras.remove(name)
    snapshot_path(current_service().paths, name).unlink(missing_ok=True)
    return envelope(camera.public(), description=f"camera {name} removed")


def private_jpeg(path):
    answer = send_file(path, mimetype="image/jpeg", max_age=0)
    answer.headers["Cache-Control"] = "private, no-store"  # frames of people: no cache keeps them
    return answer


@blueprint.get("/cameras/<name>/snapshot")
@login_required
def snapshot(name: str):
    """The camera's last frame looked at, with a box and a name per face (404 before the first)."""
    service = current_service()
    service.cameras.get(name)
    path = snapshot_path(service.paths, name)
    if not path.is_file():
        raise NotFound(f"no frame of camera {name!r} yet")
    return private_jpeg(path)


@blueprint.get("/cameras/<name>/crops/<crop>")
@login_required
def crop(name: str, crop: str):
    """The face crop of an event (its ``crop_url``), while it is kept (``cameras.crops_keep``, ``crops_max_age``)."""
    service = current_service()
    path = crop_store(service.paths, service.config.cameras).path_of(crop)
    if path is None:
        raise NotFound("no such crop (crops are kept for a while only)")
    return private_jpeg(path)


def start_after(path, recent: int) -> int:
    """Return the sequence number a new stream starts after: Last-Event-ID when EventSource
    reconnects, else the newest event less ``recent``."""
    entries = journal_entries(path)
    newest = entries[-1]["seq"] if entries else 0
    last = request.headers.get("Last-Event-ID") or request.args.get("after")
    if last is not None:
        try:
            after = int(last)
        except ValueError:
            after = newest
        return after if 0 <= after <= newest else newest  # a journal begun again: from its newest
    if recent and entries:
        return entries[max(0, len(entries) - recent)]["seq"] - 1
    return newest


@blueprint.get("/events")
@login_required
def events():
    """Server-sent events: each camera event as ``event: face`` with ``id`` (its journal sequence
    number) and the event JSON as ``data``. ``?recent=N`` starts with the last N events; a
    reconnecting EventSource resumes after Last-Event-ID. A stream ends after
    ``cameras.sse_seconds`` (EventSource reconnects by itself)."""
    service = current_service()
    path = journal_path(service.paths)
    try:
        recent = min(MAX_RECENT, max(0, int(request.args.get("recent", 0))))
    except ValueError:
        recent = 0
    after = start_after(path, recent)
    if not STREAMS.take(max(1, service.config.server.threads - 1)):
        raise EventsBusy("every stream this worker can hold is open: retry in a moment")
    seconds = service.config.cameras.sse_seconds

    def stream(after: int = after):
        # the starting point as the last event id: a stream that ends before any event resumes
        # from here, not from whatever is newest when EventSource reconnects
        yield f"retry: 1000\nid: {after}\n\n"
        deadline = time.monotonic() + seconds
        seen, pinged = None, time.monotonic()
        while time.monotonic() < deadline:
            try:
                stat = path.stat()
                signature = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                signature = None
            if signature != seen:
                seen = signature
                for entry in journal_entries(path, after):
                    after = entry["seq"]
                    yield f"id: {after}\nevent: face\ndata: {json.dumps(entry['event'], ensure_ascii=False)}\n\n"
                    pinged = time.monotonic()
            if time.monotonic() - pinged >= PING_EVERY:
                pinged = time.monotonic()
                yield ": ping\n\n"
            time.sleep(POLL_EVERY)

    answer = Response(stream(), mimetype="text/event-stream",
                      headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    answer.call_on_close(STREAMS.give_back)  # however the stream ends, even before its first byte
    return answer


def cameras_page_with(answer: dict | None = None):
    """The Cameras page: each camera's last frame and state, adding and removing cameras, recent events."""
    service = current_service()
    cameras = camera_states(service.paths, service.cameras.cameras())
    return render_page("cameras.html", cameras=cameras, allow_files=service.config.cameras.allow_files,
                       default_fps=service.config.cameras.sample_fps,
                       supervisor=supervisor_state(service.paths)["running"])


# A browser navigating to GET /cameras gets the page (api.negotiation).
PAGES = {"cameras.listing": cameras_page_with}
