"""People against real server processes (gunicorn, two workers), as a REST client sees them:
enrolment one photo at a time, recognition, forgetting everywhere (grep and numbers), ids of
changes in one second, the activate/delete race, SIGKILL mid-enrolment, enrolment during a
training job."""
from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.support import Server, envelope_of

pytestmark = [pytest.mark.usefixtures("faces"), pytest.mark.e2e]

PHOTOS_EACH = 5  # photos enrolled per person, one request each (3 each already name 23 of 25)
HARNESS_FILES = ("server-output.log", "test-conf.json")  # the test's own capture of the console, and its config


def enrol(server: Server, name: str, *paths: Path, timeout: float = 120):
    return server.post(f"/people/{name}/photos", files=[("file", (path.name, path.read_bytes())) for path in paths],
                       timeout=timeout)


def faces_of(server: Server, path: Path) -> list[dict]:
    return envelope_of(server.post("/predict", files={"file": (path.name, path.read_bytes())}, auth=False), 200)["faces"]


def predicted(server: Server, path: Path) -> list[str]:
    return [face["name"] for face in faces_of(server, path)]


def val_photos(faces: Path) -> list[tuple[str, Path]]:
    return [(person.name, photo) for person in sorted((faces / "celebrities" / "val").iterdir())
            for photo in sorted(person.iterdir())]


def stored_encodings(data_dir: Path) -> np.ndarray:
    """Every encoding kept under the data folder: models' model.dat and gallery.npy (float32),
    and the encoding cache."""
    found = [np.zeros((0, 128))]
    for path in data_dir.rglob("*"):
        if not path.is_file():
            continue
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            continue  # not a NumPy file
        if isinstance(loaded, np.ndarray):  # a .npy: the served gallery
            if loaded.ndim == 2 and loaded.shape[1] == 128:
                found.append(loaded.astype(np.float64))
            continue
        with loaded as arrays:
            if "encodings" in arrays.files:
                found.append(arrays["encodings"].reshape(-1, 128))
    return np.vstack(found)


def files_naming(data_dir: Path, name: str) -> list[str]:
    """The files under the data folder whose bytes hold ``name``, in any case."""
    needle = name.lower().encode()
    return [str(path.relative_to(data_dir)) for path in data_dir.rglob("*")
            if path.is_file() and path.name not in HARNESS_FILES and needle in path.read_bytes().lower()]


def encodings_of(data_dir: Path, model_id: str, name: str) -> np.ndarray:
    with np.load(data_dir / "dataset" / "model" / model_id / "model.dat", allow_pickle=False) as arrays:
        return arrays["encodings"][arrays["labels"] == name]


def assert_forgotten(server: Server, name: str, theirs: np.ndarray) -> None:
    assert files_naming(server.data_dir, name) == []
    kept = stored_encodings(server.data_dir)
    assert len(theirs) and len(kept)
    nearest = np.min(np.linalg.norm(kept[:, None, :] - theirs[None, :, :], axis=2), axis=0)
    assert nearest.min() > 1e-3, nearest  # none of their encodings is stored anywhere


@pytest.fixture(scope="module")
def enrolled(faces, tmp_path_factory):
    """One server with the 5 celebrities enrolled over HTTP, one photo per request."""
    server = Server(tmp_path_factory.mktemp("people")).start()
    try:
        models = []
        for person in sorted((faces / "celebrities" / "train").iterdir()):
            for photo in sorted(person.iterdir())[:PHOTOS_EACH + 3]:
                answer = enrol(server, person.name, photo)
                if answer.status_code == 422:  # no single face in it: listed as skipped, nothing written
                    assert envelope_of(answer, 422, "DATASET_NOT_VALID")["data"]["skipped"]
                    continue
                models.append(envelope_of(answer, 201)["model"])
                if sum(1 for m in envelope_of(server.get(f"/people/{person.name}"))["data"]["photos"]) == PHOTOS_EACH:
                    break
        yield server, models
    finally:
        server.stop()


def test_five_people_enrolled_one_photo_at_a_time_are_recognised(enrolled, faces):
    server, models = enrolled
    assert len(set(models)) == len(models) == 5 * PHOTOS_EACH
    people = envelope_of(server.get("/people"), 200)["data"]
    assert people == [{"name": person.name, "photos": PHOTOS_EACH} for person in sorted((faces / "celebrities" / "train").iterdir())]
    right = sum(predicted(server, photo) == [name] for name, photo in val_photos(faces))
    assert right >= 23, right


