"""The gallery the classifier searches: float32 encodings sorted by person, and their index.

A query asks which people are nearest and how near, exactly: the unknown rule and the
confidence use exact distances. ``nearest_people`` takes the index's candidate photos, keeps
their people, and measures the query exactly against *every* photo of those people (each
person's photos are one contiguous slice), so a person's distance is exact whenever the
person is among the candidates. When the candidates hold fewer people than asked (a person
with hundreds of photos can fill them all), it asks for four times as many, and searches
exhaustively past ``MAX_CANDIDATES``. Small galleries (no index) are always searched exhaustively.

On disk (the model folder, under the manifest's checksums) the encodings are ``gallery.npy``,
read with ``mmap_mode="r"`` so that every worker and every process of the node shares the
page cache's one copy, and the index ``gallery.faiss`` is read memory-mapped the same way.

A gallery may also hold a *delta*: photos added since its base was written (an enrolment into
a large gallery), ``gallery.delta.npy``. Rewriting a 10^6-photo base for one photo would take
seconds, so a new version shares its parent's base files (hard links) and writes only the
delta, which is searched exhaustively next to the index: its nearest photos' people join the
index's candidates. Past ``MAX_DELTA`` rows the owner writes the whole gallery again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datastructure.index import EncodingIndex

ENCODINGS_FILE = "gallery.npy"
INDEX_FILE = "gallery.faiss"
DELTA_FILE = "gallery.delta.npy"
BASE_FILES = (ENCODINGS_FILE, INDEX_FILE)  # what versions with a delta share with their parent
# rows a delta may hold: searching them exhaustively costs ~0.1 ms per face at this size
MAX_DELTA = 5000
CANDIDATES = 64         # photos the index returns per query before the exact re-rank
MAX_CANDIDATES = 4096   # past this, an exhaustive search is cheaper than asking the index again


@dataclass
class Nearest:
    """The people near one query: ``classes`` (indices) and their exact ``distances``; ``rows``
    and ``row_distances``: the photos measured, for the vote."""

    classes: np.ndarray
    distances: np.ndarray
    rows: np.ndarray
    row_distances: np.ndarray


class SearchGallery:
    """Encodings sorted by person (``starts``, ``counts``: each person's slice) and their index,
    plus an optional delta: rows ``len(encodings)`` on, ``delta`` (float32) of people
    ``delta_classes``, searched exhaustively (see the module's docstring)."""

    def __init__(self, encodings: np.ndarray, starts: np.ndarray, counts: np.ndarray, index: EncodingIndex,
                 candidates: int = CANDIDATES, delta: np.ndarray | None = None,
                 delta_classes: np.ndarray | None = None, norms: np.ndarray | None = None):
        self.encodings = encodings
        self.starts = np.asarray(starts, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.index = index
        self.candidates = candidates
        self.norms = np.einsum("ij,ij->i", encodings, encodings) if norms is None else norms
        self.delta = np.zeros((0, 128), np.float32) if delta is None else np.asarray(delta, dtype=np.float32).reshape(-1, 128)
        self.delta_classes = np.zeros(0, np.int64) if delta_classes is None else np.asarray(delta_classes, dtype=np.int64)
        self.delta_norms = np.einsum("ij,ij->i", self.delta, self.delta)
        order = np.argsort(self.delta_classes, kind="stable")
        self._delta_by_class = {int(c): order[self.delta_classes[order] == c] for c in np.unique(self.delta_classes)}
        self._total_counts = self.counts + np.bincount(self.delta_classes, minlength=len(self.counts))

    def __len__(self) -> int:
        return len(self.encodings) + len(self.delta)

    def class_of(self, rows: np.ndarray) -> np.ndarray:
        """Return the person (class index) of each row: base rows are sorted by person."""
        rows = np.asarray(rows)
        classes = np.searchsorted(self.starts, rows, side="right") - 1
        if len(self.delta):
            late = rows >= len(self.encodings)
            classes = np.where(late, self.delta_classes[np.where(late, rows - len(self.encodings), 0)], classes)
        return classes

    def total_counts(self) -> np.ndarray:
        """Each person's photos, base and delta."""
        return self._total_counts

    def rows_of(self, cls: int) -> np.ndarray:
        """Every row of person ``cls``: their base slice, then their delta rows."""
        base = np.arange(self.starts[cls], self.starts[cls] + self.counts[cls])
        extra = self._delta_by_class.get(int(cls))
        return base if extra is None else np.concatenate([base, len(self.encodings) + extra])

    def photos(self, rows: np.ndarray) -> np.ndarray:
        """The float32 encodings of ``rows`` (base or delta)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(self.delta):
            return self.encodings[rows]
        late = rows >= len(self.encodings)
        found = np.empty((len(rows), 128), np.float32)
        found[~late] = self.encodings[rows[~late]]
        found[late] = self.delta[rows[late] - len(self.encodings)]
        return found

    def owner_of(self, encoding) -> int | None:
        """The person (class index) of a photo holding exactly ``encoding`` (as float32), or None.

        Only rows whose squared norm is within rounding of the query's are compared."""
        query = np.asarray(encoding, dtype=np.float32).reshape(128)
        norm = float(np.einsum("i,i->", query, query))
        for photos, norms, offset in ((self.encodings, self.norms, 0),
                                      (self.delta, self.delta_norms, len(self.encodings))):
            close = np.flatnonzero(np.abs(norms - norm) <= 1e-4 * max(norm, 1.0))
            same = close[(np.asarray(photos[close]) == query).all(axis=1)] if len(close) else close
            if len(same):
                return int(self.class_of(same[:1] + offset)[0])
        return None

    def with_delta(self, added_rows: np.ndarray, added_classes: np.ndarray, inserted: np.ndarray) -> "SearchGallery":
        """A gallery sharing this one's base and index, with ``added_rows`` (of people
        ``added_classes``, numbered after the insertion) appended to the delta; ``inserted``:
        the positions of the new people in the old class numbering (np.insert's), who have no
        base photos."""
        counts = np.insert(self.counts, inserted, 0) if len(inserted) else self.counts
        starts = np.insert(self.starts, inserted, np.append(self.starts, len(self.encodings))[inserted]) \
            if len(inserted) else self.starts
        old = self.delta_classes
        if len(inserted):  # people inserted before a delta row's person shift its number
            old = old + np.searchsorted(np.sort(inserted), old, side="right")
        return SearchGallery(self.encodings, starts, counts, self.index, self.candidates,
                       np.vstack([self.delta, np.asarray(added_rows, dtype=np.float32).reshape(-1, 128)]),
                       np.concatenate([old, np.asarray(added_classes, dtype=np.int64)]), self.norms)

    def nearest_people(self, query: np.ndarray, *, want: int = 2, skip_row: int = -1, skip_class: int = -1,
                       rows: np.ndarray | None = None) -> Nearest:
        """Return the people near ``query`` with their exact distances (at least ``want`` of
        them when the gallery has them), leaving out photo ``skip_row`` and person ``skip_class``.
        ``rows``: the index's candidates for this query when already searched in a batch."""
        query = np.asarray(query, dtype=np.float32)
        k = self.candidates
        while self.index.approximate and k <= MAX_CANDIDATES:
            found = self.index.search(query, k)[0] if rows is None or k > self.candidates else rows
            found = found[found >= 0]
            if len(self.delta):  # the delta's nearest photos are candidates too
                squared = self.delta_norms - 2.0 * (self.delta @ query)
                nearest = np.argsort(squared)[:k]
                found = np.concatenate([found, len(self.encodings) + nearest])
            classes = np.unique(self.class_of(found))
            classes = classes[classes != skip_class]
            if len(classes) >= min(want, len(self.starts) - (skip_class >= 0)):
                return self._measured(query, classes, skip_row)
            k *= 4
        classes = np.arange(len(self.starts))
        return self._measured(query, classes[classes != skip_class], skip_row)

    def _measured(self, query: np.ndarray, classes: np.ndarray, skip_row: int) -> Nearest:
        """Exact distances from ``query`` to every photo of ``classes``, and per person."""
        if len(classes) == len(self.starts) and not len(self.delta):
            rows = np.arange(len(self.encodings))
            photos, norms = self.encodings, self.norms
            counts = self.counts
        elif not len(self.delta):
            rows = np.concatenate([np.arange(self.starts[c], self.starts[c] + self.counts[c]) for c in classes]) \
                if len(classes) else np.zeros(0, np.int64)
            photos, norms = self.encodings[rows], self.norms[rows]
            counts = self.counts[classes]
        else:
            rows = np.concatenate([self.rows_of(c) for c in classes]) if len(classes) else np.zeros(0, np.int64)
            photos = self.photos(rows)
            norms = np.einsum("ij,ij->i", photos, photos)
            counts = self.total_counts()[classes]
        squared = norms - 2.0 * (photos @ query) + float(query @ query)
        squared[rows == skip_row] = np.inf
        distances = np.sqrt(np.maximum(squared, 0.0))
        segments = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        per_class = np.minimum.reduceat(distances, segments) if len(rows) else np.zeros(0)
        return Nearest(classes, per_class.astype(np.float64), rows, distances)

    # -- files -----------------------------------------------------------------------------
    def save(self, folder: Path, *, base_too: bool = True) -> list[str]:
        """Write the gallery's files into ``folder``; return their names (for the manifest).

        ``base_too`` False: only the delta (the caller links the base from the parent's folder)."""
        if not base_too:
            np.save(folder / DELTA_FILE, np.ascontiguousarray(self.delta, dtype=np.float32))
            return [DELTA_FILE]
        if len(self.delta):
            raise ValueError("a gallery with a delta is written whole by its owner (merged), or as a delta")
        np.save(folder / ENCODINGS_FILE, np.ascontiguousarray(self.encodings, dtype=np.float32))
        names = [ENCODINGS_FILE]
        if self.index.approximate:
            self.index.save(folder / INDEX_FILE)
            names.append(INDEX_FILE)
        return names

    @classmethod
    def loaded(cls, folder: Path, counts: np.ndarray, *, min_size: int, nprobe: int, candidates: int = CANDIDATES,
               delta_classes: np.ndarray | None = None) -> "SearchGallery":
        """Open a saved gallery memory-mapped: nothing is rebuilt, pages are shared.
        ``delta_classes``: the person of each row of the saved delta, when it has one."""
        encodings = np.load(folder / ENCODINGS_FILE, mmap_mode="r", allow_pickle=False)
        counts = np.asarray(counts, dtype=np.int64)
        if encodings.dtype != np.float32 or encodings.ndim != 2 or encodings.shape[1] != 128 \
                or len(encodings) != int(counts.sum()):
            raise ValueError(f"{ENCODINGS_FILE} holds {encodings.shape} {encodings.dtype}, not {int(counts.sum())} x 128 float32")
        if (folder / INDEX_FILE).is_file():
            index = EncodingIndex.loaded(folder / INDEX_FILE, len(encodings), min_size=min_size, nprobe=nprobe)
        else:
            index = EncodingIndex(min_size=min_size, nprobe=nprobe)
            index.size_, index.ivf_ = len(encodings), None
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        delta = None
        if delta_classes is not None and len(delta_classes):
            delta = np.load(folder / DELTA_FILE, allow_pickle=False)
            if delta.dtype != np.float32 or delta.shape != (len(delta_classes), 128):
                raise ValueError(f"{DELTA_FILE} holds {delta.shape} {delta.dtype}, not {len(delta_classes)} x 128 float32")
        return cls(encodings, starts, counts, index, candidates, delta, delta_classes)


def voted(classes: np.ndarray, distances: np.ndarray, n_neighbors: int, weights: str) -> int:
    """The class the ``n_neighbors`` nearest photos vote for, as scikit-learn's KNN votes:
    weights 1/distance ("distance"; photos at distance 0 alone when any) or 1 ("uniform");
    ties go to the lowest class index."""
    if n_neighbors <= 1 or len(distances) <= 1:
        return int(classes[int(np.argmin(distances))])
    nearest = np.argpartition(distances, min(n_neighbors, len(distances)) - 1)[:n_neighbors]
    near_classes, near = classes[nearest], distances[nearest]
    if weights == "distance":
        exact = near == 0
        weight = exact.astype(float) if exact.any() else 1.0 / near
    else:
        weight = np.ones(len(near))
    tally = np.bincount(near_classes - near_classes.min(), weights=weight)
    return int(near_classes.min() + int(np.argmax(tally)))
