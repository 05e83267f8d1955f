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
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datastructure.index import EncodingIndex

ENCODINGS_FILE = "gallery.npy"
INDEX_FILE = "gallery.faiss"
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


class Gallery:
    """Encodings sorted by person (``starts``, ``counts``: each person's slice) and their index."""

    def __init__(self, encodings: np.ndarray, starts: np.ndarray, counts: np.ndarray, index: EncodingIndex,
                 candidates: int = CANDIDATES):
        self.encodings = encodings
        self.starts = np.asarray(starts, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.index = index
        self.candidates = candidates
        self.norms = np.einsum("ij,ij->i", encodings, encodings)

    def __len__(self) -> int:
        return len(self.encodings)

    def class_of(self, rows: np.ndarray) -> np.ndarray:
        """Return the person (class index) of each row: rows are sorted by person."""
        return np.searchsorted(self.starts, rows, side="right") - 1

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
            classes = np.unique(self.class_of(found))
            classes = classes[classes != skip_class]
            if len(classes) >= min(want, len(self.starts) - (skip_class >= 0)):
                return self._measured(query, classes, skip_row)
            k *= 4
        classes = np.arange(len(self.starts))
        return self._measured(query, classes[classes != skip_class], skip_row)

    def _measured(self, query: np.ndarray, classes: np.ndarray, skip_row: int) -> Nearest:
        """Exact distances from ``query`` to every photo of ``classes``, and per person."""
        if len(classes) == len(self.starts):
            rows = np.arange(len(self.encodings))
            photos, norms = self.encodings, self.norms
        else:
            rows = np.concatenate([np.arange(self.starts[c], self.starts[c] + self.counts[c]) for c in classes]) \
                if len(classes) else np.zeros(0, np.int64)
            photos, norms = self.encodings[rows], self.norms[rows]
        squared = norms - 2.0 * (photos @ query) + float(query @ query)
        squared[rows == skip_row] = np.inf
        distances = np.sqrt(np.maximum(squared, 0.0))
        segments = np.concatenate([[0], np.cumsum(self.counts[classes])[:-1]]).astype(np.int64)
        per_class = np.minimum.reduceat(distances, segments) if len(rows) else np.zeros(0)
        return Nearest(classes, per_class.astype(np.float64), rows, distances)

    # -- files -----------------------------------------------------------------------------
    def save(self, folder: Path) -> list[str]:
        """Write the gallery's files into ``folder``; return their names (for the manifest)."""
        np.save(folder / ENCODINGS_FILE, np.ascontiguousarray(self.encodings, dtype=np.float32))
        names = [ENCODINGS_FILE]
        if self.index.approximate:
            self.index.save(folder / INDEX_FILE)
            names.append(INDEX_FILE)
        return names

    @classmethod
    def loaded(cls, folder: Path, counts: np.ndarray, *, min_size: int, nprobe: int, candidates: int = CANDIDATES) -> "Gallery":
        """Open a saved gallery memory-mapped: nothing is rebuilt, pages are shared."""
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
        return cls(encodings, starts, counts, index, candidates)


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
