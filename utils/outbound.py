"""Requests this service sends out (webhooks, Frigate's HTTP API) and URLs it logs.

Those URLs are configuration, and often hold secrets: a broker's or Frigate's password, a
webhook's token in its query. ``redacted`` is what a log line or an error shows of one. An
outbound request never follows a redirect: a webhook or a Frigate that answers 3xx is a
misconfiguration to report, not a reason to send the event or a sub-label somewhere else
(perhaps on another scheme).
"""
from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit


def redacted(url: str) -> str:
    """Return ``url`` as logs may show it: scheme, host and port (no user, password, path or query)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        host = parts.hostname or "?"
    except ValueError:
        return "<an invalid URL>"
    return f"{parts.scheme}://{host}{port}"


class RefusedRedirect(urllib.request.HTTPRedirectHandler):
    """Turn a 3xx into an HTTPError instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect refused ({code})", headers, fp)


def opener() -> urllib.request.OpenerDirector:
    """Return a urllib opener that follows no redirect (proxies as the environment sets them)."""
    return urllib.request.build_opener(RefusedRedirect())


def limited_read(response, limit: int) -> bytes:
    """Return the body of ``response``; ValueError when it is longer than ``limit`` bytes."""
    data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"the answer is larger than {limit} bytes")
    return data
