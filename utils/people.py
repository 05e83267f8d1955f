"""People, one at a time: enrol a person from a few photos, remove a photo or a person,
rename, and forget a person everywhere the service keeps something of them.

Every change makes a new model version from the active model's encodings plus the change,
saved and activated atomically under the store's change lock (``ModelStore.changing``), so
history, rollback and several nodes sharing the store keep working as after a training. The
classifier is refitted with ``FaceClassifier.refitted``: a gallery changed by a small share
keeps its calibration, a larger change is calibrated again (``models.recalibrate_share``).

A photo's id is the first 16 hex digits of the SHA-256 of its encoding: it is stable across
versions without being stored, and the same for models trained from zips.

Forgetting is erasure: the person's rows leave every stored model (a model left with no one
is deleted), their encodings leave the encoding cache, their name leaves job records,
evaluations, the service log and the dashboard's database (its write-ahead log included),
and annotated copies showing their face are deleted. The engine never logs a name it may
have to forget without being able to find it again: names logged are removed from the log
by ``forget``. Only a person some stored model holds is forgotten (else NotFound), or one
whose erasure failed somewhere and is retried (``ForgetRetries``); and text is erased only
where it names them as a person (``Matcher``: quoted, a path segment, a query value), never
where a common word happens to be their name.

No Flask here: the REST blueprint, the pages and the CLI are thin adapters over ``People``.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote, quote_plus

import numpy as np

from conf.config import Config, Paths
from datastructure.annotated import faces_file, saved_faces
from datastructure.classifier import FaceClassifier
from datastructure.errors import ClassifierNotLoaded, DatasetNotValid, ModelsBusy, NameNotValid, NotFound, PyRecognizerError, TooManyPhotos
from datastructure.files import atomic_write
from datastructure.model_store import KeptByStamp, ModelStore, file_stamp
from datastructure.names import Lookalikes, checked_name, checked_new_name, name_key, person_name, shown
from utils import archive
from utils.encoding import encoded_photos
from utils.events import journal_path
from utils.faces import Options, decoded, faces_in, mirror_radius
from utils.inbox import DATABASE as INBOX_DATABASE, erased_face_records

log = logging.getLogger(__name__)

ERASED = "[erased]"
ZIP_MAGIC = b"PK\x03\x04"
ANNOTATED_TOLERANCE = 0.6  # a face in an annotated copy this close to the person's is theirs
DASHBOARD_LOCK_WAIT = 60  # s a forget waits for the dashboard database's write lock


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name as sent, and its bytes (a photo or a zip of photos)."""

    name: str
    data: bytes



def natural_key(text: str) -> tuple:
    """``text`` as a sort key that orders its runs of digits by value, as people count:
    1.jpg, 2.jpg, 10.jpg (not 1, 10, 2), case ignored; the name before its extension, so
    obama.jpg comes before obama2.jpg."""
    def runs(part: str) -> tuple:
        return tuple((0, int(run), run) if run.isdigit() else (1, 0, run.casefold())
                     for run in re.split(r"(\d+)", part) if run)

    stem, extension = os.path.splitext(text)
    return runs(stem), runs(extension)


def photo_id(encoding) -> str:
    """Return a photo's id: the first 16 hex digits of the SHA-256 of its float64 encoding."""
    return hashlib.sha256(np.asarray(encoding, dtype=np.float64).tobytes()).hexdigest()[:16]


class ModelRows:
    """The rows of one model version: encodings with their person, source, id and added date."""

    def __init__(self, encodings, labels, files, added):
        self.encodings = np.asarray(encodings, dtype=np.float64).reshape(-1, 128)
        self.labels = np.asarray(labels, dtype=str)
        self.files = np.asarray(files, dtype=str)
        self.added = np.asarray(added, dtype=str)

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """Each row's photo id (hashing every row costs ~10 us: only when asked)."""
        return np.array([photo_id(row) for row in self.encodings], dtype=str)

    def rows_equal_to(self, encoding) -> np.ndarray:
        """Indices of the rows holding exactly ``encoding`` (the same photo), without hashing all."""
        return np.flatnonzero((self.encodings == np.asarray(encoding, dtype=np.float64)).all(axis=1))

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> "ModelRows":
        """Return a gallery of no one (before the first enrolment)."""
        return cls(np.zeros((0, 128)), [], [], [])

    @classmethod
    def of(cls, arrays: dict, metadata: dict) -> "ModelRows":
        """The gallery of a stored model; models trained from zips have no added dates: their creation."""
        count = len(arrays["labels"])
        added = arrays.get("added")
        if added is None or len(added) != count:
            added = np.full(count, str(metadata.get("created") or ""))
        else:  # a base written by a training, with a delta of enrolments since: blanks before
            added = np.where(np.asarray(added, dtype=str) == "", str(metadata.get("created") or ""), added)
        files = arrays.get("files")
        if files is None or len(files) != count:
            files = np.full(count, "")
        return cls(arrays["encodings"], arrays["labels"], files, added)

    def where(self, keep: np.ndarray) -> "ModelRows":
        """Return the gallery of the rows ``keep`` (a mask or indices) selects."""
        return ModelRows(self.encodings[keep], self.labels[keep], self.files[keep], self.added[keep])

    def plus(self, encodings, labels, files, added) -> "ModelRows":
        """Return this gallery with the given rows appended."""
        return ModelRows(np.vstack([self.encodings, np.asarray(encodings).reshape(-1, 128)]),
                       np.concatenate([self.labels, np.asarray(labels, dtype=str)]),
                       np.concatenate([self.files, np.asarray(files, dtype=str)]),
                       np.concatenate([self.added, np.asarray(added, dtype=str)]))

    def label_of(self, name: str) -> str | None:
        """The stored label that ``name`` designates (same key), or None."""
        key = name_key(name)
        for label in dict.fromkeys(self.labels.tolist()):
            if name_key(label) == key:
                return label
        return None

    def counts(self) -> dict[str, int]:
        """Return each person's number of photos."""
        people, counts = np.unique(self.labels, return_counts=True)
        return {str(person): int(count) for person, count in zip(people, counts)}

    def matching(self, ids) -> np.ndarray:
        """Mask of the rows whose photo id is one of ``ids`` (the same photo, under any name)."""
        return np.isin(self.ids, np.asarray(list(ids), dtype=str))


