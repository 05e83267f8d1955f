"""Enrolment into a large (indexed) gallery (issue 16, "incremental"): a version shares its
parent's base files (hard links, checksums reused) and writes only a delta, searched next to
the index; other changes write the gallery whole; forgetting breaks the links of every version
holding the person; a tampered shared file is still refused."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conf.config import Paths
from datastructure.classifier import FaceClassifier
from datastructure.errors import DatasetNotValid, ModelNotValid
from datastructure.model_store import DELTA_DAT, LINKED, ModelStore
from tests.support import make_config
from tests.test_gallery import synthetic
from tests.test_people_server import stored_encodings
from utils.people import People

INDEX_MIN = 1000  # the synthetic galleries here (2,000 photos) are indexed


@pytest.fixture
def people(tmp_path):
    """A People engine over a store whose active model is an indexed, calibrated 2,000-photo gallery."""
    config = make_config(tmp_path, classifier={"index_min": INDEX_MIN})
    store = ModelStore(tmp_path / "dataset" / "model", keep=0)
    X, y = synthetic(400, 5)
    classifier = FaceClassifier(index_min=INDEX_MIN).fit(X, y)
    classifier.calibration_ = {**classifier.calibration_, "gallery": len(y), "changed_since": 0}
    model_id = store.save(classifier, X, y, [f"{name}/{i}.jpg" for i, name in enumerate(y)],
                          {"people": {str(name): 5 for name in np.unique(y)}, "photos": len(y)})
    store.activate(model_id)
    engine = People(store, config, Paths(tmp_path))
    engine.base = (model_id, X, y)
    return engine


def near(X, rows, seed=1, spread=0.01):
    return X[rows] + np.random.default_rng(seed).normal(0, spread, (len(rows), 128))


def newcomer(photos, seed=7):
    """Photos of a person who is not in the gallery (as ``synthetic`` draws people), and a centre."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(0, 0.08, 128)
    return centre + rng.normal(0, 0.025, (photos, 128)), centre


def inode(path):
    return os.stat(path).st_ino


def test_an_enrolment_links_the_base_and_writes_only_the_delta(people):
    store, (base_id, X, y) = people.store, people.base
    photos, centre = newcomer(3)
    first = people.enrol_encodings("Newbie", photos, ["n1.jpg", "n2.jpg", "n3.jpg"])
    people.enrol_encodings("s00007", near(X, [35], seed=2), ["more.jpg"])
    # a new person sorted before everyone: the delta rows of those after them are renumbered
    others, other_centre = newcomer(2, seed=11)
    second = people.enrol_encodings("Aaron", others, ["a1.jpg", "a2.jpg"])
    assert first["created"] and second["created"] and store.active_id() == second["model"]
    base, newest = store.folder / base_id, store.folder / second["model"]
    base_manifest, manifest = (json.loads((f / "manifest.json").read_text()) for f in (base, newest))
    for name in LINKED:  # the same inode, under the checksum written with the base
        assert inode(base / name) == inode(newest / name) and os.stat(base / name).st_nlink == 4
        assert manifest[name] == base_manifest[name]
    assert DELTA_DAT in manifest and "gallery.delta.npy" in manifest
    # the newest delta holds both enrolments (each version is its base plus its own delta)
    delta = store.delta_contents(second["model"])
    assert list(delta["labels"]) == ["Newbie"] * 3 + ["s00007"] + ["Aaron"] * 2 and list(delta["files"])[3] == "more.jpg"
    arrays, _, metadata = store.contents(second["model"])
    assert len(arrays["labels"]) == len(y) + 6 and len(arrays["added"]) == len(y) + 6
    assert metadata["people"]["Newbie"] == 3 and metadata["people"]["s00007"] == 6 and metadata["photos"] == len(y) + 6

    served = store.load(second["model"]).classifier
    assert len(served.gallery_.delta) == 6 and served.gallery_.index.approximate
    # the new person is recognised; an enrolled photo again is refused as a duplicate
    probes = centre + np.random.default_rng(5).normal(0, 0.025, (2, 128))
    assert [d.name for d in served.decisions(probes)] == ["Newbie", "Newbie"]
    assert served.decisions(other_centre)[0].name == "Aaron"
    again = served.decisions(near(X, [35], seed=2))[0]  # s00007's delta photo, renumbered
    assert again.distance == 0 and again.name == "s00007"
    with pytest.raises(DatasetNotValid):
        people.enrol_encodings("Someone", photos[1:2], ["again.jpg"])
    # it decides as the same gallery fitted whole with the same calibration
    whole = served.refitted(arrays["encodings"], arrays["labels"], changed=0, recalibrate_share=1.0)
    queries = np.vstack([near(X, np.arange(0, 2000, 7), seed=9, spread=0.02), probes,
                         np.random.default_rng(3).normal(0, 0.08, (100, 128))])
    assert [d.name for d in served.decisions(queries)] == [d.name for d in whole.decisions(queries)]
    assert served.counts_.sum() == len(whole.labels_) and sorted(served.labels_) == sorted(whole.labels_)


