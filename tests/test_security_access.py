"""Access control against real servers: tokens, sessions and CSRF, generated secrets, the
dashboard's login and outliers, TLS, open redirects and the security headers of every answer.

Two servers for the module: ``main`` (known test secrets, dashboard on at monitor level 2,
two trained models) and ``fresh`` (no secret configured at all, TLS on, /predict behind the
token), which is restarted once at the end to check what a restart shows and keeps.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import time
import warnings
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from urllib3.exceptions import InsecureRequestWarning
from werkzeug.security import check_password_hash

from tests.hostile import (csrf_token_of, good_photo, install_models, logged_in, photos,
                           restarted, server_config, start_server, stopped, written)
from tests.support import ROOT, envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("faces"),
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]
warnings.simplefilter("ignore", InsecureRequestWarning)

JOB_ID = "0123456789abcdef0123456789abcdef"
FMD_FALLBACK_SECRET_KEY = "my-secret-key"


@pytest.fixture(scope="module")
def main(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("access-main")
    install_models(data_dir, hostile_models)
    server = start_server(data_dir, server_config(dashboard={"enabled": True, "monitor_level": 2}))
    yield server
    stopped(server)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, hostile_models):
    """A first start with no secret anywhere (env set to ""), TLS on, /predict behind the token."""
    data_dir = tmp_path_factory.mktemp("access-fresh")
    install_models(data_dir, hostile_models)
    console = tmp_path_factory.mktemp("access-console") / "console.log"  # the operator's terminal
    repo_pems_before = repo_pem_files()
    server = start_server(data_dir, server_config(security={"predict_requires_token": True}), tls=True,
                          console=console,
                          env={"PYRECOGNIZER_API_TOKEN": "", "PYRECOGNIZER_ADMIN_PASSWORD": "",
                               "PYRECOGNIZER_TLS": "true"})
    output = console.read_text(errors="replace")
    token = re.search(r"generated the API token \(shown once[^)]*\): (\S+)", output)
    password = re.search(r"generated the admin password \(shown once[^)]*\): (\S+)", output)
    state = {"server": server, "output": output, "console": console, "repo_pems_before": repo_pems_before,
             "token": token and token[1], "password": password and password[1]}
    server.token, server.password = state["token"] or "not-shown", state["password"] or "not-shown"
    yield state
    stopped(state["server"])


def repo_pem_files() -> dict[str, float]:
    found = {}
    for folder, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [name for name in dirnames if name not in (".venv", ".git", "node_modules")]
        for name in filenames:
            if name.endswith((".pem", ".key", ".crt")):
                path = Path(folder, name)
                found[str(path)] = path.stat().st_mtime
    return found


def cookie_header(answer: requests.Response) -> str:
    cookies = answer.raw.headers.getlist("Set-Cookie") if hasattr(answer.raw.headers, "getlist") else [
        answer.headers.get("Set-Cookie", "")]
    session_cookies = [cookie for cookie in cookies if cookie.startswith("session=")]
    assert session_cookies, cookies
    return session_cookies[-1]


# --- tokens: everything but predicting needs one ------------------------------------------

PROTECTED = [
    ("POST", "/train"), ("POST", "/tune"), ("GET", "/jobs"), ("GET", f"/jobs/{JOB_ID}"),
    ("GET", "/models"), ("GET", "/models/{model}"), ("POST", "/models/{model}/activate"),
    ("DELETE", "/models/{model}"),
    ("GET", "/people"), ("GET", "/people/Madonna"), ("POST", "/people/Madonna/photos"),
    ("DELETE", "/people/Madonna/photos/0123456789abcdef"), ("DELETE", "/people/Madonna"),
    ("POST", "/people/Madonna/forget"), ("PATCH", "/people/Madonna"),
]
WRONG = {
    "no header": None,
    "wrong token": "Bearer wrong-token",
    "token one character short": "Bearer {token_short}",
    "token with a suffix": "Bearer {token}x",
    "another scheme": "Basic {token}",
    "empty bearer": "Bearer ",
    "bearer twice": "Bearer Bearer {token}",
}


@pytest.mark.parametrize("credential", WRONG.values(), ids=WRONG.keys())
@pytest.mark.parametrize("method, path", PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_protected_endpoints_refuse_without_the_token(main, hostile_models, method, path, credential):
    _, (model_a, _) = hostile_models
    headers = {"Accept": "application/json"}
    if credential:
        headers["Authorization"] = credential.format(token=main.token, token_short=main.token[:-1])
    before = written(main)
    upload = {"file": ("train.zip", photos("Ben/1.jpg", "Madonna/1.jpg"), "application/zip")}
    answer = main.request(method, path.format(model=model_a), auth=False, headers=headers,
                          files=upload if path in ("/train", "/tune") else None)
    envelope_of(answer, 401, "UNAUTHORIZED")
    assert written(main) == before  # no job, no upload kept, no model activated or deleted


def test_the_token_opens_what_it_protects(main, hostile_models):
    _, (model_a, model_b) = hostile_models
    assert envelope_of(main.get("/jobs"), 200)["data"] == []
    assert [model["id"] for model in envelope_of(main.get("/models", headers={"Accept": "application/json"}), 200)["data"]] == [model_b, model_a]
    assert envelope_of(main.get(f"/models/{model_a}"), 200)["data"]["id"] == model_a
    envelope_of(main.get(f"/jobs/{JOB_ID}"), 404, "NOT_FOUND")
    envelope_of(main.delete(f"/models/{model_b}"), 409, "MODEL_ACTIVE")  # the active one


def test_predict_is_open_by_default(main):
    answer = main.post("/predict", auth=False, files={"file": ("x.jpg", b"not an image")})
    envelope_of(answer, 400, "FILE_NOT_VALID")


# --- browser sessions: the cookie is honoured only with the CSRF token ----------------------


def test_session_works_only_with_its_csrf_token(main):
    session, token = logged_in(main)
    missing = "/models/20000101_000000/activate"
    # GET carries no state change: the session alone is enough.
    assert envelope_of(session.get(main.url + "/jobs", headers={"Accept": "application/json"}), 200)
    # The cookie without the token: refused before anything runs.
    envelope_of(session.post(main.url + missing), 400, "CSRF_FAILED")
    envelope_of(session.delete(main.url + "/models/20000101_000000"), 400, "CSRF_FAILED")
    before = written(main)
    upload = {"file": ("train.zip", photos("Ben/1.jpg", "Madonna/1.jpg"), "application/zip")}
    envelope_of(session.post(main.url + "/train", files=upload), 400, "CSRF_FAILED")
    assert written(main) == before
    envelope_of(session.post(main.url + missing, headers={"X-CSRFToken": "forged"}), 400, "CSRF_FAILED")
    # The cookie with the token: authorized (the model does not exist, hence 404, not 401).
    envelope_of(session.post(main.url + missing, headers={"X-CSRFToken": token}), 404, "NOT_FOUND")


def test_a_csrf_token_from_another_session_is_refused(main):
    session, _ = logged_in(main)
    attacker = requests.Session()
    foreign = csrf_token_of(attacker.get(main.url + "/login").text)
    answer = session.post(main.url + "/models/20000101_000000/activate", headers={"X-CSRFToken": foreign})
    envelope_of(answer, 400, "CSRF_FAILED")


def test_a_forged_cross_site_post_without_cookie_is_refused(main):
    # A page elsewhere posting a form: Origin is set by the browser and no session follows.
    answer = requests.post(main.url + "/models/20000101_000000/activate", timeout=30,
                           headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert answer.status_code in (400, 401)
    assert envelope_of(answer)["error"] in ("CSRF_FAILED", "UNAUTHORIZED")


def test_login_needs_the_csrf_token_and_the_password(main):
    session = requests.Session()
    session.get(main.url + "/login")
    no_token = session.post(main.url + "/login", data={"password": main.password}, allow_redirects=False)
    assert no_token.status_code == 400 and envelope_of(no_token)["error"] == "CSRF_FAILED"
    # A client without a cookie gets the form back, not a session.
    bare = requests.post(main.url + "/login", data={"password": main.password}, allow_redirects=False, timeout=30)
    assert bare.status_code == 200 and 'type="password"' in bare.text  # the login form again
    envelope_of(requests.get(main.url + "/jobs", cookies=bare.cookies, headers={"Accept": "application/json"}, timeout=30),
                401, "UNAUTHORIZED")  # whatever cookie came with it opens nothing
    token = csrf_token_of(session.get(main.url + "/login").text)
    wrong = session.post(main.url + "/login", data={"password": "wrong", "csrf_token": token}, allow_redirects=False)
    assert wrong.status_code == 401
    for attempt in (session, requests.Session()):
        envelope_of(attempt.get(main.url + "/jobs", headers={"Accept": "application/json"}), 401, "UNAUTHORIZED")


def test_session_cookie_is_httponly_and_samesite_lax(main):
    cookie = cookie_header(requests.get(main.url + "/login", timeout=30))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in attributes, cookie
    assert attributes.get("samesite", "").lower() == "samesite=lax", cookie


OFF_SITE = ["https://evil.example", "//evil.example", "/\\evil.example", "\\\\evil.example",
            "/\\/evil.example", "https:evil.example", "/%5Cevil.example", "/\t/evil.example",
            "javascript:alert(1)", " //evil.example", "http://127.0.0.1.evil.example/"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_login_never_redirects_off_site(main, target):
    session = requests.Session()
    token = csrf_token_of(session.get(main.url + "/login", params={"next": target}).text)
    answer = session.post(main.url + "/login", params={"next": target}, allow_redirects=False,
                          data={"password": main.password, "csrf_token": token})
    assert answer.status_code in (302, 303), answer.status_code
    location = answer.headers["Location"]
    # Read the Location as a browser does: backslashes are slashes, tabs and newlines vanish.
    browser_view = re.sub(r"[\t\r\n]", "", location.strip()).replace("\\", "/")
    landing = urlsplit(urljoin(main.url + "/login", browser_view))
    assert landing.scheme in ("http", "https") and landing.netloc == urlsplit(main.url).netloc, location


def test_login_keeps_an_on_site_next(main):
    session = requests.Session()
    token = csrf_token_of(session.get(main.url + "/login").text)
    answer = session.post(main.url + "/login", params={"next": "/models?x=1"}, allow_redirects=False,
                          data={"password": main.password, "csrf_token": token})
    assert urlsplit(answer.headers["Location"]).path == "/models"


# --- Flask-MonitoringDashboard ------------------------------------------------------------


def refused_by_the_dashboard(answer: requests.Response) -> bool:
    """The dashboard's answer to anyone not logged in at /login: 401, or a browser sent there."""
    return answer.status_code == 401 or (
        answer.status_code in (302, 303) and urlsplit(answer.headers["Location"]).path == "/login")


