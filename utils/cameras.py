"""Cameras: their definitions, the supervisor that watches them, and its state for the web workers.

Cameras run outside the web workers, in one supervisor process (``main.py cameras``, or started
by ``main.py serve`` through ``SupervisorProcess``). Each camera has a reader of its own, two
threads:

- the *grabber* connects (utils/camera_sources.py), decodes every frame (inter frames need
  their predecessors) and keeps one each 1/``sample_fps`` seconds in a one-frame mailbox. A
  frame still there when the next one comes was not looked at in time: it is replaced and
  counted as dropped, so a camera that falls behind skips frames instead of lagging further.
  When the stream fails, the grabber says why (``error: <reason>``) and connects again after
  1 s, 2 s, 4 s... up to ``cameras.max_backoff``; while it waits it probes the camera's port
  each second, so a server that comes back is watched again within a few seconds.
- the *watcher* takes the mailbox's frame and runs the video pipeline on it
  (``utils.video.tracked_faces``: HOG, the IoU tracker, an encoding when a track starts and
  every ``video.confirm_seconds``, the classifier's vote per track). Events follow the
  tracks, not the frames: ``new`` when a track is first decided (named, or unknown with the
  id of the stranger it resembles), ``update`` when its voted name changes or its
  confidence rises by ``IMPROVEMENT``, ``end`` when it is gone.

A reader's failure is its own: every error ends in its state and a retry, never in another
camera's reader or in the web service (a separate process). The supervisor writes every
camera's state to ``<data>/dataset/cameras/state.json`` (atomically, each second), which the
web workers read for /health, GET /cameras and the Cameras page; it watches the cameras file
that POST/PATCH/DELETE /cameras write and starts, changes or stops readers within a second.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Callable
from pathlib import Path

import numpy as np

from conf.config import PROJECT_ROOT, Config, ConfigError, Paths, as_dict
from datastructure.annotated import AnnotatedCopies
from datastructure.classifier import UNKNOWN
from datastructure.errors import (CameraExists, CameraInConfig, CameraNotValid, ClassifierNotLoaded, NotFound,
                                  PyRecognizerError)
from datastructure.files import atomic_write
from datastructure.model_store import ModelStore
from utils.camera_sources import CameraError, SourceOptions, frames_of, redacted, scrubbed, tcp_port_open, url_problems
from utils.events import EventHub, configured_sinks, face_event
from utils.faces import Options
from utils.frigate import FrigateListener
from utils.inbox import Inbox, Source
from utils.mqtt import active_people
from utils.images import DecodedImage, encode_jpeg
from utils.recognition import ActiveModel, annotated_image, box_dict, faces_and_decisions
from utils.video import SAME_FACE, IouTracker, Sample, Track, VideoOptions, thumbnail, tracked_faces

log = logging.getLogger(__name__)

CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")  # also an MQTT topic level and an entity id part
SETTINGS = ("sample_fps", "min_face_px", "enabled")
MAX_CAMERAS = 100
IMPROVEMENT = 0.05  # a track's confidence must rise this much for an ``update`` event
STALE_STATE = 5.0  # seconds without a state write after which the supervisor counts as not running
SNAPSHOT_EVERY = 1.0  # seconds between two snapshots of a camera
STRANGERS_KEPT = 500  # unknown faces remembered (in memory only) to number them across tracks
STABLE = 10.0  # seconds a stream must deliver before its failure counts as a drop (``reconnecting``, backoff
# from 1 s again) rather than one more failed attempt (``error``: a stream that stalls after a frame or two)
KEEP_PER_TRACK = 30  # encodings and decisions a long track keeps (its vote is over these)


# --- definitions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """One camera's definition."""

    name: str
    url: str
    sample_fps: float
    min_face_px: int
    enabled: bool = True
    defined_in: str = "api"  # "config" (conf.json: read-only over REST) or "api"

    def public(self) -> dict:
        """Return the definition as answers show it: the URL without its credentials."""
        return {"name": self.name, "url": redacted(self.url), "sample_fps": self.sample_fps,
                "min_face_px": self.min_face_px, "enabled": self.enabled, "defined_in": self.defined_in}

    def stored(self) -> dict:
        """Return the definition as the cameras file keeps it."""
        return {"name": self.name, "url": self.url, "sample_fps": self.sample_fps, "min_face_px": self.min_face_px,
                "enabled": self.enabled}