def test_a_tampered_shared_file_or_delta_is_refused(people):
    store, (base_id, _, _) = people.store, people.base
    model_id = people.enrol_encodings("Newbie", newcomer(1)[0], ["n.jpg"])["model"]
    store.load(model_id)  # verified once in this process
    delta = store.folder / model_id / "gallery.delta.npy"
    data = bytearray(delta.read_bytes())
    data[-1] ^= 1
    delta.write_bytes(bytes(data))
    with pytest.raises(ModelNotValid):
        store.load(model_id)
    shared = store.folder / base_id / "gallery.faiss"
    data = bytearray(shared.read_bytes())
    data[len(data) // 2] ^= 1
    shared.write_bytes(bytes(data))  # in place: every version linking it sees the change
    for version in (base_id, model_id):
        with pytest.raises(ModelNotValid):
            store.load(version)


def test_other_changes_and_a_full_delta_write_the_gallery_whole(people, monkeypatch):
    store, (base_id, _, y) = people.store, people.base
    linked = people.enrol_encodings("Newbie", newcomer(2)[0], ["n1.jpg", "n2.jpg"])["model"]
    photo = people.person("Newbie")["photos"][0]["id"]
    removed = people.remove_photo("Newbie", photo)["model"]
    folder = store.folder / removed
    assert not (folder / DELTA_DAT).exists() and inode(folder / "gallery.npy") != inode(store.folder / base_id / "gallery.npy")
    arrays, _, _ = store.contents(removed)
    assert len(arrays["labels"]) == len(y) + 1 and store.load(removed).classifier.gallery_.index.approximate
    # past the delta's size the enrolment writes the whole gallery again
    monkeypatch.setattr("datastructure.classifier.MAX_DELTA", 1)
    whole = people.enrol_encodings("Other", newcomer(2, seed=4)[0], ["o1.jpg", "o2.jpg"])["model"]
    assert not (store.folder / whole / DELTA_DAT).exists() and (store.folder / linked / DELTA_DAT).exists()


def test_forgetting_a_person_rewrites_every_version_that_links_them(people):
    store, (base_id, X, y) = people.store, people.base
    first = people.enrol_encodings("Newbie", newcomer(2)[0], ["n1.jpg", "n2.jpg"])["model"]
    second = people.enrol_encodings("s00003", near(X, [15], seed=2), ["s3.jpg"])["model"]
    theirs = np.vstack([X[y == "s00003"], near(X, [15], seed=2)])
    answer = people.forget("s00003")
    assert answer["forgotten"] and set(answer["erased"]["models_rewritten"]) == {base_id, first, second}
    kept = stored_encodings(store.folder)  # every .npy and .npz under the store, base and delta files
    nearest = np.min(np.linalg.norm(kept[:, None, :] - theirs[None, :, :].astype(np.float32), axis=2), axis=0)
    assert nearest.min() > 1e-3, nearest
    assert not [str(path) for path in store.folder.rglob("*") if path.is_file() and b"s00003" in path.read_bytes()]
    for model_id in store.ids():  # every version loads and verifies after the rewrite
        store.contents(model_id)
        assert "s00003" not in store.load(model_id).classifier.classes_
    # the person only in deltas goes too
    assert people.forget("Newbie")["forgotten"]
    assert not [str(path) for path in store.folder.rglob("*") if path.is_file() and b"Newbie" in path.read_bytes()]
