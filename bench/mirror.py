"""The mirror where it matters (issue 27): how far the mirror pass moves an encoding, and whether
deciding from the first pass where the answer is settled changes any decision.

Every photo of lfw/people, lfw/strangers and celebrities goes through a small gallery's pipeline
(training's: the CNN detector where HOG finds nothing) once; its main face keeps both halves of
its encoding, the first pass and the mirror image's (cached in ``cache``, by pipeline). Then:

* the radius: the largest |mirrored mean - first pass| on lfw/people and celebrities, the
  figure behind utils/faces.py's MIRROR_RADIUS (which adds a margin); lfw/strangers, never
  measured, checks it: the share of their faces moved further than the radius;
* the decisions, each made twice, always mirrored (the reference) and as the service makes it
  (the first pass where ``FaceClassifier.decision_is_certain`` or /verify's ``pair_encodings``
  says the mirror cannot change it, else the mirrored mean), on bench/small.py's draws (seeds
  0-5), the LFW 90-person split (README's: the last 30% of each person's photos, at least 3,
  are tests, with the strangers) and bench/verify.py's fold: the count of differing decisions
  and the share of faces that skipped the mirror pass.
"""
from __future__ import annotations

import hashlib
import multiprocessing
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench import ROOT, Row, engine_config

SEEDS = range(6)


def passes_of(data: bytes, options) -> tuple[int, np.ndarray | None, np.ndarray | None]:
    """Return (faces found, the main face's first pass, its mirror image's encoding) of one photo."""
    from datastructure.errors import PyRecognizerError
    from utils.faces import chip_encodings, decoded, face_locations, first_pass, mirror_images
    from utils.samples import main_face_index

    try:
        image = decoded(data, options)
    except PyRecognizerError:
        return 0, None, None
    boxes = face_locations(image.array, options)
    if not boxes:
        return 0, None, None
    main = boxes[main_face_index([tuple(box) for box in boxes],
                                 (image.array.shape[1], image.array.shape[0]))]
    first, chips = first_pass(image.array, [main])
    return len(boxes), first[0], chip_encodings(mirror_images(chips))[0]


def _worker(job):
    path, options = job
    return passes_of(Path(path).read_bytes(), options)


def all_passes(paths: list[Path], options, cache: Path, workers: int, say=print) -> dict:
    """Return {path: (faces, first, mirror)} of every photo, cached by pipeline and photo list."""
    names = "\n".join("/".join(path.parts[-3:]) for path in paths)  # not the folder's place on this machine
    key = hashlib.sha256(names.encode() + options.signature().encode()).hexdigest()[:16]
    file = cache / f"mirror-passes-{options.signature()}-{key}.npz"
    if file.exists():
        saved = np.load(file)
        return {path: (int(faces), first if faces else None, mirror if faces else None)
                for path, faces, first, mirror in zip(paths, saved["faces"], saved["first"], saved["mirror"])}
    say(f"mirror: encoding {len(paths):,} photos, both halves ({options.signature()}, {workers} processes) ...")
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.map(_worker, [(str(path), options) for path in paths], chunksize=8)
    cache.mkdir(parents=True, exist_ok=True)
    empty = np.full(128, np.nan)
    np.savez(file, faces=np.array([faces for faces, _, _ in results]),
             first=np.array([empty if first is None else first for _, first, _ in results]),
             mirror=np.array([empty if mirror is None else mirror for _, _, mirror in results]))
    return dict(zip(paths, results))


def samples(paths_by_person: dict, strangers: list[Path], passes: dict, half: str):
    """bench/small.py's pool shape of one half ("mean": the mirrored mean, "first": the first pass)."""
    from utils.samples import Sample

    def sample(person, path):
        faces, first, mirror = passes[path]
        encoding = None if first is None else (first if half == "first" else (first + mirror) / 2)
        return Sample(person, path.name, faces, None, encoding)

    return ({person: [sample(person, path) for path in paths] for person, paths in paths_by_person.items()},
            [sample(None, path) for path in strangers])


class Tally:
    """Decisions compared: always mirrored against deciding from the first pass where settled."""

    def __init__(self):
        self.faces = self.differing = self.skipped = 0

    def add(self, differing: int, skipped: int, faces: int) -> None:
        self.differing += differing
        self.skipped += skipped
        self.faces += faces

    def as_dict(self) -> dict:
        return {"faces": self.faces, "differing": self.differing, "skipped": self.skipped,
                "skipped_share": round(self.skipped / max(self.faces, 1), 4)}


