"""A stand-in for Frigate 0.18.0, for Frigate mode's tests: the HTTP routes PyRecognizer uses,
answering as Frigate's frigate/api/ does (media.py: latest_frame, event_snapshot; event.py:
set_sub_label with defs/request/events_body.py's EventsSubLabelBody; app.py: version), and the
``frigate/events`` MQTT payload of docs/docs/integrations/mqtt.md (type, before, after)."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

VERSION = "0.18.0"


class FrigateStandIn:
    """Frigate's API on 127.0.0.1: ``snapshots`` by event id, ``latest`` frames by camera,
    ``events`` it knows; it records every request and every sub-label set."""

    def __init__(self):
        self.snapshots: dict[str, bytes] = {}
        self.latest: dict[str, bytes] = {}
        self.events: set[str] = set()
        self.sub_labels: list[tuple[str, dict]] = []  # (event id, the JSON body)
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                standin.record("GET", self.path)
                path = unquote(urlsplit(self.path).path)
                if path == "/api/version":
                    return self.answer(200, VERSION.encode(), "text/plain; charset=utf-8")
                if match := re.fullmatch(r"/api/events/([^/]+)/snapshot\.jpg", path):
                    data = standin.snapshots.get(match[1])
                    if data is None:  # event_snapshot: no snapshot (yet), or an event it does not know
                        message = "Snapshot not available" if match[1] in standin.events else "Live frame not available"
                        return self.json(404, {"success": False, "message": message})
                    return self.answer(200, data, "image/jpeg", {"X-Frame-Time": str(time.time() - 0.5),
                                                                 "Cache-Control": "no-store"})
                if match := re.fullmatch(r"/api/([^/]+)/latest\.(jpg|jpeg)", path):
                    data = standin.latest.get(match[1])
                    if data is None:
                        return self.json(404, {"success": False, "message": "Camera not found"})
                    return self.answer(200, data, "image/jpeg", {"Cache-Control": "no-store"})
                self.json(404, {"detail": "Not Found"})

            def do_POST(self):
                standin.record("POST", self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = re.fullmatch(r"/api/events/([^/]+)/sub_label", unquote(urlsplit(self.path).path))
                if not match:
                    return self.json(404, {"detail": "Not Found"})
                problems = sub_label_problems(body)
                if problems:  # FastAPI's answer to a body its pydantic model refuses
                    return self.json(422, {"detail": problems})
                if match[1] not in standin.events:
                    return self.json(404, {"success": False, "message": f"Event {match[1]} not found."})
                request = json.loads(body)
                with standin.lock:
                    standin.sub_labels.append((match[1], request))
                label = request["subLabel"] or None
                self.json(200, {"success": True, "message": f"Event {match[1]} sub label set to {label}"})

            def json(self, status, body):
                self.answer(status, json.dumps(body).encode(), "application/json")

            def answer(self, status, data, content_type, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(self, method: str, path: str) -> None:
        with self.lock:
            self.requests.append((method, path))

    def requested(self, fragment: str) -> list[str]:
        """The paths requested that contain ``fragment``."""
        with self.lock:
            return [path for _, path in self.requests if fragment in path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sub_label_problems(body: bytes) -> list[dict]:
    """What EventsSubLabelBody refuses: subLabel a text of at most 100 characters (required),
    subLabelScore null or in (0, 1], camera null or a text."""
    try:
        request = json.loads(body)
    except ValueError:
        return [{"type": "json_invalid", "loc": ["body"]}]
    if not isinstance(request, dict):
        return [{"type": "model_attributes_type", "loc": ["body"]}]
    problems = []
    label, score, camera = request.get("subLabel"), request.get("subLabelScore"), request.get("camera")
    if not isinstance(label, str) or len(label) > 100:
        problems.append({"type": "string_type", "loc": ["body", "subLabel"]})
    if score is not None and (not isinstance(score, (int, float)) or not 0 < score <= 1):
        problems.append({"type": "less_than_equal", "loc": ["body", "subLabelScore"]})
    if camera is not None and not isinstance(camera, str):
        problems.append({"type": "string_type", "loc": ["body", "camera"]})
    return problems


def tracked_object(event_id: str, camera: str, label: str, *, frame_time: float, has_snapshot: bool,
                   ended: bool = False) -> dict:
    """One ``before``/``after`` object, with every field the documentation's example shows."""
    return {"id": event_id, "camera": camera, "frame_time": frame_time,
            "snapshot": {"frame_time": frame_time, "box": [415, 489, 528, 700], "area": 12728,
                         "region": [260, 446, 660, 846], "score": 0.77546, "attributes": []},
            "label": label, "sub_label": None, "top_score": 0.958984375, "false_positive": False,
            "start_time": frame_time - 2, "end_time": frame_time if ended else None, "score": 0.87890625,
            "box": [432, 496, 544, 854], "area": 40096, "ratio": 1.251397, "region": [218, 440, 693, 915],
            "current_zones": ["yard"], "entered_zones": ["yard"], "thumbnail": None, "has_snapshot": has_snapshot,
            "has_clip": False, "active": True, "stationary": False, "motionless_count": 0, "position_changes": 2,
            "attributes": {"face": 0.86}, "current_attributes": [{"label": "face", "box": [442, 506, 534, 524],
                                                                   "score": 0.86}],
            "current_estimated_speed": 0, "average_estimated_speed": 0, "velocity_angle": 0,
            "recognized_license_plate": None, "recognized_license_plate_score": None}


def event_message(kind: str, event_id: str, camera: str, *, label: str = "person", has_snapshot: bool = True) -> bytes:
    """A ``frigate/events`` message: ``type`` new, update or end, with ``before`` and ``after``."""
    now = time.time()
    before = tracked_object(event_id, camera, label, frame_time=now - 0.2, has_snapshot=has_snapshot)
    after = tracked_object(event_id, camera, label, frame_time=now, has_snapshot=has_snapshot, ended=kind == "end")
    return json.dumps({"type": kind, "before": before, "after": after}).encode()
