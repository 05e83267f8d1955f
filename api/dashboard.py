"""Flask-MonitoringDashboard (FMD) 5.1.0 at /dashboard, set up for a self-hosted service.

FMD is a process-wide singleton: one ``config``, one blueprint, and a SQLAlchemy engine that
``flask_monitoringdashboard.database`` creates *when it is first imported*, from
``config.database_name`` (the column defaults, such as an endpoint's monitor level, are read
from ``config`` at that moment too). So this module imports only the top-level package, which
touches no database, and imports FMD's submodules inside ``init_dashboard`` once the
configuration is in place.

What ``init_dashboard`` changes from FMD's defaults, each checked against FMD 5.1.0's source:

* credentials: the configured user, never FMD's admin/admin, also in an existing database;
* users: the configured admin is the only one; FMD's routes that create, edit or delete
  users answer 403, and any other user found in the database is deleted at start;
* telemetry: off, and unable to reach the network even if someone opts in from the UI;
* CSRF: the dashboard blueprint is exempt from the app's CSRFProtect (FMD's pages send no
  token); instead every state change must come from a page of the same origin (``Origin``,
  or else ``Referer``, equal to the request's scheme, host and port);
* access: with ``require_login``, every dashboard route but its static files runs it first
  (the service passes its own admin login), FMD's login page included; with ``logout``, the
  dashboard's "log out" ends the service's session too;
* outliers: Authorization and Cookie values are redacted before FMD stores request headers;
* exceptions: only server errors are recorded as a route's exceptions, not the typed client
  errors the service raises by design (an anonymous caller's 401, a 404, a 422...);
* SQLite: WAL journal and a busy timeout, so gunicorn workers can share the file.

It also publishes, as ``app.extensions[SESSION_GRANT_EXTENSION]``, the session entries that
log the admin into the dashboard, so that the service's own login opens it too
(``api.auth.grant_dashboard``).
"""
from __future__ import annotations

import functools
import pathlib
import re
import secrets
from typing import Callable, NamedTuple
from urllib.parse import urlsplit

import flask
from sqlalchemy import create_engine, event
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from sqlalchemy.pool import NullPool

# Safe to import before configuring: the package's __init__ builds ``config`` and the
# blueprint but imports nothing that opens the database.
import flask_monitoringdashboard as fmd

BRAND = "PyRecognizer"
# bind() signs sessions with this public key when the app has none; a dashboard session
# signed with it could be forged by anyone who has read FMD's source.
FMD_FALLBACK_SECRET_KEY = "my-secret-key"
REDACTED = "[redacted]"
SENSITIVE_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
SQLITE_BUSY_TIMEOUT_MS = 5000
MONITOR_LEVELS = (0, 1, 2, 3)
SESSION_GRANT_EXTENSION = "pyrecognizer.dashboard_grant"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# FMD 5.1.0's view functions that manage its own users: there is one user, the configured one.
USER_MANAGEMENT_VIEWS = ("user_create", "user_edit", "user_delete")

# str(werkzeug Headers): one "Name: value" line per header, CRLF-separated.
_HEADER_LINE = re.compile(
    r"^({}):[^\r\n]*".format("|".join(map(re.escape, SENSITIVE_HEADERS))),
    re.IGNORECASE | re.MULTILINE)
# str(environ) is a dict repr: WSGI names a header HTTP_<NAME>, and its value is a str repr,
# quoted with ' (or with " when the value holds a '), inner quotes backslash-escaped.
_ENVIRON_ITEM = re.compile(
    r"""'({})': (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""".format(
        "|".join("HTTP_" + name.upper().replace("-", "_") for name in SENSITIVE_HEADERS)))


class _Settings(NamedTuple):
    """The arguments of the call that bound FMD, to recognise a repeated call."""

    app: flask.Flask
    database_path: pathlib.Path
    username: str
    password: str
    monitor_level: int
    sampling_period: float
    link: str
    require_login: Callable[[], None] | None
    logout: Callable[[], None] | None


_bound: _Settings | None = None


