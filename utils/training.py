"""Training and tuning: a zip or folder of person folders -> a saved, active model.

The HTTP job and the CLI call the same ``train_model``; only how progress is shown differs.
"""
from __future__ import annotations

import logging
import platform
import time
import warnings
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from conf.config import Config, Tune
from datastructure.classifier import UNKNOWN, FaceClassifier
from datastructure.model_store import ModelStore
from datastructure.person import Dataset
from utils import archive
from utils.encoding import encoded_photos
from utils.faces import Options

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]


def classifier_params(config: Config) -> dict:
    """Return the FaceClassifier parameters named by the ``classifier`` config section."""
    section = config.classifier
    return {key: getattr(section, key) for key in ("n_neighbors", "weights", "metric", "algorithm", "threshold", "ratio",
                                                "index_min", "nprobe")}


def encoded_dataset(source, config: Config, cache_folder: Path | None, progress: ProgressCallback) -> Dataset:
    """Return the Dataset of every photo in ``source``, encoding on every core."""
    total = archive.photo_count(source, archive.limits_from(config.limits))
    photos = archive.photo_source(source, archive.limits_from(config.limits))
    options = Options.from_config(config.faces, config.limits, training=True)
    dataset, names, done = Dataset(min_quality=float(config.faces.min_enrol_quality)), deque(), [0]

    def photo_bytes():
        for photo in photos:
            names.append((photo.person, photo.name))
            yield photo.data

    def tick():
        done[0] += 1
        progress(done[0], total, "encoding photos")

    progress(0, total, "encoding photos")
    for result in encoded_photos(photo_bytes(), options, workers=int(config.faces.workers),
                                 cache_folder=cache_folder if config.faces.cache else None,
                                 on_result=tick, scheduler=config.cluster.scheduler,
                                 cluster_timeout=config.cluster.timeout):
        person, name = names.popleft()
        dataset.add(person, name, result.faces, result.reason)
    return dataset


def held_out_split(labels: np.ndarray, test_size: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, test) indices holding out ``test_size`` of each person's photos.

    A person with one photo stays in train only; every person keeps at least one photo in
    train, so people with one or two photos are still learned next to people with hundreds.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for person in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == person))
        held = min(len(index) - 1, int(round(len(index) * test_size))) if len(index) > 1 else 0
        test.extend(index[:held])
        train.extend(index[held:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(test, dtype=int))


def held_out_metrics(classifier: FaceClassifier, encodings, labels) -> dict:
    """Return how a classifier fitted without these photos names them."""
    if len(labels) == 0:
        return {"accuracy": None, "test_photos": 0}
    predicted = classifier.predict(encodings)
    right = predicted == labels
    unknown = predicted == UNKNOWN
    return {"accuracy": round(float(right.mean()), 4), "test_photos": int(len(labels)),
            "recognised": int(right.sum()), "unknown": int(unknown.sum()),
            "wrong": int((~right & ~unknown).sum())}


def tuned_params(encodings, labels, base: dict, tune: Tune) -> tuple[dict, dict]:
    """Exhaustive search over the KNN parameters of ``tune``; return (best params, search figures)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    counts = np.unique(labels, return_counts=True)[1]
    folds = int(max(2, min(tune.cv_folds, counts.max())))
    param_grid = {key: list(values) for key, values in tune.grid().items()}
    for key in param_grid:  # the train defaults are always a candidate, so tune never does worse
        if base.get(key) not in param_grid[key]:
            param_grid[key].append(base[key])
    search = GridSearchCV(FaceClassifier(**base), param_grid, cv=StratifiedKFold(folds, shuffle=True, random_state=0),
                          scoring="accuracy", n_jobs=1, error_score=0.0)
    with warnings.catch_warnings():
        # people with fewer photos than folds are expected; their folds simply lack them
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        search.fit(encodings, labels)
    figures = {"best_score": round(float(search.best_score_), 4), "cv_folds": folds,
               "candidates": len(search.cv_results_["params"]),
               "best_params": {key: search.best_params_[key] for key in param_grid}}
    return {**base, **search.best_params_}, figures


def library_versions() -> dict:
    """Return the versions of Python and of the libraries a model's results depend on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("face_recognition", "dlib-bin", "dlib", "scikit-learn", "numpy", "pillow"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def train_model(source, config: Config, store: ModelStore, *, tune: bool = False,
                cache_folder: Path | None = None, progress: ProgressCallback = lambda *_: None,
                source_name: str | None = None) -> dict:
    """Train (or tune) on ``source``, save the model, make it active; return what was made."""
    started = time.time()
    dataset = encoded_dataset(source, config, cache_folder, progress)
    encodings, labels, files = dataset.arrays()
    order = np.lexsort((files, labels))  # the held-out split must not depend on archive order
    encodings, labels, files = encodings[order], labels[order], files[order]
    params = classifier_params(config)
    train, test = held_out_split(labels, float(config.classifier.test_size))
    search, total = None, len(files) + len(dataset.skipped)
    if tune:
        progress(total, total, "searching parameters")
        params, search = tuned_params(encodings[train], labels[train], params, config.tune)
    progress(total, total, "fitting the classifier")
    metrics = held_out_metrics(FaceClassifier(**params).fit(encodings[train], labels[train]),
                               encodings[test], labels[test])
    classifier = FaceClassifier(**params).fit(encodings, labels)
    metadata = {
        "kind": "tune" if tune else "train", "created": datetime.now().isoformat(timespec="seconds"),
        "source": source_name or Path(str(source)).name, "people": dataset.counts(),
        "photos": int(len(files)), "skipped": dataset.skipped, "metrics": metrics, "search": search,
        "params": classifier.get_params(), "threshold": classifier.threshold_, "ratio": classifier.ratio_,
        "calibration": classifier.calibration_,
        "pipeline": Options.from_config(config.faces, config.limits, training=True).signature(),
        "versions": library_versions(), "seconds": round(time.time() - started, 1),
    }
    # one writer at a time; an enrolment holds the store for a second at most, and a long
    # training must not fail at its very end for having met one
    with store.changing(wait=max(60.0, store.wait)):
        model_id = store.save(classifier, encodings, labels, files, metadata)
        store.activate(model_id)
    log.info("model %s trained on %d photos of %d people (%d skipped), held-out accuracy %s",
             model_id, len(files), len(metadata["people"]), len(dataset.skipped), metrics["accuracy"])
    return {"model": model_id, "people": metadata["people"], "photos": metadata["photos"],
            "skipped": dataset.skipped, "metrics": metrics, "search": search,
            "threshold": classifier.threshold_, "ratio": classifier.ratio_}
