"""Verification (issue 11): is the main face of two photos the same person, on LFW pairs.

../shared/faces holds no LFW pairs.txt, so the pairs are drawn the way LFW's protocol draws
them, from lfw/people and lfw/strangers: people are split in two halves (seeded); the "fold"
is 300 same-person pairs and 300 different-person pairs (a quarter of them with a stranger)
from one half, and the threshold is calibrated on 3,000 + 3,000 pairs of the other half, so
no person of the fold is seen by calibration. A pair where either photo has no face counts as
wrong, as a 422 answer would. Each pipeline encodes the photos once (cached by content).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench import ROOT, Row, engine_config

FOLD_PAIRS = 300        # of each kind, as in one LFW fold
CALIBRATION_PAIRS = 3000
THRESHOLDS = np.round(np.arange(0.40, 0.7001, 0.005), 3)
# The first /verify: predict's pipeline before encodings were mirrored (utils/faces.py), at 0.6
OLD = "predict pipeline, no mirror (old /verify)"
OLD_THRESHOLD = 0.6


def photo_pairs(people: dict[str, list[Path]], strangers: list[Path], count: int, rng) -> list[tuple[Path, Path, bool]]:
    """Return ``count`` same-person and ``count`` different-person pairs."""
    names = sorted(people)
    pairs = []
    for _ in range(count):
        photos = people[names[rng.integers(len(names))]]
        first, second = rng.choice(len(photos), 2, replace=False)
        pairs.append((photos[first], photos[second], True))
    for index in range(count):
        one, other = rng.choice(len(names), 2, replace=False)
        first = people[names[one]][rng.integers(len(people[names[one]]))]
        second = (strangers[rng.integers(len(strangers))] if index % 4 == 0
                  else people[names[other]][rng.integers(len(people[names[other]]))])
        pairs.append((first, second, False))
    return pairs


def split_pairs(faces: Path, seed: int = 0):
    """Return (calibration pairs, fold pairs) over disjoint halves of the people and strangers."""
    rng = np.random.default_rng(seed)
    people = {folder.name: sorted(folder.iterdir()) for folder in sorted((faces / "lfw" / "people").iterdir())
              if folder.is_dir()}
    strangers = sorted((faces / "lfw" / "strangers").iterdir())
    names = np.array(sorted(people))[rng.permutation(len(people))]
    order = rng.permutation(len(strangers))
    half, halves = len(names) // 2, len(order) // 2
    calibration = photo_pairs({n: people[n] for n in names[:half]}, [strangers[i] for i in order[:halves]],
                              CALIBRATION_PAIRS, rng)
    fold = photo_pairs({n: people[n] for n in names[half:]}, [strangers[i] for i in order[halves:]],
                       FOLD_PAIRS, rng)
    return calibration, fold


def encoded(paths, options, cache: Path | None) -> tuple[dict[Path, np.ndarray | None], float]:
    """Return {path: main face encoding or None} and the CPU seconds per photo spent encoding."""
    from utils.samples import encoded_samples

    paths = sorted(set(paths))
    cpu = time.process_time()
    samples = encoded_samples(((None, path.name, path.read_bytes()) for path in paths), options,
                              workers=1, cache_folder=cache, total=len(paths))
    return {path: sample.encoding for path, sample in zip(paths, samples)}, (time.process_time() - cpu) / len(paths)


def distances(pairs, encodings) -> tuple[np.ndarray, np.ndarray]:
    """Return each pair's distance (inf when a photo has no face) and whether it is the same person."""
    values = np.array([np.inf if encodings[a] is None or encodings[b] is None
                       else float(np.linalg.norm(encodings[a] - encodings[b])) for a, b, _ in pairs])
    return values, np.array([same for _, _, same in pairs])


def accuracy(values, same, threshold: float) -> float:
    return float(np.mean((values <= threshold) == same))


def calibrated_threshold(values, same) -> float:
    """The threshold of best accuracy on calibration pairs (the middle of the best run)."""
    scores = np.array([accuracy(values, same, t) for t in THRESHOLDS])
    best = np.flatnonzero(scores == scores.max())
    return float(THRESHOLDS[best[len(best) // 2]])


def pipeline_figures(calibration, fold, options, cache, threshold: float) -> dict:
    """Accuracy on the fold at ``threshold`` (the verify threshold of the pipeline) and at the
    calibrated one; the CPU a pair costs, measured by encoding the fold's photos again without the cache."""
    encodings, _ = encoded([p for a, b, _ in calibration + fold for p in (a, b)], options, cache)
    c_values, c_same = distances(calibration, encodings)
    f_values, f_same = distances(fold, encodings)
    calibrated = calibrated_threshold(c_values, c_same)
    fold_photos = [p for a, b, _ in fold for p in (a, b)]
    _, cpu_per_photo = encoded(fold_photos, options, None)
    return {"pipeline": options.signature(), "calibrated_threshold": calibrated,
            "fold_accuracy_calibrated": accuracy(f_values, f_same, calibrated),
            "verify_threshold": threshold, "fold_accuracy": accuracy(f_values, f_same, threshold),
            "no_face_pairs": int(np.isinf(f_values).sum()),
            "cpu_per_pair": round(cpu_per_photo * len(set(fold_photos)) / len(fold), 4)}


def verify_section(faces: Path, workdir: Path, cache: Path | None = None, say=lambda message: None, variants=None):
    """The bench section: (rows, details)."""
    from utils.faces import Options
    from utils.verification import VERIFY_THRESHOLD, verification_options

    config = engine_config(ROOT)
    predict = Options.from_config(config.faces, config.limits, training=False)
    calibration, fold = split_pairs(faces)
    cache = cache or workdir / "cache"
    variants = variants or {OLD: replace(predict, mirror=False), "/verify pipeline": verification_options(predict)}
    details = {}
    for name, options in variants.items():
        say(f"verify: {name} ({options.signature()})")
        details[name] = pipeline_figures(calibration, fold, options, cache,
                                         OLD_THRESHOLD if name == OLD else VERIFY_THRESHOLD)
    old, new = details[OLD], details["/verify pipeline"]
    rows = [
        Row("verify: LFW-style fold (600 pairs) accuracy, old (0.6) vs /verify", old["fold_accuracy"],
            new["fold_accuracy"], target=">= 0.990", met=new["fold_accuracy"] >= 0.990, digits=4),
        Row("verify: ... at the threshold calibrated on the other half", old["fold_accuracy_calibrated"],
            new["fold_accuracy_calibrated"], digits=4),
        Row("verify: CPU s per pair (fold, uncached), old vs /verify", old["cpu_per_pair"], new["cpu_per_pair"],
            ratio=new["cpu_per_pair"] / old["cpu_per_pair"] if old["cpu_per_pair"] else None, digits=4),
    ]
    return rows, details


def variants_of(predict) -> dict:
    """The levers measured for the README (bench only): detection fallbacks, the mirror, jitters."""
    return {OLD: replace(predict, mirror=False),
            "CNN fallback": replace(predict, cnn_fallback=True, mirror=False),
            "CNN fallback, mirror (/verify)": replace(predict, cnn_fallback=True),
            "CNN fallback, 5 jitters": replace(predict, cnn_fallback=True, jitters=5, mirror=False),
            "CNN fallback, mirror, 5 jitters": replace(predict, cnn_fallback=True, jitters=5)}