def checked_camera(values, settings, *, defined_in: str = "api") -> Camera:
    """Return the Camera of ``values`` (name, url, optional sample_fps, min_face_px, enabled;
    ``settings`` is the ``cameras`` config section); CameraNotValid (422) listing every problem."""
    if not isinstance(values, dict):
        raise CameraNotValid("send the camera as a JSON object", {"problems": ["not a JSON object"]})
    problems = [f"unknown field {key!r} (known: name, url, {', '.join(SETTINGS)})"
                for key in values if key not in ("name", "url", *SETTINGS)]
    name = values.get("name")
    if not isinstance(name, str) or not CAMERA_NAME.match(name):
        problems.append("name: 1 to 63 letters, digits, '-' or '_', starting with a letter or digit")
    problems += [f"url: {problem}" for problem in url_problems(values.get("url"), settings.allow_files)]
    fps = values.get("sample_fps", settings.sample_fps)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0.1 <= fps <= 30:
        problems.append("sample_fps: a number from 0.1 to 30")
    min_face = values.get("min_face_px", settings.min_face_px)
    if isinstance(min_face, float) and min_face.is_integer():  # JSON's 692.0 is the integer 692
        min_face = int(min_face)
    if isinstance(min_face, bool) or not isinstance(min_face, int) or not 0 <= min_face <= 4096:
        problems.append("min_face_px: an integer from 0 to 4096")
    enabled = values.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append("enabled: true or false")
    if problems:
        shown = name if isinstance(name, str) and CAMERA_NAME.match(name) else None
        raise CameraNotValid(f"this camera cannot be watched: {problems[0]}", {"name": shown, "problems": problems})
    return Camera(name, values["url"], float(fps), int(min_face), enabled, defined_in)