def test_two_enrolments_in_the_same_second_get_distinct_ids_and_none_is_lost(enrolled, faces):
    server, _ = enrolled
    lfw = sorted((faces / "lfw" / "people").iterdir())
    same_second = False
    for attempt in range(4):
        people = lfw[2 * attempt:2 * attempt + 2]
        answers = [None, None]
        start = threading.Barrier(2)

        def send(index):
            start.wait()
            answers[index] = enrol(server, people[index].name, sorted(people[index].iterdir())[0])

        threads = [threading.Thread(target=send, args=(index,)) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = [envelope_of(answer, 201)["model"] for answer in answers]
        assert ids[0] != ids[1]
        known = {person["name"] for person in envelope_of(server.get("/people"))["data"]}
        assert {people[0].name, people[1].name} <= known  # the later change built on the earlier one
        if ids[0][:15] == ids[1][:15]:
            same_second = True
            assert sorted(ids)[-1][15:] and envelope_of(server.get(f"/models/{max(ids)}"))["data"]["id"] == max(ids)
            break
    assert same_second, "no two enrolments landed in the same second in 4 attempts"


def test_concurrent_activate_and_delete_never_delete_the_active_model(enrolled):
    server, _ = enrolled
    names = ["Madonna", "Louise Ciccone"]
    for round_ in range(20):
        current = 0 if names[0] in {p["name"] for p in envelope_of(server.get("/people"))["data"]} else 1
        envelope_of(server.request("PATCH", f"/people/{names[current]}", json={"name": names[1 - current]}), 200)
        listing = envelope_of(server.get("/models", headers={"Accept": "application/json"}))
        active, target = listing["active"], [m["id"] for m in listing["data"] if not m["active"]][0]
        answers = {}
        start = threading.Barrier(2)

        def race(kind):
            start.wait()
            answers[kind] = (server.post(f"/models/{target}/activate") if kind == "activate"
                             else server.delete(f"/models/{target}"))

        threads = [threading.Thread(target=race, args=(kind,)) for kind in ("activate", "delete")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        codes = (answers["activate"].status_code, answers["delete"].status_code)
        assert codes in ((200, 409), (404, 200)), (round_, codes, answers["delete"].text)
        if codes == (200, 409):
            assert envelope_of(answers["delete"])["error"] == "MODEL_ACTIVE"
        pointer = (server.data_dir / "dataset" / "model" / "ACTIVE").read_text()
        assert pointer == (target if codes[0] == 200 else active)
        assert (server.data_dir / "dataset" / "model" / pointer / "manifest.json").is_file()
        assert envelope_of(server.get("/health"))["data"]["model"] == pointer
    if "Louise Ciccone" in {p["name"] for p in envelope_of(server.get("/people"))["data"]}:
        envelope_of(server.request("PATCH", "/people/Louise Ciccone", json={"name": "Madonna"}), 200)


def test_forgetting_a_person_erases_them_from_every_file_and_their_photos_become_unknown(enrolled, faces):
    server, _ = enrolled
    madonna = [photo for name, photo in val_photos(faces) if name == "Madonna"]
    # where her face is in each photo (4.jpg shows someone else too), and annotated copies of her, named
    hers, copies = {}, []
    for photo in madonna:
        answer = server.post("/predict", files={"file": (photo.name, photo.read_bytes())})
        found = envelope_of(answer, 200)
        hers[photo] = [face["box"] for face in found["faces"] if face["name"] == "Madonna"]
        if hers[photo]:
            copies.append(answer.json()["response"]["image_url"])  # the annotated copy, showing her face
    assert sum(len(boxes) for boxes in hers.values()) >= 4
    assert all(server.get(url).status_code == 200 for url in copies)
    theirs = np.vstack([encodings_of(server.data_dir, model, "Madonna")
                        for model in [envelope_of(server.get("/health"))["data"]["model"]]])
    assert files_naming(server.data_dir, "Madonna")  # before: her name is in the models
    answer = envelope_of(server.post("/people/Madonna/forget"), 200)
    erased = answer["data"]["erased"]
    assert erased["new_model"] and erased["photos"] == PHOTOS_EACH and erased["annotated_copies"] >= len(copies) >= 4
    for url in copies:  # her copies are gone: from the folder, and from the service
        assert not (server.data_dir / "uploads" / url.rsplit("/", 1)[-1]).exists(), url
        assert server.get(url).status_code == 404, url
    assert erased["models_rewritten"] or erased["models_deleted"]
    assert_forgotten(server, "Madonna", theirs)
    assert "Madonna" not in {p["name"] for p in envelope_of(server.get("/people"))["data"]}
    for photo, boxes in hers.items():
        after = {tuple(face["box"].values()): face["name"] for face in faces_of(server, photo)}
        assert all(after[tuple(box.values())] == "unknown" for box in boxes), (photo, after)
    envelope_of(server.post("/people/Madonna/forget"), 404, "NOT_FOUND")
    others = [name for name, photo in val_photos(faces) if name != "Madonna" and predicted(server, photo) == [name]]
    assert len(others) >= 18


@pytest.mark.slow
def test_sigkill_mid_enrolment_leaves_the_previous_model_active_and_loadable(faces, tmp_path):
    server = Server(tmp_path / "killed").start()
    try:
        before = envelope_of(enrol(server, "Madonna", faces / "celebrities" / "train" / "Madonna" / "1.jpg"), 201)["model"]
        photos = sorted((faces / "celebrities" / "train" / "Elton John").iterdir())[:10]
        started = time.monotonic()
        probe = envelope_of(enrol(server, "Probe", *photos), 201)  # how long the 10 photos take here
        ten = time.monotonic() - started
        timed, change = probe["model"], len(probe["data"]["added"])  # the photos showing one face each
        assert change >= 7, probe["data"]["skipped"]
        envelope_of(server.delete("/people/Probe"), 200)
        previous = envelope_of(server.get("/health"))["data"]["model"]
        assert previous not in (before, timed)
        for delay in (0.3, ten * 0.9):  # while encoding; near the save of the 10-photo change
            thread = threading.Thread(target=lambda: _swallow(enrol, server, "Elton John", *photos), daemon=True)
            thread.start()
            time.sleep(delay)
            server.stop(9)
            thread.join(30)
            server.start()
            model_dir = server.data_dir / "dataset" / "model"
            active = envelope_of(server.get("/health"))["data"]
            assert active["model_loaded"] and active["model"] == (model_dir / "ACTIVE").read_text()
            assert not list(model_dir.glob(".staging-*"))
            people = {p["name"]: p["photos"] for p in envelope_of(server.get("/people"))["data"]}
            if active["model"] == previous:
                assert people == {"Madonna": 1}
            else:  # the kill came after the activation: the whole change is there, in a new model
                assert people == {"Madonna": 1, "Elton John": change}
                envelope_of(server.delete("/people/Elton John"), 200)
                previous = envelope_of(server.get("/health"))["data"]["model"]
            assert server.post("/predict", files={"file": photos[0].open("rb")}, auth=False).status_code == 200
    finally:
        server.stop()


def _swallow(function, *args):
    try:
        function(*args)
    except requests.RequestException:
        pass  # the server was killed under the request


@pytest.mark.slow
def test_enrolment_during_training_gets_models_busy_then_forget_reaches_jobs_and_cache(faces, tmp_path):
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:  # two people of celebrities/train: a short training
        for person in ("Ben Afflek", "Madonna"):
            for photo in sorted((faces / "celebrities" / "train" / person).iterdir()):
                archive.write(photo, f"{person}/{photo.name}")
    server = Server(tmp_path / "training", config={"models": {"busy_wait": 0.5}}).start()
    try:
        started = server.post("/train", files={"file": ("two.zip", two.open("rb"))})
        job_url = envelope_of(started, 202)["job_url"]
        busy = enrol(server, "Adrien Brody", sorted((faces / "lfw" / "people" / "Adrien_Brody").iterdir())[0])
        envelope_of(busy, 409, "MODELS_BUSY")
        assert int(busy.headers["Retry-After"]) >= 1
        job = server.wait_for_job(job_url)
        assert job["state"] == "done"
        assert [p["name"] for p in envelope_of(server.get("/people"))["data"]] == ["Ben Afflek", "Madonna"]  # nothing enrolled meanwhile
        answer = envelope_of(enrol(server, "Adrien Brody", sorted((faces / "lfw" / "people" / "Adrien_Brody").iterdir())[0]), 201)
        assert answer["data"]["created"] and len(envelope_of(server.get("/people"))["data"]) == 3
        trained = job["result"]["model"]
        theirs = encodings_of(server.data_dir, trained, "Madonna")
        assert len(theirs) >= 15 and files_naming(server.data_dir, "Madonna")
        erased = envelope_of(server.post("/people/madonna/forget"), 200)["data"]["erased"]
        assert erased["job_records"] >= 1 and erased["cache_entries"] >= len(theirs) and trained in erased["models_rewritten"]
        assert_forgotten(server, "Madonna", theirs)
        assert [p["name"] for p in envelope_of(server.get("/people"))["data"]] == ["Adrien Brody", "Ben Afflek"]
    finally:
        server.stop()
