"""People, in this process: names and their refusals (issue 13 item 8), the model store's
change lock, ids, pruning and refusals, the calibration policy, and the people endpoints'
contract through the ``client`` fixture. Real photos, real dlib; the server-process tests
are in tests/test_people_server.py."""
from __future__ import annotations

import io
import json
import sqlite3
import threading
import unicodedata
import zipfile

import numpy as np
import pytest

from datastructure.classifier import FaceClassifier
from datastructure.errors import ModelActive, ModelsBusy, NotFound
from datastructure.model_store import MODEL_ID, ModelStore, id_order
from datastructure.names import checked_name, name_key, name_problems, names_problems, person_name
from tests.support import TEST_CREDENTIALS, envelope_of

TOKEN = {"Authorization": f"Bearer {TEST_CREDENTIALS['api_token']}"}
NFC, NFD = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
REFUSED = {  # name -> a word of the reason
    "unknown": "reserved", "UNKNOWN": "reserved", " Unknown ": "reserved", "": "empty", "   ": "empty",
    "Ma\ndonna": "control", "\x1b[31mRed\x1b[0m": "control", "Evil\u202egnp.exe": "control",
    "A\u2066B\u2069": "control", "zero\u200bwidth": "control", "x" * 101: "100", "x" * 10_000: "100",
    "a/b": "slash",
}


# -- names ---------------------------------------------------------------------------------
def test_names_are_stored_in_nfc_without_surrounding_spaces():
    assert NFC != NFD and person_name(NFD) == NFC and person_name("  Madonna \t") == "Madonna"
    assert name_key("Madonna") == name_key("madonna ") == name_key("MADONNA")
    assert name_key(NFC) == name_key(NFD) != name_key("Jose")
    assert checked_name(" Ada Lovelace ") == "Ada Lovelace" and name_problems("x" * 100) == []


@pytest.mark.parametrize("raw", sorted(REFUSED))
def test_refused_names_say_why(raw):
    problems = name_problems(person_name(raw))
    assert problems and REFUSED[raw] in " ".join(problems), problems


def test_names_that_collide_once_normalised_are_both_reported():
    found = names_problems(["Madonna", "madonna", "Madonna ", NFC, NFD, "Ben"])
    assert set(found) == {"Madonna", "madonna", "Madonna ", NFC, NFD}
    assert all("same person" in " ".join(problems) for problems in found.values())


def person_zip(folders: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (folder, photo) in enumerate(folders.items()):
            archive.writestr(f"{folder}/{index}.jpg", photo)
    return buffer.getvalue()


@pytest.mark.parametrize("folders", [["Madonna", "madonna"], ["Madonna", "Madonna "], [NFC, NFD], ["unknown", "Ben"],
                                     ["Ma\x1b[2Jdonna", "Ben"], ["Evil\u202egnp", "Ben"], ["x" * 101, "Ben"]])
def test_a_training_zip_with_refused_folder_names_is_refused_with_reasons(client, faces, folders):
    photo = (faces / "celebrities" / "train" / "Madonna" / "1.jpg").read_bytes()
    answer = client.post("/train", headers=TOKEN, data={"file": (io.BytesIO(person_zip(dict.fromkeys(folders, photo))), "p.zip")})
    body = envelope_of(answer, 422, "DATASET_NOT_VALID")
    assert body["data"]["names"] and all(body["data"]["names"].values())
    assert "\x1b" not in answer.get_data(as_text=True) and "\u202e" not in answer.get_data(as_text=True)


# -- the model store -------------------------------------------------------------------------
def saved(store: ModelStore, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(8, 128)) * 0.05, np.repeat(["a", "b"], 4)
    return store.save(FaceClassifier().fit(X, y), X, y, [f"{label}/{i}" for i, label in enumerate(y)], {"people": {"a": 4, "b": 4}})


def test_ids_within_one_second_get_suffixes_and_sort_by_age(tmp_path):
    store = ModelStore(tmp_path, keep=0)
    ids = [saved(store) for _ in range(12)]
    assert len(set(ids)) == 12 and all(MODEL_ID.match(model_id) for model_id in ids)
    assert store.ids() == sorted(ids, key=id_order)
    same_second = [model_id for model_id in ids if model_id[:15] == ids[-1][:15]]
    assert ids[-1] == same_second[-1] and (len(same_second) == 1 or ids[-1].endswith(f"_{len(same_second)}"))
    assert id_order("20260101_000000_10") > id_order("20260101_000000_2") > id_order("20260101_000000")


def test_the_active_model_cannot_be_deleted_and_pruning_keeps_active_and_previous(tmp_path):
    store = ModelStore(tmp_path, keep=3)
    first = saved(store)
    store.activate(first)
    later = [saved(store, seed) for seed in range(1, 6)]
    store.activate(later[0])  # first becomes the previous one
    store.activate(later[-1])
    with pytest.raises(ModelActive):
        store.delete(later[-1])
    assert store.previous_id() == later[0]
    assert set(store.ids()) == {later[0], *later[-3:]}  # newest 3, and the previous; first pruned


def test_one_change_at_a_time_a_second_writer_waits_then_is_refused(tmp_path):
    store, other = ModelStore(tmp_path, wait=0.2), ModelStore(tmp_path, wait=0.2)
    inside, leave = threading.Event(), threading.Event()

    def hold():
        with store.changing():
            inside.set()
            leave.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    try:
        with pytest.raises(ModelsBusy) as refused:
            saved(other)
        assert refused.value.retry_after >= 1 and other.ids() == []
    finally:
        leave.set()
        holder.join()
    assert MODEL_ID.match(saved(other))


# -- the calibration policy --------------------------------------------------------------------
def gallery(people: int, photos: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 128)) * 0.12
    X = np.repeat(centres, photos, axis=0) + rng.normal(size=(people * photos, 128)) * 0.03
    return X, np.repeat([f"p{i:03d}" for i in range(people)], photos)


