"""Issue 13's web holes, attacked on real server processes: the dashboard answering anonymously
(3) and to cross-site posts (4), names leaking to anonymous callers (5), sessions surviving
logout and a new password (6), and the login's ``next``, wrong-token guessing and short
secrets (9).

One server for the module (``web``: dashboard on, model B active, at most 5 wrong tokens a
minute per address and worker); the password-change test restarts it with a new password.
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conf.config import ConfigError, load_config
from tests.hostile import (MODEL_A_PEOPLE, MODEL_B_PEOPLE, Client, install_models, logged_in, restarted,
                           server_config, start_server, stopped)
from tests.support import ROOT, TEST_CREDENTIALS, envelope_of, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("faces")]

WRONG_TOKENS_PER_MINUTE = 5
WEB_CONFIG = server_config(dashboard={"enabled": True},
                           security={"rate_limits": {"wrong_token": f"{WRONG_TOKENS_PER_MINUTE} per minute"}})
JSON = {"Accept": "application/json"}
PEOPLE = sorted(MODEL_A_PEOPLE) + sorted(MODEL_B_PEOPLE)
STRANGER = ("Madonna", "1.jpg")  # model B (the active one) does not know her
KNOWN = ("Ben Afflek", "2.jpg")  # model B knows him


@pytest.fixture(scope="module")
def web(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("web")
    install_models(data_dir, hostile_models)
    server = start_server(data_dir, WEB_CONFIG)
    yield server
    stopped(server)


# --- 3: every dashboard route needs the admin login ---------------------------------------

_RULES_SCRIPT = """
import json, sys
from pathlib import Path
from api.app import create_app
from tests.support import TEST_CREDENTIALS, make_config