class CameraStore:
    """The cameras of conf.json (``cameras.cameras``) and those added over REST, kept in
    ``<data>/dataset/cameras.json`` (every web worker and the supervisor read it; writes hold a
    file lock, so two workers never lose each other's change)."""

    def __init__(self, paths: Paths, settings):
        self.path = paths.camera_list
        self.settings = settings
        self.configured: list[Camera] = []
        for index, values in enumerate(settings.cameras):
            try:
                camera = checked_camera(values, settings, defined_in="config")
            except CameraNotValid as exc:
                raise ConfigError(f"cameras.cameras[{index}]: {'; '.join(exc.data['problems'])}") from None
            if any(camera.name == other.name for other in self.configured):
                raise ConfigError(f"cameras.cameras[{index}]: a second camera named {camera.name!r}")
            self.configured.append(camera)

    def signature(self) -> tuple:
        """Return what changes when the cameras file changes (the supervisor polls it)."""
        try:
            stat = self.path.stat()
            return stat.st_mtime_ns, stat.st_size, stat.st_ino
        except OSError:
            return ()

    def added(self) -> list[Camera]:
        """Return the cameras added over REST (one edited by hand into something invalid is skipped, and logged)."""
        try:
            listing = json.loads(self.path.read_text(encoding="utf-8")).get("cameras", [])
        except FileNotFoundError:
            return []
        except (OSError, ValueError, AttributeError) as exc:
            log.error("%s cannot be read: %s", self.path, exc)
            return []
        found = []
        for values in listing:
            try:
                found.append(checked_camera(values, self.settings))
            except CameraNotValid as exc:
                log.error("camera %s in %s skipped: %s", values.get("name") if isinstance(values, dict) else "?",
                          self.path.name, "; ".join(exc.data["problems"]))
        return found

    def cameras(self) -> list[Camera]:
        """Return every camera: the configured ones, then those added over REST."""
        names = {camera.name for camera in self.configured}
        return self.configured + [camera for camera in self.added() if camera.name not in names]

    def get(self, name: str) -> Camera:
        """Return the camera ``name``; NotFound (404) when there is none."""
        for camera in self.cameras():
            if camera.name == name:
                return camera
        raise NotFound(f"no camera named {name!r}")

    @contextmanager
    def _changing(self):
        """Hold the cameras file's lock; yield its REST cameras, written back when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cameras = self.added()
            yield cameras
            atomic_write(self.path, json.dumps({"cameras": [camera.stored() for camera in cameras]}, indent=1).encode(),
                         mode=0o600)  # the URLs carry the cameras' credentials

    def add(self, values) -> Camera:
        """Add a camera (201); CameraExists (409) when the name is taken."""
        camera = checked_camera(values, self.settings)
        with self._changing() as cameras:
            if len(self.configured) + len(cameras) >= MAX_CAMERAS:
                raise CameraNotValid(f"at most {MAX_CAMERAS} cameras", {"name": camera.name,
                                                                       "problems": [f"at most {MAX_CAMERAS} cameras"]})
            if any(other.name == camera.name for other in self.configured + cameras):
                raise CameraExists(f"a camera named {camera.name!r} exists: change it with PATCH /cameras/{camera.name}")
            cameras.append(camera)
        return camera

    def change(self, name: str, values) -> Camera:
        """Change a REST camera's url or settings (its name stays)."""
        if not isinstance(values, dict):
            raise CameraNotValid("send the changes as a JSON object", {"problems": ["not a JSON object"]})
        if "name" in values and values["name"] != name:
            raise CameraNotValid("a camera cannot be renamed: delete it and add it again",
                                 {"name": name, "problems": ["name: cannot be changed"]})
        self._refuse_configured(name)
        with self._changing() as cameras:
            for index, camera in enumerate(cameras):
                if camera.name == name:
                    cameras[index] = checked_camera({**camera.stored(), **values}, self.settings)
                    return cameras[index]
            raise NotFound(f"no camera named {name!r}")

    def remove(self, name: str) -> Camera:
        """Remove a REST camera."""
        self._refuse_configured(name)
        with self._changing() as cameras:
            for index, camera in enumerate(cameras):
                if camera.name == name:
                    return cameras.pop(index)
            raise NotFound(f"no camera named {name!r}")

    def _refuse_configured(self, name: str) -> None:
        if any(camera.name == name for camera in self.configured):
            raise CameraInConfig(f"the camera {name!r} is defined in the configuration file: change it there")


# --- state, snapshots and crops: what the web workers read --------------------------------------


def state_path(paths: Paths) -> Path:
    return paths.cameras / "state.json"


def snapshot_path(paths: Paths, name: str) -> Path:
    return paths.cameras / "snapshots" / f"{name}.jpg"


def crop_store(paths: Paths, settings) -> AnnotatedCopies:
    """The face crops of events (bounded like the annotated copies: ``crops_keep``, ``crops_max_age``)."""
    return AnnotatedCopies(paths.cameras / "crops", settings.crops_keep, settings.crops_max_age)


def supervisor_state(paths: Paths, now: float | None = None) -> dict:
    """Return the supervisor's last state: ``running`` (written within STALE_STATE seconds)
    and each camera's ``state``, ``fps``, ``dropped``...; ``{"running": False, "cameras": {}}`` without one."""
    try:
        state = json.loads(state_path(paths).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"running": False, "cameras": {}}
    now = time.time() if now is None else now
    state["running"] = now - state.get("written", 0) <= STALE_STATE
    return state


def camera_states(paths: Paths, cameras: list[Camera]) -> list[dict]:
    """Return each camera's definition with its state, as GET /cameras and the page show them."""
    state = supervisor_state(paths)
    found = []
    for camera in cameras:
        current = state["cameras"].get(camera.name) if state["running"] else None
        if not camera.enabled:
            current = {"state": "disabled"}
        elif current is None:
            current = {"state": "starting" if state["running"] else "not watched: the camera supervisor is not running"}
        found.append({**camera.public(), "status": {"state": current["state"], "fps": current.get("fps", 0.0),
                                                    "dropped": current.get("dropped", 0),
                                                    **{key: value for key, value in current.items()
                                                       if key not in ("state", "fps", "dropped")}}})
    return found


