"""The Flask application factory: configuration, secrets, CSRF, limits, headers, blueprints, errors."""
from __future__ import annotations

import secrets
from datetime import timedelta

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFProtect

from api import apidocs, auth, cameras, compreface, deepstack, faces, pages, people, rest, verify, video
from api.context import install_service
from api.dashboard import init_dashboard
from api.dashboard_assets import serve_dashboard_assets_locally
from api.errors import register_error_handlers
from api.limits import limiter
from api.negotiation import negotiate
from conf.config import Config, load_config
from utils.service import build_service

# Our pages load nothing from elsewhere (the video page plays the chosen file from a blob: URL);
# the dashboard's pages get theirs (api/dashboard_assets.py); /docs runs Swagger UI from
# api/static/vendor/ (api/apidocs.py).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; script-src 'self'; "
                           "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def from_browser() -> bool:
    """True when a browser sent the request: it carries our session cookie or an Origin.

    Browsers always send Origin on cross-site POSTs and cannot drop it, so a forged
    cross-site form is always checked; REST clients send neither and need no CSRF token.
    """
    return bool(request.cookies.get(current_app.config["SESSION_COOKIE_NAME"])
                or request.headers.get("Origin") or request.headers.get("Sec-Fetch-Site"))


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with bodies nested past the interpreter's recursion limit refused as
    invalid JSON (a 400 in each route's own shape, through ``request.get_json``) instead of
    a RecursionError, its 500 and its 40-line traceback."""

    sort_keys = False

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON body is nested too deep") from None


def create_app(config: Config | None = None) -> Flask:
    """Build the service from ``config`` (``load_config()`` when None) and the app serving it."""
    config = config or load_config()
    service = build_service(config)
    security, limits = config.security, config.limits
    secret_key, credentials = auth.service_secrets(service.paths.secrets, security)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key, MAX_CONTENT_LENGTH=limits.max_content_length,
        MAX_FORM_MEMORY_SIZE=limits.max_form_memory_size, MAX_FORM_PARTS=limits.max_form_parts,
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=security.tls,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=security.session_hours),
        WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None,
        RATELIMIT_STORAGE_URI=security.rate_limit_storage,
        # a moving window: a fixed one lets a guesser spend two windows' worth around each
        # minute's turn (10 guesses at 0:59, 10 more at 1:00)
        RATELIMIT_STRATEGY="moving-window")
    app.json = JSONProvider(app)
    install_service(app, service)
    app.extensions["pyrecognizer.credentials"] = credentials

    csrf = CSRFProtect(app)
    # First of all: a cookie whose server-side session was ended counts for nothing, its CSRF
    # token included.
    app.before_request(auth.check_session)

    @app.before_request
    def check_csrf():
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and from_browser():
            csrf.protect(apply_exemptions=True)

    limiter.init_app(app)
    for blueprint in (rest.blueprint, people.blueprint, pages.blueprint, auth.blueprint, verify.blueprint,
                      deepstack.blueprint, compreface.blueprint, video.blueprint, cameras.blueprint,
                      faces.blueprint, apidocs.blueprint):
        app.register_blueprint(blueprint)
    negotiate(app, pages.PAGES)
    negotiate(app, video.PAGES)
    negotiate(app, cameras.PAGES)
    register_error_handlers(app)
    add_security_headers(app, tls=security.tls)
    if config.dashboard.enabled:
        serve_dashboard_assets_locally(app)

        # Nobody logs in through the dashboard's own form (its password is random at every
        # start): logging in at /login opens the dashboard too (see api.auth.grant_dashboard).
        init_dashboard(app, database_path=service.paths.dashboard_db, username=config.dashboard.username,
                       password=secrets.token_urlsafe(32), monitor_level=config.dashboard.monitor_level,
                       sampling_period=config.dashboard.sampling_period,
                       require_login=auth.admin_login_required, logout=auth.end_session)
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
        # names, jobs, models: no shared or browser cache keeps an answer (views may say otherwise);
        # static files keep their caching
        with_credentials = from_browser() or request.headers.get("Authorization")
        if response.mimetype == "application/json" or response.mimetype == "text/html" and with_credentials:
            response.headers.setdefault("Cache-Control", "no-store")
        if tls:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response