@pytest.mark.parametrize("name, password", [("admin", "admin"), ("admin", ""), ("admin", "test-admin-password")])
def test_dashboard_default_credentials_are_refused(main, name, password):
    session = requests.Session()
    session.post(main.url + "/dashboard/login", data={"name": name, "password": password},
                 headers={"Origin": main.url}, timeout=30)
    page = session.get(main.url + "/dashboard/overview", allow_redirects=False, timeout=30,
                       headers={"Accept": "text/html"})
    assert page.status_code == 303 and urlsplit(page.headers["Location"]).path == "/login"
    users = session.get(main.url + "/dashboard/api/users", allow_redirects=False, timeout=30)
    assert refused_by_the_dashboard(users)


def forged_session_cookie(secret_key: str, content: dict) -> str:
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    app = Flask("forger")
    app.secret_key = secret_key
    return SecureCookieSessionInterface().get_signing_serializer(app).dumps(content)


def test_dashboard_session_cannot_be_forged_with_fmd_fallback_key(main):
    grant = {"dashboard_user_id": 1, "dashboard_logged_in": True, "dashboard_admin": True, "user": "admin"}
    cookie = forged_session_cookie(FMD_FALLBACK_SECRET_KEY, grant)
    for path in ("/dashboard/overview", "/dashboard/api/users"):
        page = requests.get(main.url + path, cookies={"session": cookie}, allow_redirects=False, timeout=30)
        assert refused_by_the_dashboard(page), (path, page.status_code)
    envelope_of(requests.get(main.url + "/jobs", cookies={"session": cookie}, timeout=30,
                             headers={"Accept": "application/json"}), 401, "UNAUTHORIZED")
    stored = json.loads((main.data_dir / "dataset" / "secrets.json").read_text())
    assert stored["secret_key"] not in (FMD_FALLBACK_SECRET_KEY, "") and len(stored["secret_key"]) >= 32


