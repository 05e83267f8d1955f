"""Flask-MonitoringDashboard as api/dashboard.py binds it: login, CSRF, telemetry, outliers, SQLite.

FMD keeps process-wide state (its config, blueprint and database engine), so every app that
binds it runs in its own process: a tiny Flask app, written to a file and served by Flask's
development server, driven over HTTP. Only the checks that run before FMD is touched, and the
pure redaction helpers, run in this process.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import flask
import pytest
import requests
from werkzeug.security import generate_password_hash

from api.dashboard import init_dashboard, redact_environ, redact_headers
from tests.support import ROOT, Server

PASSWORD = "s3cret-test"
BEARER_SECRET = "SECRET123"
COOKIE_SECRET = "COOKIE-SECRET-456"

# The app under test. It refuses, and records, every outbound call made through `requests`
# (which FMD's telemetry uses) before anything imports FMD. /slow is registered before
# init_dashboard so that FMD monitors it; /state after, so that it is not monitored.
APP_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path

    root, mode, database, password, port = sys.argv[1:6]
    sys.path.insert(0, root)  # the project: api/__init__.py is light, api.dashboard imports no service

    import requests
    import werkzeug.security

    # Few pbkdf2 rounds for the password hashes: werkzeug's million take a second each.
    werkzeug.security.DEFAULT_PBKDF2_ITERATIONS = 1000

    OUTBOUND = []

    def refuse(self, method, url, *args, **kwargs):
        OUTBOUND.append(f"{method} {url}")
        raise requests.ConnectionError("outbound call refused by the test")

    requests.Session.request = refuse

    from flask import Flask, current_app, jsonify, session
    from flask_wtf.csrf import CSRFProtect
    import flask_monitoringdashboard as fmd
    from api.dashboard import init_dashboard

    def build_app(name="under_test"):
        app = Flask(name)
        app.config.update(SECRET_KEY="test-secret-key", SESSION_COOKIE_SAMESITE="Lax")
        CSRFProtect(app)

        @app.post("/echo")
        def echo():
            return "echo"

        @app.get("/slow")
        def slow():
            time.sleep(0.3)
            return "slow"

        # client errors as the service raises them (typed, answered by its handler) and a bug
        from flask import abort
        from datastructure.errors import PyRecognizerError

        class Unauthorized(PyRecognizerError):  # as api/auth.py's
            code, status = "UNAUTHORIZED", 401

        app.register_error_handler(PyRecognizerError, lambda error: (error.code, error.status))

        @app.get("/refused")
        def refused():
            raise Unauthorized("send the token")

        @app.get("/missing")
        def missing():
            abort(404)

        @app.get("/broken")
        def broken():
            raise RuntimeError("a bug")

        return app

    def bind(app):
        init_dashboard(app, database_path=Path(database), username="admin", password=password,
                       monitor_level=2)

    def state():
        from flask_monitoringdashboard.database import engine
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            exceptions = dict(connection.exec_driver_sql(
                "SELECT Endpoint.name, COUNT(*) FROM ExceptionOccurrence JOIN Request ON Request.id = request_id "
                "JOIN Endpoint ON Endpoint.id = Request.endpoint_id GROUP BY Endpoint.name").fetchall())
            requests_ = dict(connection.exec_driver_sql(
                "SELECT Endpoint.name, COUNT(*) FROM Request JOIN Endpoint ON Endpoint.id = Request.endpoint_id "
                "GROUP BY Endpoint.name").fetchall())
            return jsonify(outbound=OUTBOUND, telemetry_consent=fmd.telemetry_config.telemetry_consent,
                           journal_mode=pragma("journal_mode"), busy_timeout=pragma("busy_timeout"),
                           synchronous=pragma("synchronous"), exceptions=exceptions, requests=requests_)

    def grant():
        # What the service's own login does (api.auth.grant_dashboard).
        session.update(current_app.extensions["pyrecognizer.dashboard_grant"]())
        return "granted"

    def rebind():
        app = build_app()
        bind(app)
        rules = sorted(map(str, app.url_map.iter_rules()))
        bind(app)
        report = {"rules_unchanged": rules == sorted(map(str, app.url_map.iter_rules()))}
        try:
            bind(build_app("another_app"))
        except RuntimeError as error:
            report["other_app_error"] = str(error)
        print(json.dumps(report))

    if mode == "serve":
        app = build_app()
        bind(app)
        app.get("/state")(state)
        app.get("/grant")(grant)
        app.run(host="127.0.0.1", port=int(port))
    else:
        rebind()
''')


def app_command(folder: Path, mode: str, database: Path, password: str, port: int = 0) -> list[str]:
    script = folder / "app_under_test.py"
    script.write_text(APP_SCRIPT)
    return [sys.executable, str(script), str(ROOT), mode, str(database), password, str(port)]


def app_server(folder: Path, database: Path, password: str = PASSWORD) -> Server:
    """The app under test, served in its own process (cwd: the test folder, where a database
    that FMD created from its defaults would land)."""
    server = Server(folder, command=[], ready_path="/state", cwd=folder)
    server.command = app_command(folder, "serve", database, password, server.port)
    return server.start(timeout=30)


def app_state(server: Server) -> dict:
    """What the app under test reports of FMD: outbound calls, telemetry, SQLite pragmas."""
    return requests.get(server.url + "/state", timeout=10).json()


def fmd_login(server: Server, password: str) -> tuple[requests.Session, requests.Response]:
    """Post FMD's login form, as its page does in a browser (no CSRF token, its own Origin), in
    a new client session."""
    client = requests.Session()
    answer = client.post(server.url + "/dashboard/login", data={"name": "admin", "password": password},
                         headers={"Origin": server.url}, allow_redirects=False, timeout=10)
    return client, answer


def stopped(server: Server) -> None:
    """Stop as Ctrl-C does, so that FMD's exit handlers run."""
    server.stop(signal.SIGINT)


