"""Model folders: ``dataset/model/<%Y%m%d_%H%M%S>/`` with model.dat, model.clf, model.json.

* model.dat  - encodings, labels and source file names (``.npz``, read with allow_pickle=False)
* model.clf  - the classifier's parameters and calibrated scalars (JSON)
* model.json - what a person wants to know: people, counts, skipped photos, metrics, versions
* gallery.npy, gallery.faiss - the encodings the classifier searches, float32 sorted by person,
  and their index when the gallery is large (datastructure/gallery.py); read memory-mapped
* manifest.json - sha256 of each file, checked before a model is used
* delta.dat, gallery.delta.npy - in a version made by an enrolment into a large (indexed)
  gallery: the rows added since its base, which it shares with its parent. The base files
  (model.dat, gallery.npy, gallery.faiss) are hard links to the parent's, under the checksums
  the parent's manifest recorded when they were written (``save_delta``); ``contents`` returns
  base and delta rows together. A rewrite (forget) writes every file anew, which breaks the
  links of that version only: the caller rewrites every version holding the person.

A process hashes a file once per (device, inode, size, mtime): versions sharing a base, and a
worker loading the next version of its model, do not hash its gigabyte again (``verified``).

Nothing is ever unpickled: the KNN is rebuilt from the arrays, which takes milliseconds.
A model is written into a staging folder and renamed into place, so a crash never leaves a
half model, and the active model is named by the ``ACTIVE`` file, replaced atomically, so
every process sharing the folder sees one model or the other, never a mix.

Every change of the models (a training's save and activation, an activation, a deletion,
an enrolment, a removal, a rename, a forget) runs inside ``changing()``: a file lock in the
model folder, so one writer at a time across threads, worker processes and nodes sharing the
folder. A change that cannot get it within ``wait`` seconds is refused with ModelsBusy (and
a Retry-After), never queued out of sight or lost. Ids are ``%Y%m%d_%H%M%S``, with ``_2``,
``_3``... when changes land in the same second. After each activation the store keeps the
newest ``keep`` versions, and always the active one and the one active before it.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from datastructure.classifier import FaceClassifier
from datastructure.errors import ModelActive, ModelNotValid, ModelsBusy, NotFound
from datastructure.files import atomic_write
from datastructure.gallery import BASE_FILES

log = logging.getLogger(__name__)

MODEL_ID = re.compile(r"^\d{8}_\d{6}(?:_[1-9]\d{0,5})?$")
FILES = ("model.dat", "model.clf", "model.json")
GALLERY_FILE = "gallery.npy"  # present (in the manifest) in models saved with their gallery
DELTA_DAT = "delta.dat"  # the rows a version adds to its shared base: encodings, labels, files, columns
LINKED = ("model.dat", *BASE_FILES)  # what a delta version shares with its parent (hard links)
COMPACT_JSON_PEOPLE = 1000  # models of more people write model.clf and model.json without indent
STAGING_PREFIX = ".staging-"
LOCK_NAME = ".changes.lock"
PREVIOUS_NAME = "PREVIOUS"


def id_order(model_id: str) -> tuple[str, int]:
    """Sort key of model ids: by time, then suffix (``_2`` before ``_10``, the bare id first)."""
    stamp, suffix = model_id[:15], model_id[16:]
    return stamp, int(suffix) if suffix else 1


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


_verified: dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> sha256 this process found
_verified_lock = threading.Lock()


class KeptByStamp:
    """The last few values this process made, by a key of file stamps (``file_stamp``): the
    same files give the same value without making it again; the oldest goes past ``kept``."""

    def __init__(self, kept: int):
        self.kept, self.values, self.lock = kept, {}, threading.Lock()

    def get(self, key, make):
        """The value of ``key``, made by ``make()`` the first time (every time for a None key)."""
        with self.lock:
            found = self.values.get(key) if key else None
        if found is not None:
            return found
        value = make()
        if key:
            with self.lock:
                self.values[key] = value
                while len(self.values) > self.kept:
                    self.values.pop(next(iter(self.values)))
        return value

    def drop(self, matches) -> None:
        """Forget the values whose key ``matches``."""
        with self.lock:
            for key in [key for key in self.values if matches(key)]:
                del self.values[key]


SERVED_MODELS_KEPT = 2
_served_models = KeptByStamp(SERVED_MODELS_KEPT)  # the models this process loaded last, by their files' stamps


def file_stamp(path: Path) -> tuple:
    """(device, inode, size, mtime_ns) of a file: what changes when it is replaced or written."""
    status = os.stat(path)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def verified(path: Path, expected: str | None) -> bool:
    """Whether the file at ``path`` has the sha256 ``expected``; each file is hashed once per
    process (an unchanged inode, size and mtime is not hashed again: hard-linked versions
    share their base, and a worker loading the next version has hashed it already)."""
    if not expected:
        return False
    key = file_stamp(path)
    with _verified_lock:
        if _verified.get(key) == expected:
            return True
    digest = sha256_of(path)
    if digest != expected:
        return False
    with _verified_lock:
        if len(_verified) > 4096:
            _verified.clear()
        _verified[key] = digest
    return True


def merged_rows(base: dict, delta: dict) -> dict:
    """Per-photo arrays of a base followed by its delta's; a column only one side has (e.g. the
    added dates a training does not record) is blank ("") on the other."""
    rows = len(base["labels"]), len(delta["labels"])
    merged = {}
    for key in dict.fromkeys([*base, *delta]):
        parts = [side[key] if key in side else np.full(count, "") for side, count in zip((base, delta), rows)]
        merged[key] = np.concatenate(parts) if key != "encodings" else np.vstack(parts)
    return merged


def reason(exc: Exception) -> str:
    """Say why a model file failed without the data folder's absolute path (answers reach clients)."""
    if isinstance(exc, OSError):
        name = Path(exc.filename).name if exc.filename else "a file"
        return f"{name}: {exc.strerror or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)


