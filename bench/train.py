"""Training throughput on lfw/people: the engine's ``encoded_photos`` with 1 and 2 worker
processes, its CPU per photo against the plain recipe's, and a re-run over a filled cache.

* Photos are read into memory first (``archive.photo_source``, the engine's reader), so the
  runs time encoding, not the disk. Runs use the service's training options (conf.json) and
  no cache (``cache_folder=None``).
* A subset is a stratified one: every k-th photo in person/name order, so each person keeps
  their share (LFW photos are all 250x250, one centred face, so rates carry over).
* CPU is ``getrusage`` of this process plus its waited-for children: the pool's workers are
  joined when ``encoded_photos`` shuts the pool down, so their whole life is counted,
  start-up (spawn, imports, dlib's models) included.
* The plain recipe is per photo, so its CPU per photo comes from a subset, run side by side
  with ours on the same photos (``photo_result``, a worker's step): in child processes
  (bench/plain_process.py) over dlib-bin as a user installs it ("plain") and over our own
  dlib build ("plain on our dlib"), each timing itself.
"""
from __future__ import annotations

import hashlib
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import Row, at_least, at_most, engine_config, ratio, timed
from bench.plain_process import OWN_BUILD, PlainProcess, installed_python
from utils import archive
from utils.encoding import EncodingCache, encoded_photos
from utils.faces import Options, photo_result


@dataclass
class Run:
    """One ``encoded_photos`` run."""

    photos: int
    workers: int
    wall: float
    cpu: float
    results: list

    @property
    def photos_per_second(self) -> float:
        return self.photos / self.wall

    @property
    def cpu_per_photo(self) -> float:
        return self.cpu / self.photos

    @property
    def faces(self) -> int:
        return sum(len(result.faces) for result in self.results)

    def summary(self) -> dict:
        return {"photos": self.photos, "workers": self.workers, "wall_s": round(self.wall, 2),
                "cpu_s": round(self.cpu, 2), "photos_per_s": round(self.photos_per_second, 2),
                "cpu_s_per_photo": round(self.cpu_per_photo, 4), "cores_busy": round(self.cpu / self.wall, 2),
                "faces": self.faces,
                "photos_without_face": sum(1 for result in self.results if not result.faces)}


def lfw_photos(faces: Path) -> list[archive.Photo]:
    return list(archive.photo_source(faces / "lfw" / "people"))