# --- one camera: tracks to events ---------------------------------------------------------------


class Strangers:
    """Numbers the unknown faces: a track's mean encoding within SAME_FACE of a stranger seen
    before gets that stranger's id (the video timeline's rule). Kept in memory only, the
    newest STRANGERS_KEPT."""

    def __init__(self, kept: int = STRANGERS_KEPT):
        self.kept = kept
        self.centres_: deque = deque(maxlen=kept)  # (id, mean encoding)
        self.count_ = 0
        self._lock = threading.Lock()

    def id_of(self, encodings: list) -> int:
        """Return the id of the stranger these encodings show (a new id for a new face)."""
        mean = np.mean(encodings, axis=0)
        with self._lock:
            if self.centres_:
                distances = [float(np.linalg.norm(centre - mean)) for _, centre in self.centres_]
                best = int(np.argmin(distances))
                if distances[best] <= SAME_FACE:
                    return self.centres_[best][0]
            self.count_ += 1
            self.centres_.append((self.count_, mean))
            return self.count_


@dataclass
class Announced:
    """What the last event of a track said."""

    name: str
    confidence: float
    unknown_id: int | None
    crop_url: str | None
    box: dict


class CameraWatch:
    """One camera's tracker and the events of its tracks (see the module docstring)."""

    def __init__(self, camera: Camera, options: VideoOptions, hub: EventHub, strangers: Strangers,
                 crops: AnnotatedCopies, keep_track: Callable[[Track], str | None] = lambda track: None):
        self.camera, self.options, self.hub, self.strangers, self.crops = camera, options, hub, strangers, crops
        self.keep_track = keep_track  # the track's face record in the inbox, as it ends: its id
        self.tracker = IouTracker(options.min_iou, max_gap=max(options.gap_seconds, 1.5 / options.sample_fps))
        self.announced: dict[int, Announced] = {}
        self.events = 0

    def observe(self, sample: Sample, wall_time: float, classifier) -> list[dict]:
        """Look at one sampled frame (``sample.time``: monotonic seconds); publish the events it
        decides; return its faces (name, confidence, box) for the snapshot."""
        faces = []
        for track, box, decision in tracked_faces(sample, self.tracker, classifier, self.options,
                                                  self.camera.min_face_px):
            del track.times[:-2]  # a live track may last hours: keep what the tracker and the vote need
            del track.encodings[:-KEEP_PER_TRACK], track.decisions[:-KEEP_PER_TRACK]
            named = bool(track.decisions)
            faces.append({"name": track.name() if named else UNKNOWN,
                          "confidence": track.confidence() if named else 0.0, "box": box_dict(box)})
            if decision is not None:
                track.consider(sample, box, decision)
                self.decided(track, box, sample, wall_time)
        self.expire(sample.time, wall_time)
        return faces

    def decided(self, track, box, sample: Sample, wall_time: float) -> None:
        """A track got a new decision: announce it when it is new, renamed or more confident."""
        name, confidence = track.name(), track.confidence()
        before = self.announced.get(track.id)
        if before is not None and name == before.name and confidence < before.confidence + IMPROVEMENT:
            return
        unknown_id = self.strangers.id_of(track.encodings) if name == UNKNOWN else None
        crop_url = self.saved_crop(sample, box) or (before.crop_url if before else None)
        announced = Announced(name, confidence, unknown_id, crop_url, box_dict(box))
        self.announced[track.id] = announced
        self.publish("new" if before is None else "update", track.id, announced, wall_time)

    def expire(self, now: float, wall_time: float) -> None:
        """End the tracks unseen for longer than the tracker's gap (monotonic ``now``)."""
        for track in self.tracker.ended(now):
            self.ended(track, wall_time)

    def finish(self, wall_time: float) -> None:
        """End every track (the camera stops or its stream dropped)."""
        for track in self.tracker.tracks_:
            self.ended(track, wall_time)
        self.tracker.tracks_ = []

    def ended(self, track: Track, wall_time: float) -> None:
        announced = self.announced.pop(track.id, None)
        if announced is not None:  # a track never decided was never announced
            self.publish("end", track.id, announced, wall_time, face_id=self.keep_track(track))

    def publish(self, kind: str, track_id: int, announced: Announced, wall_time: float,
                face_id: str | None = None) -> None:
        self.events += 1
        self.hub.publish(face_event(kind, camera=self.camera.name, track_id=track_id, name=announced.name,
                                    confidence=announced.confidence, box=announced.box, frame_time=wall_time,
                                    unknown_id=announced.unknown_id, crop_url=announced.crop_url, face_id=face_id))

    def saved_crop(self, sample: Sample, box) -> str | None:
        """Keep the face's crop among the bounded crops; return its URL (None when crops are off or the disk refuses)."""
        if not self.crops.enabled:
            return None
        try:
            name = self.crops.save(encode_jpeg(thumbnail(sample.rgb(), box)))
        except OSError as exc:
            log.warning("camera %s: crop not written: %s", self.camera.name, exc.strerror or exc)
            return None
        return f"/cameras/{self.camera.name}/crops/{name}"