class ModelStore:
    """The model folders under one directory, and which of them is active."""

    def __init__(self, folder: Path, *, keep: int = 10, wait: float = 5.0):
        self.folder = Path(folder)
        self.pointer = self.folder / "ACTIVE"
        self.last_id_file = self.folder / ".last_id"  # the newest id given, see _new_id
        self.previous_pointer = self.folder / PREVIOUS_NAME
        self.keep = keep  # versions kept after each activation (0: all); active and previous always
        self.wait = wait  # seconds a change waits for another to finish before ModelsBusy
        self._held = threading.local()

    # -- one writer at a time ------------------------------------------------------------
    @contextmanager
    def changing(self, wait: float | None = None):
        """Hold the store's change lock for the block: one change at a time, across processes.

        Re-entrant within a thread (a training's save and activate inside one change); other
        threads and processes wait up to ``wait`` seconds, then get ModelsBusy.
        """
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_NAME, "a+")
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ModelsBusy("another change of the models is in progress; retry shortly",
                                         retry_after=max(1, round(self.wait))) from None
                    time.sleep(0.02)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
        finally:
            handle.close()  # closing the file releases the lock, and a killed process's too

    # -- writing -------------------------------------------------------------------------
    def save(self, classifier: FaceClassifier, encodings, labels, files, metadata: dict,
             *, columns: dict | None = None) -> str:
        """Write a new model folder and return its id; it is complete or absent, never half.

        ``columns``: more per-photo arrays kept in model.dat (e.g. photo ids, added dates).
        """
        with self.changing():
            self.folder.mkdir(parents=True, exist_ok=True)
            model_id = self._new_id()
            self._write(model_id, classifier, encodings, labels, files, metadata, columns)
        return model_id

    def save_delta(self, parent_id: str, classifier: FaceClassifier, encodings, labels, files, metadata: dict,
                   *, columns: dict | None = None) -> str:
        """Write a new version sharing ``parent_id``'s base and return its id.

        ``classifier`` holds a gallery with a delta over the parent's base (``FaceClassifier
        .extended``); ``encodings``, ``labels``, ``files`` and ``columns`` are the rows of the
        whole delta (the parent's delta rows and the new ones). The base files are hard-linked,
        and their checksums are those the parent's manifest recorded when they were written."""
        with self.changing():
            parent = self._folder_of(parent_id)
            parent_manifest = json.loads((parent / "manifest.json").read_text())
            model_id = self._new_id()
            staging = self.folder / f"{STAGING_PREFIX}{model_id}-{os.getpid()}"
            staging.mkdir()
            try:
                manifest = {}
                for name in LINKED:
                    if name in parent_manifest:
                        os.link(parent / name, staging / name)
                        manifest[name] = parent_manifest[name]
                manifest.update(self._written(staging, model_id, classifier, encodings, labels, files, metadata,
                                              columns, data_name=DELTA_DAT))
                manifest.update({name: sha256_of(staging / name) for name in classifier.gallery_.save(staging, base_too=False)})
                atomic_write(staging / "manifest.json", json.dumps(manifest, indent=2).encode())
                os.rename(staging, self.folder / model_id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return model_id

    def rewrite(self, model_id: str, classifier: FaceClassifier, encodings, labels, files, metadata: dict,
                *, columns: dict | None = None) -> None:
        """Replace an inactive model's content, keeping its id (forgetting someone everywhere)."""
        with self.changing():
            self._folder_of(model_id)
            if model_id == self.active_id():
                raise ModelActive(f"model {model_id} is active: save a new version instead")
            trash = self.folder / f"{STAGING_PREFIX}rewritten-{model_id}-{os.getpid()}"
            self._dropped(model_id)
            os.rename(self.folder / model_id, trash)
            try:
                self._write(model_id, classifier, encodings, labels, files, metadata, columns)
            except BaseException:
                os.rename(trash, self.folder / model_id)
                raise
            shutil.rmtree(trash, ignore_errors=True)

    def _write(self, model_id, classifier, encodings, labels, files, metadata, columns) -> None:
        staging = self.folder / f"{STAGING_PREFIX}{model_id}-{os.getpid()}"
        staging.mkdir()
        try:
            manifest = self._written(staging, model_id, classifier, encodings, labels, files, metadata, columns)
            manifest.update({name: sha256_of(staging / name) for name in classifier.gallery_.save(staging)})
            atomic_write(staging / "manifest.json", json.dumps(manifest, indent=2).encode())
            os.rename(staging, self.folder / model_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @staticmethod
    def _written(staging: Path, model_id, classifier, encodings, labels, files, metadata, columns,
                 data_name: str = "model.dat") -> dict:
        """Write the rows (``data_name``), model.clf and model.json; return their checksums."""
        buffer = io.BytesIO()
        extra = {f"column_{name}": np.asarray(values) for name, values in (columns or {}).items()}
        np.savez(buffer, encodings=np.asarray(encodings, dtype=np.float64).reshape(-1, 128),
                 labels=np.asarray(labels, dtype=str), files=np.asarray(files, dtype=str), **extra)
        # json's C encoder runs only without indent: a model of 10^5 people takes ~1 s indented
        indent = 2 if len(classifier.classes_) <= COMPACT_JSON_PEOPLE else None
        contents = {
            data_name: buffer.getvalue(),
            "model.clf": json.dumps(classifier.state(), indent=indent).encode(),
            "model.json": json.dumps({"id": model_id, **metadata}, indent=indent, default=str).encode(),
        }
        for name, data in contents.items():
            atomic_write(staging / name, data)
        return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}

    def _new_id(self) -> str:
        """Return a timestamp id not used yet: ``_2``, ``_3``... when one second holds several
        changes (the caller holds the change lock, so no other writer picks the same one)."""
        stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        # after the newest id of this second, never a gap left by a deleted one: ids sort by age
        taken = [id_order(path.name)[1] for path in self.folder.glob(f"{stamp}*") if MODEL_ID.match(path.name)]
        # nor the id of a model deleted this second (a forget that emptied the gallery): a worker
        # still holding that model would take the new one for it and keep serving the old
        last = self.last_id_file.read_text().strip() if self.last_id_file.exists() else ""
        if last[:15] == stamp and MODEL_ID.match(last):
            taken.append(id_order(last)[1])
        suffix = max(taken, default=0) + 1
        model_id = stamp if suffix == 1 else f"{stamp}_{suffix}"
        atomic_write(self.last_id_file, model_id.encode(), durable=False)
        return model_id

    def activate(self, model_id: str, *, verify: bool = True) -> Model | None:
        """Make ``model_id`` the active model after checking that it loads; return it.

        ``verify=False``: the caller has just saved it under the same change lock (every file
        fsynced and in the manifest), so loading it again would only cost time; None is returned.
        """
        with self.changing():
            model = self.load(model_id) if verify else None
            if not verify:
                self._folder_of(model_id)
            previous = self.active_id()
            if previous and previous != model_id:
                atomic_write(self.previous_pointer, previous.encode())
            atomic_write(self.pointer, model_id.encode())
            log.info("model %s is now active", model_id)
            self.prune()
        return model

    def delete(self, model_id: str) -> None:
        """Delete a model folder; the active one cannot be deleted (ModelActive)."""
        with self.changing():
            self._folder_of(model_id)
            if model_id == self.active_id():
                raise ModelActive(f"model {model_id} is active: activate another one first", {"active": model_id})
            self._remove(model_id)

    def deactivate_and_delete(self, model_id: str) -> None:
        """Delete ``model_id`` even when active (a model left with no one): no model is active after."""
        with self.changing():
            self._folder_of(model_id)
            if model_id == self.active_id():
                self.pointer.unlink(missing_ok=True)
            self._remove(model_id)

    def _dropped(self, model_id: str) -> None:
        """Forget this process's loaded copy of ``model_id`` (deleted or rewritten): it would keep
        the old files mapped, their blocks on disk, after a forget."""
        folder = str((self.folder / model_id).resolve())
        _served_models.drop(lambda key: key[:2] == (folder, model_id))

    def _remove(self, model_id: str) -> None:
        self._dropped(model_id)
        trash = self.folder / f"{STAGING_PREFIX}deleted-{model_id}-{os.getpid()}"
        os.rename(self.folder / model_id, trash)  # vanishes from listings at once
        shutil.rmtree(trash, ignore_errors=True)

    def previous_id(self) -> str | None:
        """Return the model that was active before the active one, if it still exists."""
        try:
            model_id = self.previous_pointer.read_text().strip()
        except OSError:
            return None
        return model_id if MODEL_ID.match(model_id) and (self.folder / model_id).is_dir() else None

    def prune(self) -> list[str]:
        """Delete the versions beyond the newest ``keep``, never the active or previous one;
        return the ids deleted (``keep`` 0 keeps everything)."""
        if self.keep <= 0:
            return []
        with self.changing():
            ids = self.ids()
            kept = set(ids[-self.keep:]) | {self.active_id(), self.previous_id()}
            pruned = [model_id for model_id in ids if model_id not in kept]
            for model_id in pruned:
                self._remove(model_id)
        if pruned:
            log.info("pruned %d old model versions (models.keep = %d)", len(pruned), self.keep)
        return pruned

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
        return sorted((path.name for path in self.folder.iterdir()
                       if MODEL_ID.match(path.name) and (path / "manifest.json").is_file()), key=id_order)

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
        """Return the verified model ``model_id``; ModelNotValid when any file fails its manifest.

        A model with a saved gallery is served from it, memory-mapped and without rebuilding
        anything: model.dat (the float64 encodings and file names, for the people engine and
        history) is then neither read nor hashed here."""
        folder = self._folder_of(model_id)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelNotValid(f"model {model_id} has no readable manifest: {reason(exc)}") from None
        if GALLERY_FILE in manifest:
            return self._served(model_id, folder, manifest)
        arrays, state, metadata = self.contents(model_id)
        try:
            classifier = FaceClassifier.restored(state, arrays["encodings"], arrays["labels"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelNotValid(f"model {model_id} cannot be loaded: {exc}") from None
        return Model(model_id, classifier, metadata)

    def _served(self, model_id: str, folder: Path, manifest: dict) -> Model:
        # the same files (every one's inode, size and mtime) give the same model: the people
        # engine asking for the model a worker of this process already serves gets it at once
        try:
            key = (str(folder.resolve()), model_id, file_stamp(folder / "manifest.json"),
                   *(file_stamp(folder / name) for name in sorted(manifest) if name not in ("model.dat", DELTA_DAT)))
        except OSError:
            key = None
        return _served_models.get(key, lambda: self._built(model_id, folder, manifest))

    def _built(self, model_id: str, folder: Path, manifest: dict) -> Model:
        try:
            for name in [name for name in manifest if name not in ("model.dat", DELTA_DAT)]:
                if not verified(folder / name, manifest.get(name)):
                    raise ModelNotValid(f"model {model_id}: {name} does not match its manifest")
            state = json.loads((folder / "model.clf").read_text())
            metadata = json.loads((folder / "model.json").read_text())
            classifier = FaceClassifier.restored(state, None, None, gallery_folder=folder)
        except ModelNotValid:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelNotValid(f"model {model_id} cannot be loaded: {reason(exc)}") from None
        return Model(model_id, classifier, metadata)

    def contents(self, model_id: str) -> tuple[dict, dict, dict]:
        """Return a verified model's (arrays, classifier state, metadata); ``arrays`` holds
        encodings, labels, files and the extra columns saved with it (without "column_")."""
        folder = self._folder_of(model_id)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            for name in FILES + ((DELTA_DAT,) if DELTA_DAT in manifest else ()):
                if not verified(folder / name, manifest.get(name)):
                    raise ModelNotValid(f"model {model_id}: {name} does not match its manifest")
            with np.load(folder / "model.dat", allow_pickle=False) as stored:
                arrays = {name.removeprefix("column_"): stored[name] for name in stored.files}
            if DELTA_DAT in manifest:  # the rows added since the shared base, after it
                with np.load(folder / DELTA_DAT, allow_pickle=False) as stored:
                    arrays = merged_rows(arrays, {name.removeprefix("column_"): stored[name] for name in stored.files})
            state = json.loads((folder / "model.clf").read_text())
            metadata = json.loads((folder / "model.json").read_text())
            arrays["encodings"], arrays["labels"]  # noqa: B018 - a model without them is not valid
        except ModelNotValid:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotValid(f"model {model_id} cannot be loaded: {reason(exc)}") from None
        return arrays, state, metadata

    def delta_contents(self, model_id: str) -> dict:
        """Return the verified rows ``model_id`` adds to a base it shares (``save_delta``), as
        ``contents`` names them; {} for a model written whole."""
        folder = self._folder_of(model_id)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
            if DELTA_DAT not in manifest:
                return {}
            if not verified(folder / DELTA_DAT, manifest[DELTA_DAT]):
                raise ModelNotValid(f"model {model_id}: {DELTA_DAT} does not match its manifest")
            with np.load(folder / DELTA_DAT, allow_pickle=False) as stored:
                return {name.removeprefix("column_"): stored[name] for name in stored.files}
        except ModelNotValid:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotValid(f"model {model_id} cannot be loaded: {reason(exc)}") from None

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