def stratified(photos: list, count: int) -> list:
    """Every k-th photo (photos sorted by person), so each person keeps their share."""
    if count >= len(photos):
        return list(photos)
    return [photos[index * len(photos) // count] for index in range(count)]


def training_options(workdir: Path) -> Options:
    config = engine_config(workdir)
    return Options.from_config(config.faces, config.limits, training=True)


def cpu_seconds() -> float:
    """CPU (user + system) of this process and of every child it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def encoding_run(datas: list[bytes], options: Options, workers: int, cache_folder: Path | None = None) -> Run:
    wall, cpu = time.perf_counter(), cpu_seconds()
    results = list(encoded_photos(datas, options, workers=workers, cache_folder=cache_folder))
    return Run(len(datas), workers, time.perf_counter() - wall, cpu_seconds() - cpu, results)


def ours_step(options: Options):
    """Our worker's step on one photo as bytes -> (faces found, wall s, CPU s)."""
    return timed(lambda data: len(photo_result(data, options).faces))


def interleaved_cpu_per_photo(datas: list[bytes], sides: dict) -> dict:
    """The plain training loop's step and ours, photo by photo, rotating who goes first:
    CPU and wall seconds per photo of each, and the faces each found.

    ``sides`` map names to bytes -> (faces, wall, CPU). Ours is ``photo_result``, what a pool
    worker runs for each photo. Measured side by side, the ratio holds even when other
    processes come and go; the pool's own figure (above) adds spawning, inter-process
    traffic and two processes sharing the machine's caches.
    """
    for step in sides.values():  # warm-up: face_recognition's import and first call
        step(datas[0])
    order = list(sides)
    totals = {side: {"cpu": 0.0, "wall": 0.0, "faces": 0, "with_face": 0, "learned": 0} for side in sides}
    for index, data in enumerate(datas):
        for side in order[index % len(order):] + order[:index % len(order)]:
            faces, wall, cpu = sides[side](data)
            totals[side]["cpu"] += cpu
            totals[side]["wall"] += wall
            totals[side]["faces"] += faces
            totals[side]["with_face"] += faces > 0
            totals[side]["learned"] += faces == 1  # both recipes learn only from one-face photos
    return {side: {"photos": len(datas), "cpu_s_per_photo": round(figures["cpu"] / len(datas), 4),
                   "wall_s_per_photo": round(figures["wall"] / len(datas), 4), "faces": figures["faces"],
                   "photos_with_a_face": figures["with_face"], "photos_learned": figures["learned"]}
            for side, figures in totals.items()}


def cache_entries(folder: Path) -> dict[str, tuple[int, int]]:
    """Every cache file with its inode and modification time: a rewritten entry changes both."""
    return {str(path): (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.rglob("*.npz")}


def filled_cache(folder: Path, datas: list[bytes], run: Run, options: Options) -> int:
    """Store ``run``'s results with the engine's EncodingCache, keyed as encoded_photos keys
    them (SHA-256 of the bytes), instead of paying a third encoding pass to fill it. Should
    the key ever change, the cached re-run below re-encodes everything and the row says so."""
    cache = EncodingCache(folder, options)
    for data, result in zip(datas, run.results):
        cache.put(hashlib.sha256(data).hexdigest(), result)
    return len(cache_entries(folder))


def cached_rerun(datas: list[bytes], options: Options, fresh: Run, workdir: Path) -> dict:
    """Re-run with the cache filled from ``fresh``: count the entries written anew (re-encoded
    photos) and check that the cached results are the fresh ones."""
    folder = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
    stored = filled_cache(folder, datas, fresh, options)
    before = cache_entries(folder)
    run = encoding_run(datas, options, workers=0, cache_folder=folder)
    after = cache_entries(folder)
    rewritten = sum(1 for path, stamp in after.items() if before.get(path) != stamp)
    same = all(len(a.faces) == len(b.faces) and all(
        x.box == y.box and (x.encoding == y.encoding).all() for x, y in zip(a.faces, b.faces))
        for a, b in zip(run.results, fresh.results))
    return {**run.summary(), "entries_stored": stored, "re_encoded": rewritten, "results_identical": same}


def train_section(faces: Path, workdir: Path, photo_count: int, single_count: int, plain_count: int,
                  say=print) -> tuple[list[Row], dict]:
    """``photo_count`` photos for the 2-worker run (and the cached re-run), a stratified
    ``single_count`` of them for the 1-worker run and ``plain_count`` for the plain recipe."""
    workdir.mkdir(parents=True, exist_ok=True)
    photos = lfw_photos(faces)
    chosen = stratified(photos, photo_count)
    datas = [photo.data for photo in chosen]
    single = stratified(datas, single_count)
    plain_datas = stratified(datas, plain_count)
    options = training_options(workdir)
    say(f"train: {len(datas)} of {len(photos)} lfw/people photos ({len({p.person for p in chosen})} people); "
        f"plain and ours side by side on {len(plain_datas)} ...")
    with PlainProcess(installed_python()) as installed, PlainProcess() as own_build:
        dlib_builds = {"plain": installed.dlib, OWN_BUILD: own_build.dlib}
        side_by_side = interleaved_cpu_per_photo(plain_datas, {
            "plain": installed.training_step, OWN_BUILD: own_build.training_step, "ours": ours_step(options)})
    plain_cpu = side_by_side["plain"]["cpu_s_per_photo"]
    plain_wall = side_by_side["plain"]["wall_s_per_photo"]
    own_build_cpu = side_by_side[OWN_BUILD]["cpu_s_per_photo"]
    ours_inline_cpu = side_by_side["ours"]["cpu_s_per_photo"]
    say(f"train: 1 worker on {len(single)} photos ...")
    one = encoding_run(single, options, workers=1)
    say(f"train: 2 workers on {len(datas)} photos ...")
    two = encoding_run(datas, options, workers=2)
    say("train: re-run over the filled cache ...")
    cached = cached_rerun(datas, options, two, workdir)
    scaling = ratio(two.photos_per_second, one.photos_per_second)
    cpu_ratio = ratio(two.cpu_per_photo, plain_cpu)
    rows = [
        Row(f"train photos/s, 1 process (plain: {len(plain_datas)} photos, ours: {one.photos})",
            1 / plain_wall, one.photos_per_second, ratio(one.photos_per_second, 1 / plain_wall), digits=1),
        Row(f"train photos/s, 2 workers ({two.photos} photos; ratio: vs 1 worker)", None,
            two.photos_per_second, scaling, ">= 1.7", at_least(scaling, 1.7), 1),
        Row("train CPU s/photo (ours: 2-worker pool, all processes)", plain_cpu, two.cpu_per_photo,
            cpu_ratio, "<= 0.5", at_most(cpu_ratio, 0.5), 3),
        Row("train CPU s/photo, plain on our dlib build (ours: 2-worker pool)", own_build_cpu,
            two.cpu_per_photo, ratio(two.cpu_per_photo, own_build_cpu), digits=3),
        Row(f"train CPU s/photo, same {len(plain_datas)} photos side by side, 1 process each", plain_cpu,
            ours_inline_cpu, ratio(ours_inline_cpu, plain_cpu), digits=3),
        *(Row(f"train {label}, same {len(plain_datas)} photos (plain / plain on our dlib)",
              f"{side_by_side['plain'][key]} / {side_by_side[OWN_BUILD][key]}", side_by_side["ours"][key], None,
              ">= plain", side_by_side["ours"][key] >= max(side_by_side["plain"][key], side_by_side[OWN_BUILD][key]), 0)
          for label, key in (("photos with a face found", "photos_with_a_face"),
                             ("photos learned (exactly one face)", "photos_learned"))),
        Row(f"re-train over the cache: photos re-encoded (of {cached['photos']})", None, cached["re_encoded"],
            None, "0", cached["re_encoded"] == 0 and cached["results_identical"], 0),
        Row("re-train over the cache: s (ratio: vs uncached 2 workers)", None, cached["wall_s"],
            ratio(cached["wall_s"], two.wall), digits=2),
        calibration_row(calibration := large_calibration(), two.wall),
    ]
    details = {"lfw_photos": len(photos), "options": options.signature(), "dlib": dlib_builds,
               "side_by_side": {**side_by_side, "includes": {
                   "plain": "load_image_file + face_locations (HOG, upsample 1) + face_encodings when "
                            "exactly one face (the example's training loop), in a child over dlib-bin",
                   OWN_BUILD: "the same, in a child over the dlib ours uses",
                   "ours": "utils.faces.photo_result: decode + detect (with fallbacks, CNN last) + encode"}},
               "one_worker": one.summary(), "two_workers": two.summary(), "cached_rerun": cached,
               "large_calibration": calibration}
    return rows, details


def large_calibration() -> dict:
    """Fit (calibrate) 30,000 synthetic encodings of 2,000 people: the calibration's pairs are
    capped (``genuine_pairs``), so its time must not grow with the gallery's square."""
    import numpy as np

    from datastructure.classifier import FaceClassifier

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(2000, 128)) * 0.06
    who = rng.integers(0, 2000, 30_000)
    X = centres[who] + rng.normal(size=(30_000, 128)) * 0.025
    began = time.perf_counter()
    model = FaceClassifier().fit(X, np.array([f"p{i}" for i in who]))
    return {"encodings": len(X), "people": 2000, "seconds": round(time.perf_counter() - began, 2),
            "genuine_pairs": model.calibration_["genuine_pairs"]}


def calibration_row(found: dict, training_wall: float) -> Row:
    """The large calibration's time, against the 2-worker training of the same run."""
    return Row(f"fit + calibrate {found['encodings']:,} encodings of {found['people']:,} people s "
               f"(ratio: vs the 2-worker training)", None, found["seconds"], ratio(found["seconds"], training_wall),
               "< 30 s", at_most(found["seconds"], 30), 1)
