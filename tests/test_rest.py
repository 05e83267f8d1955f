"""The HTTP flow through a real server process (gunicorn, two workers), as a REST client sees it."""
import io
import zipfile

import pytest

from tests.support import Server, envelope_of, zipped

pytestmark = [pytest.mark.usefixtures("faces"), pytest.mark.e2e]


@pytest.fixture(scope="module")
def trained_server(faces, celebrities_zip, tmp_path_factory):
    """One server for the module, trained over HTTP on celebrities/train."""
    server = Server(tmp_path_factory.mktemp("rest")).start()
    try:
        yield server, trained_over_http(server, faces, celebrities_zip)
    finally:
        server.stop()


def trained_over_http(server, faces, celebrities_zip) -> dict:
    """Train the server on celebrities/train the way a REST client does; return the job."""
    before = envelope_of(server.get("/health"))
    assert before["data"]["model_loaded"] is False
    no_model = server.post("/predict", files={"file": (faces / "samples" / "obama.jpg").open("rb")})
    assert no_model.status_code == 503 and envelope_of(no_model)["error"] == "CLASSIFIER_NOT_LOADED"

    started = server.post("/train", files={"file": ("celebrities.zip", celebrities_zip.open("rb"), "application/zip")})
    assert started.status_code == 202, started.text
    job_url = envelope_of(started)["job_url"]
    second = server.post("/train", files={"file": ("again.zip", celebrities_zip.open("rb"))})
    assert second.status_code == 409 and envelope_of(second)["error"] == "TRAINING_IN_PROGRESS"
    job = server.wait_for_job(job_url)
    assert job["state"] == "done", job
    assert job["progress"] == {"done": 93, "total": 93}
    return job


def test_trained_model_is_active_and_listed(trained_server):
    server, job = trained_server
    health = envelope_of(server.get("/health"))["data"]
    assert health["model_loaded"] and health["model"] == job["result"]["model"]
    models = envelope_of(server.get("/models", headers={"Accept": "application/json"}))
    assert [m["id"] for m in models["data"] if m["active"]] == [job["result"]["model"]]
    assert models["data"][0]["people"] == 5


def test_predict_names_the_person_and_serves_the_annotated_image(trained_server, faces):
    server, _ = trained_server
    photo = faces / "celebrities" / "val" / "Elton John" / "1.jpg"
    answer = server.post("/predict", files={"file": ("00000005.jpg?ssl=1", photo.open("rb"))})
    assert answer.status_code == 200
    body = envelope_of(answer)
    assert body["status"] == "OK" and list(body["data"]) == ["Elton John"]
    assert 0.5 < body["data"]["Elton John"] <= 1
    face = body["faces"][0]
    assert face["name"] == "Elton John" and set(face["box"]) == {"top", "right", "bottom", "left"}
    image = server.get(body["image_url"])
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert image.content[:3] == b"\xff\xd8\xff"
    assert server.post("/", files={"file": photo.open("rb")}).json()["response"]["data"].keys() == {"Elton John"}


def test_no_face_and_unknown_answers(trained_server, faces):
    server, _ = trained_server
    no_face = envelope_of(server.post("/predict", files={"file": (faces / "samples" / "no_face_test.png").open("rb")}))
    assert no_face["error"] == "NO_FACE_FOUND" and no_face["data"] == {}
    stranger = envelope_of(server.post("/predict", files={"file": (faces / "samples" / "unknown_face.jpg").open("rb")}))
    assert stranger["status"] == "OK" and stranger["error"] == "IMAGE_NOT_RECOGNIZED" and stranger["data"] == {}


@pytest.mark.parametrize("files, code, status", [
    (None, "MISSING_FILE", 400),
    ({"file": ("notes.txt", b"hello, this is text")}, "FILE_NOT_VALID", 400),
    ({"file": ("photo.jpg", b"<html><script>alert(1)</script></html>")}, "FILE_NOT_VALID", 400),
    ({"file": ("empty.jpg", b"")}, "MISSING_FILE", 400),
])
def test_bad_predict_input_is_refused_clearly(trained_server, files, code, status):
    server, _ = trained_server
    answer = server.post("/predict", files=files) if files else server.post("/predict", data={"x": "1"})
    assert answer.status_code == status and envelope_of(answer)["error"] == code
    assert envelope_of(server.get("/health"))["data"]["model_loaded"]


