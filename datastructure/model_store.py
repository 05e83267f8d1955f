"""Model folders: ``dataset/model/<%Y%m%d_%H%M%S>/`` with model.dat, model.clf, model.json.

* model.dat  - encodings, labels and source file names (``.npz``, read with allow_pickle=False)
* model.clf  - the classifier's parameters and calibrated scalars (JSON)
* model.json - what a person wants to know: people, counts, skipped photos, metrics, versions
* manifest.json - sha256 of the three, checked before a model is used

Nothing is ever unpickled: the KNN is rebuilt from the arrays, which takes milliseconds.
A model is written into a staging folder and renamed into place, so a crash never leaves a
half model, and the active model is named by the ``ACTIVE`` file, replaced atomically, so
every process sharing the folder sees one model or the other, never a mix.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from datastructure.classifier import FaceClassifier
from datastructure.errors import ModelNotValid, NotFound
from datastructure.files import atomic_write

log = logging.getLogger(__name__)

MODEL_ID = re.compile(r"^\d{8}_\d{6}$")
FILES = ("model.dat", "model.clf", "model.json")
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class Model:
    """A loaded model: its id, the fitted classifier and its metadata."""

    id: str
    classifier: FaceClassifier
    metadata: dict


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reason(exc: Exception) -> str:
    """Say why a model file failed without the data folder's absolute path (answers reach clients)."""
    if isinstance(exc, OSError):
        name = Path(exc.filename).name if exc.filename else "a file"
        return f"{name}: {exc.strerror or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)


class ModelStore:
    """The model folders under one directory, and which of them is active."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.pointer = self.folder / "ACTIVE"

    # -- writing -------------------------------------------------------------------------
    def save(self, classifier: FaceClassifier, encodings, labels, files, metadata: dict) -> str:
        """Write a new model folder and return its id; it is complete or absent, never half."""
        self.folder.mkdir(parents=True, exist_ok=True)
        model_id = self._new_id()
        staging = self.folder / f"{STAGING_PREFIX}{model_id}-{os.getpid()}"
        staging.mkdir()
        try:
            buffer = io.BytesIO()
            np.savez(buffer, encodings=np.asarray(encodings, dtype=np.float64),
                     labels=np.asarray(labels, dtype=str), files=np.asarray(files, dtype=str))
            contents = {
                "model.dat": buffer.getvalue(),
                "model.clf": json.dumps(classifier.state(), indent=2).encode(),
                "model.json": json.dumps({"id": model_id, **metadata}, indent=2, default=str).encode(),
            }
            for name, data in contents.items():
                atomic_write(staging / name, data)
            manifest = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
            atomic_write(staging / "manifest.json", json.dumps(manifest, indent=2).encode())
            os.rename(staging, self.folder / model_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return model_id

    def _new_id(self) -> str:
        """Return a timestamp id not used yet (two trainings can finish in one second)."""
        moment = datetime.now()
        while True:
            model_id = moment.strftime("%Y%m%d_%H%M%S")
            if not (self.folder / model_id).exists():
                return model_id
            moment += timedelta(seconds=1)

    def activate(self, model_id: str) -> Model:
        """Make ``model_id`` the active model after checking that it loads; return it."""
        model = self.load(model_id)
        atomic_write(self.pointer, model_id.encode())
        log.info("model %s is now active", model_id)
        return model

    def delete(self, model_id: str) -> None:
        """Delete a model folder; the active one cannot be deleted."""
        self._folder_of(model_id)
        if model_id == self.active_id():
            raise ModelNotValid(f"model {model_id} is active: activate another one first")
        trash = self.folder / f"{STAGING_PREFIX}deleted-{model_id}-{os.getpid()}"
        os.rename(self.folder / model_id, trash)  # vanishes from listings at once
        shutil.rmtree(trash, ignore_errors=True)

    def clean_staging(self, older_than: float = 0.0) -> list[str]:
        """Remove staging folders left by a crash; return their names."""
        removed = []
        if not self.folder.is_dir():
            return removed
        for path in self.folder.glob(f"{STAGING_PREFIX}*"):
            if time.time() - path.stat().st_mtime >= older_than:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        # the ACTIVE pointer's staging file (datastructure.files.staging_path), after a kill mid-activate
        for path in self.folder.glob(f".{self.pointer.name}.*.tmp"):
            if time.time() - path.stat().st_mtime >= older_than:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    # -- reading -------------------------------------------------------------------------
    def ids(self) -> list[str]:
        """Return the ids of complete model folders, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(path.name for path in self.folder.iterdir()
                      if MODEL_ID.match(path.name) and (path / "manifest.json").is_file())

    def metadata(self, model_id: str) -> dict:
        """Return a model's model.json (unverified: for listings only)."""
        try:
            return json.loads((self._folder_of(model_id) / "model.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelNotValid(f"model {model_id} has no readable model.json: {reason(exc)}") from None

    def listing(self) -> list[dict]:
        """Return a summary of every model, newest first, marking the active one."""
        active = self.active_id()
        summaries = []
        for model_id in reversed(self.ids()):
            try:
                meta = self.metadata(model_id)
            except ModelNotValid:
                continue
            summaries.append({
                "id": model_id, "active": model_id == active, "created": meta.get("created"),
                "kind": meta.get("kind"), "people": len(meta.get("people", {})),
                "photos": meta.get("photos"), "accuracy": meta.get("metrics", {}).get("accuracy"),
            })
        return summaries

    def active_id(self) -> str | None:
        """Return the id named by the ACTIVE pointer, or the newest model when there is none."""
        try:
            model_id = self.pointer.read_text().strip()
        except OSError:
            model_id = ""
        if MODEL_ID.match(model_id) and (self.folder / model_id).is_dir():
            return model_id
        ids = self.ids()
        return ids[-1] if ids else None

    def load(self, model_id: str) -> Model:
        """Return the verified model ``model_id``; ModelNotValid when any file fails its manifest."""
        folder = self._folder_of(model_id)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            for name in FILES:
                if sha256_of(folder / name) != manifest.get(name):
                    raise ModelNotValid(f"model {model_id}: {name} does not match its manifest")
            with np.load(folder / "model.dat", allow_pickle=False) as arrays:
                encodings, labels = arrays["encodings"], arrays["labels"]
            state = json.loads((folder / "model.clf").read_text())
            metadata = json.loads((folder / "model.json").read_text())
            classifier = FaceClassifier.restored(state, encodings, labels)
        except ModelNotValid:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotValid(f"model {model_id} cannot be loaded: {reason(exc)}") from None
        return Model(model_id, classifier, metadata)

    def load_active(self) -> Model | None:
        """Return the active model, falling back to the newest one that verifies; None if none."""
        active = self.active_id()
        candidates = ([active] if active else []) + [i for i in reversed(self.ids()) if i != active]
        for model_id in candidates:
            try:
                return self.load(model_id)
            except ModelNotValid as exc:
                log.error("refusing model %s: %s", model_id, exc.description)
        return None

    def _folder_of(self, model_id: str) -> Path:
        if not MODEL_ID.match(model_id or "") or not (self.folder / model_id).is_dir():
            raise NotFound(f"no model {model_id!r}")
        return self.folder / model_id