def test_a_small_change_keeps_the_calibration_a_larger_one_recalibrates():
    X, y = gallery(60, 5)
    fitted = FaceClassifier(max_strangers=0.01).fit(X, y)
    assert fitted.calibration_["calibrated"]
    extra_X, extra_y = gallery(1, 3, seed=9)
    kept = fitted.refitted(np.vstack([X, extra_X]), np.concatenate([y, ["new"] * 3]), changed=3, recalibrate_share=0.02)
    assert kept.threshold_ == fitted.threshold_ and kept.ratio_ == fitted.ratio_
    assert kept.calibration_["changed_since"] == 3 and "new" in kept.classes_
    assert kept.predict(extra_X[:1])[0] == "new"
    more_X, more_y = gallery(2, 4, seed=10)
    again = kept.refitted(np.vstack([X, extra_X, more_X]), np.concatenate([y, ["new"] * 3, ["m0"] * 4, ["m1"] * 4]),
                          changed=8, recalibrate_share=0.02)  # 11 changes > 2% of 300
    assert again.calibration_["changed_since"] == 0 and again.calibration_["gallery"] == 311
    assert kept.stranger_rate()["strangers_accepted"] <= 0.02


# -- the endpoints, in this process ---------------------------------------------------------------
def photo(faces, person: str, name: str = "1.jpg"):
    return (io.BytesIO((faces / "celebrities" / "train" / person / name).read_bytes()), f"{person}-{name}")


def test_enrol_list_rename_remove_through_the_contract(client, faces):
    assert client.get("/people").status_code == 401
    first = client.post("/people/Madonna/photos", headers=TOKEN,
                        data={"file": [photo(faces, "Madonna"), photo(faces, "Madonna", "2.jpg"),
                                       (io.BytesIO((faces / "samples" / "no_face_test.png").read_bytes()), "none.png")]})
    body = envelope_of(first, 201)
    assert body["data"]["created"] and len(body["data"]["added"]) == 2 and body["model"] == body["data"]["model"]
    assert [item["file"] for item in body["data"]["skipped"]] == ["none.png"]
    again = envelope_of(client.post("/people/madonna/photos", headers=TOKEN, data={"file": photo(faces, "Madonna")}), 422,
                        "DATASET_NOT_VALID")
    assert again["data"]["skipped"][0]["reason"] == "already enrolled"
    envelope_of(client.post("/people/Ben Afflek/photos", headers=TOKEN, data={"file": photo(faces, "Ben Afflek")}), 201)
    people = envelope_of(client.get("/people", headers=TOKEN), 200)["data"]
    assert people == [{"name": "Ben Afflek", "photos": 1}, {"name": "Madonna", "photos": 2}]
    madonna = envelope_of(client.get("/people/MADONNA", headers=TOKEN), 200)["data"]
    assert [p["source"] for p in madonna["photos"]] == ["Madonna-1.jpg", "Madonna-2.jpg"]
    envelope_of(client.patch("/people/Madonna", headers=TOKEN, json={"name": "Ben afflek"}), 422, "NAME_NOT_VALID")
    renamed = envelope_of(client.patch("/people/Madonna", headers=TOKEN, json={"name": " Louise Ciccone "}), 200)
    assert renamed["data"]["name"] == "Louise Ciccone"
    gone = envelope_of(client.delete(f"/people/Louise Ciccone/photos/{madonna['photos'][0]['id']}", headers=TOKEN), 200)
    assert gone["data"]["removed"] == [madonna["photos"][0]["id"]]
    envelope_of(client.delete("/people/Louise Ciccone/photos/0000000000000000", headers=TOKEN), 404, "NOT_FOUND")
    envelope_of(client.delete("/people/Louise Ciccone", headers=TOKEN), 200)
    assert envelope_of(client.get("/people", headers=TOKEN))["data"] == [{"name": "Ben Afflek", "photos": 1}]
    envelope_of(client.get("/people/Nobody", headers=TOKEN), 404, "NOT_FOUND")
    last = envelope_of(client.delete("/people/Ben Afflek", headers=TOKEN), 422, "DATASET_NOT_VALID")
    assert "forget" in last["description"]  # an empty model cannot serve; forget erases everywhere
    assert envelope_of(client.get("/people", headers=TOKEN))["data"] == [{"name": "Ben Afflek", "photos": 1}]