def compare_classifier(classifier, firsts: list, means: list, radius: float, tally: Tally) -> None:
    """Name each face always mirrored and as the service does; add the differences to ``tally``."""
    found = [i for i, first in enumerate(firsts) if first is not None]
    if not found:
        return
    first = np.array([firsts[i] for i in found])
    mean = np.array([means[i] for i in found])
    reference = [decision.name for decision in classifier.decisions(mean)]
    certain = classifier.decision_is_certain(first, radius)
    served = [decision.name for decision in classifier.decisions(np.where(certain[:, None], first, mean))]
    tally.add(sum(a != b for a, b in zip(reference, served)), int(certain.sum()), len(found))


def small_tally(ours: dict, ours_first: dict, strangers: list, strangers_first: list, params: dict,
                radius: float, draws: int) -> dict:
    """bench/small.py's draws, seeds 0-5: one Tally per seed."""
    from bench.small import Pool, drawn, side_of
    from datastructure.classifier import FaceClassifier

    pool = Pool(ours, strangers, {}, [])
    result = {}
    for seed in SEEDS:
        rng, tally = np.random.default_rng(seed), Tally()
        for _ in range(draws):
            draw = drawn(rng, pool)
            encodings, labels, queries = side_of(draw, ours, strangers)
            _, _, first_queries = side_of(draw, ours_first, strangers_first)
            classifier = FaceClassifier(**params).fit(encodings, labels)
            compare_classifier(classifier, [q.encoding for q in first_queries], [q.encoding for q in queries],
                               radius, tally)
        result[seed] = tally.as_dict()
    return result


def lfw_split(faces: Path) -> tuple[dict, dict]:
    """README's split of lfw/people: per person, the last 30% of the photos in name order (at
    least 3) are tests, the rest train."""
    train, test = {}, {}
    for folder in sorted(path for path in (faces / "lfw" / "people").iterdir() if path.is_dir()):
        photos = sorted(path for path in folder.iterdir() if path.is_file())
        held = max(3, int(round(0.3 * len(photos))))
        train[folder.name], test[folder.name] = photos[:-held], photos[-held:]
    return train, test


def lfw_tally(faces: Path, passes: dict, strangers: list[Path], params: dict, radius: float) -> dict:
    """The LFW 90-person split: a gallery of the train photos with one face, tests and strangers asked."""
    from datastructure.classifier import FaceClassifier

    train, test = lfw_split(faces)
    kept = [(person, path) for person, paths in train.items() for path in paths if passes[path][0] == 1]
    encodings = np.array([(passes[path][1] + passes[path][2]) / 2 for _, path in kept])
    classifier = FaceClassifier(**params).fit(encodings, np.array([person for person, _ in kept]))
    asked = [path for paths in test.values() for path in paths] + list(strangers)
    tally = Tally()
    compare_classifier(classifier, [passes[path][1] for path in asked],
                       [None if passes[path][1] is None else (passes[path][1] + passes[path][2]) / 2 for path in asked],
                       radius, tally)
    return {**tally.as_dict(), "gallery": len(kept), "rule": classifier.rule_}


def verify_tally(faces: Path, passes: dict, radius: float) -> dict:
    """bench/verify.py's fold: ``same`` always mirrored against ``pair_encodings``' answer."""
    from bench.verify import split_pairs
    from utils.verification import VERIFY_THRESHOLD, pair_encodings

    _, fold = split_pairs(faces)
    differing = skipped = asked = 0
    for a, b, _ in fold:
        if passes[a][1] is None or passes[b][1] is None:
            continue
        means = [(passes[p][1] + passes[p][2]) / 2 for p in (a, b)]
        reference = np.linalg.norm(means[0] - means[1]) <= VERIFY_THRESHOLD
        encodings, spared = pair_encodings([passes[a][1], passes[b][1]], [True, True], means.__getitem__,
                                           VERIFY_THRESHOLD, radius)
        served = np.linalg.norm(np.asarray(encodings[0]) - np.asarray(encodings[1])) <= VERIFY_THRESHOLD
        differing += int(reference != served)
        skipped += spared
        asked += 1
    return {"pairs": asked, "faces": 2 * asked, "differing": differing, "skipped": skipped,
            "skipped_share": round(skipped / max(2 * asked, 1), 4)}