def already_theirs(skipped: list[dict]) -> bool:
    """Whether some skipped photo is already the person's and none is someone else's."""
    reasons = {item["reason"] for item in skipped}
    return "already enrolled" in reasons and "already enrolled as another person" not in reasons


def label_among(labels: np.ndarray, name: str) -> str | None:
    """The label of ``labels`` (sorted, unique: a model's classes) that ``name`` designates
    (same key), or None; an exact match is found without computing every label's key."""
    at = int(np.searchsorted(labels, name))
    if at < len(labels) and labels[at] == name:
        return str(labels[at])
    key = name_key(name)
    for label in labels.tolist():
        if name_key(label) == key:
            return label
    return None


@dataclass(frozen=True)
class PhotoIndex:
    """A model's photos by id, built once per model and process (``People.photo_index``):
    listing a page of photos or finding one by id then costs no read and no hashing."""

    model: str | None
    ids: np.ndarray        # each row's photo id
    labels: np.ndarray     # each row's person
    encodings: np.ndarray  # float64, as stored
    order: np.ndarray      # rows by person (sorted by name), then as stored: the listing order
    rows: dict             # photo id -> row
    people: np.ndarray     # the people, sorted
    sorted_labels: np.ndarray  # labels[order]: a person's rows are one slice of order

    @classmethod
    def of(cls, model_id: str | None, gallery: "ModelRows") -> "PhotoIndex":
        ids = gallery.ids
        order = np.argsort(gallery.labels, kind="stable")
        return cls(model_id, ids, gallery.labels, gallery.encodings, order,
                   {photo: row for row, photo in enumerate(ids.tolist())}, np.unique(gallery.labels),
                   gallery.labels[order])

    def __len__(self) -> int:
        return len(self.ids)

    def page(self, start: int, stop: int, label: str | None = None) -> list[tuple[str, str]]:
        """(photo id, person) of the photos ``start`` to ``stop`` in listing order, of ``label`` only if given."""
        return [(str(self.ids[row]), str(self.labels[row])) for row in self._rows(label)[start:stop]]

    def count(self, label: str | None = None) -> int:
        """The number of photos, of ``label`` only if given."""
        return len(self._rows(label))

    def _rows(self, label: str | None) -> np.ndarray:
        if label is None:
            return self.order
        low = int(np.searchsorted(self.sorted_labels, label, side="left"))
        high = int(np.searchsorted(self.sorted_labels, label, side="right"))
        return self.order[low:high]

    def owner(self, photo: str) -> str | None:
        """The person holding photo ``photo``, or None."""
        row = self.rows.get(photo)
        return None if row is None else str(self.labels[row])


_photo_indexes = KeptByStamp(2)  # by the model folder's manifest stamp: a rewrite is a new key
# model id -> the skeletons of its people (``Lookalikes``), for the model this process made last:
# the next enrolment of someone new checks their name in one lookup, not 10^5 skeletons
_lookalikes: dict[str, Lookalikes] = {}


def lookalikes_in(model_id: str | None, labels: np.ndarray) -> Lookalikes:
    """The skeletons of the people of ``model_id`` (whose labels are ``labels``)."""
    found = _lookalikes.get(model_id) if model_id else None
    return found if found is not None else Lookalikes(np.unique(labels).tolist())