# --- one camera: the reader -------------------------------------------------------------------


@dataclass
class Grabbed:
    """A sampled frame waiting for the watcher."""

    frame: object  # av.VideoFrame
    wall_time: float
    monotonic: float


class Mailbox:
    """Holds the newest sampled frame only: a frame replaced before it was taken is a drop."""

    def __init__(self):
        self._item: Grabbed | None = None
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, item: Grabbed) -> None:
        with self._ready:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._ready.notify()

    def take(self, timeout: float) -> Grabbed | None:
        with self._ready:
            if self._item is None:
                self._ready.wait(timeout)
            item, self._item = self._item, None
            return item


class Rate:
    """Events per second over the last few seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self.times: deque = deque()

    def tick(self, now: float) -> None:
        self.times.append(now)
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()

    def per_second(self, now: float) -> float:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        return round(len(self.times) / self.window, 2)


class CameraReader:
    """One camera's grabber and watcher threads (see the module docstring)."""

    def __init__(self, camera: Camera, supervisor: "Supervisor"):
        self.camera, self.supervisor = camera, supervisor
        settings = supervisor.config.cameras
        video = supervisor.config.video
        self.options = VideoOptions(sample_fps=camera.sample_fps, detect_size=settings.detect_size,
                                    confirm_seconds=video.confirm_seconds, min_iou=video.min_iou,
                                    gap_seconds=video.gap_seconds)
        self.sources = SourceOptions(open_timeout=settings.open_timeout, read_timeout=settings.read_timeout,
                                     max_pixels=supervisor.config.limits.max_video_pixels,
                                     allow_files=settings.allow_files)
        self.watch = CameraWatch(camera, self.options, supervisor.hub, supervisor.strangers, supervisor.crops,
                                 keep_track=lambda track: supervisor.kept_track(track, camera.name))
        self.mailbox = Mailbox()
        self.stopping = threading.Event()
        self.state, self.reason, self.since = "connecting", None, time.time()
        self.frames = self.samples = self.reconnects = 0
        self.lag = 0.0
        self.stream_rate, self.sample_rate = Rate(), Rate()
        self.connected = 0.0  # when the stream last began to deliver frames (monotonic)
        self.origin = time.monotonic()
        self.threads = [threading.Thread(target=self.grab, name=f"camera-{camera.name}-grab", daemon=True),
                        threading.Thread(target=self.look, name=f"camera-{camera.name}-watch", daemon=True)]

    def start(self) -> "CameraReader":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop both threads (a read under way ends within ``read_timeout``; the threads are daemons)."""
        self.stopping.set()
        with self.mailbox._ready:
            self.mailbox._ready.notify_all()

    def set_state(self, state: str, reason: str | None = None) -> None:
        if state != self.state or reason != self.reason:
            self.state, self.reason, self.since = state, reason, time.time()
            shown = f"{state}: {reason}" if reason and state == "error" else state
            log.info("camera %s (%s): %s", self.camera.name, redacted(self.camera.url), shown)

    def status(self) -> dict:
        now = time.monotonic()
        return {"state": f"error: {self.reason}" if self.state == "error" else self.state,
                "reason": self.reason, "since": round(self.since, 3),
                "fps": self.sample_rate.per_second(now), "stream_fps": self.stream_rate.per_second(now),
                "dropped": self.mailbox.dropped, "frames": self.frames, "samples": self.samples,
                "lag": round(self.lag, 3), "reconnects": self.reconnects, "events": self.watch.events,
                "tracks": len(self.watch.tracker.tracks_)}

    # -- the grabber ---------------------------------------------------------------------------
    def grab(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                self.read_stream()
                error = CameraError("the stream ended")
            except CameraError as exc:
                error = exc
            except Exception as exc:  # a bug must not end the camera: say so and retry
                log.exception("camera %s: reader failed", self.camera.name)
                error = CameraError(f"internal error ({type(exc).__name__})")
            if self.stopping.is_set():
                return
            reason = scrubbed(error.reason, self.camera.url)
            if self.state == "streaming" and time.monotonic() - self.connected >= STABLE:
                backoff = 1.0  # it streamed a while: a drop, not a camera that fails each time
                self.set_state("reconnecting", reason)
            else:
                self.set_state("error", reason)
            self.wait_to_retry(backoff, error.refused)
            backoff = min(backoff * 2, self.supervisor.config.cameras.max_backoff)
            self.reconnects += 1

    def read_stream(self) -> None:
        step = 1 / self.camera.sample_fps
        next_sample = 0.0
        for frame in frames_of(self.camera.url, self.sources):
            if self.stopping.is_set():
                return
            now = time.monotonic()
            self.frames += 1
            self.stream_rate.tick(now)
            if self.state != "streaming":
                self.connected = now
                self.set_state("streaming")
            # a frame a little early still counts (a 4-fps camera sampled at 4 fps must not lose
            # every other frame to jitter); the cadence holds, with no burst after a pause
            if now + step / 4 >= next_sample:
                next_sample = max(next_sample + step, now - step / 2)
                self.mailbox.put(Grabbed(frame, time.time(), now))

    def wait_to_retry(self, seconds: float, refused: bool) -> None:
        """Wait ``seconds`` before connecting again; a camera whose connection was refused is
        probed each second and retried as soon as its port answers."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if self.stopping.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                return
            if refused and tcp_port_open(self.camera.url):
                return

    # -- the watcher ---------------------------------------------------------------------------
    def look(self) -> None:
        last_snapshot = 0.0
        while not self.stopping.is_set():
            item = self.mailbox.take(0.5)
            now = time.monotonic()
            try:
                if item is None:
                    if self.state != "streaming":
                        self.watch.finish(time.time())  # the stream dropped: its faces are gone
                    else:
                        self.watch.expire(now - self.origin, time.time())
                    continue
                sample = Sample(self.samples, item.monotonic - self.origin, item.frame)
                faces = self.watch.observe(sample, item.wall_time, self.supervisor.classifier())
                self.samples += 1
                self.sample_rate.tick(time.monotonic())
                self.lag = time.monotonic() - item.monotonic
                if now - last_snapshot >= SNAPSHOT_EVERY:
                    last_snapshot = now
                    self.supervisor.save_snapshot(self.camera.name, sample.rgb(), faces)
            except Exception:  # one bad frame (or a bug) must not end the camera
                log.exception("camera %s: a frame could not be looked at", self.camera.name)
        self.watch.finish(time.time())