@pytest.mark.parametrize("raw", ["unknown", "Unknown", "Ma%0Adonna", "%1B%5B31mRed", "Evil%E2%80%AEgnp", "x" * 101, "%20"])
def test_people_names_are_refused_with_the_reason(client, faces, raw):
    answer = client.post(f"/people/{raw}/photos", headers=TOKEN, data={"file": photo(faces, "Madonna")})
    body = envelope_of(answer, 422, "NAME_NOT_VALID")
    assert body["data"]["problems"] and "\x1b" not in answer.get_data(as_text=True)
    assert envelope_of(client.get("/people", headers=TOKEN))["data"] == []  # nothing written


def test_more_photos_than_the_limit_point_to_train(tmp_path, faces):
    from tests.conftest import app_over

    client = app_over(tmp_path / "data", limits={"max_enrol_photos": 2}).test_client()
    answer = client.post("/people/Madonna/photos", headers=TOKEN,
                         data={"file": [photo(faces, "Madonna", f"{i}.jpg") for i in (1, 2, 3)]})
    body = envelope_of(answer, 413, "TOO_MANY_PHOTOS")
    assert body["data"]["train_url"] == "/train" and "/train" in body["description"]


def test_a_zip_of_one_persons_photos_goes_through_the_archive_checks(client, faces):
    folder = faces / "celebrities" / "train" / "Mindy Kaling"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir())[:3]:
            archive.write(path, path.name)
    body = envelope_of(client.post("/people/Mindy Kaling/photos", headers=TOKEN, data={"file": (io.BytesIO(buffer.getvalue()), "m.zip")}), 201)
    assert len(body["data"]["added"]) == 3 and body["data"]["added"][0]["source"].startswith("m.zip/")
    hostile = io.BytesIO()
    with zipfile.ZipFile(hostile, "w") as archive:
        archive.writestr("../evil.jpg", b"x")
    envelope_of(client.post("/people/Mindy Kaling/photos", headers=TOKEN, data={"file": (io.BytesIO(hostile.getvalue()), "h.zip")}), 400, "ARCHIVE_NOT_VALID")


def test_deleting_the_active_model_answers_model_active(client, faces):
    model = envelope_of(client.post("/people/Madonna/photos", headers=TOKEN, data={"file": photo(faces, "Madonna")}), 201)["model"]
    body = envelope_of(client.delete(f"/models/{model}", headers=TOKEN), 409, "MODEL_ACTIVE")
    assert body["data"] == {"active": model}


def test_forget_when_the_active_model_held_only_them_scrubs_the_model_that_serves_next(app, faces):
    from utils.people import Upload

    service = app.extensions["pyrecognizer"]
    people = service.people

    def enrol(person, name="1.jpg"):
        return people.enrol(person, [Upload(name, (faces / "celebrities" / "train" / person / name).read_bytes())])["model"]

    only_her = enrol("Madonna")
    both = enrol("Ben Afflek")
    service.store.activate(only_her)
    erased = people.forget("madonna")["erased"]
    assert erased["models_deleted"] == [only_her] and erased["models_rewritten"] == [both]
    assert service.store.active_id() == erased["new_model"]  # not the old version that knew her
    assert [p["name"] for p in people.listing()["people"]] == ["Ben Afflek"]
    for model_id in service.store.ids():
        arrays, _, metadata = service.store.contents(model_id)
        assert list(arrays["labels"]) == ["Ben Afflek"] and "Madonna" not in json.dumps(metadata)