class People:
    """The people of the active model, and every change to them (see the module's docstring)."""

    def __init__(self, store: ModelStore, config: Config, paths: Paths | None = None, *,
                 training_running: Callable[[], bool] = lambda: False,
                 check_disk: Callable[[], None] = lambda: None,
                 on_enrolled: Callable[[str, list], None] = lambda label, photos: None):
        self.store = store
        self.check_disk = check_disk  # raises InsufficientStorage: an enrolment adds data, an erasure must always run
        self.config = config
        self.paths = paths
        self.training_running = training_running  # a training job replaces the gallery: changes wait for it
        self.options = Options.from_config(config.faces, config.limits, training=True)
        # given (label, [(source, bytes, Face, photo id)]) of the photos an enrolment added (the inbox keeps their crops)
        self.on_enrolled = on_enrolled

    # -- reading -------------------------------------------------------------------------
    def listing(self) -> dict:
        """Return the active model's id and its people with their photo counts."""
        model_id, gallery = self._active_gallery()
        return {"model": model_id,
                "people": [{"name": name, "photos": count} for name, count in gallery.counts().items()]}

    def photo_index(self) -> PhotoIndex:
        """The active model's photos by id (``PhotoIndex``), built on the first call for a model
        (reading and hashing its gallery) and served from memory after."""
        model_id = self.store.active_id()
        if model_id is None:
            return PhotoIndex.of(None, ModelRows.empty())
        try:
            key = (str(self.store.folder), model_id, file_stamp(self.store.folder / model_id / "manifest.json"))
        except OSError:
            key = None

        def made() -> PhotoIndex:
            arrays, _, metadata = self.store.contents(model_id)
            return PhotoIndex.of(model_id, ModelRows.of(arrays, metadata))

        return _photo_indexes.get(key, made)

    def person_label(self, name: str) -> str:
        """The stored name of the active model's person ``name`` designates; NotFound when none."""
        label = label_among(self.photo_index().people, person_name(name))
        if label is None:
            raise NotFound(f"nobody named {shown(name)!r} in the active model")
        return label

    def person(self, name: str) -> dict:
        """Return one person of the active model: their photos' ids, source names and added dates."""
        model_id, gallery = self._active_gallery()
        label = self._label(gallery, name)
        rows = sorted(np.flatnonzero(gallery.labels == label), key=lambda row: natural_key(str(gallery.files[row])))
        return {"model": model_id, "name": label, "photos": [
            {"id": str(gallery.ids[row]), "source": str(gallery.files[row]), "added": str(gallery.added[row])}
            for row in rows]}

    # -- changes -------------------------------------------------------------------------
    def enrol(self, name: str, uploads: Iterable[Upload], *, again_ok: bool = False) -> dict:
        """Add photos of ``name`` (created if new); each must show exactly one face.

        Photos are encoded before the change lock is taken (the slow part), so other changes
        wait only for the save. Returns the new model, the photos added and those skipped.
        ``again_ok``: see ``enrol_encodings``.
        """
        name = checked_name(name)
        self.check_disk()
        photos = self._photos(uploads)
        limit = int(self.config.limits.max_enrol_photos)
        if len(photos) > limit:
            raise TooManyPhotos(f"{len(photos)} photos in one enrolment; the limit is {limit}: "
                                "train from a zip of person folders instead (POST /train)",
                                {"photos": len(photos), "limit": limit, "train_url": "/train"})
        faces, sources, skipped = self._encoded(photos)
        result = self.enrol_encodings(name, [face.encoding for face in faces], sources, skipped=skipped,
                                       again_ok=again_ok)
        data, face_of = dict(photos), dict(zip(sources, faces))
        self.on_enrolled(result["name"], [(entry["source"], data[entry["source"]], face_of[entry["source"]], entry["id"])
                                          for entry in result["added"] if entry["source"] in face_of])
        return result

    def enrol_encodings(self, name: str, encodings, sources: list[str], *, skipped: list[dict] = (),
                        again_ok: bool = False) -> dict:
        """Add already computed 128-d encodings of ``name`` (one per photo, named by ``sources``):
        ``enrol`` without the photos (adapters that receive embeddings, the bench).

        A photo ``name`` already has is skipped ("already enrolled", with its ``id``); one that
        another person has is refused. With nothing new, DatasetNotValid, unless ``again_ok``
        and some photo is already ``name``'s: then nothing changes and the answer says so
        (the dialects' clients retry, and re-send an enrolled photo to "retrain").

        Into a large (indexed) gallery whose calibration is not due, the photos join the served
        model's delta (``FaceClassifier.extended``, ``ModelStore.save_delta``): nothing of the
        gallery is read, copied or written again, so one photo takes the same time at 10^6 as
        at 10^4. Otherwise the whole gallery is refitted and written (``_saved``)."""
        name, skipped = checked_name(name), list(skipped)
        rows = np.asarray(encodings, dtype=np.float64).reshape(-1, 128)
        with self._change():
            parent = self.store.active_id()
            served = self.store.load(parent).classifier if parent else None
            share = float(self.config.models.recalibrate_share)
            gallery = None
            if served is not None and served.extendable(len(rows), recalibrate_share=share):
                labels = served.classes_
                label = label_among(labels, name) or name

                def owner(encoding):
                    cls = served.gallery_.owner_of(encoding)
                    return None if cls is None else str(labels[cls])
            else:
                parent, gallery, served = self._active()
                labels = gallery.labels
                label = gallery.label_of(name) or name

                def owner(encoding):
                    found = gallery.labels[gallery.rows_equal_to(encoding)]
                    return str(found[0]) if len(found) else None
            created = label not in labels
            lookalikes = lookalikes_in(parent, labels) if created else None
            if created:  # a new person: their name must not look like someone else's
                checked_new_name(label, lookalikes)
            added, seen = [], {}
            for encoding, source in zip(rows, sources):
                identity = photo_id(encoding)
                holder = owner(encoding)
                if holder is not None or identity in seen:
                    same = holder == label or identity in seen
                    skipped.append({"file": source, "reason": "already enrolled", "id": identity} if same
                                   else {"file": source, "reason": "already enrolled as another person"})
                    continue
                seen[identity] = True
                added.append((encoding, source, identity))
            if not added and again_ok and already_theirs(skipped):
                return {"model": parent, "name": label, "created": False, "added": [], "skipped": skipped}
            if not added:
                raise DatasetNotValid("no photo could be enrolled: each must show exactly one face",
                                      {"name": label, "skipped": skipped})
            now = datetime.now().isoformat(timespec="seconds")
            new_rows = ModelRows([row[0] for row in added], [label] * len(added), [row[1] for row in added],
                               [now] * len(added))
            if gallery is None:
                model_id = self._saved_delta(new_rows, served, parent)
            else:
                model_id = self._saved(gallery.plus(new_rows.encodings, new_rows.labels, new_rows.files,
                                                    new_rows.added), served, parent, "enrol", len(added))
            carried = lookalikes if lookalikes is not None else _lookalikes.get(parent)
            if carried is not None:  # the new version's people: the parent's, and the newcomer
                if created:
                    carried.add(label)
                _lookalikes.clear()
                _lookalikes[model_id] = carried
        log.info("enrolled %d photos into model %s (%d skipped)", len(added), model_id, len(skipped))
        return {"model": model_id, "name": label, "created": created,
                "added": [{"id": identity, "source": source} for _, source, identity in added],
                "skipped": skipped}

    def _saved_delta(self, rows: ModelRows, served: FaceClassifier, parent: str) -> str:
        """Save and activate the served model plus ``rows`` as a version sharing the parent's base
        (the caller holds the change lock and checked ``served.extendable``)."""
        started = time.time()
        classifier = served.extended(rows.encodings, rows.labels)
        before = self.store.delta_contents(parent)
        delta = ModelRows.of(before, {}).plus(rows.encodings, rows.labels, rows.files, rows.added) if before \
            else rows
        base = self.store.metadata(parent)
        people = dict(base.get("people") or {})
        for label, count in rows.counts().items():
            people[label] = int(people.get(label, 0)) + count
        metadata = self._metadata(people, classifier, base)
        metadata.update(self._change_record("enrol", parent, started))
        model_id = self.store.save_delta(parent, classifier, delta.encodings, delta.labels, delta.files, metadata,
                                         columns={"added": delta.added})
        self.store.activate(model_id, verify=False)  # written and fsynced just now, under this lock
        return model_id

    def _encoded(self, photos: list[tuple[str, bytes]]) -> tuple[list, list[str], list[dict]]:
        """(faces, sources, skipped) of photos that must each show exactly one face, of a
        quality of at least ``faces.min_enrol_quality``."""
        faces, sources, skipped = [], [], []
        minimum = float(self.config.faces.min_enrol_quality)
        for (source, _), result in zip(photos, encoded_photos(
                (data for _, data in photos), self.options, workers=1, cache_folder=None)):
            refusal = None
            if result.reason is None and len(result.faces) == 1 and result.faces[0].quality is not None:
                refusal = result.faces[0].quality.refusal(minimum)
            if result.reason is not None or len(result.faces) != 1:
                reason = result.reason or ("no face found" if not result.faces
                                           else f"{len(result.faces)} faces found, expected one")
                skipped.append({"file": source, "reason": reason})
            elif refusal:
                skipped.append({"file": source, "reason": refusal, "quality": result.faces[0].quality.as_dict()})
            else:
                faces.append(result.faces[0])
                sources.append(source)
        return faces, sources, skipped

    def remove_photo(self, name: str, photo: str) -> dict:
        """Remove one photo of a person from the active model (the person goes with their last)."""
        with self._change():
            parent, gallery, previous = self._active()
            label = self._label(gallery, name)
            rows = (gallery.labels == label) & (gallery.ids == str(photo))
            if not rows.any():
                raise NotFound(f"no photo {shown(photo)!r} of {shown(label)!r} in the active model")
            model_id = self._changed(gallery.where(~rows), previous, parent, "remove photo", int(rows.sum()))
        return {"model": model_id, "name": label, "removed": [str(photo)]}

    def remove(self, name: str) -> dict:
        """Remove a person from the active model (earlier versions keep them: see ``forget``)."""
        with self._change():
            parent, gallery, previous = self._active()
            label = self._label(gallery, name)
            rows = gallery.labels == label
            model_id = self._changed(gallery.where(~rows), previous, parent, "remove person", int(rows.sum()))
        return {"model": model_id, "name": label, "photos_removed": int(rows.sum())}

    def rename(self, name: str, new_name: str) -> dict:
        """Rename a person of the active model; the new name must not be someone else's."""
        new_name = checked_name(new_name)
        with self._change():
            parent, gallery, previous = self._active()
            label = self._label(gallery, name)
            other = gallery.label_of(new_name)
            if other is not None and other != label:
                raise NameNotValid(f"{shown(new_name)!r} is already the name of a person of the model",
                                   {"name": shown(new_name), "problems": ["the name is taken"]})
            checked_new_name(new_name, [other for other in np.unique(gallery.labels).tolist() if other != label])
            labels = np.where(gallery.labels == label, new_name, gallery.labels)
            renamed = ModelRows(gallery.encodings, labels, gallery.files, gallery.added)
            model_id = self._saved(renamed, previous, parent, "rename", 0)
        return {"model": model_id, "name": new_name, "previous_name": label}

    def forget(self, name: str) -> dict:
        """Erase a person from everything the service keeps; return what was erased.

        Their rows (by name, and by encoding, so a renamed copy goes too) leave every stored
        model; the active model gets a new version without them and older versions are
        rewritten in place, a model left with no one being deleted. Then the encoding cache,
        job records, evaluations, annotated copies, the log, the cameras' events and crops,
        and the dashboard's database.
        """
        key = name_key(person_name(name))
        erased = {"new_model": None, "models_rewritten": [], "models_deleted": [], "photos": 0}
        with self._change():
            models = {model_id: self.store.contents(model_id) for model_id in self.store.ids()}
            galleries = {model_id: ModelRows.of(arrays, metadata) for model_id, (arrays, _, metadata) in models.items()}
            labels = {label for gallery in galleries.values() for label in gallery.labels.tolist() if name_key(label) == key}
            retries = ForgetRetries(self.paths)
            if not labels:  # nobody has the name: only a retry after a partial erasure goes on
                if not retries.pending(name):
                    raise NotFound(f"nobody named {shown(name)!r} in any stored model")
                rest = self._erased_elsewhere(Matcher({person_name(name)}), np.zeros((0, 128)), set())
                retries.note(name, failed=bool(rest.get("failed")))
                return {"forgotten": not rest.get("failed"), "erased": {**erased, **rest}}
            theirs = np.vstack([gallery.encodings[np.isin(gallery.labels, list(labels))] for gallery in galleries.values()])
            their_ids = {photo_id(row) for row in theirs}
            match = Matcher(labels | {person_name(name)})
            active = self.store.active_id()
            # the active model first, then newest to oldest: when the active one is left with
            # no one and deleted, the newest remaining model serves, and is the next one here
            for model_id in [active] + [i for i in reversed(self.store.ids()) if i != active]:
                if model_id not in galleries or model_id not in self.store.ids():
                    continue  # the new version, or one deleted or pruned meanwhile
                gallery, (_, state, metadata) = galleries[model_id], models[model_id]
                rows = np.isin(gallery.labels, list(labels)) | gallery.matching(their_ids)
                if not rows.any() and not match.found(json.dumps(metadata, ensure_ascii=False)) \
                        and not match.found(json.dumps(state, ensure_ascii=False)):
                    continue
                erased["photos"] = max(erased["photos"], int(rows.sum()))
                kept = gallery.where(~rows)
                if not len(kept):
                    self.store.deactivate_and_delete(model_id)
                    erased["models_deleted"].append(model_id)
                    continue
                restored = FaceClassifier.restored(match.scrubbed(state), gallery.encodings, gallery.labels)
                if model_id == self.store.active_id():  # a new active version first; this one is then rewritten
                    erased["new_model"] = self._changed(kept, restored, model_id, "forget", int(rows.sum()),
                                                        metadata_of=match.scrubbed(metadata))
                classifier = restored.refitted(kept.encodings, kept.labels, changed=int(rows.sum()),
                                               recalibrate_share=float(self.config.models.recalibrate_share))
                self.store.rewrite(model_id, classifier, kept.encodings, kept.labels, kept.files,
                                   self._metadata(kept.counts(), classifier, match.scrubbed(metadata)),
                                   columns={"added": kept.added})
                erased["models_rewritten"].append(model_id)
            erased.update(self._erased_elsewhere(match, theirs, their_ids))
            retries.note(name, failed="failed" in erased)
        _photo_indexes.drop(lambda key: True)  # this process keeps none of their encodings in memory
        _lookalikes.clear()  # nor their name
        log.info("forgot a person: %d photos, %d models rewritten, %d deleted", erased["photos"],
                 len(erased["models_rewritten"]), len(erased["models_deleted"]))
        return {"forgotten": "failed" not in erased, "erased": erased}

    def negatives_changed(self, change: Callable, kind: str) -> str:
        """Save the active model with its negatives changed by ``change(negatives) -> negatives``
        (datastructure/classifier.py ``Negatives``) as a new active version; return its id."""
        with self._change():
            parent, gallery, previous = self._active()
            if previous is None:
                raise ClassifierNotLoaded("no model is loaded yet: train one first (POST /train)")
            return self._saved(gallery, previous, parent, kind, 0, negatives=change(previous.negatives))

    # -- the parts -----------------------------------------------------------------------
    def changing(self):
        """The change lock (see ``_change``), for a caller that changes the model and more
        (the inbox's actions) as one change: changes made inside take it again at once."""
        return self._change()

    def _change(self):
        """The change lock, after waiting briefly for a running training job (ModelsBusy)."""
        deadline = time.monotonic() + self.store.wait
        while self.training_running():
            if time.monotonic() >= deadline:
                raise ModelsBusy("a training job is running and will replace the model; retry when it ends",
                                 retry_after=10)
            time.sleep(0.1)
        return self.store.changing()

    def _active_gallery(self) -> tuple[str | None, ModelRows]:
        model_id = self.store.active_id()
        if model_id is None:
            return None, ModelRows.empty()
        arrays, _, metadata = self.store.contents(model_id)
        return model_id, ModelRows.of(arrays, metadata)

    def _active(self) -> tuple[str | None, ModelRows, FaceClassifier | None]:
        """(id, gallery, classifier) of the active model; (None, empty, None) before the first."""
        model_id = self.store.active_id()
        if model_id is None:
            return None, ModelRows.empty(), None
        arrays, _, metadata = self.store.contents(model_id)
        # the served model: its saved gallery and index memory-mapped, nothing rebuilt
        return model_id, ModelRows.of(arrays, metadata), self.store.load(model_id).classifier

    @staticmethod
    def _label(gallery: ModelRows, name: str) -> str:
        label = gallery.label_of(person_name(name))
        if label is None:
            raise NotFound(f"nobody named {shown(name)!r} in the active model")
        return label

    def _changed(self, gallery: ModelRows, previous, parent, kind: str, changed: int, **extra) -> str | None:
        """Save ``gallery`` as the new active version, or, left with no one by a forget, delete the model.

        Removing the last person is refused instead: with no active model the newest stored
        one would serve, and it may know the very people just removed (``forget`` erases them
        from every version first)."""
        if len(gallery.labels) == 0:
            if kind != "forget":
                raise DatasetNotValid("the active model would be left with no one: forget the person "
                                      "(POST /people/<name>/forget), or activate another model",
                                      {"model": parent})
            self.store.deactivate_and_delete(parent)
            return None
        return self._saved(gallery, previous, parent, kind, changed, **extra)

    def _saved(self, gallery: ModelRows, previous: FaceClassifier | None, parent: str | None, kind: str,
               changed: int, metadata_of: dict | None = None, negatives=None) -> str:
        """Fit, save and activate ``gallery`` as a new version (the caller holds the change lock)."""
        started = time.time()
        if previous is None:
            from utils.training import classifier_params  # training imports heavy modules: only here

            classifier = FaceClassifier(**classifier_params(self.config)).fit(gallery.encodings, gallery.labels)
            classifier.calibration_ = {**classifier.calibration_, "gallery": len(gallery.labels), "changed_since": 0}
        else:
            classifier = previous.refitted(gallery.encodings, gallery.labels, changed=changed,
                                           recalibrate_share=float(self.config.models.recalibrate_share))
        if negatives is not None:
            classifier.negatives_ = negatives
        base = metadata_of if metadata_of is not None else (self.store.metadata(parent) if parent else {})
        metadata = self._metadata(gallery.counts(), classifier, base)
        metadata.update(self._change_record(kind, parent, started))
        model_id = self.store.save(classifier, gallery.encodings, gallery.labels, gallery.files, metadata,
                                   columns={"added": gallery.added})
        self.store.activate(model_id, verify=False)  # written and fsynced just now, under this lock
        return model_id

    @staticmethod
    def _change_record(kind: str, parent: str | None, started: float) -> dict:
        """The metadata saying which change made a version, from which, and how long it took."""
        return {"kind": kind, "created": datetime.now().isoformat(timespec="seconds"),
                "parent": parent, "source": f"{kind} from {parent}" if parent else kind,
                "seconds": round(time.time() - started, 2),
                "metrics": {"accuracy": None, "test_photos": 0,
                            "note": "changed by hand: held-out figures are those of a training"}}

    def _metadata(self, people: dict[str, int], classifier: FaceClassifier, base: dict) -> dict:
        """``base`` with ``people`` (each one's photo count) and the classifier's figures."""
        from utils.training import library_versions

        skipped = [entry for entry in base.get("skipped") or []
                   if not isinstance(entry, dict) or entry.get("person") is None or entry.get("person") in people]
        return {**{key: value for key, value in base.items() if key != "id"},
                "people": people, "photos": int(sum(people.values())), "skipped": skipped,
                "params": classifier.get_params(), "threshold": classifier.threshold_, "ratio": classifier.ratio_,
                "calibration": classifier.calibration_, "pipeline": self.options.signature(),
                "versions": base.get("versions") or library_versions()}

    def _photos(self, uploads: Iterable[Upload]) -> list[tuple[str, bytes]]:
        """(source name, bytes) of every photo uploaded, zips of one person's photos opened."""
        limits = archive.limits_from(self.config.limits)
        photos = []
        for upload in uploads:
            if upload.data.startswith(ZIP_MAGIC) or upload.name.lower().endswith(".zip"):
                photos += [(f"{upload.name}/{photo.name}", photo.data)
                           for photo in archive.iter_person_photos(io.BytesIO(upload.data), limits)]
            else:
                photos.append((upload.name, upload.data))
        return photos

    # -- erasure outside the models ----------------------------------------------------------
    def _erased_elsewhere(self, match: "Matcher", theirs: np.ndarray, their_ids: set[str]) -> dict:
        """Erase the person from the cache, jobs, evaluations, annotated copies, log and dashboard."""
        if self.paths is None:
            return {}
        evaluations = self.paths.root / "dataset" / "evaluations"  # utils.evaluation.evaluations_folder (it imports the service)
        options = Options.from_config(self.config.faces, self.config.limits, training=False)
        erasers = {
            "cache_entries": lambda: erased_cache_entries(self.paths.cache, their_ids),
            "job_records": lambda: scrubbed_json_files(self.paths.jobs.glob("*.json"), match),
            "evaluations": lambda: scrubbed_json_files(evaluations.glob("*/*.json"), match),
            "annotated_copies": lambda: erased_annotated_copies(self.paths.annotated, theirs, options),
            "log_lines": lambda: erased_log_lines(self.paths.log.glob("*.log*"), match),
            # the cameras' event journal (one line per event, as the log), their face crops and last frames
            "camera_events": lambda: erased_log_lines([journal_path(self.paths)], match),
            "camera_crops": lambda: sum(erased_annotated_copies(self.paths.cameras / folder, theirs, options)
                                        for folder in ("crops", "snapshots")),
            "dashboard_rows": lambda: erased_dashboard_rows(self.paths.dashboard_db, match),
            "face_records": lambda: erased_face_records(self.paths.inbox / INBOX_DATABASE, match, theirs),
        }
        erased, failed = {}, {}
        for place, erase in erasers.items():
            try:
                erased[place] = erase()
            except (OSError, sqlite3.Error) as exc:  # say so and go on: the others must still go
                failed[place] = str(exc)
                log.error("forget: %s could not be erased: %s", place, exc)
        if failed:  # the models are already scrubbed; the answer says what is left, to retry
            erased["failed"] = failed
        return erased


