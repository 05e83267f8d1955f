"""Nearest-neighbour search over a gallery of face encodings: faiss, or brute force.

A gallery of n encodings costs a brute-force query n x 128 multiply-adds: nothing at 10^3,
tens of milliseconds at 10^6. From ``min_size`` encodings on, an inverted-file index
(faiss ``IndexIVFScalarQuantizer``: k-means cells, 8-bit codes, 128 bytes per face) returns
*candidates*; the caller re-ranks them exactly (see ``SearchGallery``), so the index only has to put
the right people among the candidates, never to give their distances.

Why faiss IVF rather than a graph (HNSW: hnswlib, usearch, voyager): on this machine, 10^5
dlib-like encodings built in 26 s as IVF against 87 s (usearch) and 104 s (faiss HNSW), a
query took 0.43 ms at the same recall of the nearest photo (100% of 200 queries), a new photo
is added to its cell without touching the rest (a graph relinks neighbours), and a saved
index is read memory-mapped (``IO_FLAG_MMAP``), so every worker shares one copy of the codes.

Below ``min_size`` (30,000 by default: on this machine idle, an exhaustive query took 0.19 ms
at 10^4 encodings and 3.4 ms at 10^5, the index 1.7 and 1.5 ms) the exact search is as fast.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

# the cells k-means trains on: a sample of this many encodings per cell (faiss warns under 39)
TRAINING_PER_CELL = 40
KMEANS_ITERATIONS = 10


def faiss_module():
    """faiss, imported on first use: small galleries never pay its import."""
    import faiss

    return faiss


def cells_for(size: int) -> int:
    """The number of k-means cells of an index over ``size`` encodings: about sqrt(size)."""
    return int(min(4096, max(16, round(math.sqrt(size)))))


def empty_like(trained):
    """A new, empty IVF index with ``trained``'s cells and scalar-quantizer ranges (faiss cannot
    clone a memory-mapped one, so the trained parts are copied)."""
    faiss = faiss_module()
    quantizer = faiss.IndexFlatL2(trained.d)
    quantizer.add(trained.quantizer.reconstruct_n(0, trained.nlist))
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, trained.d, trained.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    faiss.copy_array_to_vector(faiss.vector_to_array(trained.sq.trained), ivf.sq.trained)
    ivf.is_trained = True
    return ivf


class EncodingIndex:
    """Approximate search over float32 encodings; rows are numbered in the order they were added.

    ``min_size``: below it, no index (``approximate`` is False and callers search exactly).
    ``nprobe``: cells searched per query (more: slower, fewer misses).
    """

    def __init__(self, min_size: int = 30_000, nprobe: int = 16):
        self.min_size = min_size
        self.nprobe = nprobe

    def fit(self, encodings: np.ndarray, cells: "EncodingIndex | None" = None) -> "EncodingIndex":
        """Index ``encodings``. ``cells``: an index whose trained k-means cells and 8-bit ranges
        are kept (a gallery changed by a few photos), so only the photos are assigned again."""
        encodings = np.ascontiguousarray(encodings, dtype=np.float32)
        self.size_ = len(encodings)
        self.ivf_ = None
        if self.size_ < self.min_size:
            return self
        faiss = faiss_module()
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        if cells is not None and cells.approximate:
            self.ivf_ = empty_like(cells.ivf_)
            self.ivf_.add_with_ids(encodings, np.arange(self.size_, dtype=np.int64))
            return self
        cells = cells_for(self.size_)
        quantizer = faiss.IndexFlatL2(encodings.shape[1])
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, encodings.shape[1], cells,
                                            faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        ivf.cp.niter = KMEANS_ITERATIONS
        sample = np.random.default_rng(0).choice(self.size_, min(self.size_, cells * TRAINING_PER_CELL), replace=False)
        ivf.train(encodings[np.sort(sample)])
        ivf.add_with_ids(encodings, np.arange(self.size_, dtype=np.int64))
        self.ivf_ = ivf
        return self

    @property
    def approximate(self) -> bool:
        """Whether searches go through the faiss index (else exhaustive)."""
        return getattr(self, "ivf_", None) is not None

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Return the rows of about the ``k`` nearest encodings of each query (-1 pads)."""
        faiss = faiss_module()
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        # one face is a tiny search: threads would cost more than it and fight the server's workers
        faiss.omp_set_num_threads(1 if len(queries) < 64 else (os.cpu_count() or 1))
        self.ivf_.nprobe = self.nprobe
        _, rows = self.ivf_.search(queries, min(k, self.size_))
        return rows

    def add(self, encodings: np.ndarray) -> None:
        """Append encodings (rows ``size_``, ``size_ + 1``...) without retraining the cells."""
        encodings = np.ascontiguousarray(encodings, dtype=np.float32)
        if self.approximate:
            rows = np.arange(self.size_, self.size_ + len(encodings), dtype=np.int64)
            self.ivf_.add_with_ids(encodings, rows)
        self.size_ += len(encodings)

    # -- files: faiss's own format, never pickle ---------------------------------------
    def save(self, path: Path) -> None:
        """Write the faiss index to ``path`` in faiss's own format."""
        faiss_module().write_index(self.ivf_, str(path))

    @classmethod
    def loaded(cls, path: Path, size: int, *, min_size: int, nprobe: int, shared: bool = True) -> "EncodingIndex":
        """Read a saved index; ``shared``: memory-mapped read-only, one copy for every process."""
        faiss = faiss_module()
        index = cls(min_size=min_size, nprobe=nprobe)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if shared else 0
        index.ivf_ = faiss.read_index(str(path), flags)
        index.size_ = int(size)
        if index.ivf_.ntotal != index.size_:
            raise ValueError(f"the index holds {index.ivf_.ntotal} encodings, the gallery {size}")
        return index
