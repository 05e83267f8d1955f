"""Frigate mode: Frigate's person events in, every face recognised, events and sub-labels out
(the job Double Take did).

``FrigateListener`` subscribes to Frigate's events topic (``frigate/events``) on the
``mqtt.url`` broker. For each ``new`` or ``update`` message of a ``person`` (up to
``frigate.attempts`` per Frigate event) it fetches the event's snapshot from Frigate's HTTP
API (``GET /api/events/<id>/snapshot.jpg``, cropped to the person), or the camera's
``GET /api/<camera>/latest.jpg`` while Frigate has no snapshot yet, recognises every face
with the service's engine, and publishes to the hub one event per face the first time it is
seen in that Frigate event and one each time a known face's confidence improves (source
``frigate``, ``frigate_event_id``); Frigate's ``end`` ends them. When known people pass
``frigate.sub_label_min_confidence`` it sets the Frigate event's sub-label to their names
(``POST /api/events/<id>/sub_label``), and stops looking at that event.

The shapes are Frigate 0.18.0's (frigate/api/event.py, media.py, defs/request/events_body.py
and docs/docs/integrations/mqtt.md of that version). A message that is not such a payload (not
JSON, no ``after``, an id or camera name Frigate would not make) is logged and skipped: it
never reaches a URL. Messages wait in a bounded queue for one worker thread, so a burst
drops the oldest rather than growing without end.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from urllib.parse import quote

from conf.config import ConfigError
from datastructure.errors import PyRecognizerError
from datastructure.names import UNKNOWN
from utils.events import face_event
from utils.mqtt import broker_client
from utils.outbound import limited_read, opener, redacted
from utils.recognition import box_dict

log = logging.getLogger(__name__)

FRIGATE_VERSION = "0.18.0"  # the Frigate whose routes and payloads this module follows
EVENT_TYPES = ("new", "update", "end")
EVENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")  # Frigate's ids: "1607123955.475377-mxklsc"
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # what Frigate's config accepts as a camera name
MAX_SNAPSHOT_BYTES = 32 << 20
QUEUE_SIZE = 200  # Frigate messages waiting for the worker; past it the oldest are dropped
EVENTS_KEPT = 1000  # Frigate events followed at once (their attempts, tracks, sub-label)
SUB_LABEL_LENGTH = 100  # EventsSubLabelBody.subLabel's max_length


class MalformedFrigateEvent(ValueError):
    """A message on Frigate's events topic that is not one of Frigate's event payloads."""


@dataclass(frozen=True)
class FrigateEvent:
    """What this module uses of one ``frigate/events`` message (its ``after`` object)."""

    type: str
    id: str
    camera: str
    label: str
    frame_time: float | None


def frigate_event(payload: bytes) -> FrigateEvent:
    """Return the event of a ``frigate/events`` message; MalformedFrigateEvent when it is not one."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise MalformedFrigateEvent("not JSON") from None
    if not isinstance(message, dict):
        raise MalformedFrigateEvent("not a JSON object")
    kind, after = message.get("type"), message.get("after")
    if kind not in EVENT_TYPES:
        raise MalformedFrigateEvent(f"type is {str(kind)[:20]!r}, not one of {', '.join(EVENT_TYPES)}")
    if not isinstance(after, dict):
        raise MalformedFrigateEvent("no 'after' object")
    event_id, camera, label = after.get("id"), after.get("camera"), after.get("label")
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise MalformedFrigateEvent("after.id is not a Frigate event id")
    if not isinstance(camera, str) or not CAMERA_NAME.match(camera):
        raise MalformedFrigateEvent("after.camera is not a Frigate camera name")
    if not isinstance(label, str):
        raise MalformedFrigateEvent("after.label is not a text")
    frame_time = after.get("frame_time")
    if not isinstance(frame_time, (int, float)) or isinstance(frame_time, bool):
        frame_time = None
    return FrigateEvent(type=kind, id=event_id, camera=camera, label=label, frame_time=frame_time)