def test_bad_archives_are_refused_before_any_job(trained_server):
    server, _ = trained_server
    jobs_before = len(envelope_of(server.get("/jobs"))["data"])
    not_zip = server.post("/train", files={"file": ("x.zip", b"PK\x03\x04 this is not a zip")})
    assert not_zip.status_code == 400 and envelope_of(not_zip)["error"] == "ARCHIVE_NOT_VALID"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo_at_root.jpg", b"\xff\xd8\xff")
    flat = server.post("/train", files={"file": ("flat.zip", buffer.getvalue())})
    assert flat.status_code == 422 and envelope_of(flat)["error"] == "DATASET_NOT_VALID"
    assert len(envelope_of(server.get("/jobs"))["data"]) == jobs_before
    assert not list((server.data_dir / "dataset" / "tmp").iterdir())


def test_training_without_usable_faces_fails_the_job(trained_server, faces, tmp_path):
    server, _ = trained_server
    folder = tmp_path / "nobody" / "Nobody"
    folder.mkdir(parents=True)
    (folder / "empty.png").write_bytes((faces / "samples" / "no_face_test.png").read_bytes())
    started = server.post("/train", files={"file": ("nobody.zip", zipped(tmp_path / "nobody", tmp_path / "n.zip").open("rb"))})
    job = server.wait_for_job(envelope_of(started)["job_url"])
    assert job["state"] == "failed" and job["error"]["code"] == "DATASET_NOT_VALID"
    assert job["error"]["data"]["skipped"][0]["reason"] == "no face found"


def test_switching_models(trained_server, faces, tmp_path):
    server, job = trained_server
    first = job["result"]["model"]
    subset = tmp_path / "two"
    for person in ("Madonna", "Elton John"):
        (subset / person).mkdir(parents=True)
        for photo in sorted((faces / "celebrities" / "train" / person).glob("*"))[:6]:
            (subset / person / photo.name).write_bytes(photo.read_bytes())
    started = server.post("/train", files={"file": ("two.zip", zipped(subset, tmp_path / "two.zip").open("rb"))})
    second = server.wait_for_job(envelope_of(started)["job_url"])["result"]["model"]
    photo = (faces / "celebrities" / "val" / "Mindy Kaling" / "2.jpg").read_bytes()
    for _ in range(4):  # every worker process follows the new model
        answer = envelope_of(server.post("/predict", files={"file": photo}))
        assert answer["model"] == second and "Mindy Kaling" not in answer["data"]
    activated = server.post(f"/models/{first}/activate")
    assert activated.status_code == 200
    for _ in range(4):
        answer = envelope_of(server.post("/predict", files={"file": photo}))
        assert answer["model"] == first and list(answer["data"]) == ["Mindy Kaling"]
    assert server.post("/models/20000101_000000/activate").status_code == 404


def test_job_and_upload_names_cannot_be_abused(trained_server):
    server, _ = trained_server
    for path in ("/uploads/..%2f..%2fconf%2fconf.json", "/uploads/../main.py", "/uploads/" + "0" * 32 + ".jpg",
                 "/jobs/../../etc/passwd", "/jobs/" + "f" * 32, "/models/..%2fACTIVE"):
        answer = server.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["response"]["status"] == "KO"


def test_openapi_describes_the_endpoints(trained_server):
    server, _ = trained_server
    spec = server.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {"/predict", "/train", "/tune", "/jobs/{job_id}", "/models", "/models/{model_id}/activate",
            "/health"} <= set(spec["paths"])


def test_the_log_records_the_training(trained_server):
    server, job = trained_server
    log = (server.data_dir / "log" / "pyrecognizer.log").read_text()
    assert job["result"]["model"] in log