app = create_app(make_config(Path(sys.argv[1]), dashboard={"enabled": True}, security=TEST_CREDENTIALS))
print(json.dumps([[rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"}), rule.endpoint]
                  for rule in app.url_map.iter_rules() if rule.endpoint.startswith("dashboard.")]))
"""


@pytest.fixture(scope="module")
def dashboard_routes(tmp_path_factory) -> list[tuple[str, str, str]]:
    """(URL, method, endpoint) of every route of FMD's blueprint, as the service's app registers
    them (read from the app in another process: FMD binds once per process)."""
    done = subprocess.run([sys.executable, "-c", _RULES_SCRIPT, str(tmp_path_factory.mktemp("rules"))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rules = json.loads(done.stdout.strip().splitlines()[-1])
    routes = [(re.sub(r"<[^>]+>", "1", rule), method, endpoint)
              for rule, methods, endpoint in rules for method in methods]
    assert len(routes) > 50, routes  # FMD 5.1.0 has about sixty
    return routes


def dashboard_rows(server, table: str) -> int:
    with sqlite3.connect(f"file:{server.data_dir / 'log' / 'dashboard.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]


def recorded_requests(server, at_least: int = 1) -> int:
    """How many requests the dashboard holds, once it holds ``at_least`` (it writes after answering)."""
    deadline = time.monotonic() + 10
    while (count := dashboard_rows(server, "Request")) < at_least and time.monotonic() < deadline:
        server.get("/health", auth=False)
        time.sleep(0.3)
    return count


def request_ids(server) -> set[int]:
    """The ids of the requests the dashboard holds now (no request is sent to count them)."""
    with sqlite3.connect(f"file:{server.data_dir / 'log' / 'dashboard.db'}?mode=ro", uri=True, timeout=10) as db:
        return {row[0] for row in db.execute("SELECT id FROM Request")}


def test_every_dashboard_route_refuses_anonymous_callers(web, dashboard_routes):
    recorded_requests(web)
    before = request_ids(web)
    same_origin = {"Origin": web.url}  # so that only the missing login can refuse
    answered = []
    for url, method, endpoint in dashboard_routes:
        if endpoint == "dashboard.static":
            continue
        answer = requests.request(method, web.url + url, headers={**JSON, **same_origin}, allow_redirects=False,
                                  json={"age_threshold_weeks": 0, "delete_custom_graph_data": True}, timeout=30)
        answered.append((method, url, answer.status_code))
        envelope_of(answer, 401, "UNAUTHORIZED")
        # a browser is sent to the service's login page, and back here after it
        page = requests.request(method, web.url + url, headers={"Accept": "text/html", **same_origin},
                                allow_redirects=False, timeout=30)
        assert page.status_code in (302, 303), (method, url, page.status_code)
        assert page.headers["Location"].startswith("/login?next="), (method, url, page.headers["Location"])
    assert ("POST", "/dashboard/database_pruning/prune_on_demand", 401) in answered
    assert ("POST", "/dashboard/telemetry/accept_telemetry_consent", 401) in answered
    assert ("GET", "/dashboard/database_pruning/get_database_size", 401) in answered
    assert ("GET", "/dashboard/telemetry/get_is_telemetry_answered", 401) in answered
    missing = before - request_ids(web)
    assert before and not missing, sorted(missing)[:10]  # the monitoring history was not pruned


def test_dashboard_static_files_stay_public_and_the_admin_gets_in(web):
    assert requests.get(web.url + "/dashboard/static/js/app.js", timeout=30).status_code == 200
    session, _ = logged_in(web)
    size = session.get(web.url + "/dashboard/database_pruning/get_database_size", timeout=30)
    assert size.status_code == 200 and "size" in size.text.lower()
    assert session.get(web.url + "/dashboard/api/overview", timeout=30).status_code == 200


# --- 4: no cross-site change, no second set of dashboard users ----------------------------


def endpoint_level(server, name: str) -> int | None:
    with sqlite3.connect(f"file:{server.data_dir / 'log' / 'dashboard.db'}?mode=ro", uri=True, timeout=10) as db:
        row = db.execute("SELECT monitor_level FROM Endpoint WHERE name = ?", (name,)).fetchone()
    return row and row[0]


# The form FMD 5.1.0's user_create reads (views/auth.py): a permanent dashboard admin.
PLANTED_USER = {"username": "mallory", "password": "mallory-pass", "password2": "mallory-pass", "is_admin": "true"}


def test_cross_origin_dashboard_posts_with_the_admin_cookie_are_refused(web):
    session, _ = logged_in(web)  # the admin's browser: its cookie goes to every port of 127.0.0.1
    recorded_requests(web)
    other_port = f"http://127.0.0.1:{free_port()}"
    forged = [{"Origin": other_port, "Referer": other_port + "/"}, {"Origin": "null"},
              {"Referer": other_port + "/page"}, {}]
    level = endpoint_level(web, "rest.health")
    assert level is not None
    history = dashboard_rows(web, "Request")
    for headers in forged:
        user = session.post(web.url + "/dashboard/api/user/create", headers=headers, timeout=30,
                            data=PLANTED_USER)
        assert user.status_code == 403, (headers, user.status_code, user.text[:200])
        rule = session.post(web.url + "/dashboard/api/set_rule", headers=headers, timeout=30,
                            data={"name": "rest.health", "value": (level + 1) % 4})
        assert rule.status_code == 403, (headers, rule.status_code, rule.text[:200])
        prune = session.post(web.url + "/dashboard/database_pruning/prune_on_demand", headers=headers, timeout=30,
                             json={"age_threshold_weeks": 0, "delete_custom_graph_data": True})
        assert prune.status_code == 403, (headers, prune.status_code)
    assert endpoint_level(web, "rest.health") == level
    assert dashboard_rows(web, "Request") >= history
    users = session.get(web.url + "/dashboard/api/users", timeout=30).json()
    assert [user["username"] for user in users] == ["admin"]

    # From the dashboard's own pages the same change goes through: the origin was the refusal.
    allowed = session.post(web.url + "/dashboard/api/set_rule", headers={"Origin": web.url}, timeout=30,
                           data={"name": "rest.health", "value": (level + 1) % 4})
    assert allowed.status_code == 200, allowed.text[:200]
    assert endpoint_level(web, "rest.health") == (level + 1) % 4
    # Users cannot be managed even from there.
    for action in ("create", "edit", "delete"):
        answer = session.post(web.url + f"/dashboard/api/user/{action}", headers={"Origin": web.url}, timeout=30,
                              data={**PLANTED_USER, "user_id": 1})
        assert answer.status_code == 403, (action, answer.status_code)


# --- 5: anonymous callers learn no name they did not bring ---------------------------------


def photo_of(faces: Path, person_and_file: tuple[str, str]) -> bytes:
    return (faces / "celebrities" / "val" / person_and_file[0] / person_and_file[1]).read_bytes()


def test_anonymous_predict_names_only_recognised_faces(web, faces):
    stranger = {"file": ("s.jpg", photo_of(faces, STRANGER))}
    full = envelope_of(web.post("/predict", files=stranger), 200)  # the token: everything
    assert full["faces"] and full["faces"][0]["name"] == "unknown" and full["faces"][0]["candidate"] in MODEL_B_PEOPLE

    answer = web.post("/predict", auth=False, files=stranger)
    anonymous = envelope_of(answer, 200, "IMAGE_NOT_RECOGNIZED")
    assert [set(face) for face in anonymous["faces"]] == [{"name", "confidence", "box"}]
    assert anonymous["faces"][0]["name"] == "unknown" and anonymous["faces"][0]["confidence"] == 0
    assert not any(name in answer.text for name in PEOPLE), answer.text

    known = envelope_of(web.post("/predict", auth=False, files={"file": ("k.jpg", photo_of(faces, KNOWN))}), 200)
    assert [(face["name"], set(face)) for face in known["faces"]] == [(KNOWN[0], {"name", "confidence", "box"})]
    assert list(known["data"]) == [KNOWN[0]]

    # a browser posting the form without JavaScript gets the same, as a page
    page = requests.post(web.url + "/predict", files=stranger, headers={"Accept": "text/html"}, timeout=60)
    assert page.status_code == 200 and "Nobody the model knows" in page.text
    assert not any(name in page.text for name in PEOPLE)


def test_the_people_list_is_for_the_admin_only(web):
    anonymous = requests.get(web.url + "/", timeout=30)
    assert anonymous.status_code == 200 and "knows 2 people" in " ".join(anonymous.text.split())
    assert not any(name in anonymous.text for name in PEOPLE)
    session, _ = logged_in(web)
    admin = session.get(web.url + "/", timeout=30)
    assert all(name in admin.text for name in MODEL_B_PEOPLE)


# --- 6: logging out ends the session on the server -----------------------------------------


def test_a_cookie_saved_before_logout_opens_nothing_after(web, hostile_models):
    _, (model_a, model_b) = hostile_models
    session, csrf = logged_in(web)
    saved = session.cookies.get("session")
    envelope_of(session.get(web.url + "/jobs", headers=JSON), 200)
    assert session.get(web.url + "/dashboard/api/overview", timeout=30).status_code == 200
    logout = session.post(web.url + "/logout", headers={"X-CSRFToken": csrf}, allow_redirects=False, timeout=30)
    assert logout.status_code in (302, 303)

    replay = requests.Session()
    replay.cookies.set("session", saved)
    envelope_of(replay.get(web.url + "/jobs", headers=JSON, timeout=30), 401, "UNAUTHORIZED")
    assert replay.get(web.url + "/dashboard/api/overview", headers=JSON, timeout=30).status_code == 401
    activate = replay.post(web.url + f"/models/{model_a}/activate", headers={**JSON, "X-CSRFToken": csrf}, timeout=30)
    assert activate.status_code in (400, 401), activate.status_code
    assert envelope_of(activate)["error"] in ("CSRF_FAILED", "UNAUTHORIZED")
    assert (web.data_dir / "dataset" / "model" / "ACTIVE").read_text() == model_b
    # the same cookie worked before the logout, and another login still works
    envelope_of(logged_in(web)[0].get(web.url + "/jobs", headers=JSON), 200)


def test_the_dashboard_log_out_ends_the_service_session(web):
    session, _ = logged_in(web)
    saved = session.cookies.get("session")
    out = session.get(web.url + "/dashboard/logout", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert out.status_code == 302
    replay = requests.Session()
    replay.cookies.set("session", saved)
    envelope_of(replay.get(web.url + "/jobs", headers=JSON, timeout=30), 401, "UNAUTHORIZED")
    assert replay.get(web.url + "/dashboard/api/overview", headers=JSON, timeout=30).status_code == 401


def test_a_new_admin_password_ends_older_sessions_and_planted_users_go(web):
    session, _ = logged_in(web)
    saved = session.cookies.get("session")
    with sqlite3.connect(web.data_dir / "log" / "dashboard.db", timeout=10) as db:  # planted by a past attack
        db.execute('INSERT INTO "User" (username, password_hash, is_admin) VALUES (?, ?, 1)',
                   ("mallory", "pbkdf2:sha256:1000$x$y"))
    old_password = web.password
    web.env = {**web.env, "PYRECOGNIZER_ADMIN_PASSWORD": "a-brand-new-password"}
    web.password = "a-brand-new-password"
    # The module's server restarts in place (its fixture stops the new process at the end).
    vars(web).update(vars(restarted(web)))

    replay = requests.Session()
    replay.cookies.set("session", saved)
    envelope_of(replay.get(web.url + "/jobs", headers=JSON, timeout=30), 401, "UNAUTHORIZED")
    with sqlite3.connect(f"file:{web.data_dir / 'log' / 'dashboard.db'}?mode=ro", uri=True) as db:
        assert [row[0] for row in db.execute('SELECT username FROM "User"')] == ["admin"]
    logged_in(web)  # the new password
    with pytest.raises(AssertionError):
        logged_in(web, password=old_password)


# --- 9: the login's next, wrong tokens, short secrets --------------------------------------


@pytest.mark.parametrize("target", ["/\r\nX-Injected: 1", "/\nX-Injected: 1", "/models\x00", "/\x7f"])
def test_login_with_control_characters_in_next_lands_home(web, target):
    session = requests.Session()
    page = session.get(web.url + "/login", params={"next": target}, timeout=30)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)[1]
    answer = session.post(web.url + "/login", params={"next": target}, allow_redirects=False, timeout=30,
                          data={"password": web.password, "csrf_token": token})
    assert answer.status_code == 302, (answer.status_code, answer.text[:300])
    assert answer.headers["Location"] == "/" and "X-Injected" not in answer.headers


def test_wrong_tokens_are_rate_limited_per_address(web):
    guesser, other = Client(web, "127.0.0.41"), Client(web, "127.0.0.42")
    statuses = [guesser.get("/jobs", auth=False, headers={"Authorization": f"Bearer guess-{n:04d}-{'x' * 16}", **JSON})
                .status_code for n in range(30)]
    workers = load_config(environ={}).server.workers
    assert set(statuses) == {401, 429}, statuses
    assert statuses.count(401) <= WRONG_TOKENS_PER_MINUTE * workers, statuses  # counted per worker process
    envelope_of(guesser.get("/jobs", headers=JSON), 429, "TOO_MANY_REQUESTS")  # even the right token now
    assert guesser.get("/", headers={"Accept": "text/html"}).status_code == 429  # a page too, not a 500
    envelope_of(other.get("/jobs", headers=JSON), 200)  # another address is not held back


@pytest.mark.parametrize("variable, value, shortest", [
    ("PYRECOGNIZER_API_TOKEN", "fifteen-chars-x", 16), ("PYRECOGNIZER_ADMIN_PASSWORD", "nine-char", 10)])
def test_short_secrets_refuse_to_start(tmp_path, variable, value, shortest):
    with pytest.raises(ConfigError, match=f"{variable}.*too short: {len(value)} characters, at least {shortest}"):
        load_config(environ={variable: value})
    load_config(environ={variable: value + "x"})  # one more character is enough

    env = {**TEST_CREDENTIALS_ENV, variable: value, "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "main.py", "--data-dir", str(tmp_path), "serve", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-500:])
    answer = json.loads(done.stdout.strip().splitlines()[-1])["response"]
    assert answer["error"] == "CONFIG_NOT_VALID" and variable in answer["description"], answer
    assert value not in done.stdout + done.stderr  # the refused secret is not echoed
    assert not (tmp_path / "dataset" / "secrets.json").exists()


TEST_CREDENTIALS_ENV = {"PYRECOGNIZER_API_TOKEN": TEST_CREDENTIALS["api_token"],
                        "PYRECOGNIZER_ADMIN_PASSWORD": TEST_CREDENTIALS["admin_password"]}