class ForgetRetries:
    """The people whose erasure failed somewhere (a locked or broken file): forgetting their
    name again retries it, though no model holds them any more. Kept as SHA-256 digests of
    their name keys in ``dataset/forget-retries.json``, so the file names nobody."""

    def __init__(self, paths: Paths | None):
        self.path = None if paths is None else paths.root / "dataset" / "forget-retries.json"

    @staticmethod
    def digest(name: str) -> str:
        return hashlib.sha256(name_key(name).encode()).hexdigest()

    def _digests(self) -> set[str]:
        try:
            return set(json.loads(self.path.read_text()))
        except (OSError, ValueError, TypeError):
            return set()

    def pending(self, name: str) -> bool:
        """Whether an erasure of ``name`` failed and was not retried with success since."""
        return self.path is not None and self.digest(name) in self._digests()

    def note(self, name: str, *, failed: bool) -> None:
        """Record that the erasure of ``name`` ``failed`` (to retry), or succeeded."""
        if self.path is None:
            return
        digests, digest = self._digests(), self.digest(name)
        if (digest in digests) == failed:
            return
        digests = digests | {digest} if failed else digests - {digest}
        atomic_write(self.path, json.dumps(sorted(digests)).encode())


def folded(text: str) -> str:
    """``text`` in the normal form names are compared in (``name_key``'s: NFKD, case-folded,
    NFC), so that ``STRASSE`` finds ``Straße`` and ``i̇lker`` finds ``İlker``."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKD", text).casefold())


# Where text names a person as a person: quoted (``'Ana'``, as ``shown`` echoes names; JSON's
# ``"Ana"``), a path segment (``/people/Ana/photos``, ``Ana/1.jpg``), a query or form value
# (``subject=Ana&``, ``GET /people/Ana HTTP/1.1``). A word in a sentence is not a name:
# ``forget active`` leaves "the active model" alone.
NAME_BEFORE = r"(?:^|(?<=['\"/=]))"
NAME_AFTER = r"(?=$|['\"/&?#\s,;)\]])"


class Matcher:
    """Finds one person's names in text where text names a person (``NAME_BEFORE``,
    ``NAME_AFTER``): as stored, URL-quoted, JSON-escaped, both sides folded (``folded``)."""

    def __init__(self, names: Iterable[str]):
        forms = set()
        for name in names:
            for form in (name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name), folded(name)):
                forms.update({form, quote(form, safe=""), quote(form), quote_plus(form), json.dumps(form)[1:-1]})
        self.forms = sorted({folded(form) for form in forms if form}, key=len, reverse=True)
        self.keys = {name_key(name) for name in names}
        self.words = re.compile(NAME_BEFORE + "(?:" + "|".join(re.escape(form) for form in self.forms) + ")" + NAME_AFTER)

    def found(self, text: str) -> bool:
        """Whether ``text`` names the person (a quoted name, a path segment, a query value)."""
        return bool(self.words.search(folded(text)))

    def is_name(self, text: str) -> bool:
        """Whether ``text`` is the name, or a path whose first part is (``Name/1.jpg``)."""
        return name_key(text) in self.keys or name_key(text.split("/", 1)[0]) in self.keys

    def scrubbed(self, value):
        """Return a JSON value without the person: keys naming them and list items about them
        dropped, other strings mentioning them replaced by ERASED."""
        if isinstance(value, dict):
            return {key: self.scrubbed(item) for key, item in value.items() if not self.is_name(str(key))}
        if isinstance(value, list):
            return [self.scrubbed(item) for item in value if not self._about(item)]
        if isinstance(value, str) and self.found(value):
            return ERASED
        return value

    def _about(self, item) -> bool:
        if isinstance(item, str):
            return self.is_name(item)
        if isinstance(item, dict):
            return any(isinstance(value, str) and (self.is_name(value) or self.found(value)) for value in item.values())
        return False


def erased_cache_entries(cache: Path, their_ids: set[str]) -> int:
    """Delete the cached photo results holding one of the person's encodings (by photo id:
    the cache keeps the very float64 encodings the models hold); return how many."""
    removed = 0
    if not their_ids or not cache.is_dir():
        return 0
    for path in cache.rglob("*.npz"):
        try:
            with np.load(path, allow_pickle=False) as stored:
                encodings = stored["encodings"].reshape(-1, 128)
        except (OSError, ValueError, KeyError):
            continue
        if any(photo_id(row) in their_ids for row in encodings):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def scrubbed_json_files(paths: Iterable[Path], match: Matcher) -> int:
    """Rewrite the JSON files that mention the person without them; return how many changed."""
    changed = 0
    for path in paths:
        try:
            text = path.read_text()
            if not match.found(text) and not match.found(json.dumps(json.loads(text), ensure_ascii=False)):
                continue
            atomic_write(path, json.dumps(match.scrubbed(json.loads(text))).encode())
            changed += 1
        except (OSError, ValueError):
            continue
    return changed


def erased_annotated_copies(folder: Path, theirs: np.ndarray, options: Options) -> int:
    """Delete the annotated copies showing a face close to one of ``theirs``; return how many.

    A copy holds the name only as drawn pixels, so the faces in it are what tells: the encodings
    /predict kept beside it, else (a video thumbnail) the pipeline run on it again. Kept ones
    may be first passes, up to the mirror's radius from their means (utils/faces.py): the
    tolerance grows by the radius, an erasure errs towards deleting."""
    removed = 0
    if len(theirs) == 0 or not folder.is_dir():
        return 0
    for path in sorted(folder.glob("*.jpg")):
        encodings, tolerance = saved_faces(path), ANNOTATED_TOLERANCE + (mirror_radius() or 0.0)
        if encodings is None:
            try:
                encodings = [face.encoding for face in faces_in(decoded(path.read_bytes(), options), options)]
            except (OSError, PyRecognizerError):
                continue
            tolerance = ANNOTATED_TOLERANCE
        if any(np.min(np.linalg.norm(theirs - encoding, axis=1)) <= tolerance for encoding in encodings):
            path.unlink(missing_ok=True)
            faces_file(path).unlink(missing_ok=True)
            removed += 1
    return removed


def erased_log_lines(paths: Iterable[Path], match: Matcher) -> int:
    """Remove the lines naming the person from the log files, in place (other processes keep
    appending to the same files); return how many lines went."""
    removed = 0
    for path in paths:
        try:
            with open(path, "r+b") as handle:
                lines = handle.read().splitlines(keepends=True)
                kept = [line for line in lines if not match.found(line.decode("utf-8", "replace"))]
                if len(kept) == len(lines):
                    continue
                handle.seek(0)
                handle.write(b"".join(kept))
                handle.truncate()
                removed += len(lines) - len(kept)
        except OSError:
            continue
    return removed


def erased_dashboard_rows(database: Path, match: Matcher) -> int:
    """Delete the dashboard's rows with a text field naming the person, then rebuild the file
    and empty its write-ahead log so that no freed page still holds the name; return how many
    rows went."""
    if not database.is_file():
        return 0
    removed = 0
    # the service's workers write a row per request (BEGIN IMMEDIATE, api/dashboard.py): under
    # load the lock can be theirs for seconds at a time, and 10 s failed the forget (bench/soak.py)
    connection = sqlite3.connect(database, timeout=DASHBOARD_LOCK_WAIT)
    connection.create_function("names_person", 1, lambda text: int(text is not None and match.found(str(text))))
    try:
        connection.execute("PRAGMA secure_delete = ON")
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')
                       if (row[2] or "").upper() in ("", "TEXT", "VARCHAR", "STRING", "CLOB") or "CHAR" in (row[2] or "").upper()]
            if not columns:
                continue
            where = " OR ".join(f'names_person("{column}")' for column in columns)
            removed += connection.execute(f'DELETE FROM "{table}" WHERE {where}').rowcount
        connection.commit()
        if removed:
            connection.execute("VACUUM")
            checkpointed(connection)
    finally:
        connection.close()
    return removed


def checkpointed(connection: sqlite3.Connection, attempts: int = 50) -> None:
    """Copy the write-ahead log into the database and empty it (``wal_checkpoint(TRUNCATE)``):
    deleted rows stay readable in ``dashboard.db-wal`` until then. A dashboard reading at that
    moment makes it busy: try again, then say so (the caller reports the place as failed)."""
    for _ in range(attempts):
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.1)
    raise sqlite3.OperationalError("the dashboard's write-ahead log stayed busy: its deleted rows are still in it")
