"""Events out as webhooks: each event POSTed as JSON to every configured URL, signed.

The signature lets a receiver check that the event comes from this service and was not
changed or replayed later:

    X-PyRecognizer-Timestamp: 1796000000            (seconds, when this attempt was sent)
    X-PyRecognizer-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with webhooks.secret>
    X-PyRecognizer-Event: <the event's id>          (the same on every retry: deduplicate on it)

A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes, compares it
in constant time, and refuses timestamps older than a few minutes (docs/integrations-mqtt.md
has a verifier). A POST that fails (no connection, a timeout, a 5xx, 408 or 429) is tried
again after ``webhooks.backoff`` seconds, doubling up to 60 s, at most ``webhooks.retries``
times; any other answer (2xx done, 4xx refused) ends it. Each URL is its own sink with its own
queue and thread in the hub, so a slow receiver delays nobody else, and recognition never.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request

from conf.config import ConfigError, Webhooks
from utils.outbound import opener, redacted

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-PyRecognizer-Signature"
TIMESTAMP_HEADER = "X-PyRecognizer-Timestamp"
EVENT_HEADER = "X-PyRecognizer-Event"
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF = 60.0


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_valid(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether ``header`` signs ``body`` at ``timestamp`` (what a receiver checks; constant time)."""
    return hmac.compare_digest(signature(secret, timestamp, body), header or "")


class WebhookSink:
    """The hub's sink for one URL."""

    def __init__(self, url: str, settings: Webhooks, number: int = 1):
        self.url, self.settings = url, settings
        # the path and query often hold the secret (Home Assistant's webhook id): never shown
        self.name = f"webhook {number} {redacted(url)}"
        self.opener = opener()
        self.closing = threading.Event()
        self.attempts = 0

    def send(self, event: dict) -> None:
        """POST ``event``, retrying with backoff; raise when every try failed or it was refused."""
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        delay = float(self.settings.backoff)
        for attempt in range(int(self.settings.retries) + 1):
            if attempt:
                if self.closing.wait(delay):
                    raise ConnectionError(f"{self.name}: closed before the event was delivered")
                delay = min(MAX_BACKOFF, delay * 2)
            error = self._post(body, event["id"])
            if error is None:
                return
            retry, reason = error
            if not retry:
                raise ConnectionError(f"{self.name} refused event {event['id']}: {reason}")
            log.info("%s: attempt %d failed (%s)", self.name, attempt + 1, reason)
        raise ConnectionError(f"{self.name}: event {event['id']} not delivered after "
                              f"{int(self.settings.retries) + 1} attempts ({reason})")

    def _post(self, body: bytes, event_id: str) -> tuple[bool, str] | None:
        """POST once: None when delivered, else (whether to retry, why it failed)."""
        self.attempts += 1
        timestamp = str(int(time.time()))
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "PyRecognizer-webhook",
            TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(self.settings.secret, timestamp, body),
            EVENT_HEADER: event_id})
        try:
            with self.opener.open(request, timeout=float(self.settings.timeout)) as response:
                response.read(65536)
            return None
        except urllib.error.HTTPError as exc:
            return exc.code in RETRIED_STATUSES, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:  # no connection, a timeout, a reset
            return True, str(getattr(exc, "reason", exc)) or type(exc).__name__

    def close(self) -> None:
        """Stop waiting between retries."""
        self.closing.set()


def webhook_sinks(config) -> list[WebhookSink]:
    """Return one sink per ``webhooks.urls`` entry; ConfigError for URLs without a secret or
    that are not http(s)."""
    settings = config.webhooks
    if not settings.urls:
        return []
    if not settings.secret:
        raise ConfigError("webhooks.urls needs webhooks.secret (PYRECOGNIZER_WEBHOOK_SECRET): events are signed with it")
    for url in settings.urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhooks.urls: {redacted(url)} is not an http:// or https:// URL")
    return [WebhookSink(url, settings, number) for number, url in enumerate(settings.urls, 1)]