def init_dashboard(app: flask.Flask, *, database_path: pathlib.Path, username: str, password: str,
                   monitor_level: int = 1, sampling_period: float = 0.0, link: str = "dashboard",
                   require_login: Callable[[], None] | None = None,
                   logout: Callable[[], None] | None = None) -> None:
    """Bind Flask-MonitoringDashboard to ``app`` at /dashboard, with a login, no telemetry, and
    redacted outliers, storing its measurements in the SQLite file ``database_path``.

    Call it after every route of ``app`` is registered: FMD wraps the view functions that
    exist when it binds, and later routes are not monitored.

    FMD keeps global state, so it binds once per process. Calling again with the same
    arguments (the same ``app`` object included) does nothing; any other repeated call raises
    RuntimeError instead of silently keeping the first configuration.

    :param app: the application; it needs a real ``secret_key`` (the login is kept in Flask's
        signed session) and ``SESSION_COOKIE_SAMESITE`` "Lax" or "Strict" (see
        ``_exempt_from_csrf``). If it uses Flask-WTF's CSRFProtect through its own hook, that
        hook must call ``protect(apply_exemptions=True)`` for the dashboard to be exempt.
    :param database_path: the SQLite file; its folder is created. Worker processes may share it.
    :param username: the dashboard's admin user; created, or made admin, at every start.
    :param password: that user's password; it replaces the stored one if they differ.
    :param monitor_level: 0 last request only, 1 durations, 2 also outliers, 3 also a profiler.
        It applies to endpoints the database has not seen yet: FMD stores a level per endpoint,
        which is then changed from the dashboard, not here.
    :param sampling_period: seconds between two profiler samples at level 3 (0: continuously).
    :param link: the URL prefix. FMD 5.1.0's JavaScript calls a few /dashboard/... URLs
        verbatim (telemetry, database pruning), so those panels only work with "dashboard".
    :param require_login: called before every dashboard view but the static files; it raises
        to refuse the request (e.g. a 401 that sends a browser to the app's login page). None
        keeps FMD's own login page and checks.
    :param logout: called when the dashboard's own "log out" is followed, before FMD's view
        (the service ends its session there: one login, one logout).
    :raises RuntimeError: the app's secret key or cookie policy is unsafe, or FMD is already
        bound with other arguments.
    :raises ValueError: empty credentials or an unknown monitor level.
    """
    global _bound
    settings = _Settings(app, pathlib.Path(database_path).resolve(), username, password,
                         monitor_level, sampling_period, link, require_login, logout)
    if _bound is not None:
        if settings == _bound:
            return
        raise RuntimeError("Flask-MonitoringDashboard is already bound in this process, to "
                           f"{_bound.database_path} for app {_bound.app.name!r}; it keeps global "
                           "state, so it cannot be bound again with other arguments")
    _check_app(app)
    _check_arguments(username, password, monitor_level)
    _configure(settings)

    # First import of FMD's database module: this creates the engine and the tables.
    from flask_monitoringdashboard import database

    _tune_sqlite(database)
    admin_id = _sync_admin_user(database, username, password)
    _disable_telemetry(database)
    _redact_outlier_requests()
    _record_server_errors_only()
    fmd.bind(app)
    _guard(app, require_login, logout)
    _exempt_from_csrf(app)
    _publish_session_grant(app, link, admin_id)
    _bound = settings


def redact_headers(headers: str) -> str:
    """Return ``str(request.headers)`` with the values of the SENSITIVE_HEADERS redacted."""
    return _HEADER_LINE.sub(lambda match: f"{match[1]}: {REDACTED}", headers)


# Where a request names a person (the people pages and API, CompreFace's subjects and its
# ``subject=``, DeepStack's ``userid=``): an outlier saved after a forget would name them again.
_PERSON_IN_URL = re.compile(r"((?:/people/|/recognition/subjects/)|(?:[?&]|\b)(?:subject|userid)=)[^/?&#\s'\"]+")