# --- the supervisor ---------------------------------------------------------------------------


class PhotoRecogniser:
    """What Frigate mode asks of the engine in the supervisor's process: every face of a
    snapshot with the active model's decision, found as /predict finds them."""

    def __init__(self, config: Config, active: ActiveModel):
        self.config, self.active = config, active
        self.options = Options.from_config(config.faces, config.limits, training=False)

    def faces_and_decisions(self, data: bytes) -> list:
        """Return (face, decision or None before any model) for each face of the photo ``data``."""
        return faces_and_decisions(data, self.active, self.options, self.config.faces.cnn_fallback_gallery_under)


class Supervisor:
    """Runs one reader per enabled camera, follows the cameras file, writes the state each second."""

    def __init__(self, config: Config, paths: Paths | None = None, hub: EventHub | None = None):
        self.config = config
        self.paths = paths or Paths(config.data_dir).create()
        self.paths.cameras.mkdir(parents=True, exist_ok=True)
        self.store = CameraStore(self.paths, config.cameras)
        self.active = ActiveModel(ModelStore(self.paths.models))
        self.hub = hub or EventHub(configured_sinks(config, self.paths, people=active_people(self.active)))
        self.inbox = Inbox(self.paths.inbox, config.inbox, min_quality=config.faces.min_enrol_quality,
                           store=self.active.store, index_min=config.classifier.index_min,
                           nprobe=config.classifier.nprobe)
        # Frigate mode shares the process, its one dlib lock (utils.faces) and the hub with the cameras
        self.frigate = FrigateListener(PhotoRecogniser(config, self.active), self.hub, config) \
            if config.frigate.enabled else None
        self.strangers = Strangers()
        self.crops = crop_store(self.paths, config.cameras)
        self.crops.clean()
        self.readers: dict[str, CameraReader] = {}
        self.signature = None
        self.started = time.time()

    def classifier(self):
        """Return the active model's classifier (None before any model: every face is unknown)."""
        try:
            return self.active.current().classifier
        except ClassifierNotLoaded:
            return None

    def sync(self) -> None:
        """Start, restart or stop readers so that each enabled camera has one with its definition."""
        signature = self.store.signature()
        if signature == self.signature:
            return
        self.signature = signature
        wanted = {camera.name: camera for camera in self.store.cameras() if camera.enabled}
        for name, reader in list(self.readers.items()):
            if wanted.get(name) != reader.camera:
                reader.stop()
                del self.readers[name]
                snapshot_path(self.paths, name).unlink(missing_ok=True)
                log.info("camera %s stopped", name)
                if name not in wanted:
                    for sink in self.announcers():
                        sink.forget_camera(name)
        for name, camera in wanted.items():
            if name not in self.readers:
                self.readers[name] = CameraReader(camera, self).start()
                for sink in self.announcers():
                    sink.announce_camera(name)
                log.info("camera %s started (%s)", name, redacted(camera.url))

    def kept_track(self, track: Track, camera: str) -> str | None:
        """Keep an ended track as one face record of the inbox (its best frame's crop, the mean
        of its encodings), labelled with its camera; return the record's id (None: not kept)."""
        try:
            model = self.active.current().id
        except ClassifierNotLoaded:
            model = None
        kept = self.inbox.keep_tracks([track], Source(route="camera", client="camera", label=camera), model)
        return kept[0] if kept else None

    def announcers(self) -> list:
        """The sinks that give each camera entities of its own (MQTT's Home Assistant discovery)."""
        return [queue.sink for queue in self.hub.queues if hasattr(queue.sink, "announce_camera")]

    def write_state(self) -> None:
        state = {"written": time.time(), "pid": os.getpid(), "started": self.started,
                 "cameras": {name: reader.status() for name, reader in self.readers.items()},
                 "events": self.hub.stats(),
                 "mqtt": [sink.status() for sink in self.announcers()],
                 "frigate": self.frigate.stats() if self.frigate else None}
        try:
            atomic_write(state_path(self.paths), json.dumps(state).encode(), durable=False)
        except OSError as exc:
            log.warning("camera state not written: %s", exc.strerror or exc)

    def save_snapshot(self, name: str, rgb: np.ndarray, faces: list[dict]) -> None:
        """Write a camera's last frame with its boxes (``GET /cameras/<name>/snapshot``)."""
        height, width = rgb.shape[:2]
        image = DecodedImage(array=rgb, scale=1.0, original_size=(width, height), format="frame")
        path = snapshot_path(self.paths, name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, annotated_image(image, faces, self.config.annotated.max_side), durable=False)
        except OSError as exc:
            log.warning("camera %s: snapshot not written: %s", name, exc.strerror or exc)

    def run(self, stop: threading.Event, parent_pid: int | None = None) -> None:
        """Watch the cameras until ``stop`` is set (or the parent process ``parent_pid`` is gone)."""
        log.info("camera supervisor %d started", os.getpid())
        if self.frigate:
            self.frigate.start()
        try:
            while not stop.is_set():
                self.sync()
                self.write_state()
                if parent_pid and os.getppid() != parent_pid:
                    log.warning("camera supervisor: the service that started it is gone; stopping")
                    break
                stop.wait(0.5)
        finally:
            for reader in self.readers.values():
                reader.stop()
            deadline = time.monotonic() + 3  # a read under way ends within read_timeout; the threads are daemons
            for reader in self.readers.values():
                for thread in reader.threads:
                    thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if self.frigate:
                self.frigate.stop()
            self.hub.close()
            state_path(self.paths).unlink(missing_ok=True)
            log.info("camera supervisor %d stopped", os.getpid())


