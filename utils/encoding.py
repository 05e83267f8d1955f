"""Many photos: training encodes on every core (or a Dask cluster), and never twice the same bytes.

``encoded_photos`` fans batches of photo bytes out to an executor (inline for one worker, a
spawn process pool, or utils/cluster.py's DaskExecutor), keeps results in submission order,
and keeps each photo's result in an on-disk cache keyed by its content hash and the
pipeline's options. The one-photo pipeline itself is utils/faces.py's.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from datastructure.errors import ClusterUnavailable
from datastructure.files import atomic_write
from utils.faces import PIPELINE_VERSION, Face, Options, PhotoResult, photo_result
from utils.quality import Quality


def batch_results(batch: list[bytes], options: Options) -> list[PhotoResult]:
    """Worker entry point: the results of a batch of photos, in order."""
    return [photo_result(data, options) for data in batch]


def pipeline_version() -> str:
    """Run on each Dask worker before a job: the pipeline version its checkout encodes with."""
    return PIPELINE_VERSION


def worker_count(configured: int) -> int:
    """Return the number of encoding processes: ``configured``, or one per core when 0."""
    return configured if configured > 0 else (os.cpu_count() or 1)


class EncodingCache:
    """Photo results kept by content hash, so re-training skips photos already encoded."""

    def __init__(self, folder: Path | None, options: Options):
        self.folder = Path(folder) / options.signature() if folder else None

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npz"

    def get(self, digest: str) -> PhotoResult | None:
        """Return the cached result of the photo whose SHA-256 is ``digest``, or None."""
        if self.folder is None or not self._path(digest).exists():
            return None
        try:
            with np.load(self._path(digest), allow_pickle=False) as stored:
                reason = str(stored["reason"]) or None
                # entries written before quality was measured have none: such faces are not refused
                qualities = json.loads(str(stored["quality"])) if "quality" in stored.files else []
                qualities += [None] * (len(stored["boxes"]) - len(qualities))
                faces = tuple(Face(tuple(int(v) for v in box), encoding, Quality.of(quality))
                              for box, encoding, quality in zip(stored["boxes"], stored["encodings"], qualities))
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache entry is only a miss
        return PhotoResult(faces, reason)

    def put(self, digest: str, result: PhotoResult) -> None:
        """Keep ``result`` as the photo whose SHA-256 is ``digest``."""
        if self.folder is None:
            return
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, reason=np.str_(result.reason or ""),
                 boxes=np.array([face.box for face in result.faces], dtype=np.int64).reshape(-1, 4),
                 encodings=np.array([face.encoding for face in result.faces]).reshape(-1, 128),
                 quality=np.str_(json.dumps([face.quality.as_dict() if face.quality else None for face in result.faces])))
        atomic_write(path, buffer.getvalue(), durable=False)  # a lost entry is only a cache miss


class InlineExecutor:
    """The executor interface run in this process, for one worker (no start-up cost)."""

    def submit(self, fn, *args) -> Future:
        """Run ``fn(*args)`` now; return its finished Future."""
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Nothing to stop."""


def cluster_executor(scheduler: str, timeout: float, options: Options):
    """Return an executor over the Dask cluster at ``scheduler``, checked up front: every
    worker runs this pipeline, and a probe batch (no photo) makes the round trip."""
    from utils.cluster import DaskExecutor  # imports dask: only when a cluster is configured

    return DaskExecutor(scheduler, timeout, pipeline=PIPELINE_VERSION, pipeline_probe=pipeline_version,
                        probe=functools.partial(batch_results, [], options), error=ClusterUnavailable)


def executor_for(workers: int, options: Options, scheduler: str | None = None, timeout: float = 10.0):
    """Return a process pool of ``workers``, or an inline executor when one is enough;
    with a Dask ``scheduler`` address, an executor over that cluster."""
    if scheduler:
        return cluster_executor(scheduler, timeout, options)
    if workers <= 1:
        return InlineExecutor()
    # spawn, not fork: the service forks from a threaded process, where fork can deadlock.
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Yield lists of ``size`` items (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encoded_photos(photos: Iterable[bytes], options: Options, *, workers: int = 0,
                   cache_folder: Path | None = None, batch_size: int = 4,
                   on_result: Callable[[], None] | None = None, scheduler: str | None = None,
                   cluster_timeout: float = 10.0) -> Iterator[PhotoResult]:
    """Yield a PhotoResult per photo, in order, encoding uncached photos on ``workers`` processes
    (or on the Dask cluster at ``scheduler``).

    At most two batches per worker are in flight, so memory stays bounded however large the
    dataset; ``on_result`` is called once per photo as it completes (progress bars).
    """
    cache = EncodingCache(cache_folder, options)
    workers = worker_count(workers)
    executor = executor_for(workers, options, scheduler, cluster_timeout)

    def started(batch: list[bytes]):
        digests = [hashlib.sha256(data).hexdigest() for data in batch]
        known = [cache.get(digest) for digest in digests]
        todo = [data for data, hit in zip(batch, known) if hit is None]
        return digests, known, executor.submit(batch_results, todo, options)

    def finished(digests, known, future) -> Iterator[PhotoResult]:
        fresh = iter(future.result())
        for digest, hit in zip(digests, known):
            result = hit
            if result is None:
                result = next(fresh)
                cache.put(digest, result)
            if on_result:
                on_result()
            yield result

    try:
        in_flight: deque = deque()
        for batch in batched(photos, batch_size):
            in_flight.append(started(batch))
            while len(in_flight) > getattr(executor, "workers", workers) * 2:  # a cluster's grows
                yield from finished(*in_flight.popleft())
        while in_flight:
            yield from finished(*in_flight.popleft())
    finally:
        executor.shutdown(cancel_futures=True)