def redact_people(text: str | bytes) -> str | bytes:
    """Return ``text`` (a URL, headers or environ; FMD hands some as bytes) with the person names
    of request URLs redacted."""
    if isinstance(text, bytes):
        return redact_people(text.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    return _PERSON_IN_URL.sub(lambda match: f"{match[1]}{REDACTED}", text)


def redact_environ(environ: str) -> str:
    """Return ``str(request.environ)`` with the values of the SENSITIVE_HEADERS redacted."""
    return _ENVIRON_ITEM.sub(lambda match: f"'{match[1]}': '{REDACTED}'", environ)


def _check_app(app: flask.Flask) -> None:
    """Refuse an app whose dashboard session could be forged or sent cross-site."""
    if not app.secret_key or app.secret_key in (FMD_FALLBACK_SECRET_KEY, FMD_FALLBACK_SECRET_KEY.encode()):
        raise RuntimeError("set a real app.secret_key before init_dashboard: the dashboard login "
                           "lives in Flask's signed session cookie, and without a key FMD signs "
                           f"it with its public fallback {FMD_FALLBACK_SECRET_KEY!r}")
    samesite = app.config.get("SESSION_COOKIE_SAMESITE")
    if str(samesite).title() not in ("Lax", "Strict"):
        raise RuntimeError("set SESSION_COOKIE_SAMESITE to 'Lax' or 'Strict' before init_dashboard "
                           f"(it is {samesite!r}): the dashboard has no CSRF tokens and relies on "
                           "browsers not sending its session cookie with cross-site requests")


def _check_arguments(username: str, password: str, monitor_level: int) -> None:
    """Fail at start on arguments FMD would accept and misbehave with later."""
    if not username or not password:
        raise ValueError("the dashboard needs a non-empty username and password")
    # FMD raises only when it wraps the first endpoint, with a less helpful message.
    if monitor_level not in MONITOR_LEVELS:
        raise ValueError(f"monitor_level must be one of {MONITOR_LEVELS}, not {monitor_level!r}")


def _configure(settings: _Settings) -> None:
    """Set FMD's config; it must happen before FMD's database module is imported."""
    config = fmd.config
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    config.database_name = f"sqlite:///{settings.database_path}"  # absolute: four slashes
    config.username = settings.username
    config.password = settings.password
    # FMD 5.1.0 reads security_token nowhere, but its default is a constant published in
    # its source: should a later version use it, it must not be a known value.
    config.security_token = secrets.token_hex(16)
    config.monitor_level = settings.monitor_level
    config.sampling_period = settings.sampling_period
    config.link = settings.link
    config.brand_name = config.title_name = BRAND


def _tune_sqlite(database) -> None:
    """Let the worker processes share the SQLite file without "database is locked" errors.

    WAL lets readers work while one process writes, instead of the whole file being locked;
    the busy timeout makes a writer wait for its turn rather than fail at once. WAL is
    recorded in the file, the busy timeout and synchronous are per connection, hence all on
    every connect.

    FMD's engine pools its connections (up to 5 kept, 15 at once), each holding the database
    and its WAL open: a worker's open files grew with the number of threads that had ever
    written a measurement at once (bench/soak.py). Each session now opens its own connection
    and closes it (NullPool); an SQLite connection costs well under a millisecond.
    """
    engine = create_engine(database.engine.url, poolclass=NullPool)
    event.listen(engine, "connect", _set_sqlite_pragmas)
    event.listen(engine, "begin", _begin_immediate)
    # The import's engine created the tables and may hold a connection: close it, and have every
    # session from now on use the engine whose connections went through the listeners.
    database.engine.dispose()
    database.engine = engine
    database.DBSession.configure(bind=engine)


def _begin_immediate(connection) -> None:
    """SQLAlchemy "begin" listener: take SQLite's write lock when a transaction starts, except
    for the dashboard's own page loads, which only read.

    FMD stores an exception's stack trace as "look its hash up, insert it if absent"; two
    requests failing alike at once (threads or workers) both found nothing and one insert
    failed with ``UNIQUE constraint failed: StackTraceSnapshot.hash``, losing that request's
    record. BEGIN IMMEDIATE makes each transaction's lookup and insert one step; writers wait
    their turn (busy timeout). A GET of the dashboard reads (WAL: never blocked), so it begins
    a plain transaction: taking the write lock too made a page load queue behind every
    request's record, and under load (bench/soak.py) time out after the busy timeout, which
    FMD's session_scope swallows, and its view answered 500."""
    reading = flask.has_request_context() and flask.request.method == "GET" and flask.request.blueprint == "dashboard"
    connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def _set_sqlite_pragmas(dbapi_connection, _connection_record) -> None:
    """SQLAlchemy "connect" listener: set the pragmas of a new SQLite connection."""
    dbapi_connection.isolation_level = None  # pysqlite's own BEGIN off: _begin_immediate emits it
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # FMD commits once per request; under WAL, NORMAL syncs at checkpoints instead of at
        # every commit. A power cut may lose the last measurements, never the file: the
        # fsyncs cost the busy server ~10% of its throughput.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sync_admin_user(database, username: str, password: str) -> int:
    """Make ``username`` an admin whose password is ``password``, in a new or existing
    database, and return the user's id.

    FMD seeds its User table from config.username/password only while the table is empty,
    on the first login attempt (``database.auth.get_user``), and ignores the config after that:
    an existing file would keep its first password forever, admin/admin if FMD ever ran with
    its defaults. Other users are deleted: the dashboard has one user, the configured one.
    """
    try:
        return _upsert_admin(database, username, password)
    except IntegrityError:
        # Another worker inserted the same user between our SELECT and INSERT; the second
        # attempt finds that row and only checks its password.
        return _upsert_admin(database, username, password)


def _upsert_admin(database, username: str, password: str) -> int:
    """Create or update the admin user in one transaction, delete every other user (a user
    planted earlier, e.g. by a forged request, would otherwise keep a way in); return its id."""
    with database.DBSession.begin() as session:
        session.query(database.User).filter(database.User.username != username).delete()
        user = session.query(database.User).filter_by(username=username).one_or_none()
        if user is None:
            user = database.User(username=username)
            session.add(user)
        # Rewrite the hash only when the password changed, so that restarts do not write.
        if user.password_hash is None or not user.check_password(password):
            user.set_password(password)
        user.is_admin = True
        session.flush()  # gives a new user its id; read it before the session closes
        return user.id


def _disable_telemetry(database) -> None:
    """Keep FMD's telemetry off, and unable to send anything even if someone opts in.

    FMD 5.1.0 has no configuration switch for telemetry. It asks for consent in its UI, stores
    the answer in the TelemetryUser table, and mirrors it in ``telemetry_config``; a consent
    then makes nearly every dashboard view post usage data to a server whose address it first
    downloads from GitHub. A self-hosted face service must report nothing anywhere (and its
    host may have no internet), so:

    * the stored answer becomes "rejected", so the UI does not keep asking;
    * ``telemetry_initialized`` is set, as if FMD had read that answer: otherwise the first
      overview request re-reads the table, resets a rejection to "not answered", and reports
      a "UserSession" if the stored answer was ever "accepted";
    * every report starts with ``fetch_ip_from_github``, including the feedback form's, which
      is sent whatever the consent: replacing it with a lookup that finds no server makes
      ``post_to_back_if_telemetry_enabled`` return before any network call. That function
      looks it up as a module global at each call, so this holds for every caller.
    """
    from flask_monitoringdashboard.core import telemetry
    from flask_monitoringdashboard.core.config import TelemetryConfig

    # One row, as FMD expects: it resets the table when it finds several.
    with database.DBSession.begin() as session:
        session.query(database.TelemetryUser).delete()
        session.add(database.TelemetryUser(monitoring_consent=TelemetryConfig.REJECTED))
    fmd.telemetry_config.telemetry_consent = False
    fmd.telemetry_config.telemetry_initialized = True
    telemetry.fetch_ip_from_github = _no_telemetry_server


def _no_telemetry_server(_file_url: str) -> None:
    """Stand-in for FMD's ``fetch_ip_from_github``: there is no telemetry server to post to."""
    return None


def _redact_outlier_requests() -> None:
    """Redact credentials from the request FMD stores with every outlier.

    At monitor level 2 and 3, FMD 5.1.0's OutlierProfiler keeps ``str(request.headers)`` and
    ``str(request.environ)`` of slow requests and saves them verbatim in the Outlier table,
    where every dashboard user can read them: bearer tokens and session cookies included.
    FMD has no hook for this, so the ``add_outlier`` the profiler module calls is wrapped; it
    is patched in that module because the module bound the name with ``from ... import``.
    """
    from flask_monitoringdashboard.core.profiler import outlier_profiler

    outlier_profiler.add_outlier = _redacting(outlier_profiler.add_outlier)


def _redacting(add_outlier):
    """Wrap FMD's ``add_outlier`` to redact the headers and environ texts it is given, and the
    person names of its URL (``redact_people``)."""

    @functools.wraps(add_outlier)
    def add_redacted_outlier(session, request_id, cpu_percent, memory, stacktrace, request):
        headers, environ, url = request
        redacted = (redact_people(redact_headers(headers)), redact_people(redact_environ(environ)), redact_people(url))
        return add_outlier(session, request_id, cpu_percent, memory, stacktrace, redacted)

    return add_redacted_outlier


def _record_server_errors_only() -> None:
    """Make FMD record a route's uncaught exception only when it is a server error.

    FMD 5.1.0 wraps each view in ``measurement.evaluate``, which hands every exception the view
    raises to an ``ExceptionCollector``, stored as the route's exception. The service raises
    typed errors for its client errors (``Unauthorized`` for every anonymous call of a
    protected route, ``NotFound``...), and the error handler answers them; counted as
    exceptions they buried the real ones (``rest.models`` showed one per anonymous visit).
    ``evaluate`` reads the collector class from its module's globals (bound with ``from ...
    import``), so the subclass is installed there.
    """
    from flask_monitoringdashboard.core import measurement

    collector = measurement.ExceptionCollector
    if getattr(collector, "server_errors_only", False):
        return

    class ServerErrorCollector(collector):
        server_errors_only = True

        def set_uncaught_exc(self, e: BaseException):
            if status_of(e) >= 500:
                super().set_uncaught_exc(e)

    measurement.ExceptionCollector = ServerErrorCollector


def status_of(error: BaseException) -> int:
    """The HTTP status an exception is answered with: an HTTPException's code, a typed error's
    ``status`` (datastructure/errors.py), else 500."""
    status = getattr(error, "code", None) if isinstance(error, HTTPException) else getattr(error, "status", None)
    return status if isinstance(status, int) else 500


def same_origin(request: flask.Request) -> bool:
    """Whether the request's ``Origin`` (or, without one, its ``Referer``) is the origin the
    request was sent to: same scheme, host and port. Neither header: False.

    SameSite=Lax does not separate two ports of a host or sibling subdomains (they are the
    same *site*), so a form posted from another port carries the session cookie; browsers
    always send Origin with a POST, and a page cannot forge it.
    """
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if not claimed or claimed == "null":
        return False
    parts, here = urlsplit(claimed), urlsplit(request.host_url)
    return (parts.scheme, parts.netloc.lower()) == (here.scheme, here.netloc.lower())


def _guard(app: flask.Flask, require_login: Callable[[], None] | None, logout: Callable[[], None] | None) -> None:
    """Check every dashboard request before FMD's view runs (see the module docstring)."""
    prefix = fmd.config.blueprint_name + "."

    @app.before_request
    def guard_dashboard():
        endpoint = flask.request.endpoint or ""
        if not endpoint.startswith(prefix) or endpoint == prefix + "static" and flask.request.method == "GET":
            return
        if require_login is not None:
            require_login()
        if logout is not None and endpoint == prefix + "logout":
            logout()
        if endpoint.removeprefix(prefix) in USER_MANAGEMENT_VIEWS:
            flask.abort(403, "the dashboard has one user, the service's admin: users cannot be added, "
                             "changed or deleted")
        if flask.request.method in UNSAFE_METHODS and not same_origin(flask.request):
            flask.abort(403, "a dashboard change must come from the dashboard's own pages "
                             "(Origin or Referer of this site)")


def _exempt_from_csrf(app: flask.Flask) -> None:
    """Let the dashboard's login form and JSON API through the app's CSRFProtect.

    FMD's pages carry no CSRF token (its login form is plain HTML, its Angular client posts
    without one), so they would all fail with 400. ``_guard`` checks their origin instead: a
    change posted from any other origin, another port of the same host included, is refused
    with 403 (SameSite=Lax, which ``_check_app`` also requires, keeps the cookie from other
    sites only).
    """
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(fmd.blueprint)


def _publish_session_grant(app: flask.Flask, link: str, admin_id: int) -> None:
    """Publish the session entries that log the admin into the dashboard.

    They are what FMD 5.1.0's ``core.auth.on_login`` writes for an admin; the service's own
    login adds them to the session (``api.auth.grant_dashboard``), so one login opens both.
    """
    grant = {f"{link}_user_id": admin_id, f"{link}_logged_in": True, f"{link}_admin": True}
    app.extensions[SESSION_GRANT_EXTENSION] = lambda: dict(grant)
