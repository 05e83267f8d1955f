"""The error handlers: every error becomes the JSON envelope with a fitting status, or the same
error as a page for a browser, never a stack trace.

Errors travel as the typed exceptions of ``datastructure.errors`` (each knows its code and
HTTP status); werkzeug's HTTP errors and Flask-WTF's CSRF failures are mapped to codes here.
"""
from __future__ import annotations

import errno
import logging

from flask import Blueprint, Flask, redirect, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from api.auth import Unauthorized
from api.negotiation import render_page, wants_html
from datastructure.errors import InsufficientStorage, PyRecognizerError
from datastructure.response import envelope

log = logging.getLogger(__name__)

HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
              413: "REQUEST_TOO_LARGE", 414: "URI_TOO_LONG", 415: "UNSUPPORTED_MEDIA_TYPE", 417: "EXPECTATION_FAILED",
              429: "TOO_MANY_REQUESTS", 431: "HEADER_FIELDS_TOO_LARGE", 501: "NOT_IMPLEMENTED"}
# The WSGI environ key under which the worker's front (api/worker.py) hands the app an error it
# found before the app ran (a 414 for a request line too long for gunicorn's parser), so that
# the route's own handlers answer it in their shape.
FRONT_ERROR = "pyrecognizer.front_error"
PAGE_BLUEPRINTS = ("pages",)  # whose views are pages: their errors are pages whatever the Accept header


def error_page(code: str, description: str = "", status: int = 500, data=None):
    """A page telling a browser user what went wrong, in words; never JSON or a traceback."""
    return render_page("error.html", status, code=code, description=description, data=data, http_status=status)


def error_answer(code: str, description: str, status: int, data=None, headers=()):
    """The one error renderer: the KO envelope, or for a browser the error page (the login page
    when it must log in first)."""
    if wants_html() or request.blueprint in PAGE_BLUEPRINTS:
        if code == Unauthorized.code:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")), 303)
        response = error_page(code, description, status, data)
        response.headers.extend(headers)
        return response
    return envelope(data, description=description, error=code, status="KO"), status, list(headers)


def retry_headers(exc: PyRecognizerError) -> list[tuple[str, str]]:
    """Return Retry-After for an error that says when to come back (a change refused because
    another holds the store), else nothing."""
    retry_after = getattr(exc, "retry_after", None)
    return [("Retry-After", str(int(retry_after)))] if retry_after else []


def kept_headers(exc: HTTPException) -> list[tuple[str, str]]:
    """Return the headers of werkzeug's answer worth keeping (Allow, Retry-After...), not its HTML type."""
    return [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]


# url prefix -> render of each API dialect: a path under it that no view answers (404, 405)
# is still the dialect's, though no blueprint matched it
DIALECT_RENDERERS: dict[str, object] = {}


def dialect_render(path: str):
    """The error renderer of the dialect whose url prefix ``path`` is under, or None."""
    return next((render for prefix, render in DIALECT_RENDERERS.items()
                 if path == prefix or path.startswith(prefix + "/")), None)


def register_dialect_errors(blueprint: Blueprint, render) -> None:
    """Answer ``blueprint``'s errors in its own API dialect (DeepStack, CompreFace):
    ``render(exc, status, headers)`` shapes the body of our typed errors and of werkzeug's HTTP
    errors alike, under its url prefix too (``dialect_render``). Both dialects answer invalid
    input with 400 where we answer 422."""
    DIALECT_RENDERERS[blueprint.url_prefix] = render

    @blueprint.errorhandler(PyRecognizerError)
    def typed_error(exc: PyRecognizerError):
        return render(exc, 400 if exc.status == 422 else exc.status, retry_headers(exc))

    @blueprint.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return render(exc, exc.code or 500, kept_headers(exc))


def register_error_handlers(app: Flask) -> None:
    """Route every exception a view can raise to ``error_answer``."""

    @app.before_request
    def front_error():
        """Raise the error the worker's front found (see FRONT_ERROR), before anything else runs."""
        error = request.environ.get(FRONT_ERROR)
        if error is not None:
            raise error

    @app.errorhandler(PyRecognizerError)
    def typed_error(exc: PyRecognizerError):
        return error_answer(exc.code, exc.description, exc.status, exc.data, headers=retry_headers(exc))

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_answer("CSRF_FAILED", exc.description, 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        render = dialect_render(request.path)  # a routing error (404, 405): no blueprint's handler ran
        if render is not None:
            return render(exc, exc.code or 500, kept_headers(exc))
        return error_answer(HTTP_CODES.get(exc.code, "HTTP_ERROR"), exc.description, exc.code, headers=kept_headers(exc))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):  # e.g. an activate on a full disk
            log.error("%s %s: the disk is full", request.method, request.path)
            return error_answer(InsufficientStorage.code, "the disk is full: nothing was changed", 507)
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_answer("INTERNAL_ERROR", "internal error: see the service log", 500)