@pytest.fixture
def start_server(tmp_path):
    """Start servers of the app under test; all are stopped at the end of the test."""
    started = []

    def start(database: Path | None = None, password: str = PASSWORD) -> Server:
        server = app_server(tmp_path, database or tmp_path / "data" / "dashboard.db", password)
        started.append(server)
        return server

    yield start
    for server in started:
        stopped(server)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the tests that do not depend on each other's requests (a start takes seconds)."""
    folder = tmp_path_factory.mktemp("dashboard")
    server = app_server(folder, folder / "data" / "dashboard.db")
    yield server
    stopped(server)


def logged_in(client: requests.Session, server: Server) -> bool:
    """True when FMD answers its JSON API instead of redirecting to the login page."""
    answer = client.get(server.url + "/dashboard/api/overview", allow_redirects=False, timeout=10)
    return answer.status_code == 200 and isinstance(answer.json(), list)


@pytest.mark.e2e
def test_login_takes_the_configured_password_not_admin_admin(server):
    assert requests.get(server.url + "/dashboard/login", timeout=10).status_code == 200

    refused, answer = fmd_login(server, "admin")
    assert answer.status_code == 200  # the login page again
    assert not logged_in(refused, server)

    client, answer = fmd_login(server, PASSWORD)
    assert answer.status_code == 302
    assert logged_in(client, server)
    users = client.get(server.url + "/dashboard/api/users", timeout=10).json()
    assert [(user["username"], user["is_admin"]) for user in users] == [("admin", True)]


@pytest.mark.e2e
def test_the_service_login_can_open_the_dashboard(server):
    client = requests.Session()
    assert not logged_in(client, server)
    assert client.get(server.url + "/grant", timeout=10).text == "granted"
    assert logged_in(client, server)