def mirror_section(faces: Path, workdir: Path, cache: Path | None = None, draws: int = 50, workers: int = 2,
                   say=print) -> tuple[list[Row], dict]:
    """The bench section: (rows, details)."""
    from bench.small import pool_paths
    from utils.faces import MIRROR_RADIUS, MIRROR_RADIUS_MEASURED, MIRROR_RADIUS_PIPELINE, Options
    from utils.training import classifier_params

    config = engine_config(ROOT)
    options = Options.from_config(config.faces, config.limits, training=True)
    people, strangers = pool_paths(faces)
    paths = sorted({path for photos in people.values() for path in photos} | set(strangers))
    passes = all_passes(paths, options, cache or workdir / "cache", workers, say)

    def moved(subset) -> np.ndarray:
        return np.array([np.linalg.norm(passes[p][2] - passes[p][1]) / 2 for p in subset if passes[p][1] is not None])

    measured = moved(sorted({path for photos in people.values() for path in photos}))
    held_out = moved(strangers)
    radius = MIRROR_RADIUS if MIRROR_RADIUS is not None else float(measured.max())
    params = classifier_params(config)
    ours, ours_strangers = samples(people, strangers, passes, "mean")
    first, first_strangers = samples(people, strangers, passes, "first")
    say(f"mirror: small galleries, seeds 0-5 x {draws} draws ...")
    small = small_tally(ours, first, ours_strangers, first_strangers, params, radius, draws)
    say("mirror: the LFW 90-person split ...")
    lfw = lfw_tally(faces, passes, strangers, params, radius)
    say("mirror: the verify fold ...")
    verify = verify_tally(faces, passes, radius)
    small_total = Tally()
    for figures in small.values():
        small_total.add(figures["differing"], figures["skipped"], figures["faces"])
    small_total = small_total.as_dict()
    shift = {"faces": int(len(measured)), "max": round(float(measured.max()), 4),
             "p99": round(float(np.percentile(measured, 99)), 4), "median": round(float(np.median(measured)), 4),
             "strangers_faces": int(len(held_out)), "strangers_max": round(float(held_out.max()), 4),
             "strangers_beyond_radius": int((held_out > radius).sum())}
    rows = [
        Row("mirror: shift |mean - first pass| on lfw/people + celebrities, median / p99 / max", None,
            f"{shift['median']:.3f} / {shift['p99']:.3f} / {shift['max']:.3f}"),
        Row(f"mirror: radius used (pipeline {MIRROR_RADIUS_PIPELINE}; measured max recorded "
            f"{MIRROR_RADIUS_MEASURED}) vs the max measured now", shift["max"], radius, target=">= max",
            met=radius >= shift["max"], digits=3),
        Row("mirror: lfw/strangers (not measured) moved beyond the radius", None, shift["strangers_beyond_radius"],
            target="0", met=shift["strangers_beyond_radius"] == 0, digits=0),
        Row(f"mirror: small galleries (seeds 0-5 x {draws}): differing decisions / faces", None,
            f"{small_total['differing']} / {small_total['faces']}", target="0 differing",
            met=small_total["differing"] == 0),
        Row("mirror: small galleries: share of faces that skipped the mirror pass", None,
            small_total["skipped_share"], digits=3),
        Row(f"mirror: LFW 90-person split ({lfw['rule']} rule): differing decisions / faces", None,
            f"{lfw['differing']} / {lfw['faces']}", target="0 differing", met=lfw["differing"] == 0),
        Row("mirror: LFW split: share of faces that skipped the mirror pass", None, lfw["skipped_share"], digits=3),
        Row("mirror: verify fold: differing verdicts / pairs", None, f"{verify['differing']} / {verify['pairs']}",
            target="0 differing", met=verify["differing"] == 0),
        Row("mirror: verify fold: share of faces that skipped the mirror pass", None, verify["skipped_share"], digits=3),
    ]
    return rows, {"pipeline": options.signature(), "radius": radius, "shift": shift, "small": small,
                  "small_total": small_total, "lfw": lfw, "verify": verify}
