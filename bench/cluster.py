"""Issue 7's figure: training's encoding fan-out on local Dask workers against the process pool.

    python -m bench.cluster                  # lfw/people, all 2,857 photos: 1 and 2 workers each way
    python -m bench.cluster --limit 300      # a stratified subset (every k-th photo)
    python -m bench.cluster --workers 2 --json bench/results/cluster.json

Both sides run ``utils.encoding.encoded_photos`` (the code path training uses) on the same photo
bytes, held in memory, with the service's training options (conf.json) and no cache:

* pool: ``encoded_photos(photos, options, workers=k)``, the embedded default: one worker
  runs inline, two use the spawn process pool. The pool's start-up (spawn, imports, dlib's
  models) is inside the time, as a training job pays it.
* dask: ``LocalCluster(n_workers=k, threads_per_worker=1, processes=True)``, started before
  the clock (a cluster is long-running: a job does not pay for it; its start-up is printed
  apart), then ``encoded_photos(photos, options, scheduler=address)``: connecting, checking
  the workers, and the workers' first import of face_recognition are inside the time.

Every socket is on 127.0.0.1 (scheduler, workers, no dashboards).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from bench import engine_config, faces_dir
from utils import archive
from utils.encoding import encoded_photos
from utils.faces import Options


def lfw_people(count: int | None = None, faces: Path | None = None) -> list[bytes]:
    """Return the bytes of lfw/people's photos in person/name order; ``count`` keeps every k-th."""
    photos = [photo.data for photo in archive.photo_source((faces or faces_dir()) / "lfw" / "people")]
    if count is None or count >= len(photos):
        return photos
    return [photos[index * len(photos) // count] for index in range(count)]


def training_options() -> Options:
    config = engine_config(Path("/nonexistent-bench-data"))
    return Options.from_config(config.faces, config.limits, training=True)


def cpu_seconds() -> float:
    """CPU of this process and its waited-for children: the pool's and the LocalCluster's worker
    processes are joined before the figure is read, so their whole lives count."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(photos: list[bytes], **kwargs) -> tuple[float, list]:
    started = time.perf_counter()
    results = list(encoded_photos(photos, training_options(), **kwargs))
    return time.perf_counter() - started, results


def pool_throughput(photos: list[bytes], workers: int) -> dict:
    """Photos per second of the embedded default (inline for 1 worker, the process pool above)."""
    cpu = cpu_seconds()
    seconds, results = timed(photos, workers=workers)
    cpu = cpu_seconds() - cpu
    return {"way": "pool" if workers > 1 else "inline", "workers": workers, "photos": len(photos),
            "seconds": round(seconds, 2), "photos_per_s": round(len(photos) / seconds, 2),
            "cpu_s_per_photo": round(cpu / len(photos), 4),
            "faces": sum(len(result.faces) for result in results)}


def dask_throughput(photos: list[bytes], workers: int) -> dict:
    """Photos per second on a LocalCluster of ``workers`` single-threaded worker processes."""
    from distributed import LocalCluster

    cpu, started = cpu_seconds(), time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, worker_dashboard_address=None) as cluster:
        start_up = time.perf_counter() - started
        seconds, results = timed(photos, scheduler=cluster.scheduler_address, cluster_timeout=30)
    cpu = cpu_seconds() - cpu
    return {"way": "dask", "workers": workers, "photos": len(photos), "seconds": round(seconds, 2),
            "photos_per_s": round(len(photos) / seconds, 2), "cluster_start_s": round(start_up, 2),
            "cpu_s_per_photo": round(cpu / len(photos), 4),
            "faces": sum(len(result.faces) for result in results)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="photos to use (a stratified subset of lfw/people)")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1,2")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    photos = lfw_people(args.limit)
    rows = []
    for workers in (int(value) for value in args.workers.split(",")):
        for measure in (pool_throughput, dask_throughput):
            load = os.getloadavg()[0]
            row = {**measure(photos, workers), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'way':8} {'workers':>7} {'photos':>7} {'seconds':>8} {'photos/s':>9} {'CPU s/photo':>12} {'load':>5}"
          f"   (machine: {os.cpu_count()} cores; load: 1-min load average before the run)")
    for row in rows:
        print(f"{row['way']:8} {row['workers']:>7} {row['photos']:>7} {row['seconds']:>8} {row['photos_per_s']:>9}"
              f" {row['cpu_s_per_photo']:>12} {row['load_before']:>5}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
