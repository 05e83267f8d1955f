"""Events of faces seen on cameras (and in Frigate's person events), and the hub that hands each
one to every sink (MQTT, webhooks, the journal the pages' server-sent events read) without
ever making recognition wait.

An event is a plain JSON-serialisable dict, built by ``face_event``:

    {"id": "…", "type": "new"|"update"|"end", "camera": "front", "source": "camera"|"frigate",
     "track_id": 3, "name": "Lin-Manuel Miranda" or "unknown", "unknown_id": 1 or None,
     "confidence": 0.93, "box": {"top", "right", "bottom", "left"}, "time": 1796000000.25,
     "crop_url": "/cameras/front/crops/…jpg" or None, "face_id": "…" or None,
     "frigate_event_id": "…" or None}

``time`` is the wall-clock time of the frame the decision came from, not of the sending.

Each sink gets its own bounded queue and thread: a sink that is slow or unreachable (a
broker that went away, a webhook that times out) fills its own queue, whose oldest events are
then dropped and counted, and never delays the camera loop or another sink.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Protocol

from datastructure.files import atomic_write

from utils.mqtt import mqtt_sinks
from utils.webhooks import webhook_sinks

log = logging.getLogger(__name__)

EVENT_TYPES = ("new", "update", "end")


def face_event(type_: str, *, camera: str, track_id: int, name: str, confidence: float, box: dict,
               frame_time: float, source: str = "camera", unknown_id: int | None = None,
               crop_url: str | None = None, face_id: str | None = None,
               frigate_event_id: str | None = None) -> dict:
    """Return one event as the sinks receive it (see the module's docstring)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"event type {type_!r} is not one of {EVENT_TYPES}")
    return {"id": uuid.uuid4().hex, "type": type_, "camera": camera, "source": source,
            "track_id": int(track_id), "name": name, "unknown_id": unknown_id,
            "confidence": round(float(confidence), 4), "box": dict(box), "time": float(frame_time),
            "crop_url": crop_url, "face_id": face_id, "frigate_event_id": frigate_event_id}


class Sink(Protocol):
    """Where events go: ``send`` may block or raise (the hub's thread for this sink absorbs it)."""

    name: str

    def send(self, event: dict) -> None: ...

    def close(self) -> None: ...


class SinkQueue:
    """One sink's bounded queue and the thread that empties it into the sink."""

    def __init__(self, sink: Sink, size: int):
        self.sink, self.size = sink, size
        self.queue: deque = deque()
        self.ready = threading.Condition()
        self.sent = self.dropped = self.failed = 0
        self.closing = False
        self.thread = threading.Thread(target=self.run, name=f"events-{sink.name}", daemon=True)
        self.thread.start()

    def put(self, event: dict) -> None:
        """Queue ``event``; when full, drop the oldest queued one (and count it)."""
        with self.ready:
            if len(self.queue) >= self.size:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(event)
            self.ready.notify()

    def run(self) -> None:
        """Send queued events one at a time until closed."""
        while True:
            with self.ready:
                while not self.queue and not self.closing:
                    self.ready.wait()
                if not self.queue:
                    return
                event = self.queue.popleft()
            try:
                self.sink.send(event)
                self.sent += 1
            except Exception as exc:  # a sink's failure is its own: count it, keep the others going
                self.failed += 1
                log.warning("event sink %s: %s", self.sink.name, exc)

    def stats(self) -> dict:
        """Return the sink's counters: sent, dropped (queue full), failed (send raised), queued."""
        with self.ready:
            return {"sent": self.sent, "dropped": self.dropped, "failed": self.failed, "queued": len(self.queue)}

    def close(self, timeout: float) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then close the sink."""
        with self.ready:
            self.closing = True
            self.ready.notify()
        self.thread.join(timeout)
        try:
            self.sink.close()
        except Exception as exc:
            log.warning("event sink %s did not close cleanly: %s", self.sink.name, exc)


class EventHub:
    """Hands every published event to each sink's own queue; ``publish`` never blocks."""

    def __init__(self, sinks: list[Sink] = (), queue_size: int = 1000):
        self.queue_size = queue_size
        self.queues: list[SinkQueue] = [SinkQueue(sink, queue_size) for sink in sinks]
        self.published = 0

    def add(self, sink: Sink) -> None:
        """Start handing events to ``sink`` too."""
        self.queues.append(SinkQueue(sink, self.queue_size))

    def publish(self, event: dict) -> None:
        """Queue ``event`` for every sink."""
        self.published += 1
        for queue in self.queues:
            queue.put(event)

    def stats(self) -> dict:
        """Return how many events were published and each sink's counters."""
        return {"published": self.published, "sinks": {queue.sink.name: queue.stats() for queue in self.queues}}

    def close(self, timeout: float = 2.0) -> None:
        """Flush and close every sink, giving each at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for queue in self.queues:
            queue.close(max(0.0, deadline - time.monotonic()))


class Journal:
    """The sink that keeps the last ``size`` events in a file, each with a sequence number, for
    the web workers' server-sent events (``/events``) and the Cameras page: one JSON line
    ``{"seq": n, "event": {...}}`` per event. The file is appended to, and rewritten to its last
    ``size`` lines (atomically) once it holds twice as many, so it stays bounded."""

    name = "journal"

    def __init__(self, path: Path, size: int = 500):
        self.path, self.size = Path(path), size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = journal_entries(self.path)
        self.seq = entries[-1]["seq"] if entries else 0
        self.lines = len(entries)

    def send(self, event: dict) -> None:
        """Append ``event`` with the next sequence number; trim the file when it doubled."""
        self.seq += 1
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"seq": self.seq, "event": event}, ensure_ascii=False) + "\n")
        self.lines += 1
        if self.lines >= 2 * self.size:
            kept = journal_entries(self.path)[-self.size:]
            atomic_write(self.path, "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in kept).encode(),
                         durable=False)
            self.lines = len(kept)

    def close(self) -> None:
        """Nothing to release: every event is written when sent."""


def journal_entries(path: Path, after: int = 0) -> list[dict]:
    """Return the journal's entries (``{"seq", "event"}``) with a sequence number above ``after``,
    oldest first; a line cut short by a crash is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and entry["seq"] > after:
            entries.append(entry)
    return entries


def journal_path(paths) -> Path:
    """Return where the journal of a data folder is (``Paths``)."""
    return paths.cameras / "events.jsonl"


def configured_sinks(config, paths, people: Callable[[], list[str] | None] = lambda: None) -> list[Sink]:
    """Return the sinks the configuration asks for: the journal always (the pages' and scripts'
    server-sent events read it), MQTT where ``mqtt.url`` is set (``people``: the active model's,
    for Home Assistant's entities), a webhook per ``webhooks.urls``."""
    return [Journal(journal_path(paths), config.cameras.journal_size), *mqtt_sinks(config, people),
            *webhook_sinks(config)]
