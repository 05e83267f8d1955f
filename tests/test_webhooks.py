"""Webhooks: events POSTed to a real HTTP receiver, whose signature it verifies the way
docs/integrations-mqtt.md tells receivers to, retried after failures, never redirected."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conf.config import ConfigError
from tests.support import make_config
from utils.events import EventHub, face_event
from utils.webhooks import webhook_sinks

SECRET = "webhook-secret-0123456789"


class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next of ``answers`` (then 200)."""

    def __init__(self, *answers: int, location: str | None = None):
        self.answers, self.location = list(answers), location
        self.requests: list[tuple] = []  # (headers, body, status)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.requests.append((self.headers, body, status))  # names case-insensitive
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=query-secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def verified(headers: dict, body: bytes, secret: str = SECRET, tolerance: float = 300) -> bool:
    """The receiver's check, as the documentation gives it."""
    timestamp = headers["X-PyRecognizer-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-PyRecognizer-Signature"]) and \
        abs(time.time() - int(timestamp)) <= tolerance


def hub_for(tmp_path, *receivers: Receiver, retries: int = 3) -> EventHub:
    config = make_config(tmp_path / "data", webhooks={"urls": [r.url for r in receivers], "secret": SECRET,
                                                      "retries": retries, "backoff": 0.05, "timeout": 5})
    return EventHub(webhook_sinks(config))


def delivered(hub: EventHub, count: int = 1, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = hub.stats()["sinks"]
        if sum(s["sent"] + s["failed"] for s in stats.values()) >= count:
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.02)


def an_event() -> dict:
    return face_event("new", camera="front", track_id=1, name="Lin-Manuel Miranda", confidence=0.93,
                      box={"top": 1, "right": 2, "bottom": 3, "left": 0}, frame_time=time.time())


def test_events_are_posted_signed(tmp_path):
    receiver, other = Receiver(), Receiver()
    hub = hub_for(tmp_path, receiver, other)
    event = an_event()
    try:
        hub.publish(event)
        delivered(hub, 2)
        for target in (receiver, other):
            [(headers, body, status)] = target.requests
            assert json.loads(body) == event and headers["Content-Type"] == "application/json"
            assert headers["X-PyRecognizer-Event"] == event["id"]
            assert verified(headers, body)
            assert not verified(headers, body.replace(b"Lin-Manuel", b"Alex"))  # a changed body fails
            assert not verified(headers, body, secret="another-secret-0123456789")
    finally:
        hub.close()
        receiver.close()
        other.close()
    assert "query-secret" not in json.dumps(hub.stats())  # sinks are named by scheme, host and port


def test_a_failing_receiver_gets_the_event_again_with_backoff(tmp_path):
    receiver = Receiver(503, 500)
    hub = hub_for(tmp_path, receiver)
    try:
        event = an_event()
        hub.publish(event)
        stats = delivered(hub)
        assert [s["sent"] for s in stats.values()] == [1]
        assert [status for _, _, status in receiver.requests] == [503, 500, 200]
        assert {headers["X-PyRecognizer-Event"] for headers, _, _ in receiver.requests} == {event["id"]}
        assert all(verified(headers, body) for headers, body, _ in receiver.requests)
    finally:
        hub.close()
        receiver.close()


def test_a_receiver_that_is_down_then_up_gets_the_event(tmp_path):
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # nothing listens on its port now
    config = make_config(tmp_path / "data", webhooks={"urls": [url], "secret": SECRET, "retries": 2,
                                                      "backoff": 0.05, "timeout": 2})
    hub = EventHub(webhook_sinks(config))
    try:
        hub.publish(an_event())
        stats = delivered(hub)
        assert [(s["sent"], s["failed"]) for s in stats.values()] == [(0, 1)]
        assert hub.queues[0].sink.attempts == 3  # the first try and two retries
    finally:
        hub.close()


def test_refusals_are_not_retried_and_redirects_not_followed(tmp_path):
    elsewhere = Receiver()
    refusing, redirecting = Receiver(400), Receiver(307, location=elsewhere.url)
    hub = hub_for(tmp_path, refusing, redirecting)
    try:
        hub.publish(an_event())
        stats = delivered(hub, 2)
        assert [(s["sent"], s["failed"]) for s in stats.values()] == [(0, 1), (0, 1)]
        assert len(refusing.requests) == 1 and len(redirecting.requests) == 1
        assert elsewhere.requests == []
    finally:
        hub.close()
        for receiver in (elsewhere, refusing, redirecting):
            receiver.close()


def test_webhooks_need_a_secret_and_http_urls(tmp_path):
    with pytest.raises(ConfigError, match="webhooks.secret"):
        webhook_sinks(make_config(tmp_path, webhooks={"urls": ["http://127.0.0.1:1/"]}))
    with pytest.raises(ConfigError, match="not an http"):
        webhook_sinks(make_config(tmp_path, webhooks={"urls": ["file:///etc/passwd"], "secret": SECRET}))
    with pytest.raises(ConfigError, match="too short"):
        make_config(tmp_path, webhooks={"secret": "short"})
    assert webhook_sinks(make_config(tmp_path)) == []
