"""Hostile training archives sent to POST /train and /tune of a real server.

Every archive is refused in the request itself, with a JSON envelope, a fitting 4xx and a
specific code; nothing is written (no upload kept, no job, no model, the active model
unchanged) and the next requests, a health check and a good prediction, are served as usual.
Only a readable archive whose photos turn out to hold no usable face gets a job, which then
fails with the reason of every photo. Junk (__MACOSX, .DS_Store, Thumbs.db) is ignored.
"""
from __future__ import annotations

import unicodedata
import zipfile
from pathlib import Path

import pytest

from tests.hostile import (
    MiB, PHOTO, assert_unharmed, bad_crc, declaring, declaring_all, encrypted, gzip_of_photo,
    inflating_past_declared_size, install_models, jpeg, many_entries, named, nested, overlapping,
    photos, pickle_payload, ratio_bomb, server_config, start_server, stopped, subset, symbolic_link,
    tar_of_photo, written, archive_of,
)
from tests.support import envelope_of

pytestmark = pytest.mark.usefixtures("faces")

MAX_ENTRY, MAX_TOTAL, MAX_ENTRIES = 2 * MiB, 3 * MiB, 150


@pytest.fixture(scope="module")
def server(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("archive")
    install_models(data_dir, hostile_models)
    config = server_config(limits={"max_entry_bytes": MAX_ENTRY, "max_archive_bytes": MAX_TOTAL,
                                   "max_entries": MAX_ENTRIES, "max_ratio": 100.0},
                           faces={"workers": 1})
    server = start_server(data_dir, config)
    yield server
    stopped(server)


def with_duplicate(first: str, second: str) -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: that is the point
        return archive_of((first, PHOTO), (second, jpeg(1)))


ARCHIVE_NOT_VALID = (400, "ARCHIVE_NOT_VALID")
ARCHIVE_TOO_LARGE = (413, "ARCHIVE_TOO_LARGE")
DATASET_NOT_VALID = (422, "DATASET_NOT_VALID")

HOSTILE = {
    # zip bombs and caps
    "declared entry size over the cap": (lambda: declaring(photos("Ben/1.jpg", "Madonna/1.jpg"), 0, MAX_ENTRY + 1), ARCHIVE_TOO_LARGE),
    "declared sizes adding up over the cap": (
        lambda: declaring_all(photos(*(f"Ben/{index}.jpg" for index in range(4))), MiB - 1), ARCHIVE_TOO_LARGE),
    "compression ratio bomb": (lambda: ratio_bomb(3 * MiB // 2), ARCHIVE_TOO_LARGE),
    "entry over the size cap": (lambda: ratio_bomb(MAX_ENTRY + 1), ARCHIVE_TOO_LARGE),
    "too many entries": (lambda: many_entries(MAX_ENTRIES + 1), ARCHIVE_TOO_LARGE),
    "entry inflating past its declared size": (inflating_past_declared_size, ARCHIVE_NOT_VALID),
    "entry inflating past a larger declared size": (
        lambda: inflating_past_declared_size(declared=100_000, actual=300_000), ARCHIVE_NOT_VALID),
    "entry holding less than its declared size": (
        lambda: inflating_past_declared_size(declared=300_000, actual=100_000), ARCHIVE_NOT_VALID),
    "damaged data (CRC mismatch)": (bad_crc, ARCHIVE_NOT_VALID),
    "overlapping entries, same offset": (lambda: overlapping("same offset"), ARCHIVE_NOT_VALID),
    "overlapping entries, into the next": (lambda: overlapping("into next entry"), ARCHIVE_NOT_VALID),
    "overlapping entries, into the directory": (lambda: overlapping("into central directory"), ARCHIVE_NOT_VALID),
    # archives in the archive
    "nested zip named .zip": (lambda: nested(PHOTO, "Ben/more.zip"), ARCHIVE_NOT_VALID),
    "nested tar.gz by name": (lambda: nested(PHOTO, "Ben/more.tar.gz"), ARCHIVE_NOT_VALID),
    "nested 7z by name": (lambda: nested(PHOTO, "Ben/x.7Z"), ARCHIVE_NOT_VALID),
    "nested zip named .jpg": (lambda: nested(archive_of(("Ben/1.jpg", PHOTO))), ARCHIVE_NOT_VALID),
    "nested empty zip named .jpg": (lambda: nested(archive_of()), ARCHIVE_NOT_VALID),
    "nested gzip named .jpg": (lambda: nested(gzip_of_photo()), ARCHIVE_NOT_VALID),
    "nested tar named .jpg": (lambda: nested(tar_of_photo()), ARCHIVE_NOT_VALID),
    "nested rar named .jpg": (lambda: nested(b"Rar!\x1a\x07\x01\x00" + PHOTO), ARCHIVE_NOT_VALID),
    # entries the reader must not touch
    "encrypted entry": (encrypted, ARCHIVE_NOT_VALID),
    "bzip2 entry": (lambda: archive_of(("Ben/1.jpg", PHOTO), compression=zipfile.ZIP_BZIP2), ARCHIVE_NOT_VALID),
    "lzma entry": (lambda: archive_of(("Ben/1.jpg", PHOTO), compression=zipfile.ZIP_LZMA), ARCHIVE_NOT_VALID),
    "symbolic link": (symbolic_link, ARCHIVE_NOT_VALID),
    # not a zip
    "random bytes": (lambda: bytes(range(256)) * 16, ARCHIVE_NOT_VALID),
    "zip magic then noise": (lambda: b"PK\x03\x04" + bytes(range(256)) * 4, ARCHIVE_NOT_VALID),
    "truncated zip": (lambda: photos("Ben/1.jpg", "Madonna/1.jpg")[:300], ARCHIVE_NOT_VALID),
    "empty file": (lambda: b"", ARCHIVE_NOT_VALID),
    "html page": (lambda: b"<!DOCTYPE html><script>alert(1)</script>", ARCHIVE_NOT_VALID),
    # unsafe paths: refused, never rewritten
    "parent folder": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("../evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "climbing out of a person": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("Ben/../../evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "climbing out of junk": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("__MACOSX/../../evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "absolute path": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("/tmp/evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "drive letter": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("C:/Windows/evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "drive-relative": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("c:evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "backslashes": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("Ben\\..\\..\\evil.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "NUL byte": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("Ben/1.jpg\0.exe"), PHOTO)), ARCHIVE_NOT_VALID),
    "empty segment": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("Ben//1.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "dot segment": (lambda: archive_of(("Ben/0.jpg", PHOTO), (named("./Ben/1.jpg"), PHOTO)), ARCHIVE_NOT_VALID),
    "duplicate names": (lambda: with_duplicate("Ben/1.jpg", "Ben/1.jpg"), ARCHIVE_NOT_VALID),
    "names differing by case": (lambda: with_duplicate("Ben/1.jpg", "BEN/1.JPG"), ARCHIVE_NOT_VALID),
    "names differing by normalisation": (lambda: with_duplicate(
        unicodedata.normalize("NFC", "Zoë/1.jpg"), unicodedata.normalize("NFD", "Zoë/1.jpg")), ARCHIVE_NOT_VALID),
    # layout
    "photos at the root": (lambda: photos("1.jpg", "2.jpg", "Ben/1.jpg"), DATASET_NOT_VALID),
    "photos too deep": (lambda: photos("Ben/2019/1.jpg", "Madonna/1.jpg"), DATASET_NOT_VALID),
    "empty person folders": (lambda: archive_of(("Ben/", b""), ("Madonna/", b"")), DATASET_NOT_VALID),
    "only junk": (lambda: archive_of(("__MACOSX/._x", b"x"), ("Ben/.DS_Store", b"x"), ("Ben/Thumbs.db", b"x")), DATASET_NOT_VALID),
    "empty zip": (lambda: archive_of(), DATASET_NOT_VALID),
}


@pytest.mark.parametrize("build", [
    inflating_past_declared_size,
    lambda: inflating_past_declared_size(declared=100_000, actual=300_000),
    lambda: inflating_past_declared_size(declared=300_000, actual=100_000),
    bad_crc,
], ids=["inflating past 1,000", "inflating past 100,000", "short of 300,000", "bad CRC"])
def test_the_validator_reads_every_entry_through_before_a_job(build):
    # The request validates with list_photos (via photo_count); what would only fail once the
    # job reads the photos must fail there already.
    import io

    from datastructure.errors import ArchiveNotValid
    from utils.archive import list_photos

    with pytest.raises(ArchiveNotValid, match="Ben/1.jpg"):
        list_photos(io.BytesIO(build()))


def evil_files(server) -> list[Path]:
    """Files a traversal would have written: anywhere in the tests' tmp tree, or /tmp itself."""
    return [path for path in [*server.data_dir.parent.rglob("evil*"), Path("/tmp/evil.jpg"), Path("/tmp/evil.zip")]
            if path.exists()]


@pytest.mark.parametrize("build, expected", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.e2e
def test_hostile_archive_is_refused_and_nothing_is_written(server, faces, build, expected):
    status, code = expected
    before, evil_before = written(server), evil_files(server)
    answer = server.post("/train", files={"file": ("train.zip", build(), "application/zip")})
    body = envelope_of(answer, status, code)
    assert body["description"]
    assert_unharmed(server, before, faces)
    assert evil_files(server) == evil_before


@pytest.mark.parametrize("name", ["inflating past its declared size", "overlapping", "parent folder", "ratio bomb"])
@pytest.mark.e2e
def test_tune_refuses_the_same_archives(server, faces, name):
    build, (status, code) = {
        "inflating past its declared size": (
            lambda: inflating_past_declared_size(declared=100_000, actual=300_000), ARCHIVE_NOT_VALID),
        "overlapping": (lambda: overlapping("same offset"), ARCHIVE_NOT_VALID),
        "parent folder": (HOSTILE["parent folder"][0], ARCHIVE_NOT_VALID),
        "ratio bomb": (lambda: ratio_bomb(3 * MiB // 2), ARCHIVE_TOO_LARGE),
    }[name]
    before = written(server)
    envelope_of(server.post("/tune", files={"file": ("tune.zip", build())}), status, code)
    assert_unharmed(server, before, faces)


@pytest.mark.e2e
def test_the_refusal_names_the_photos_out_of_place(server):
    answer = server.post("/train", files={"file": ("flat.zip", photos("1.jpg", "2.jpg", "Ben/1.jpg"))})
    assert envelope_of(answer, 422, "DATASET_NOT_VALID")["data"] == ["1.jpg", "2.jpg"]


@pytest.mark.e2e
def test_an_upload_name_cannot_choose_where_it_is_saved(server, faces):
    before, evil_before = written(server), evil_files(server)
    hostile = HOSTILE["parent folder"][0]()
    for filename in ("../../../../../tmp/evil.zip", "/tmp/evil.zip", "..\\..\\evil.zip", "evil.zip\0.jpg"):
        answer = server.post("/train", files={"file": (filename, hostile)})
        envelope_of(answer, 400, "ARCHIVE_NOT_VALID")
    assert_unharmed(server, before, faces)
    assert evil_files(server) == evil_before


@pytest.mark.e2e
def test_a_pickle_uploaded_as_the_archive_is_never_unpickled(server, faces, tmp_path):
    marker = tmp_path / "unpickled"
    before = written(server)
    for name in ("model.dat", "train.zip", "model.pkl"):
        answer = server.post("/train", files={"file": (name, pickle_payload(marker))})
        envelope_of(answer, 400, "ARCHIVE_NOT_VALID")
    assert_unharmed(server, before, faces)
    assert not marker.exists()


def wait_for_job(server, job_url: str, timeout: float = 180) -> dict:
    return server.wait_for_job(job_url, timeout=timeout)


@pytest.mark.e2e
def test_no_usable_face_fails_the_job_with_a_reason_per_photo(server, faces, tmp_path):
    marker = tmp_path / "unpickled"
    archive = archive_of(
        ("Nobody/no-face.png", (faces / "samples" / "no_face_test.png").read_bytes()),
        ("Nobody/notes.jpg", b"<?php system($_GET['c']); ?>"),
        ("Nobody/model.dat", pickle_payload(marker)),
        ("Nobody/cut.jpg", (faces / "samples" / "obama.jpg").read_bytes()[:5000]),
    )
    before = written(server)
    started = server.post("/train", files={"file": ("nobody.zip", archive)})
    job = wait_for_job(server, envelope_of(started, 202)["job_url"])
    assert job["state"] == "failed" and job["error"]["code"] == "DATASET_NOT_VALID", job
    reasons = {skipped["file"]: skipped["reason"] for skipped in job["error"]["data"]["skipped"]}
    assert set(reasons) == {"Nobody/no-face.png", "Nobody/notes.jpg", "Nobody/model.dat", "Nobody/cut.jpg"}, reasons
    assert reasons["Nobody/no-face.png"] == "no face found"
    assert all(reason for reason in reasons.values()), reasons
    assert "truncated" in reasons["Nobody/cut.jpg"].lower(), reasons
    assert not marker.exists()
    after = written(server)
    assert after["model"] == before["model"] and after["ACTIVE"] == before["ACTIVE"]
    assert after["tmp"] == [] and after["uploads"] == before["uploads"]
    assert_unharmed(server, after, faces)


@pytest.mark.e2e
def test_junk_is_ignored_and_training_works(server, faces, tmp_path):
    people = {"Madonna": 3, "Mindy Kaling": 3}
    folder = subset(faces, people, tmp_path / "set")
    entries = [(f"{person}/{photo.name}", photo.read_bytes()) for person in people
               for photo in sorted((folder / person).iterdir())]
    junk = [("__MACOSX/", b""), ("__MACOSX/Madonna/._1.jpg", b"\0\5\26\7 mac resource fork"),
            ("Madonna/.DS_Store", b"\0\0\0\1Bud1"), ("Mindy Kaling/Thumbs.db", b"\xd0\xcf\x11\xe0"),
            ("Thumbs.db", b"\xd0\xcf\x11\xe0"), ("Madonna/desktop.ini", b"[.ShellClassInfo]"),
            (".DS_Store", b"\0\0\0\1Bud1")]
    before = written(server)
    started = server.post("/train", files={"file": ("with junk.zip", archive_of(*entries, *junk))})
    job = wait_for_job(server, envelope_of(started, 202)["job_url"])
    assert job["state"] == "done", job
    assert job["progress"]["total"] == 6
    assert job["result"]["people"] == people and job["result"]["skipped"] == []
    model = job["result"]["model"]
    assert envelope_of(server.get("/health"), 200)["data"]["model"] == model
    assert model not in before["model"] and written(server)["tmp"] == []
    metadata = envelope_of(server.get(f"/models/{model}"), 200)["data"]
    assert set(metadata["people"]) == set(people)