def test_logging_in_at_login_opens_the_dashboard(main):
    session, _ = logged_in(main)
    page = session.get(main.url + "/dashboard/overview", allow_redirects=False)
    assert page.status_code == 200 and "<html" in page.text.lower()
    users = session.get(main.url + "/dashboard/api/users", allow_redirects=False)
    assert users.status_code == 200 and any(user["username"] == "admin" for user in users.json())


def test_dashboard_outliers_store_no_token_and_no_cookie(main, faces):
    session, _ = logged_in(main)
    cookie = session.cookies.get("session")
    photo = (faces / "celebrities" / "val" / "Madonna" / "1.jpg").read_bytes()
    for _ in range(3):
        main.get("/jobs")
        main.get("/models", headers={"Accept": "application/json"})
        main.post("/predict", files={"file": ("p.jpg", photo)})
        session.get(main.url + "/jobs", headers={"Accept": "application/json"})
    database = main.data_dir / "log" / "dashboard.db"
    deadline, rows = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = connection.execute("SELECT request_header, request_environment, request_url FROM Outlier").fetchall()
        if rows:
            break
        time.sleep(0.3)
    assert rows, "monitor level 2 captured no outlier: the test would prove nothing"
    stored = "\n".join(str(value) for row in rows for value in row)
    assert "Authorization: [redacted]" in stored or "'HTTP_AUTHORIZATION': '[redacted]'" in stored
    for secret in (main.token, cookie):
        assert secret not in stored
        for path in (main.data_dir / "log").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