class SupervisorProcess:
    """The supervisor as ``main.py serve`` runs it: a child process started when there is
    something to watch (``cameras.start``: "auto" when a camera is defined, "always",
    "never"), restarted if it dies (after 1 s, doubling to 30 s), stopped with the service.
    Its configuration goes through a pipe (it holds the secrets: never a file, never argv)."""

    def __init__(self, config: Config):
        self.config = config
        self.store = CameraStore(Paths(config.data_dir), config.cameras)
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.backoff, self.next_start, self.spawned = 1.0, 0.0, 0.0
        self.thread = threading.Thread(target=self.keep, name="camera-supervisor", daemon=True)

    def wanted(self) -> bool:
        start = self.config.cameras.start
        return start == "always" or start == "auto" and (bool(self.config.frigate.enabled)
                                                         or any(camera.enabled for camera in self.store.cameras()))

    def start(self) -> "SupervisorProcess":
        if self.config.cameras.start != "never":
            self.thread.start()
        return self

    def keep(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                with self.lock:
                    if not self.stopping.is_set():
                        self.check()
            except Exception:
                log.exception("camera supervisor: watching it failed")

    def check(self) -> None:
        """Start the supervisor when wanted (again, after a backoff, when it died); stop it when not."""
        running = self.process is not None and self.process.poll() is None
        if self.process is not None and not running:
            if time.monotonic() - self.spawned > 60:
                self.backoff = 1.0  # it ran a while: a new failure, not a crash loop
            log.warning("camera supervisor exited with %s; starting it again in %.0f s",
                        self.process.returncode, self.backoff)
            self.process, self.next_start = None, time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 30.0)
        wanted = self.wanted()
        if wanted and self.process is None and time.monotonic() >= self.next_start:
            self.spawn()
        elif not wanted and running:
            self.terminate()

    def spawn(self) -> None:
        command = [sys.executable, str(PROJECT_ROOT / "main.py"), "--config", "/dev/stdin", "cameras",
                   "--parent-pid", str(os.getpid())]
        # a session of its own: a SIGTERM to the service's process group stops gunicorn, which then
        # stops the supervisor (instead of the watch above starting it again meanwhile); a
        # service killed outright leaves it to notice its parent is gone (--parent-pid)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, cwd=PROJECT_ROOT, start_new_session=True)
        self.process.stdin.write(json.dumps(as_dict(self.config)).encode())
        self.process.stdin.close()
        self.spawned = time.monotonic()

    def terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            self.terminate()


@contextmanager
def supervised_cameras(config: Config):
    """Run the camera supervisor beside the block (``main.py serve``)."""
    supervisor = SupervisorProcess(config).start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