def test_forget_reports_a_place_it_could_not_erase_and_erases_the_others(app, faces, tmp_path):
    from utils.people import Upload

    service = app.extensions["pyrecognizer"]
    for person in ("Madonna", "Ben Afflek"):
        service.people.enrol(person, [Upload("1.jpg", (faces / "celebrities" / "train" / person / "1.jpg").read_bytes())])
    service.paths.dashboard_db.write_bytes(b"not a database, but it names Madonna")
    erased = service.people.forget("Madonna")["erased"]
    assert set(erased["failed"]) == {"dashboard_rows"} and "log_lines" in erased and erased["new_model"]
    assert [p["name"] for p in service.people.listing()["people"]] == ["Ben Afflek"]
    service.paths.dashboard_db.unlink()  # the problem fixed, a retry erases what is left
    with sqlite3.connect(service.paths.dashboard_db) as database:
        database.execute("CREATE TABLE Outlier (id INTEGER PRIMARY KEY, request_url TEXT)")
        database.executemany("INSERT INTO Outlier (request_url) VALUES (?)", [("/people/Madonna/photos",), ("/predict",)])
    again = service.people.forget("Madonna")
    assert again["forgotten"] is True and again["erased"]["dashboard_rows"] == 1
    assert b"madonna" not in service.paths.dashboard_db.read_bytes().lower()
    with pytest.raises(NotFound):
        service.people.forget("Madonna")  # nothing left anywhere


def test_dashboard_rows_erased_leave_no_trace_in_the_write_ahead_log(tmp_path):
    """A dashboard process keeps the database open in WAL mode: deleted rows would stay
    readable in dashboard.db-wal until a checkpoint empties it."""
    from utils.people import Matcher, erased_dashboard_rows

    database = tmp_path / "dashboard.db"
    dashboard = sqlite3.connect(database)  # the dashboard's own connection, open throughout
    dashboard.execute("PRAGMA journal_mode=WAL")
    dashboard.execute("CREATE TABLE Outlier (id INTEGER PRIMARY KEY, request_url TEXT)")
    dashboard.executemany("INSERT INTO Outlier (request_url) VALUES (?)",
                          [("/people/Madonna/photos",)] * 3 + [("/predict",)] * 3)
    dashboard.commit()
    try:
        assert b"madonna" in (tmp_path / "dashboard.db-wal").read_bytes().lower()
        assert erased_dashboard_rows(database, Matcher({"Madonna"})) == 3
        for path in tmp_path.iterdir():
            assert b"madonna" not in path.read_bytes().lower(), path.name
        assert dashboard.execute("SELECT COUNT(*) FROM Outlier").fetchone()[0] == 3
    finally:
        dashboard.close()


def test_misleading_names_are_refused_and_look_alikes_reported_in_a_training_set():
    from datastructure.errors import NameNotValid
    from datastructure.names import Lookalikes, checked_name, checked_new_name, names_problems

    for name in (".", "..", "\u3164", "\u2800", "\u115f\u1160", "\u0301"):
        with pytest.raises(NameNotValid):
            checked_name(name)
    assert checked_name("a\u2800") == "a\u2800" and checked_name("Zoë") == "Zoë"
    people = Lookalikes(["madonna", "Elton John"])
    for twin in ("Маdonna", "МАDONNA", "madonnа"):  # Cyrillic letters
        with pytest.raises(NameNotValid, match="looks like 'madonna'"):
            checked_new_name(twin, people)
    assert checked_new_name("Madonna", people) == "Madonna"  # the same person: no look-alike
    assert checked_new_name("Madona", people) == "Madona"
    problems = names_problems(["Маdonna", "madonna", "Ben"])
    assert set(problems) == {"Маdonna", "madonna"} and "looks like" in problems["madonna"][0]


def test_a_persons_photos_are_listed_in_natural_order(client, faces):
    """1, 2, 10 as people count, not 1, 10, 2 as strings sort (the API, the page and the CLI
    read the same list)."""
    folder = faces / "celebrities" / "train" / "Mindy Kaling"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number in (10, 2, 1):
            archive.write(folder / f"{number}.jpg", f"Photo {number}.jpg")
    envelope_of(client.post("/people/Mindy Kaling/photos", headers=TOKEN,
                            data={"file": (io.BytesIO(buffer.getvalue()), "m.zip")}), 201)
    listed = envelope_of(client.get("/people/Mindy Kaling", headers=TOKEN), 200)["data"]["photos"]
    assert [photo["source"] for photo in listed] == ["m.zip/Photo 1.jpg", "m.zip/Photo 2.jpg", "m.zip/Photo 10.jpg"]
