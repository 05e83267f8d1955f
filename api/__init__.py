"""The Flask application factory: configuration, logging, CSRF, dashboard, blueprints, errors."""
from __future__ import annotations

import json
import logging
import os
import secrets

from flask import Flask, current_app, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from conf.config import Paths, load_config
from datastructure.errors import PyRecognizerError
from datastructure.response import envelope, error_envelope
from utils.service import Service, build_service

log = logging.getLogger(__name__)

HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE",
              415: "UNSUPPORTED_MEDIA_TYPE", 429: "TOO_MANY_REQUESTS"}


def service() -> Service:
    """Return the engine of the app handling the current request."""
    return current_app.extensions["pyrecognizer"]


def stored_secrets(paths: Paths, config: dict) -> dict:
    """Return the secret key and dashboard password: configured, or generated once and kept
    (mode 0600) under the data directory so restarts and workers share them."""
    try:
        stored = json.loads(paths.secrets.read_text())
    except (OSError, ValueError):
        stored = {}
    generated = {}
    if "secret_key" not in stored:
        generated["secret_key"] = secrets.token_hex(32)
    if "dashboard_password" not in stored:
        generated["dashboard_password"] = secrets.token_urlsafe(12)
    if generated:
        stored.update(generated)
        paths.secrets.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(paths.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(stored, handle)
        if "dashboard_password" in generated and not config["dashboard"]["password"]:
            log.warning("generated the dashboard password for user %r: %s (kept in %s)",
                        config["dashboard"]["username"], stored["dashboard_password"], paths.secrets)
    return {"secret_key": config.get("secret_key") or stored["secret_key"],
            "dashboard_password": config["dashboard"]["password"] or stored["dashboard_password"]}


def from_browser() -> bool:
    """True when a browser sent the request: it carries our session cookie or an Origin.

    Browsers always send Origin on cross-site POSTs and cannot drop it, so a forged
    cross-site form is always checked; REST clients send neither and need no CSRF token.
    """
    return bool(request.cookies.get(current_app.config["SESSION_COOKIE_NAME"])
                or request.headers.get("Origin") or request.headers.get("Sec-Fetch-Site"))


def create_app(config: dict | None = None) -> Flask:
    """Build the service from ``config`` (``load_config()`` when None)."""
    config = config or load_config()
    engine = build_service(config)
    app = Flask(__name__)
    keys = stored_secrets(engine.paths, config)
    limits = config["limits"]
    app.config.update(
        SECRET_KEY=keys["secret_key"], MAX_CONTENT_LENGTH=int(limits["max_content_length"]),
        MAX_FORM_MEMORY_SIZE=int(limits["max_form_memory_size"]), MAX_FORM_PARTS=int(limits["max_form_parts"]),
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None, JSON_SORT_KEYS=False, PYRECOGNIZER=config)
    app.json.sort_keys = False

    app.extensions["pyrecognizer"] = engine

    csrf = CSRFProtect(app)

    @app.before_request
    def check_csrf():
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and from_browser():
            csrf.protect()

    from api import pages, rest

    app.register_blueprint(rest.blueprint)
    app.register_blueprint(pages.blueprint)
    register_error_handlers(app)
    if config["dashboard"]["enabled"]:
        from api.dashboard import init_dashboard

        init_dashboard(app, database_path=engine.paths.dashboard_db, username=config["dashboard"]["username"],
                       password=keys["dashboard_password"], monitor_level=int(config["dashboard"]["monitor_level"]),
                       sampling_period=float(config["dashboard"]["sampling_period"]))
    return app


def register_error_handlers(app: Flask) -> None:
    """Every error becomes the JSON envelope with a fitting status, never a stack trace."""

    @app.errorhandler(PyRecognizerError)
    def typed_error(exc: PyRecognizerError):
        return error_envelope(exc), exc.status

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return envelope(None, description=exc.description, error="CSRF_FAILED", status="KO"), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = HTTP_CODES.get(exc.code, "HTTP_ERROR")
        return envelope(None, description=exc.description, error=code, status="KO"), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return envelope(None, description="internal error: see the service log", error="INTERNAL_ERROR",
                        status="KO"), 500
