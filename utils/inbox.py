"""The face inbox: every face decided for an authorised caller kept as a record, unknown faces
grouped into clusters, and the actions that teach the model from them: assign, ignore, "not
this person" and undo.

A record holds a small crop (JPEG, ``inbox.crop_side`` px on its long side), the float64
encoding, the decision (name or unknown, confidence, nearest person and distance), the source
(route, client, camera or client label, file name), the time and the face's quality
(utils/quality.py). Records live in one SQLite database, ``dataset/inbox/inbox.db``: each
write is one transaction, so a killed process leaves whole records or none, and every
process of the service sees the same inbox. The store is bounded by ``inbox.keep`` records,
``inbox.max_age`` seconds and ``inbox.max_bytes`` of database; the oldest records go first,
and a record that cannot be written (a full disk) is logged, never an error of the request.

Clusters grow one face at a time: a new unknown face joins the cluster of its nearest
clustered neighbour within ``inbox.cluster_distance``; with none, it forms a cluster with its
unclustered neighbours once they are ``inbox.min_cluster_faces`` together (Immich's
incremental DBSCAN, over this process's view of the unknown encodings: exhaustive, or the
faiss index of datastructure/index.py from ``classifier.index_min`` records on, so a face
costs no pass over every pair). ``recluster`` does the same for every unknown face, as a job.

Actions change the model through the people engine (utils/people.py), under its change lock
(a training or another change running: MODELS_BUSY), and each makes one new model version:
an assign is one bulk enrolment of the chosen faces (quality gate, near-duplicates thinned,
at most ``inbox.max_assign``); an ignore and a "not X" add negatives to the classifier
(datastructure/classifier.py ``Negatives``). Each action is written as pending before the
model changes and done after the records change, in one transaction; a process killed in
between leaves a pending action, which the next start undoes (``recover``). Undo makes the
model before the action active again and puts the records back.

No Flask here: api/faces.py and the pages are thin adapters over ``Inbox``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from datastructure.classifier import UNKNOWN, squared_distances
from datastructure.errors import (ClassifierNotLoaded, DatasetNotValid, NameNotValid, NotFound,
                                  UndoNotPossible)
from datastructure.index import EncodingIndex
from datastructure.names import checked_name, name_key, shown
from utils.images import encode_jpeg
from utils.quality import Quality

log = logging.getLogger(__name__)

DATABASE = "inbox.db"
STATES = ("unknown", "named", "ignored")
CLUSTERED_STATES = ("unknown", "ignored")  # the faces new unknown faces are grouped with
NEAR_DISTANCE = 0.6     # a cluster whose faces' nearest person is this near may be missed photos of them
ERASE_DISTANCE = 0.5    # forget erases the records whose face is this near one of the person's photos
CROP_MARGIN = 0.25      # share of the face's size added around it in a crop
SEARCH_CANDIDATES = 64  # records the faiss index returns per face, re-ranked exactly
# index cells searched per face when grouping everything again: a neighbour within the cluster
# distance sits in the face's own cell or the next; at 10^5 faces 16 cells took 3 times as long
CLUSTER_NPROBE = 4
BEST_CROPS = 6          # a cluster shows its best faces by quality
CLUSTER_FACES_LISTED = 200  # record ids listed per cluster; GET /faces?cluster= pages through more

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL, time REAL NOT NULL, state TEXT NOT NULL, name TEXT NOT NULL,
    confidence REAL, distance REAL, candidate TEXT, runner_up TEXT, runner_up_distance REAL,
    route TEXT NOT NULL, client TEXT, label TEXT, file TEXT, model TEXT,
    quality REAL, quality_detail TEXT, cluster INTEGER, photo TEXT,
    box TEXT, encoding BLOB NOT NULL, crop BLOB);
CREATE INDEX IF NOT EXISTS records_cluster ON records (cluster);
CREATE INDEX IF NOT EXISTS records_photo ON records (photo);
CREATE INDEX IF NOT EXISTS records_time ON records (time);
CREATE TABLE IF NOT EXISTS clusters (id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, time REAL NOT NULL, state TEXT NOT NULL,
    name TEXT, model_before TEXT, model_after TEXT, changes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
LISTED = ("id", "time", "state", "name", "confidence", "distance", "candidate", "runner_up", "runner_up_distance",
          "route", "client", "label", "file", "model", "quality", "quality_detail", "cluster", "photo", "box")


@dataclass(frozen=True)
class Source:
    """Where a face came from: the route, who asked (``token``, ``admin``, ``anonymous``, a
    dialect's key), the camera or client label they gave, and the uploaded file's name."""

    route: str
    client: str = "token"
    label: str | None = None
    file: str | None = None

    @property
    def authorised(self) -> bool:
        """Whether the caller used the API token, the admin login or a dialect's key."""
        return self.client != "anonymous"


def encoding_blob(encoding) -> bytes:
    """The stored form of an encoding: its 128 float64 (a gallery's photo id hashes the same bytes)."""
    return np.asarray(encoding, dtype=np.float64).reshape(128).tobytes()


def encoding_of(blob: bytes) -> np.ndarray:
    """The encoding of a stored blob."""
    return np.frombuffer(blob, dtype=np.float64).reshape(128)


def crop_jpeg(array: np.ndarray, box, scale: float, side: int) -> bytes:
    """The face of ``box`` (in the photo's own pixels; ``array`` is the photo decoded at 1 /
    ``scale``) with a margin, at most ``side`` px on its long side, as JPEG bytes."""
    top, right, bottom, left = (value / scale for value in box)
    margin = CROP_MARGIN * max(bottom - top, right - left)
    height, width = array.shape[:2]
    top, bottom = int(max(0, top - margin)), int(min(height, bottom + margin))
    left, right = int(max(0, left - margin)), int(min(width, right + margin))
    face = Image.fromarray(np.ascontiguousarray(array[top:max(bottom, top + 1), left:max(right, left + 1)]))
    face.thumbnail((side, side), Image.BILINEAR)
    return encode_jpeg(np.asarray(face.convert("RGB")), quality=85)


EPOCH_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")  # up to the year 2286, as /openapi.json says


def when(value) -> float | None:
    """Seconds since the epoch of ``value``: a number of seconds (not negative, no exponent), or
    an ISO 8601 date; None when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e10:
        return float(value)
    if isinstance(value, str) and EPOCH_SECONDS.fullmatch(value):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except (ValueError, OverflowError, OSError):
        raise DatasetNotValid(f"'since' must be seconds since 1970 or an ISO 8601 date, not {shown(str(value))!r}",
                              {"since": shown(str(value))}) from None


def iso(seconds: float | None) -> str | None:
    """An ISO 8601 local time of epoch seconds."""
    return None if seconds is None else datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


# -- clustering ---------------------------------------------------------------------------------


def placement(neighbours: list[tuple[int, float, int | None]], min_faces: int) -> tuple[int | None, list[int]]:
    """Where a new unknown face goes, given its neighbours within the cluster distance as
    (row, distance, cluster): (the nearest clustered neighbour's cluster, []); or, with none,
    (0, the rows that form a new cluster with it) when they are ``min_faces`` with it; else (None, [])."""
    clustered = sorted((distance, cluster) for _, distance, cluster in neighbours if cluster is not None)
    if clustered:
        return clustered[0][1], []
    if len(neighbours) + 1 >= min_faces:
        return 0, [row for row, _, _ in neighbours]
    return None, []


class Neighbours:
    """This process's view of the encodings of the records unknown faces are grouped with.

    Rows only ever append (each new record is read once); an action bumps the database's
    ``generation``, and the view is read again. Rows dropped since stay in the view until
    then; ``near`` is checked against the database by its caller."""

    def __init__(self, index_min: int, nprobe: int):
        self.index_min, self.nprobe = index_min, nprobe
        self.rows = np.zeros(0, dtype=np.int64)
        self.encodings = np.zeros((0, 128), dtype=np.float32)
        self.generation, self.last, self.built = None, 0, 0
        self.index = EncodingIndex(min_size=index_min, nprobe=nprobe).fit(self.encodings)

    def refresh(self, db: sqlite3.Connection) -> None:
        """Read what other processes (or actions) changed since the last look."""
        generation = meta_value(db, "generation")
        full = generation != self.generation or len(self.rows) >= 2 * max(self.built, self.index_min // 2)
        query = "SELECT rowid, encoding FROM records WHERE state IN ('unknown', 'ignored')"
        found = db.execute(query + ("" if full else " AND rowid > ?") + " ORDER BY rowid",
                           () if full else (self.last,)).fetchall()
        rows = np.array([row for row, _ in found], dtype=np.int64)
        encodings = np.array([encoding_of(blob) for _, blob in found], dtype=np.float32).reshape(-1, 128)
        if full:
            self.rows, self.encodings, self.generation, self.built = rows, encodings, generation, len(rows)
            self.index = EncodingIndex(min_size=self.index_min, nprobe=self.nprobe).fit(encodings)
        elif len(rows):
            self.append(rows, encodings)
        self.last = int(max(self.last, rows.max(initial=0)))

    def append(self, rows, encodings) -> None:
        """Add rows this process wrote (or read)."""
        rows, encodings = np.asarray(rows, dtype=np.int64), np.asarray(encodings, dtype=np.float32).reshape(-1, 128)
        self.rows = np.concatenate([self.rows, rows])
        self.encodings = np.vstack([self.encodings, encodings])
        self.index.add(encodings)
        self.last = int(max(self.last, rows.max(initial=0)))

    def near(self, encoding, radius: float) -> list[tuple[int, float]]:
        """(row, distance) of the encodings within ``radius`` of ``encoding``, nearest first."""
        if not len(self.rows):
            return []
        query = np.asarray(encoding, dtype=np.float32)
        if self.index.approximate:
            found = self.index.search(query[None, :], SEARCH_CANDIDATES)[0]
            candidates = found[found >= 0]
        else:
            candidates = np.arange(len(self.rows))
        distances = np.linalg.norm(self.encodings[candidates] - query, axis=1)
        keep = distances <= radius
        order = np.argsort(distances[keep])
        return [(int(self.rows[candidates[keep][i]]), float(distances[keep][i])) for i in order]


def meta_value(db: sqlite3.Connection, key: str) -> int:
    """A counter of the meta table (0 when never set)."""
    found = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(found[0]) if found else 0


def bumped(db: sqlite3.Connection, key: str = "generation") -> None:
    """Count one more change of ``key`` (every process's Neighbours read again)."""
    db.execute("INSERT INTO meta (key, value) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1", (key,))


def open_database(path: Path) -> sqlite3.Connection:
    """A connection to the inbox database, created if new (WAL: readers never wait for a writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA secure_delete = ON")  # a deleted record's bytes are overwritten, not left in free pages
    db.executescript(SCHEMA)
    db.create_function("name_key", 1, lambda text: None if text is None else name_key(text), deterministic=True)
    return db


# -- the inbox ----------------------------------------------------------------------------------


class Inbox:
    """The face records of one data folder (see the module's docstring).

    ``settings``: the ``inbox`` config section; ``min_quality``: ``faces.min_enrol_quality``;
    ``people``: a callable returning the people engine (utils/people.py's ``People``) actions
    change the model through; ``store``: the model store."""

    def __init__(self, folder: Path, settings, *, min_quality: float, store=None, people=None,
                 index_min: int = 30_000, nprobe: int = 16):
        self.path = Path(folder) / DATABASE
        self.settings = settings
        self.min_quality = float(min_quality)
        self.store, self.people = store, people
        self.neighbours = Neighbours(index_min, nprobe)
        self._local = threading.local()
        self._neighbours_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether records are kept at all (``inbox.enabled``, and room for one)."""
        settings = self.settings
        return bool(settings.enabled) and settings.keep > 0 and settings.max_age > 0 and settings.max_bytes > 0

    # -- the database ----------------------------------------------------------------------
    def db(self) -> sqlite3.Connection:
        """This thread's connection (a forked worker opens its own)."""
        held = getattr(self._local, "db", None)
        if held is None or self._local.pid != os.getpid():
            held = open_database(self.path)
            self._local.db, self._local.pid = held, os.getpid()
        return held

    @contextlib.contextmanager
    def writing(self):
        """One write transaction, taken at once (BEGIN IMMEDIATE: writers queue, none fails half way)."""
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- keeping ---------------------------------------------------------------------------
    def keep(self, image, faces, decisions, source: Source, model_id: str | None) -> list[str | None]:
        """Keep a record of each face of one photo (``image``: utils.images.DecodedImage) and
        return their ids (None where none is kept: the inbox is off, the caller anonymous,
        or the disk refused; a record is never worth failing a request)."""
        if not self.enabled or not faces or (not source.authorised and not self.settings.keep_anonymous):
            return [None] * len(faces)
        try:
            now = time.time()
            rows = [self._new_row(image, face, decision, source, model_id, now) for face, decision in zip(faces, decisions)]
            with self._neighbours_lock, self.writing() as db:
                for row in rows:
                    if row["state"] == "unknown":
                        self._place(db, row)
                    self._insert(db, row)
                self._bounded(db, now)
            return [row["id"] for row in rows]
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.warning("face records not kept: %s", exc)
            return [None] * len(faces)

    def keep_enrolled(self, label: str, photos) -> None:
        """Keep the crops of photos just enrolled as ``label``: ``photos`` holds (source name,
        the photo's bytes, its utils.faces.Face, its gallery photo id), so the person page shows
        each photo's face. A photo the pipeline cannot decode again is skipped."""
        from utils.faces import Options, decoded

        if not self.enabled or not photos:
            return
        try:
            now = time.time()
            rows = []
            for source, data, face, photo in photos:
                image = decoded(data, Options())
                row = self._new_row(image, face, None, Source("enrol", "token", None, source), None, now)
                rows.append({**row, "state": "named", "name": label, "photo": photo})
            with self.writing() as db:
                for row in rows:
                    self._insert(db, row)
                self._bounded(db, now)
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.warning("crops of enrolled photos not kept: %s", exc)

    def keep_tracks(self, tracks, source: Source, model_id: str | None) -> list[str | None]:
        """Keep one record per video track (utils/video.py ``Track``): its best frame's crop and
        quality, the mean of its encodings, and the decision its voted name was given with best."""
        from utils.faces import Face

        faces, decisions, images = [], [], []
        for track in tracks:
            if not track.encodings or track.best[2] is None:
                continue
            name = track.name()
            decisions.append(max((d for d in track.decisions if d.name == name), key=lambda d: d.confidence))
            pixels = track.best[2]
            faces.append(Face((0, pixels.shape[1], pixels.shape[0], 0), np.mean(track.encodings, axis=0), track.best[3]))
            images.append(SimpleNamespace(array=pixels, scale=1.0))
        return [record for image, face, decision in zip(images, faces, decisions)
                for record in self.keep(image, [face], [decision], source, model_id)]

    def _new_row(self, image, face, decision, source: Source, model_id, now: float) -> dict:
        quality = getattr(face, "quality", None)
        named = decision is not None and decision.name != UNKNOWN
        return {"id": secrets.token_hex(8), "time": now, "state": "named" if named else "unknown",
                "name": decision.name if decision is not None else UNKNOWN,
                "confidence": None if decision is None else decision.confidence,
                "distance": None if decision is None else decision.distance,
                "candidate": None if decision is None else decision.candidate,
                "runner_up": None if decision is None else decision.runner_up,
                "runner_up_distance": None if decision is None else decision.runner_up_distance,
                "route": source.route, "client": source.client, "label": source.label, "file": source.file,
                "model": model_id, "quality": None if quality is None else quality.score,
                "quality_detail": None if quality is None else json.dumps(quality.as_dict()),
                "cluster": None, "photo": None, "box": json.dumps([int(v) for v in face.box]),
                "encoding": encoding_blob(face.encoding),
                "crop": crop_jpeg(image.array, face.box, image.scale, self.settings.crop_side)}

    def _insert(self, db: sqlite3.Connection, row: dict) -> None:
        columns = list(row)
        cursor = db.execute(f"INSERT INTO records ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                            [row[column] for column in columns])
        if row["state"] in CLUSTERED_STATES:
            self.neighbours.append([cursor.lastrowid], [encoding_of(row["encoding"])])

    def _place(self, db: sqlite3.Connection, row: dict) -> None:
        """Put a new unknown face in its cluster, or form one (see ``placement``)."""
        self.neighbours.refresh(db)
        near = dict(self.neighbours.near(encoding_of(row["encoding"]), self.settings.cluster_distance))
        if not near:
            return
        found = db.execute(f"SELECT rowid, cluster, state FROM records WHERE rowid IN ({', '.join('?' * len(near))})",
                           list(near)).fetchall()
        live = [(rowid, near[rowid], cluster) for rowid, cluster, state in found if state in CLUSTERED_STATES]
        cluster, members = placement(live, self.settings.min_cluster_faces)
        if cluster == 0:
            cluster = db.execute("INSERT INTO clusters (state) VALUES ('unknown')").lastrowid
            db.execute(f"UPDATE records SET cluster = ? WHERE cluster IS NULL AND rowid IN ({', '.join('?' * len(members))})",
                       [cluster, *members])
        if cluster is not None:
            row["cluster"] = cluster
            state = db.execute("SELECT state FROM clusters WHERE id = ?", (cluster,)).fetchone()
            if state and state[0] == "ignored":  # a known stranger again: not shown as new
                row["state"] = "ignored"

    def _bounded(self, db: sqlite3.Connection, now: float) -> None:
        """Drop the oldest records past ``inbox.max_age``, ``inbox.keep`` and ``inbox.max_bytes``."""
        settings = self.settings
        db.execute("DELETE FROM records WHERE time < ?", (now - settings.max_age,))
        count = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        if count > settings.keep:  # a twentieth more: a full inbox deletes once per 5% of it
            self._drop_oldest(db, count - settings.keep + settings.keep // 20)
        page_size, pages, free = (db.execute(f"PRAGMA {name}").fetchone()[0]
                                  for name in ("page_size", "page_count", "freelist_count"))
        if (pages - free) * page_size > settings.max_bytes:
            self._drop_oldest(db, max(1, count // 20))

    @staticmethod
    def _drop_oldest(db: sqlite3.Connection, count: int) -> None:
        db.execute("DELETE FROM records WHERE rowid IN (SELECT rowid FROM records ORDER BY rowid LIMIT ?)", (count,))

    # -- reading ---------------------------------------------------------------------------
    def records(self, *, state: str | None = None, name: str | None = None, since=None, source: str | None = None,
                cluster: int | None = None, offset: int = 0, limit: int = 50) -> dict:
        """One page of records, newest first, with the filters' total."""
        where, values = [], []
        if state is not None:
            if state not in STATES:
                raise DatasetNotValid(f"'state' must be one of {', '.join(STATES)}", {"state": shown(state)})
            where.append("state = ?")
            values.append(state)
        if name:
            where.append("name_key(name) = ?")
            values.append(name_key(name))
        if since not in (None, ""):
            where.append("time >= ?")
            values.append(when(since))
        if source:
            where.append("(label = ? OR route = ? OR file = ?)")
            values += [source] * 3
        if cluster is not None:
            self._cluster_state(cluster)
            where.append("cluster = ?")
            values.append(int(cluster))
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        db = self.db()
        total = db.execute(f"SELECT COUNT(*) FROM records{clause}", values).fetchone()[0]
        found = db.execute(f"SELECT {', '.join(LISTED)} FROM records{clause} ORDER BY rowid DESC LIMIT ? OFFSET ?",
                           [*values, int(limit), int(offset)]).fetchall()
        return {"total": int(total), "offset": int(offset), "limit": int(limit),
                "records": [self._listed(row) for row in found]}

    @staticmethod
    def _listed(row) -> dict:
        record = dict(zip(LISTED, row))
        detail = record.pop("quality_detail")
        box = record.pop("box")
        return {"id": record["id"], "time": iso(record["time"]), "state": record["state"],
                "decision": {key: record[key] for key in ("name", "confidence", "distance", "candidate",
                                                          "runner_up", "runner_up_distance")},
                "name": record["name"], "cluster": record["cluster"], "photo": record["photo"],
                "source": {key: record[key] for key in ("route", "client", "label", "file")},
                "model": record["model"], "quality": json.loads(detail) if detail else None,
                "box": json.loads(box) if box else None}

    def record(self, record_id: str) -> dict:
        """One record; NotFound when there is none of that id."""
        found = self.db().execute(f"SELECT {', '.join(LISTED)} FROM records WHERE id = ?", (str(record_id),)).fetchone()
        if found is None:
            raise NotFound(f"no face record {shown(str(record_id))!r}")
        return self._listed(found)

    def crop(self, record_id: str) -> bytes:
        """A record's crop (JPEG bytes); NotFound when there is no such record."""
        found = self.db().execute("SELECT crop FROM records WHERE id = ?", (str(record_id),)).fetchone()
        if found is None or found[0] is None:
            raise NotFound(f"no face record {shown(str(record_id))!r}")
        return bytes(found[0])

    def faces_of_photos(self, photo_ids) -> dict[str, dict]:
        """The newest record of each gallery photo id that has one (its crop, quality and source)."""
        ids = [str(photo) for photo in photo_ids]
        found = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self.db().execute(f"SELECT {', '.join(LISTED)} FROM records WHERE photo IN "
                                         f"({', '.join('?' * len(chunk))}) ORDER BY rowid", chunk):
                record = self._listed(row)
                found[record["photo"]] = record
        return found

    def clusters(self, *, state: str = "unknown", offset: int = 0, limit: int = 20) -> dict:
        """One page of clusters, largest first: size, first and last seen, sources, best faces
        by quality, the record ids in it, and the person it sits near (None: a stranger)."""
        if state not in CLUSTERED_STATES:
            raise DatasetNotValid("'state' must be unknown or ignored for clusters", {"state": shown(state)})
        db = self.db()
        total = db.execute("SELECT COUNT(DISTINCT cluster) FROM records WHERE cluster IS NOT NULL AND state = ?",
                           (state,)).fetchone()[0]
        groups = db.execute("SELECT cluster, COUNT(*) AS size, MIN(time), MAX(time) FROM records "
                            "WHERE cluster IS NOT NULL AND state = ? GROUP BY cluster ORDER BY size DESC, cluster "
                            "LIMIT ? OFFSET ?", (state, int(limit), int(offset))).fetchall()
        return {"total": int(total), "offset": int(offset), "limit": int(limit),
                "clusters": [self._cluster(db, cluster, size, first, last, state) for cluster, size, first, last in groups]}

    def cluster(self, cluster: int) -> dict:
        """One cluster (as ``clusters`` lists them); NotFound when it has no face."""
        state = self._cluster_state(cluster)
        db = self.db()
        size, first, last = db.execute("SELECT COUNT(*), MIN(time), MAX(time) FROM records WHERE cluster = ? AND state = ?",
                                       (int(cluster), state)).fetchone()
        if not size:
            raise NotFound(f"cluster {int(cluster)} has no face left")
        return self._cluster(db, int(cluster), size, first, last, state)

    @staticmethod
    def _cluster(db, cluster: int, size: int, first: float, last: float, state: str) -> dict:
        faces = db.execute("SELECT id, quality, candidate, distance, route, label FROM records WHERE cluster = ? "
                           "AND state = ? ORDER BY quality IS NULL, quality DESC, rowid", (cluster, state)).fetchall()
        sources = Counter(label or route for _, _, _, _, route, label in faces)
        candidates = Counter(candidate for _, _, candidate, distance, _, _ in faces
                             if candidate and distance is not None and distance <= NEAR_DISTANCE)
        near = None
        if candidates:
            person, count = candidates.most_common(1)[0]
            if 2 * count >= len(faces):
                near = {"name": person, "faces": count}
        return {"id": int(cluster), "state": state, "size": int(size), "first_seen": iso(first), "last_seen": iso(last),
                "sources": dict(sources.most_common()), "near": near,
                "best": [row[0] for row in faces[:BEST_CROPS]],
                "faces": [row[0] for row in faces[:CLUSTER_FACES_LISTED]]}

    def _cluster_state(self, cluster) -> str:
        try:
            found = self.db().execute("SELECT state FROM clusters WHERE id = ?", (int(cluster),)).fetchone()
        except (TypeError, ValueError, OverflowError):
            found = None
        if found is None:
            raise NotFound(f"no cluster {shown(str(cluster))!r}")
        return found[0]

    def actions(self, limit: int = 50) -> list[dict]:
        """The newest actions: id, kind, time, state, the models before and after."""
        rows = self.db().execute("SELECT id, kind, time, state, name, model_before, model_after FROM actions "
                                 "ORDER BY time DESC LIMIT ?", (int(limit),)).fetchall()
        return [{"id": row[0], "kind": row[1], "time": iso(row[2]), "state": row[3], "name": row[4],
                 "model_before": row[5], "model_after": row[6]} for row in rows]

    # -- actions ---------------------------------------------------------------------------
    def assign(self, name: str, *, cluster: int | None = None, faces=None) -> dict:
        """Enrol a cluster's unknown faces, or the chosen records, as ``name`` (created if
        new): one bulk enrolment through the people engine, one new model version."""
        name = checked_name(name)
        people = self.people()
        with people.changing():
            rows = self._cluster_rows(cluster) if cluster is not None else self._chosen_rows(faces)
            chosen, skipped = self.gated(rows)
            if not chosen:
                raise DatasetNotValid("no face of the selection can be enrolled", {"name": name, "skipped": skipped})
            action = self._begun("assign", name, rows)
            try:
                result = people.enrol_encodings(name, [encoding_of(row["encoding"]) for row in chosen],
                                                [f"inbox/{row['id']}" for row in chosen], skipped=skipped)
            except BaseException:
                self._abandoned(action)
                raise
            photos = {entry["source"]: entry["id"] for entry in result["added"]}
            with self.writing() as db:
                for row in rows:
                    db.execute("UPDATE records SET state = 'named', name = ?, photo = COALESCE(?, photo) WHERE id = ?",
                               (result["name"], photos.get(f"inbox/{row['id']}"), row["id"]))
                self._done(db, action, result["model"])
        return {**result, "action": action, "faces": [row["id"] for row in rows]}

    def ignore(self, cluster: int) -> dict:
        """Make a cluster a known stranger: its faces become negatives of everyone (one new model
        version), and faces near them stay unknown and are not shown again as new."""
        people = self.people()
        with people.changing():
            rows = self._cluster_rows(cluster)
            chosen, _ = self.thinned(rows)
            action = self._begun("ignore", None, rows, cluster=int(cluster))
            try:
                model = people.negatives_changed(
                    lambda negatives: negatives.added([row["id"] for row in chosen], [""] * len(chosen),
                                                      [encoding_of(row["encoding"]) for row in chosen]), "ignore")
            except BaseException:
                self._abandoned(action)
                raise
            with self.writing() as db:
                db.execute("UPDATE clusters SET state = 'ignored' WHERE id = ?", (int(cluster),))
                db.execute("UPDATE records SET state = 'ignored' WHERE cluster = ? AND state = 'unknown'", (int(cluster),))
                self._done(db, action, model)
        return {"model": model, "action": action, "cluster": int(cluster), "faces": [row["id"] for row in rows],
                "negatives": len(chosen)}

    def negate(self, record_id: str, name: str) -> dict:
        """"Not ``name``": the record's face becomes a hard negative of ``name`` (one new model
        version); the record itself goes back to the unknown faces."""
        label = self._label(name)
        rows = self._chosen_rows([record_id])
        people = self.people()
        with people.changing():
            action = self._begun("not", label, rows)
            try:
                model = people.negatives_changed(
                    lambda negatives: negatives.added([rows[0]["id"]], [label], [encoding_of(rows[0]["encoding"])]), "not")
            except BaseException:
                self._abandoned(action)
                raise
            with self.writing() as db:
                db.execute("UPDATE records SET state = 'unknown', name = ? WHERE id = ? AND name_key(name) = ?",
                           (UNKNOWN, rows[0]["id"], name_key(label)))
                self._done(db, action, model)
        return {"model": model, "action": action, "name": label, "negative": rows[0]["id"]}

    def remove_negative(self, name: str, negative_id: str) -> dict:
        """Remove one of a person's negatives (one new model version)."""
        label = self._label(name)
        classifier = self.store.load(self.store.active_id()).classifier
        if not any(entry["id"] == negative_id for entry in classifier.negatives.of(label)):
            raise NotFound(f"{shown(label)!r} has no negative {shown(str(negative_id))!r}")
        people = self.people()
        with people.changing():
            action = self._begun("remove negative", label, [])
            try:
                model = people.negatives_changed(lambda negatives: negatives.without([negative_id]), "remove negative")
            except BaseException:
                self._abandoned(action)
                raise
            with self.writing() as db:
                self._done(db, action, model)
        return {"model": model, "action": action, "name": label, "removed": negative_id}

    def negatives_of(self, label: str) -> list[dict]:
        """A person's negatives in the active model: ids (the records they came from), with the
        record where it is still kept."""
        model_id = self.store.active_id() if self.store else None
        if not model_id:
            return []
        entries = self.store.load(model_id).classifier.negatives.of(label)
        for entry in entries:
            try:
                entry["record"] = self.record(entry["id"])
            except NotFound:
                entry["record"] = None
        return entries

    def undo(self, action_id: str) -> dict:
        """Undo an action: the model before it becomes active again and its records go back."""
        people = self.people()
        with people.changing():
            found = self.db().execute("SELECT kind, state, model_before, model_after, changes FROM actions WHERE id = ?",
                                      (str(action_id),)).fetchone()
            if found is None:
                raise NotFound(f"no inbox action {shown(str(action_id))!r}")
            kind, state, before, after, changes = found
            if state != "done":
                raise UndoNotPossible(f"action {action_id} is {state}: only a done action can be undone")
            active = self.store.active_id()
            if active != after:
                raise UndoNotPossible(f"model {active} came after action {action_id}: undo the later change first",
                                      {"active": active, "model_after": after})
            self._reactivate(before, after)
            with self.writing() as db:
                self._restored(db, json.loads(changes))
                db.execute("UPDATE actions SET state = 'undone' WHERE id = ?", (str(action_id),))
        return {"action": action_id, "kind": kind, "model": before, "undone_model": after}

    def recover(self) -> list[str]:
        """Undo the model change of every action a killed process left pending (its records were
        never changed: they are written in the same transaction that marks it done)."""
        query = "SELECT id, model_before FROM actions WHERE state = 'pending'"
        if self.store is None or not self.db().execute(query).fetchall():
            return []
        with self.store.changing():  # a live action holds it from before its pending row: these are dead ones
            pending = self.db().execute(query).fetchall()
            for action_id, before in pending:
                active = self.store.active_id()
                if active != before:
                    self._reactivate(before, active)
                with self.writing() as db:
                    db.execute("UPDATE actions SET state = 'failed' WHERE id = ?", (action_id,))
                log.warning("inbox action %s was interrupted: model %s is active again", action_id, before)
        return [action_id for action_id, _ in pending]

    # -- the parts of actions ----------------------------------------------------------------
    def gated(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """(faces to enrol, faces skipped with why): the quality gate, then ``thinned``."""
        passed, skipped = [], []
        for row in rows:
            quality = Quality.of(json.loads(row["quality_detail"])) if row["quality_detail"] else None
            reason = quality.refusal(self.min_quality) if quality else None
            if reason:
                skipped.append({"face": row["id"], "file": row["file"], "reason": reason})
            else:
                passed.append(row)
        chosen, thinned = self.thinned(passed)
        return chosen, skipped + thinned

    def thinned(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """The best faces by quality, one of each group of near-duplicates (the same face over
        consecutive frames: within ``inbox.duplicate_distance``), at most ``inbox.max_assign``."""
        chosen, kept, skipped = [], [], []
        for row in sorted(rows, key=lambda row: -(row["quality"] if row["quality"] is not None else 0.5)):
            encoding = encoding_of(row["encoding"])
            if kept and float(np.min(np.linalg.norm(np.array(kept) - encoding, axis=1))) <= self.settings.duplicate_distance:
                skipped.append({"face": row["id"], "file": row["file"], "reason": "a near-duplicate of a face chosen"})
            elif len(chosen) >= self.settings.max_assign:
                skipped.append({"face": row["id"], "file": row["file"],
                                "reason": f"over inbox.max_assign ({self.settings.max_assign}) faces in one action"})
            else:
                chosen.append(row)
                kept.append(encoding)
        return chosen, skipped

    def _rows(self, where: str, values) -> list[dict]:
        columns = ("id", "state", "name", "cluster", "photo", "quality", "quality_detail", "file", "encoding")
        found = self.db().execute(f"SELECT {', '.join(columns)} FROM records WHERE {where} ORDER BY rowid", values)
        return [dict(zip(columns, row)) for row in found]

    def _cluster_rows(self, cluster) -> list[dict]:
        state = self._cluster_state(cluster)
        rows = self._rows("cluster = ? AND state = ?", (int(cluster), state))
        if state != "unknown" or not rows:
            raise NotFound(f"cluster {int(cluster)} has no unknown face" + (" (it is ignored)" if state != "unknown" else ""))
        return rows

    def _chosen_rows(self, faces) -> list[dict]:
        if not isinstance(faces, list) or not faces or not all(isinstance(face, str) for face in faces):
            raise DatasetNotValid("send the record ids as a JSON list of strings in 'faces'", {"faces": None})
        ids = list(dict.fromkeys(faces))
        rows = self._rows(f"id IN ({', '.join('?' * len(ids))})", ids)
        missing = sorted(set(ids) - {row["id"] for row in rows})
        if missing:
            raise NotFound(f"no face record {shown(missing[0])!r}", {"missing": [shown(m) for m in missing[:20]]})
        return rows

    def _label(self, name: str) -> str:
        """The model's label of ``name``: 422 when the name cannot be one, 404 when nobody has it."""
        if not isinstance(name, str):
            raise NameNotValid("send the name as JSON {\"name\": \"...\"}", {"problems": ["no name sent"]})
        checked = checked_name(name)
        model_id = self.store.active_id()
        if model_id is None:
            raise ClassifierNotLoaded("no model is loaded yet: nobody can be excluded")
        classes = self.store.load(model_id).classifier.classes_
        for label in classes.tolist():
            if name_key(label) == name_key(checked):
                return label
        raise NotFound(f"nobody named {shown(name)!r} in the active model")

    def _begun(self, kind: str, name: str | None, rows: list[dict], cluster: int | None = None) -> str:
        """Write the action as pending, with what undo needs: the model before, each record's place."""
        action = secrets.token_hex(8)
        changes = {"records": [[row["id"], row["state"], row["name"], row["cluster"], row["photo"]] for row in rows],
                   "cluster": cluster}
        with self.writing() as db:
            db.execute("INSERT INTO actions (id, kind, time, state, name, model_before, changes) "
                       "VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                       (action, kind, time.time(), name, self.store.active_id(), json.dumps(changes)))
        return action

    def _abandoned(self, action: str) -> None:
        """An action whose model change failed (and changed nothing): not pending any more."""
        with self.writing() as db:
            db.execute("UPDATE actions SET state = 'failed' WHERE id = ?", (action,))

    @staticmethod
    def _done(db: sqlite3.Connection, action: str, model: str) -> None:
        db.execute("UPDATE actions SET state = 'done', model_after = ? WHERE id = ?", (model, action))
        bumped(db)

    @staticmethod
    def _restored(db: sqlite3.Connection, changes: dict) -> None:
        for record_id, state, name, cluster, photo in changes["records"]:
            db.execute("UPDATE records SET state = ?, name = ?, cluster = ?, photo = ? WHERE id = ?",
                       (state, name, cluster, photo, record_id))
        if changes.get("cluster") is not None:  # an ignore: faces that joined the stranger since are unknown again too
            db.execute("UPDATE clusters SET state = 'unknown' WHERE id = ?", (changes["cluster"],))
            db.execute("UPDATE records SET state = 'unknown' WHERE cluster = ? AND state = 'ignored'", (changes["cluster"],))
        bumped(db)

    def _reactivate(self, before: str | None, after: str | None) -> None:
        """Make ``before`` active again (``after``, the first model ever, is deleted when there was none)."""
        if before is not None:
            self.store.activate(before)
        elif after is not None:
            self.store.deactivate_and_delete(after)

    # -- clustering everything again ---------------------------------------------------------
    def recluster(self, progress=lambda *_: None) -> dict:
        """Group every unknown face again from scratch (a background job: see ``Service``):
        each face in time order is placed as ``keep`` places a new one, among the faces before it."""
        db = self.db()
        found = db.execute("SELECT rowid, encoding, cluster, state FROM records WHERE state IN ('unknown', 'ignored') "
                           "ORDER BY rowid").fetchall()
        progress(0, len(found), "grouping unknown faces")
        started = time.monotonic()
        clusters = self.clustered([encoding_of(blob) for _, blob, _, _ in found],
                                  [cluster if state == "ignored" else None for _, _, cluster, state in found])
        with self.writing() as db:
            fresh: dict[int, int] = {}
            for (rowid, _, old, state), cluster in zip(found, clusters):
                if state == "ignored":
                    continue
                if cluster is not None and cluster < 0:  # a new group: one new cluster id each
                    if cluster not in fresh:
                        fresh[cluster] = db.execute("INSERT INTO clusters (state) VALUES ('unknown')").lastrowid
                    cluster = fresh[cluster]
                ignored = cluster is not None and db.execute("SELECT state FROM clusters WHERE id = ?",
                                                             (cluster,)).fetchone()[0] == "ignored"
                db.execute("UPDATE records SET cluster = ?, state = ? WHERE rowid = ?",
                           (cluster, "ignored" if ignored else "unknown", rowid))
            bumped(db)
        progress(len(found), len(found), "done")
        return {"faces": len(found), "clusters": len(set(c for c in clusters if c is not None)),
                "seconds": round(time.monotonic() - started, 2)}

    def clustered(self, encodings, fixed) -> list[int | None]:
        """Clusters of ``encodings`` in order: ``fixed[i]`` (an ignored cluster) stays; other
        faces are placed among the faces before them. New clusters get negative numbers.

        Neighbours come in batches: through the faiss index from ``classifier.index_min``
        faces on (candidates re-ranked exactly), else one BLAS product per batch against all."""
        encodings = np.ascontiguousarray(np.asarray(encodings, dtype=np.float32).reshape(-1, 128))
        radius, count = self.settings.cluster_distance, len(encodings)
        index = EncodingIndex(min_size=self.neighbours.index_min, nprobe=CLUSTER_NPROBE).fit(encodings)
        norms = np.einsum("ij,ij->i", encodings, encodings)
        clusters: list[int | None] = list(fixed)
        batch = 512
        for start in range(0, count, batch):
            queries = encodings[start:start + batch]
            if index.approximate:
                candidates = index.search(queries, SEARCH_CANDIDATES)
                near_rows = []
                for offset, rows in enumerate(candidates):
                    rows = rows[(rows >= 0) & (rows < start + offset)]
                    distances = np.linalg.norm(encodings[rows] - queries[offset], axis=1)
                    near_rows.append((rows[distances <= radius], distances[distances <= radius]))
            else:
                end = min(count, start + batch)  # only the faces before each query matter
                squared = squared_distances(queries, encodings[:end], norms[:end])
                near_rows = []
                for offset, row in enumerate(squared):
                    rows = np.flatnonzero(row[:start + offset] <= radius * radius)
                    near_rows.append((rows, np.sqrt(np.maximum(row[rows], 0))))
            for offset, (rows, distances) in enumerate(near_rows):
                i = start + offset
                if clusters[i] is not None:
                    continue
                near = [(int(row), float(d), clusters[row]) for row, d in zip(rows, distances)]
                cluster, members = placement(near, self.settings.min_cluster_faces)
                if cluster == 0:
                    cluster = -(i + 1)
                    for member in members:
                        clusters[member] = cluster
                clusters[i] = cluster
        return clusters


# -- forgetting -----------------------------------------------------------------------------------


def erased_face_records(path: Path, match, theirs: np.ndarray) -> int:
    """Erase a person's face records (forget): those named, assigned or decided as them, those
    whose label or file name names them, and those whose face is within ERASE_DISTANCE of
    one of their photos ``theirs``; their name
    is also cleared from other records' runner-up, and the actions naming them go. The
    database is then rebuilt, so no freed page or journal keeps a crop or an encoding.
    ``match``: utils.people.Matcher of their names. Returns the records erased."""
    if not path.is_file():
        return 0
    db = open_database(path)
    try:
        rows = db.execute("SELECT rowid, name, candidate, runner_up, label, file, encoding FROM records").fetchall()
        theirs = np.asarray(theirs, dtype=np.float64).reshape(-1, 128)
        erased, scrubbed = [], []
        for rowid, name, candidate, runner_up, label, file, blob in rows:
            near = len(theirs) and float(np.min(np.linalg.norm(theirs - encoding_of(blob), axis=1))) <= ERASE_DISTANCE
            named = match.is_name(name or "") or match.is_name(candidate or "")
            if near or named or match.found(label or "") or match.found(file or ""):
                erased.append(rowid)
            elif runner_up and match.is_name(runner_up):
                scrubbed.append(rowid)
        actions = [action_id for action_id, name, changes in db.execute("SELECT id, name, changes FROM actions")
                   if (name and match.is_name(name)) or match.found(changes)]
        db.execute("BEGIN IMMEDIATE")
        for start in range(0, len(erased), 500):
            chunk = erased[start:start + 500]
            db.execute(f"DELETE FROM records WHERE rowid IN ({', '.join('?' * len(chunk))})", chunk)
        for rowid in scrubbed:
            db.execute("UPDATE records SET runner_up = NULL, runner_up_distance = NULL WHERE rowid = ?", (rowid,))
        for action_id in actions:
            db.execute("DELETE FROM actions WHERE id = ?", (action_id,))
        bumped(db)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return len(erased)