@pytest.mark.e2e
def test_dashboard_is_exempt_from_csrf_and_the_app_is_not(server):
    client, answer = fmd_login(server, PASSWORD)  # a POST without CSRF token
    assert answer.status_code == 302
    same_origin = {"Origin": server.url}
    assert client.post(server.url + "/dashboard/api/overview", headers=same_origin, timeout=10).status_code == 200
    # ... but not from its origin check: a post from elsewhere, or from nowhere said, is refused
    for headers in ({"Origin": "http://127.0.0.1:1"}, {"Referer": "http://evil.example/"}, {}):
        assert client.post(server.url + "/dashboard/api/overview", headers=headers, timeout=10).status_code == 403
    # and there is one user: FMD's user management is closed, even to its admin
    created = client.post(server.url + "/dashboard/api/user/create", headers=same_origin, timeout=10,
                          data={"username": "second", "password": "second-pass", "password2": "second-pass",
                                "is_admin": "true"})
    assert created.status_code == 403
    assert [user["username"] for user in client.get(server.url + "/dashboard/api/users", timeout=10).json()] == ["admin"]

    refused = client.post(server.url + "/echo", timeout=10)
    assert refused.status_code == 400
    assert "CSRF" in refused.text


@pytest.mark.e2e
def test_telemetry_is_off_and_never_attempted(server):
    assert app_state(server)["telemetry_consent"] is False
    client, _ = fmd_login(server, PASSWORD)
    assert client.get(server.url + "/dashboard/telemetry/get_is_telemetry_answered", timeout=10).json() == {
        "is_telemetry_answered": True}  # stored as declined: the UI does not ask

    # Even a user who opts in from the UI, or sends the feedback form (which FMD posts
    # whatever the consent), makes no outbound call.
    same_origin = {"Origin": server.url}
    client.post(server.url + "/dashboard/telemetry/accept_telemetry_consent", json={"consent": True},
                headers=same_origin, timeout=10)
    client.post(server.url + "/dashboard/telemetry/submit_follow_up", json={"feedback": []}, headers=same_origin,
                timeout=10)
    assert logged_in(client, server)

    assert app_state(server)["outbound"] == []


@pytest.mark.e2e
def test_sqlite_is_set_up_for_several_workers(server):
    state = app_state(server)
    assert state["journal_mode"] == "wal"
    assert state["busy_timeout"] == 5000
    assert state["synchronous"] == 1  # NORMAL: under WAL, no fsync at every request's commit
    # FMD was configured before its engine was created: nothing fell back to its default file.
    assert not (server.data_dir / "flask_monitoringdashboard.db").exists()


@pytest.mark.e2e
def test_only_server_errors_count_as_a_routes_exceptions(server):
    """An anonymous caller's 401 (a typed error the service answers) and a 404 are answers,
    not exceptions of the route; a bug's 500 is one."""
    for path, status in (("/refused", 401), ("/refused", 401), ("/missing", 404), ("/broken", 500)):
        assert requests.get(server.url + path, timeout=10).status_code == status
    deadline = time.monotonic() + 10
    while app_state(server)["requests"].get("broken") != 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # FMD stores each request from a thread of its own
    state = app_state(server)
    assert state["requests"]["refused"] == 2 and state["requests"]["missing"] == 1  # measured all the same
    assert state["exceptions"] == {"broken": 1}


@pytest.mark.e2e
def test_outliers_keep_no_credentials(start_server, tmp_path):
    database = tmp_path / "data" / "dashboard.db"
    server = start_server(database)
    # The first request of an endpoint is always an outlier: FMD waits for the endpoint's
    # average duration (0 so far) times outlier_detection_constant, and /slow is still running.
    answer = requests.get(server.url + "/slow", timeout=10, headers={
        "Authorization": f"Bearer {BEARER_SECRET}", "Cookie": f"tracking={COOKIE_SECRET}"})
    assert answer.text == "slow"
    stopped(server)

    stored = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
    assert BEARER_SECRET.encode() not in stored
    assert COOKIE_SECRET.encode() not in stored
    with sqlite3.connect(database) as connection:
        outliers = connection.execute("SELECT request_header, request_environment FROM Outlier").fetchall()
    assert len(outliers) == 1  # the test did capture an outlier
    headers, environ = outliers[0]
    assert "Authorization: [redacted]" in headers and "Cookie: [redacted]" in headers
    assert "'HTTP_AUTHORIZATION': '[redacted]'" in environ and "'HTTP_COOKIE': '[redacted]'" in environ


