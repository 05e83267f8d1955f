"""Who may train, tune and manage models.

REST clients send ``Authorization: Bearer <API token>``; wrong tokens are counted per client
address and refused with 429 past ``security.rate_limits.wrong_token``. Browser users log in
with the admin password and carry a session cookie that names a server-side session
(``api.sessions``): logging out, or a new admin password, ends it for every copy of the cookie.
``create_app`` demands a valid CSRF token of every unsafe request (POST, PUT, PATCH, DELETE)
that carries the cookie or comes from a browser, so a forged cross-site request cannot change
anything; safe methods (GET) only read. Secrets are kept hashed under the data directory; when
none is configured they are generated at first start and printed once.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField
from werkzeug.exceptions import TooManyRequests
from wtforms.validators import DataRequired

from api.context import current_service
from api.limits import limit, wrong_token_allowed, wrong_token_seen
from api.sessions import SessionStore
from datastructure.errors import PyRecognizerError
from conf.config import Security
from datastructure.files import atomic_write

log = logging.getLogger(__name__)

blueprint = Blueprint("auth", __name__)


class Unauthorized(PyRecognizerError):
    """No valid token or session where one is needed (browsers are sent to /login instead)."""

    code, status = "UNAUTHORIZED", 401


@dataclass(frozen=True)
class Credentials:
    """The API token and admin password, as hashes; compared in constant time."""

    token_sha256: str
    password_hash: str

    def token_ok(self, token: str) -> bool:
        """Whether ``token`` is the API token."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(digest, self.token_sha256)

    def password_ok(self, password: str) -> bool:
        """Whether ``password`` is the admin password."""
        return check_password_hash(self.password_hash, password)

    @property
    def password_fingerprint(self) -> str:
        """What sessions record of the password they were opened under (a hash of its salted
        hash): another password, another fingerprint."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()


def secrets_file_content(path) -> dict:
    """Return the stored secrets (hashes and the session key); {} when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_private(path, content: dict) -> None:
    """Write a JSON file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(content, indent=2).encode(), mode=0o600)


def service_secrets(path, security: Security) -> tuple[str, Credentials]:
    """Return the session secret key and the credentials, generating what is missing.

    Configured values (environment or config file) win and are never written down in clear;
    generated ones are shown once, on the console. Both are stored hashed; a configured
    password keeps its stored hash while it is unchanged, so that a new one is noticed and
    ends the sessions opened under the old one (``Credentials.password_fingerprint``).
    """
    stored = secrets_file_content(path)
    changed, shown = False, {}
    if not stored.get("secret_key"):
        stored["secret_key"], changed = secrets.token_hex(32), True
    token, password = security.api_token, security.admin_password
    if not token and not stored.get("api_token_sha256"):
        shown["API token"] = secrets.token_urlsafe(32)
        stored["api_token_sha256"] = hashlib.sha256(shown["API token"].encode()).hexdigest()
    if not password and not stored.get("admin_password_hash"):
        shown["admin password"] = secrets.token_urlsafe(12)
        stored["admin_password_hash"] = generate_password_hash(shown["admin password"])
    elif password and not check_password_hash(stored.get("admin_password_hash") or "", password):
        if stored.get("admin_password_hash"):
            log.warning("the admin password changed: every session opened before is ended")
        stored["admin_password_hash"], changed = generate_password_hash(password), True
    if changed or shown:
        write_private(path, stored)
    for name, value in shown.items():
        # the value goes to the console only: a log file would keep it in clear on disk
        print(f"generated the {name} (shown once, stored hashed in {path}): {value}", flush=True)
        log.warning("generated the %s: shown once on the console, stored hashed in %s", name, path)
    credentials = Credentials(
        token_sha256=hashlib.sha256(token.encode()).hexdigest() if token else stored["api_token_sha256"],
        password_hash=stored["admin_password_hash"])
    return security.secret_key or stored["secret_key"], credentials


def credentials() -> Credentials:
    """Return the credentials of the app handling the current request."""
    return current_app.extensions["pyrecognizer.credentials"]


def session_store() -> SessionStore:
    """Return the open admin sessions of the running service."""
    return SessionStore(current_service().paths.sessions)


# What an anonymous session may hold: Flask-WTF's CSRF token and flashed messages. Anything
# else (the admin login, the dashboard's grant) is honoured only with an open session id.
ANONYMOUS_KEYS = frozenset({"csrf_token", "_flashes"})


def check_session() -> None:
    """Before every request: forget a session cookie whose server-side session is not open
    (logged out, expired, opened under an older password, or never opened here), so that the
    request runs anonymously and the CSRF token the cookie carried no longer matches."""
    if set(session.keys()) <= ANONYMOUS_KEYS:
        return
    if not session_store().is_open(session.get("sid"), credentials().password_fingerprint):
        session.clear()


def bearer_token() -> str | None:
    """Return the token of an ``Authorization: Bearer`` header; None without one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_authorized() -> bool:
    """A valid bearer token, or a logged-in session (its CSRF token is checked on unsafe
    methods only, by ``create_app``: a GET with the session cookie is honoured as is)."""
    token = bearer_token()
    if token is not None:
        return token_accepted(token)
    return is_admin_session()


