"""Model folders: atomic save, loading without pickle, verification, the active pointer."""
import json
import pickle

import numpy as np
import pytest

from datastructure.classifier import FaceClassifier
from datastructure.errors import ModelActive, ModelNotValid, NotFound
from datastructure.model_store import MODEL_ID, ModelStore


def saved_model(store: ModelStore, people: int = 3, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    # people ~0.95 apart, each person's photos ~0.23 from their mean: every photo is clearly its person's
    X = np.repeat(rng.normal(size=(people, 128)) * 0.06, 4, axis=0) + rng.normal(size=(people * 4, 128)) * 0.02
    y = np.repeat([f"p{i}" for i in range(people)], 4)
    files = [f"p{i}/{j}.jpg" for i in range(people) for j in range(4)]
    classifier = FaceClassifier().fit(X, y)
    return store.save(classifier, X, y, files, {"people": {f"p{i}": 4 for i in range(people)}, "photos": len(y)})


def test_save_writes_the_three_files_the_gallery_and_a_manifest(tmp_path):
    store = ModelStore(tmp_path / "model")
    model_id = saved_model(store)
    assert MODEL_ID.match(model_id)
    folder = tmp_path / "model" / model_id
    assert sorted(p.name for p in folder.iterdir()) == ["gallery.npy", "manifest.json", "model.clf", "model.dat", "model.json"]
    assert sorted(json.loads((folder / "manifest.json").read_text())) == ["gallery.npy", "model.clf", "model.dat", "model.json"]
    assert json.loads((folder / "model.json").read_text())["id"] == model_id
    assert not list((tmp_path / "model").glob(".staging-*"))


def test_two_models_in_one_second_get_distinct_ids(tmp_path):
    store = ModelStore(tmp_path)
    assert saved_model(store) != saved_model(store)
    assert len(store.ids()) == 2


def test_the_id_of_a_deleted_model_never_comes_back(tmp_path):
    """A worker that still holds a deleted model must not take a new one for it (same id)."""
    store = ModelStore(tmp_path)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 128)) * 0.05
    y = np.array(["p0"] * 4)
    classifier = FaceClassifier().fit(X, y)
    given = set()
    for _ in range(5):  # each round within a few ms: the same second but for a round crossing one
        model_id = store.save(classifier, X, y, [f"{n}.jpg" for n in range(4)], {"photos": 4})
        assert model_id not in given
        given.add(model_id)
        store.deactivate_and_delete(model_id)
    assert store.ids() == []


def test_loaded_model_decides_like_the_saved_one(tmp_path):
    """Faces off the gallery, near and far (a face on a stored photo is at distance 0, which
    any threshold names), on a gallery large enough for the calibrated rule (under PRIOR_PAIRS
    photos each person's mean decides): the loaded threshold, ratio and scales must decide as
    the classifier that was saved, named and unknown alike."""
    store = ModelStore(tmp_path)
    rng = np.random.default_rng(3)
    X = np.repeat(rng.normal(size=(25, 128)) * 0.06, 10, axis=0) + rng.normal(size=(250, 128)) * 0.02
    y = np.repeat([f"p{i}" for i in range(25)], 10)
    saved = FaceClassifier().fit(X, y)
    model_id = store.save(saved, X, y, [f"{i}.jpg" for i in range(250)], {"photos": 250})
    loaded = store.load(model_id).classifier
    assert saved.rule_ == loaded.rule_ == "nearest"
    probe = np.vstack([X[i] + rng.normal(size=(8, 128)) * spread for i, spread in
                       ((0, 0.01), (50, 0.02), (100, 0.03), (150, 0.04), (200, 0.05), (240, 0.08))])
    expected, found = saved.decisions(probe), loaded.decisions(probe)
    assert {d.name for d in expected} > {"unknown"} and any(d.name == "unknown" for d in expected)
    assert [(d.name, d.candidate) for d in found] == [(d.name, d.candidate) for d in expected]
    assert [d.confidence for d in found] == pytest.approx([d.confidence for d in expected], abs=1e-6)


def test_newest_model_is_active_until_another_is_activated(tmp_path):
    store = ModelStore(tmp_path)
    first, second = saved_model(store), saved_model(store, seed=1)
    assert store.active_id() == second
    store.activate(first)
    assert store.active_id() == first
    assert [m["id"] for m in store.listing() if m["active"]] == [first]


def test_tampered_model_is_refused_and_the_previous_stays(tmp_path):
    store = ModelStore(tmp_path)
    good = saved_model(store)
    bad = saved_model(store, seed=1)
    with open(tmp_path / bad / "model.clf", "a") as handle:
        handle.write(" ")
    with pytest.raises(ModelNotValid, match="manifest"):
        store.load(bad)
    assert store.load_active().id == good


@pytest.mark.parametrize("name", ["model.dat", "gallery.npy"])
def test_a_pickle_in_model_dat_or_the_gallery_is_never_loaded(tmp_path, name):
    store = ModelStore(tmp_path)
    model_id = saved_model(store)
    folder = tmp_path / model_id
    (folder / name).write_bytes(pickle.dumps({"encodings": np.zeros((1, 128))}))
    manifest = json.loads((folder / "manifest.json").read_text())
    from datastructure.model_store import sha256_of

    manifest[name] = sha256_of(folder / name)  # even with a matching manifest
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelNotValid):
        store.contents(model_id) if name == "model.dat" else store.load(model_id)


def test_leftover_staging_folders_are_cleaned_and_never_listed(tmp_path):
    store = ModelStore(tmp_path)
    (tmp_path / ".staging-20200101_000000-1").mkdir()
    (tmp_path / "20200101_000000").mkdir()  # half a model: no manifest
    assert store.ids() == [] and store.active_id() is None
    assert store.clean_staging() == [".staging-20200101_000000-1"]


def test_the_active_model_cannot_be_deleted_others_can(tmp_path):
    store = ModelStore(tmp_path)
    first, second = saved_model(store), saved_model(store, seed=1)
    with pytest.raises(ModelActive):
        store.delete(second)
    store.delete(first)
    assert store.ids() == [second]
    with pytest.raises(NotFound):
        store.load("../../etc")