@pytest.mark.e2e
def test_the_configured_password_replaces_a_stored_admin_admin(start_server, tmp_path):
    # A database as FMD leaves it when it ran with its defaults: its first login attempt
    # seeds the User table (the rest of the schema is created at the next start).
    database = tmp_path / "data" / "dashboard.db"
    database.parent.mkdir()
    with sqlite3.connect(database) as connection:
        connection.execute('CREATE TABLE "User" (id INTEGER PRIMARY KEY, username VARCHAR(250) NOT NULL UNIQUE, '
                           "password_hash VARCHAR(162) NOT NULL, is_admin BOOLEAN)")
        connection.execute('INSERT INTO "User" VALUES (1, ?, ?, 1)',
                           ("admin", generate_password_hash("admin", "pbkdf2:sha256:1000")))

    server = start_server(database, password=PASSWORD)
    assert not logged_in(fmd_login(server, "admin")[0], server)
    client, _ = fmd_login(server, PASSWORD)
    assert logged_in(client, server)
    assert len(client.get(server.url + "/dashboard/api/users", timeout=10).json()) == 1


@pytest.mark.e2e
def test_binds_once_per_process(tmp_path):
    command = app_command(tmp_path, "rebind", tmp_path / "dashboard.db", PASSWORD)
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    assert report["rules_unchanged"] is True  # the same call again registered nothing
    assert "already bound" in report["other_app_error"]


@pytest.mark.parametrize("secret_key", [None, "", "my-secret-key", b"my-secret-key"])
def test_refuses_an_app_without_a_real_secret_key(tmp_path, secret_key):
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY=secret_key, SESSION_COOKIE_SAMESITE="Lax")
    # The checks come before FMD is configured, so this process's FMD stays untouched.
    with pytest.raises(RuntimeError, match="secret_key"):
        init_dashboard(app, database_path=tmp_path / "dashboard.db", username="admin", password=PASSWORD)
    assert not (tmp_path / "dashboard.db").exists()


def test_refuses_a_session_cookie_sent_cross_site(tmp_path):
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY="test-secret-key", SESSION_COOKIE_SAMESITE=None)
    with pytest.raises(RuntimeError, match="SESSION_COOKIE_SAMESITE"):
        init_dashboard(app, database_path=tmp_path / "dashboard.db", username="admin", password=PASSWORD)


def test_redacts_headers_as_werkzeug_prints_them():
    headers = "Host: localhost\r\nauthorization: Bearer abc\r\nCookie: a=1; b=2\r\nAccept: */*\r\n\r\n"
    assert redact_headers(headers) == (
        "Host: localhost\r\nauthorization: [redacted]\r\nCookie: [redacted]\r\nAccept: */*\r\n\r\n")


def test_redacts_environ_values_in_either_quoting():
    environ = str({"HTTP_HOST": "localhost", "HTTP_AUTHORIZATION": "Bearer abc",
                   "HTTP_COOKIE": "a=\"x'y\"; b='z'", "HTTP_PROXY_AUTHORIZATION": "Basic 'q'", "PATH_INFO": "/"})
    redacted = redact_environ(environ)
    assert redacted == str({"HTTP_HOST": "localhost", "HTTP_AUTHORIZATION": "[redacted]",
                            "HTTP_COOKIE": "[redacted]", "HTTP_PROXY_AUTHORIZATION": "[redacted]", "PATH_INFO": "/"})
