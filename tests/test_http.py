"""The HTTP contract in this process (Flask's test client over the real service, real dlib):
the envelope for API clients, pages for browsers from the same views, and errors in both."""
from __future__ import annotations

import io
import time

import pytest

from tests.conftest import app_over
from tests.support import TEST_CREDENTIALS, envelope_of, zipped

TOKEN = {"Authorization": f"Bearer {TEST_CREDENTIALS['api_token']}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def as_admin(client) -> None:
    """Log the test client's browser session in, as POST /login does: a session opened on the
    server side, and its id and the user in the cookie."""
    from api.sessions import SessionStore

    app = client.application
    store = SessionStore(app.extensions["pyrecognizer"].paths.sessions)
    session_id = store.open(3600, app.extensions["pyrecognizer.credentials"].password_fingerprint)
    with client.session_transaction() as session:
        session.update(sid=session_id, user="admin")


def test_health_answers_the_envelope(client):
    health = envelope_of(client.get("/health"), 200)
    assert health["data"]["up"] is True and health["data"]["model_loaded"] is False


def test_an_unknown_path_is_an_envelope_for_clients_and_a_page_for_browsers(client):
    envelope_of(client.get("/nowhere"), 404, "NOT_FOUND")
    page = client.get("/nowhere", headers=BROWSER)
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Not found" in page.get_data(as_text=True)


def test_models_needs_the_token_and_sends_a_browser_to_log_in(client):
    envelope_of(client.get("/models"), 401, "UNAUTHORIZED")
    listing = envelope_of(client.get("/models", headers=TOKEN), 200)
    assert listing["data"] == [] and listing["active"] is None
    moved = client.get("/models", headers=BROWSER)
    assert moved.status_code == 303 and moved.location.endswith("/login?next=/models")


def test_the_same_models_view_gives_a_logged_in_browser_its_page(client):
    as_admin(client)
    page = client.get("/models", headers=BROWSER)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "<h1>Models</h1>" in page.get_data(as_text=True) and page.headers["Cache-Control"] == "no-store"
    assert envelope_of(client.get("/models"), 200)["data"] == []  # JSON for the same session's fetch()


def test_predict_without_a_model_or_a_file(client, faces):
    photo = (faces / "samples" / "obama.jpg").read_bytes()
    envelope_of(client.post("/predict", data={"file": (io.BytesIO(photo), "obama.jpg")}), 503, "CLASSIFIER_NOT_LOADED")
    envelope_of(client.post("/predict"), 400, "MISSING_FILE")
    page = client.post("/predict", data={"file": (io.BytesIO(photo), "obama.jpg")}, headers=BROWSER)
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert "There is no model yet" in page.get_data(as_text=True)


def test_a_bad_archive_is_refused_before_any_job(client):
    answer = client.post("/train", headers=TOKEN, data={"file": (io.BytesIO(b"not a zip"), "photos.zip")})
    envelope_of(answer, 400, "ARCHIVE_NOT_VALID")
    assert envelope_of(client.get("/jobs", headers=TOKEN), 200)["data"] == []


def test_page_errors_are_pages_whatever_the_client_accepts(client):
    as_admin(client)
    page = client.get(f"/train?job={'ab' * 16}")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_openapi_is_served(client):
    assert client.get("/openapi.json").json["openapi"].startswith("3.")


def test_predict_access_follows_the_token_setting(tmp_path, faces):
    client = app_over(tmp_path / "data", security={"predict_requires_token": True}).test_client()
    photo = (faces / "samples" / "obama.jpg").read_bytes()
    for path, fields, purpose in (("/predict", ("file",), "to predict"), ("/verify", ("file1", "file2"),
                                  "to verify and encode"), ("/encode", ("file",), "to verify and encode")):
        refused = envelope_of(client.post(path, data={field: (io.BytesIO(photo), "a.jpg") for field in fields}),
                              401, "UNAUTHORIZED")
        assert refused["description"].endswith(purpose)
    envelope_of(client.post("/predict", headers=TOKEN, data={"file": (io.BytesIO(photo), "a.jpg")}),
                503, "CLASSIFIER_NOT_LOADED")


SMALL_GALLERY = {"Elton John": 3, "Madonna": 3, "Mindy Kaling": 3}


@pytest.fixture(scope="module")
def small_app(faces, tmp_path_factory):
    """An app trained over HTTP, in this process, on three photos of three people (seconds)."""
    folder = tmp_path_factory.mktemp("small-gallery")
    for person, count in SMALL_GALLERY.items():
        (folder / "photos" / person).mkdir(parents=True)
        for photo in sorted((faces / "celebrities" / "train" / person).iterdir())[:count]:
            (folder / "photos" / person / photo.name).write_bytes(photo.read_bytes())
    app = app_over(folder / "data")
    client = app.test_client()
    archive = zipped(folder / "photos", folder / "small.zip").read_bytes()
    started = envelope_of(client.post("/train", headers=TOKEN, data={"file": (io.BytesIO(archive), "small.zip")}), 202)
    deadline = time.monotonic() + 120
    while (job := envelope_of(client.get(started["job_url"], headers=TOKEN), 200)["data"])["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["state"] == "done", job
    return app


def test_predict_names_the_person_for_clients_and_browsers(small_app, faces):
    client = small_app.test_client()
    photo = (faces / "celebrities" / "val" / "Elton John" / "1.jpg").read_bytes()
    body = envelope_of(client.post("/predict", data={"file": (io.BytesIO(photo), "elton.jpg")}), 200)
    assert list(body["data"]) == ["Elton John"] and body["image_url"] == f"/uploads/{body['description']}"
    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data[:3] == b"\xff\xd8\xff"
    page = client.post("/", data={"file": (io.BytesIO(photo), "elton.jpg")}, headers=BROWSER)
    assert page.status_code == 200 and page.mimetype == "text/html" and "Elton John" in page.get_data(as_text=True)


def test_a_browser_form_activating_a_model_gets_the_models_page_and_a_message(small_app):
    client = small_app.test_client()
    model_id = envelope_of(client.get("/models", headers=TOKEN), 200)["active"]
    envelope_of(client.post(f"/models/{model_id}/activate", headers=TOKEN), 200)
    moved = client.post(f"/models/{model_id}/activate", headers={**TOKEN, **BROWSER})
    assert moved.status_code == 303 and moved.location.endswith("/models")
    with client.session_transaction() as session:
        assert session["_flashes"] == [("message", f"model {model_id} is active")]


def test_a_logged_in_browser_posting_without_its_csrf_token_is_refused(client):
    as_admin(client)
    envelope_of(client.post("/models/20000101_000000/activate"), 400, "CSRF_FAILED")
    page = client.post("/models/20000101_000000/activate", headers=BROWSER)
    assert page.status_code == 400 and "This page has expired" in page.get_data(as_text=True)


def test_a_browser_form_naming_no_model_gets_the_error_page(client):
    answer = client.post("/models/20000101_000000/activate", headers={**TOKEN, **BROWSER})
    assert answer.status_code == 404 and answer.mimetype == "text/html"