class FrigateApi:
    """The few routes of Frigate's HTTP API this mode uses."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.opener = opener()

    def _get_image(self, path: str) -> tuple[bytes, float | None] | None:
        """GET a JPEG: (bytes, the frame time Frigate names), None on 404."""
        try:
            with self.opener.open(self.url + path, timeout=self.timeout) as response:
                data = limited_read(response, MAX_SNAPSHOT_BYTES)
                frame_time = response.headers.get("X-Frame-Time")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        try:
            return data, float(frame_time) if frame_time else None
        except ValueError:
            return data, None

    def snapshot(self, event_id: str) -> tuple[bytes, float | None] | None:
        """The event's snapshot, cropped to the person, without Frigate's drawings; None when it has none yet."""
        return self._get_image(f"/api/events/{quote(event_id)}/snapshot.jpg?crop=1&bbox=0&timestamp=0")

    def latest(self, camera: str) -> tuple[bytes, float | None] | None:
        """The camera's latest frame."""
        return self._get_image(f"/api/{quote(camera)}/latest.jpg")

    def set_sub_label(self, event_id: str, label: str, score: float, camera: str) -> None:
        """Set the event's sub-label (Frigate's EventsSubLabelBody: subLabel, subLabelScore in (0, 1], camera)."""
        body = json.dumps({"subLabel": label[:SUB_LABEL_LENGTH], "subLabelScore": min(1.0, max(0.01, round(score, 4))),
                           "camera": camera}).encode()
        request = urllib.request.Request(f"{self.url}/api/events/{quote(event_id)}/sub_label", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
        with self.opener.open(request, timeout=self.timeout) as response:
            response.read(65536)


@dataclass
class Track:
    """One face followed through a Frigate event's snapshots."""

    id: int
    name: str
    confidence: float
    box: dict


@dataclass
class Followed:
    """What this mode knows of one Frigate event."""

    camera: str
    attempts: int = 0
    tracks: dict[str, Track] = field(default_factory=dict)  # a known name, or "unknown#<n>"
    sub_label: str | None = None


class FrigateListener:
    """Frigate mode: ``FrigateListener(service, hub, config).start()``, then ``.stop()``."""

    def __init__(self, service, hub, config):
        settings = config.frigate
        if not config.mqtt.url or not settings.url:
            raise ConfigError("Frigate mode needs mqtt.url (Frigate's broker) and frigate.url (its HTTP API)")
        self.service, self.hub, self.settings = service, hub, settings
        self.api = FrigateApi(settings.url, float(settings.timeout))
        self.client, self.broker = broker_client(config.mqtt, "frigate")
        self.keepalive = int(config.mqtt.keepalive)
        self.client.on_connect, self.client.on_message = self._connected, self._message
        self.queue: deque[FrigateEvent] = deque()
        self.ready = threading.Condition()
        self.closing = False
        self.followed: OrderedDict[str, Followed] = OrderedDict()
        self.track_ids = itertools.count(1)
        self.counts = dict.fromkeys(("received", "malformed", "skipped", "dropped", "recognised", "faces",
                                     "sub_labels", "ends", "failed"), 0)
        self.worker = threading.Thread(target=self._work, name="frigate", daemon=True)

    def start(self) -> "FrigateListener":
        """Connect to the broker and start the worker."""
        self.worker.start()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self.client.loop_start()
        log.info("Frigate mode: %s on %s, Frigate at %s", self.settings.topic, self.broker.shown,
                 redacted(self.settings.url))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and let the worker finish the snapshot it is on."""
        self.client.disconnect()
        self.client.loop_stop()
        with self.ready:
            self.closing = True
            self.ready.notify()
        self.worker.join(timeout)

    def stats(self) -> dict:
        """Messages received, malformed, skipped, dropped; snapshots recognised, faces, sub-labels
        set, ends, failures."""
        with self.ready:
            return dict(self.counts)

    # -- paho's network thread -----------------------------------------------------------
    def _connected(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.warning("Frigate mode: %s refused the connection: %s", self.broker.shown, reason)
            return
        client.subscribe(self.settings.topic, qos=1)

    def _message(self, client, userdata, message) -> None:
        with self.ready:
            self.counts["received"] += 1
        try:
            event = frigate_event(message.payload)
        except MalformedFrigateEvent as exc:
            self._count("malformed")
            log.warning("Frigate mode: skipped a malformed message on %s: %s", message.topic, exc)
            return
        if event.label != "person" or self.settings.cameras and event.camera not in self.settings.cameras:
            self._count("skipped")
            return
        with self.ready:
            if len(self.queue) >= QUEUE_SIZE:
                self.queue.popleft()
                self.counts["dropped"] += 1
            self.queue.append(event)
            self.ready.notify()

    def _count(self, what: str, by: int = 1) -> None:
        with self.ready:
            self.counts[what] += by

    # -- the worker ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self.ready:
                while not self.queue and not self.closing:
                    self.ready.wait()
                if self.closing:
                    return
                event = self.queue.popleft()
            try:
                self.handle(event)
            except Exception as exc:  # Frigate unreachable, an image that is not one: the next message may do
                self._count("failed")
                log.warning("Frigate mode: event %s of %s: %s", event.id, event.camera, exc)

    def handle(self, event: FrigateEvent) -> None:
        """Act on one Frigate message (the worker's step)."""
        if event.type == "end":
            self._count("ends")
            followed = self.followed.pop(event.id, None)
            for track in (followed.tracks.values() if followed else ()):
                self._publish("end", event, track, time.time() if event.frame_time is None else event.frame_time)
            return
        followed = self.followed.get(event.id)
        if followed is None:
            followed = self.followed[event.id] = Followed(camera=event.camera)
            while len(self.followed) > EVENTS_KEPT:
                self.followed.popitem(last=False)
        if followed.sub_label or followed.attempts >= int(self.settings.attempts):
            self._count("skipped")
            return
        followed.attempts += 1
        image = self.api.snapshot(event.id) or self.api.latest(event.camera)
        if image is None:
            raise LookupError("Frigate has neither a snapshot of the event nor a latest frame of its camera")
        data, frame_time = image
        frame_time = frame_time or event.frame_time or time.time()
        try:
            faces = self.service.faces_and_decisions(data)
        except PyRecognizerError as exc:
            raise ValueError(f"the snapshot could not be read: {exc.description}") from None
        self._follow(event, followed, faces, frame_time)
        self._label(event, followed)
        self._count("recognised")  # once its events and sub-label are out: the count means done
        self._count("faces", len(faces))

    def _follow(self, event: FrigateEvent, followed: Followed, faces: list, frame_time: float) -> None:
        """Publish a ``new`` event per face not seen yet in this Frigate event, an ``update``
        per known face whose confidence improved."""
        unknown = 0
        for face, decision in faces:
            name = decision.name if decision is not None else UNKNOWN
            confidence = float(decision.confidence) if decision is not None else 0.0
            if name == UNKNOWN:
                key, unknown = f"{UNKNOWN}#{unknown}", unknown + 1
            else:
                key = name
            track = followed.tracks.get(key)
            if track is None:
                track = followed.tracks[key] = Track(next(self.track_ids), name, confidence, box_dict(face.box))
                self._publish("new", event, track, frame_time)
            elif name != UNKNOWN and confidence > track.confidence:
                track.confidence, track.box = confidence, box_dict(face.box)
                self._publish("update", event, track, frame_time)

    def _label(self, event: FrigateEvent, followed: Followed) -> None:
        """Set the sub-label to the known people sure enough (names sorted, as Double Take did)."""
        sure = {track.name: track.confidence for track in followed.tracks.values()
                if track.name != UNKNOWN and track.confidence >= float(self.settings.sub_label_min_confidence)}
        if not sure:
            return
        label = ", ".join(sorted(sure))
        self.api.set_sub_label(event.id, label, max(sure.values()), event.camera)
        followed.sub_label = label
        self._count("sub_labels")
        log.info("Frigate mode: event %s of %s is %s", event.id, event.camera, label)

    def _publish(self, kind: str, event: FrigateEvent, track: Track, frame_time: float) -> None:
        self.hub.publish(face_event(kind, camera=event.camera, track_id=track.id, name=track.name,
                                    confidence=track.confidence, box=track.box, frame_time=frame_time,
                                    source="frigate", frigate_event_id=event.id))
