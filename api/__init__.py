"""The Flask application factory: configuration, secrets, CSRF, limits, headers, blueprints, errors."""
from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from flask import Flask, current_app, redirect, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from conf.config import load_config
from datastructure.errors import PyRecognizerError
from datastructure.response import envelope
from utils.service import Service, build_service

log = logging.getLogger(__name__)

HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
              413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "TOO_MANY_REQUESTS"}
# Our pages load nothing from elsewhere; the dashboard's pages get theirs (api/dashboard_assets.py).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                           "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def service() -> Service:
    """Return the engine of the app handling the current request."""
    return current_app.extensions["pyrecognizer"]


def from_browser() -> bool:
    """True when a browser sent the request: it carries our session cookie or an Origin.

    Browsers always send Origin on cross-site POSTs and cannot drop it, so a forged
    cross-site form is always checked; REST clients send neither and need no CSRF token.
    """
    return bool(request.cookies.get(current_app.config["SESSION_COOKIE_NAME"])
                or request.headers.get("Origin") or request.headers.get("Sec-Fetch-Site"))


def create_app(config: dict | None = None) -> Flask:
    """Build the service from ``config`` (``load_config()`` when None)."""
    from api.auth import service_secrets

    config = config or load_config()
    engine = build_service(config)
    security, limits = config["security"], config["limits"]
    secret_key, credentials = service_secrets(engine.paths.secrets, security)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key, MAX_CONTENT_LENGTH=int(limits["max_content_length"]),
        MAX_FORM_MEMORY_SIZE=int(limits["max_form_memory_size"]), MAX_FORM_PARTS=int(limits["max_form_parts"]),
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=bool(security["tls"]),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=float(security["session_hours"])),
        WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None, PYRECOGNIZER=config)
    app.json.sort_keys = False
    app.extensions["pyrecognizer"] = engine
    app.extensions["pyrecognizer.credentials"] = credentials

    csrf = CSRFProtect(app)

    @app.before_request
    def check_csrf():
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and from_browser():
            csrf.protect(apply_exemptions=True)

    from api import auth, pages, rest, verify
    from api.limits import limiter

    limiter.init_app(app)
    for blueprint in (rest.blueprint, pages.blueprint, auth.blueprint, verify.blueprint):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    add_security_headers(app, tls=bool(security["tls"]))
    if config["dashboard"]["enabled"]:
        from api.dashboard import init_dashboard
        from api.dashboard_assets import serve_dashboard_assets_locally

        serve_dashboard_assets_locally(app)

        # Nobody logs in through the dashboard's own form (its password is random at every
        # start): logging in at /login opens the dashboard too (see api.auth.grant_dashboard).
        init_dashboard(app, database_path=engine.paths.dashboard_db, username=config["dashboard"]["username"],
                       password=secrets.token_urlsafe(32), monitor_level=int(config["dashboard"]["monitor_level"]),
                       sampling_period=float(config["dashboard"]["sampling_period"]))
    return app


def add_security_headers(app: Flask, *, tls: bool) -> None:
    """Headers on every answer: no sniffing, no framing, no third-party code, HSTS under TLS."""

    @app.after_request
    def headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        if not request.path.startswith("/dashboard"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if tls:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response


def register_error_handlers(app: Flask) -> None:
    """Every error becomes the JSON envelope with a fitting status, never a stack trace; a
    browser posting a plain form (it prefers HTML) gets the same error as a page."""
    from api.auth import Unauthorized
    from api.pages import error_page, wants_html

    def answer(code: str, description: str, status: int, data=None, headers=()):
        if wants_html():
            if code == Unauthorized.code:
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")), 303)
            response = error_page(code, description, status, data)
            response.headers.extend(headers)
            return response
        return envelope(data, description=description, error=code, status="KO"), status, list(headers)

    @app.errorhandler(PyRecognizerError)
    def typed_error(exc: PyRecognizerError):
        return answer(exc.code, exc.description, exc.status, exc.data)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return answer("CSRF_FAILED", exc.description, 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        headers = [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]
        return answer(HTTP_CODES.get(exc.code, "HTTP_ERROR"), exc.description, exc.code, headers=headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return answer("INTERNAL_ERROR", "internal error: see the service log", 500)