# --- security headers on every answer -------------------------------------------------------


def assert_security_headers(answer: requests.Response, *, csp: bool = True) -> None:
    headers = answer.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", (answer.url, dict(headers))
    assert headers.get("X-Frame-Options") == "DENY", (answer.url, dict(headers))
    if csp:
        policy = headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in policy or "default-src 'none'" in policy, (answer.url, policy)
        assert "frame-ancestors 'none'" in policy, policy
        assert "http" not in policy.lower() and "*" not in policy, policy  # no third-party origin


@pytest.mark.parametrize("method, path, kwargs, status", [
    ("GET", "/", {}, 200),
    ("GET", "/health", {}, 200),
    ("GET", "/login", {}, 200),
    ("GET", "/train", {}, 200),
    ("GET", "/models", {"headers": {"Accept": "text/html"}}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/docs", {}, 200),
    ("GET", "/static/app.js", {}, 200),
    ("POST", "/predict", {"files": {"file": ("x.jpg", b"<html>")}}, 400),
    ("POST", "/predict", {}, 400),
    ("GET", "/predict", {}, 405),
    ("GET", "/no/such/page", {}, 404),
    ("GET", "/uploads/../main.py", {}, 404),
    ("GET", "/jobs", {"auth": False}, 401),
])
def test_every_answer_carries_the_security_headers(main, method, path, kwargs, status):
    kwargs = {"auth": True, **kwargs}
    answer = main.request(method, path, **kwargs)
    assert answer.status_code == status
    assert_security_headers(answer)


def test_dashboard_answers_carry_nosniff_and_no_framing(main):
    assert_security_headers(requests.get(main.url + "/dashboard/login", timeout=30), csp=False)


# --- no default credentials: generated, shown once, stored hashed ---------------------------


def test_generated_secrets_are_shown_at_first_start(fresh):
    assert fresh["token"] and len(fresh["token"]) >= 32, fresh["output"][-2000:]
    assert fresh["password"] and len(fresh["password"]) >= 12, fresh["output"][-2000:]


def test_secrets_file_holds_only_hashes(fresh):
    path = fresh["server"].data_dir / "dataset" / "secrets.json"
    text = path.read_text()
    stored = json.loads(text)
    assert fresh["token"] not in text and fresh["password"] not in text
    assert stored["api_token_sha256"] == hashlib.sha256(fresh["token"].encode()).hexdigest()
    assert check_password_hash(stored["admin_password_hash"], fresh["password"])
    assert set(stored) <= {"secret_key", "api_token_sha256", "admin_password_hash"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generated_plaintext_is_nowhere_under_the_data_dir(fresh):
    leaks = []
    for path in fresh["server"].data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            leaks += [f"{name} in {path.relative_to(fresh['server'].data_dir)}"
                      for name in ("token", "password") if fresh[name].encode() in content]
    assert not leaks, leaks


def test_generated_token_and_password_work_and_defaults_do_not(fresh):
    server = fresh["server"]
    envelope_of(server.get("/jobs"), 200)
    envelope_of(server.get("/jobs", auth=False), 401, "UNAUTHORIZED")
    logged_in(server)  # the generated password
    for password in ("admin", "password", "changeme", "test-admin-password", "test-api-token-0123456789"):
        session = requests.Session()
        token = csrf_token_of(session.get(server.url + "/login", verify=False).text)
        answer = session.post(server.url + "/login", data={"password": password, "csrf_token": token},
                              allow_redirects=False, verify=False, headers={"Referer": server.url + "/login"})
        assert answer.status_code == 401, password
    envelope_of(server.get("/jobs", auth=False, headers={"Authorization": "Bearer test-api-token-0123456789"}),
                401, "UNAUTHORIZED")


def test_predict_requires_the_token_when_configured(fresh, faces):
    server = fresh["server"]
    photo = {"file": ("photo.jpg", good_photo(faces).read_bytes())}
    uploads = written(server)["uploads"]
    envelope_of(server.post("/predict", auth=False, files=photo), 401, "UNAUTHORIZED")
    envelope_of(server.post("/", auth=False, files=photo), 401, "UNAUTHORIZED")
    assert written(server)["uploads"] == uploads  # refused before anything was decoded or saved
    envelope_of(server.post("/predict", files={"file": ("x.jpg", b"not an image")}), 400, "FILE_NOT_VALID")
    envelope_of(server.post("/predict", files=photo), 200)


# --- TLS ----------------------------------------------------------------------------------


def test_tls_serves_a_generated_certificate_outside_the_repository(fresh):
    server = fresh["server"]
    folder = server.data_dir / "dataset" / "tls"
    certificate, key = folder / "cert.pem", folder / "key.pem"
    assert certificate.is_file() and key.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    answer = requests.get(server.url + "/health", verify=str(certificate), timeout=30)  # the served certificate
    assert server.url.startswith("https://") and answer.status_code == 200
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    assert int(answer.headers["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 15552000
    assert_security_headers(answer)
    with pytest.raises(requests.RequestException):
        requests.get(server.url.replace("https://", "http://") + "/health", timeout=10).raise_for_status()
    assert repo_pem_files() == fresh["repo_pems_before"]


def test_session_cookie_is_secure_under_tls(fresh):
    cookie = cookie_header(requests.get(fresh["server"].url + "/login", verify=False, timeout=30))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags, cookie


def test_a_browser_can_log_in_under_tls(fresh):
    # Flask-WTF demands a same-origin Referer on HTTPS posts; "same-origin" lets a browser
    # send it to us (and to nobody else), so the login form posts as a browser would.
    server = fresh["server"]
    session = requests.Session()
    page = session.get(server.url + "/login", verify=False, timeout=30)
    assert page.headers.get("Referrer-Policy") == "same-origin"
    answer = session.post(server.url + "/login", verify=False, timeout=30, allow_redirects=False,
                          data={"password": server.password, "csrf_token": csrf_token_of(page.text)},
                          headers={"Origin": server.url, "Referer": server.url + "/login"})
    assert answer.status_code == 302, (answer.status_code, answer.text[:300])


def test_restart_shows_no_secret_and_keeps_them(fresh):
    server = fresh["server"]
    certificate = (server.data_dir / "dataset" / "tls" / "cert.pem").read_bytes()
    secrets_before = (server.data_dir / "dataset" / "secrets.json").read_text()
    shown = fresh["console"].stat().st_size
    fresh["server"] = server = restarted(server)
    with open(fresh["console"], "rb") as handle:
        handle.seek(shown)
        output = handle.read().decode(errors="replace")
    assert "Booting worker" in output  # this is the second start's output
    assert "generated the" not in output
    assert fresh["token"] not in output and fresh["password"] not in output
    envelope_of(server.get("/jobs"), 200)  # the first token still works
    logged_in(server)  # and the first password
    assert (server.data_dir / "dataset" / "secrets.json").read_text() == secrets_before
    assert (server.data_dir / "dataset" / "tls" / "cert.pem").read_bytes() == certificate