def is_admin_session() -> bool:
    """Whether the request carries an open admin session (``check_session`` ran before)."""
    return session.get("user") == "admin"


def token_accepted(token: str) -> bool:
    """Whether ``token`` is the API token; raise TooManyRequests (429) once this client address
    has sent too many wrong ones, even for the right one, so that guessing gains nothing.

    Decided once per request (a view and its page both ask): a wrong token counts once, and
    the error page of a refused one does not raise again.
    """
    if "token_accepted" in g:
        return g.token_accepted
    g.token_accepted = False
    if not wrong_token_allowed():
        raise TooManyRequests("too many wrong API tokens from this address: wait, then try again")
    if credentials().token_ok(token):
        g.token_accepted = True
    else:
        wrong_token_seen()
        log.warning("wrong API token from %s", request.remote_addr)
    return g.token_accepted


def admin_login_required() -> None:
    """Refuse the request with 401 (a browser: the login page) unless an admin session is open.
    The dashboard runs this before every one of its views (``api.dashboard``)."""
    if not is_admin_session():
        raise Unauthorized("log in at /login")


def login_required(view):
    """Refuse the request with 401 unless ``is_authorized()``."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not is_authorized():
            raise Unauthorized("send 'Authorization: Bearer <API token>', or log in at /login")
        return view(*args, **kwargs)

    return wrapper


def dialect_key_checked(key_of, *, required: bool, refused):
    """Decorate a view of an API dialect whose clients send the API token their own way
    (``key_of()``: DeepStack's form field, CompreFace's header). A key sent must be the token,
    and a wrong one counts towards the limit of wrong tokens as a bearer token does; with no
    key, ``required`` (or /predict's policy when False) decides. ``refused("wrong" or
    "missing")`` returns the dialect's own error to raise."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            key = key_of()
            if key:
                if not token_accepted(key):
                    raise refused("wrong")
            elif (required or current_service().config.security.predict_requires_token) and not is_authorized():
                raise refused("missing")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def dialect_caller_authorized() -> bool:
    """Whether the caller of a dialect's view (``dialect_key_checked`` ran) holds the token:
    its key was accepted, or a bearer token or admin session (``is_authorized``)."""
    return bool(g.get("token_accepted")) or is_authorized()


def predict_access_required(purpose: str):
    """Decorate a view with /predict's access policy: when ``security.predict_requires_token``
    is set, refuse it with 401 unless ``is_authorized()`` (``purpose`` ends the message)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if current_service().config.security.predict_requires_token and not is_authorized():
                raise Unauthorized(f"this service asks for 'Authorization: Bearer <API token>' {purpose}")
            return view(*args, **kwargs)

        return wrapper

    return decorate


class LoginForm(FlaskForm):
    """The login page's form: the admin password (and Flask-WTF's CSRF token)."""

    password = PasswordField("Admin password", validators=[DataRequired()])


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the home page (no open redirect,
    and no control character or backslash, which a browser drops or reads as a slash and
    which no Location header may carry)."""
    target = target or ""
    if any(character < " " or character in "\\\x7f" for character in target):
        return url_for("pages.predict_page")
    parts = urlsplit(target)
    if target and not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("pages.predict_page")


@blueprint.route("/login", methods=["GET", "POST"])
@limit("login", methods=["POST"])
def login():
    """GET: the login page; POST: check the password, open a session, go back to ``next``."""
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        if credentials().password_ok(form.password.data):
            session.clear()
            session.permanent = True
            lifetime = current_app.permanent_session_lifetime.total_seconds()
            session["sid"] = session_store().open(lifetime, credentials().password_fingerprint)
            session["user"] = "admin"
            grant_dashboard()
            log.info("admin logged in from %s", request.remote_addr)
            return redirect(safe_next(request.args.get("next")))
        log.warning("failed login from %s", request.remote_addr)
        error = "Wrong password."
    status = 401 if error else 200
    return render_template("login.html", form=form, error=error), status


@blueprint.post("/logout")
def logout():
    """End the session and go to the home page."""
    end_session()
    return redirect(url_for("pages.predict_page"))


def end_session() -> None:
    """End the current session, on the server too: a saved copy of its cookie opens nothing
    after. The dashboard's own logout calls it as well (``api.dashboard``)."""
    session_store().close(session.get("sid"))
    session.clear()


def grant_dashboard() -> None:
    """Log the admin into Flask-MonitoringDashboard too: one login for the whole service."""
    grant = current_app.extensions.get("pyrecognizer.dashboard_grant")
    if grant:
        session.update(grant())
