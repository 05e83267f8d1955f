"""Recognition against the number of distractors (issue 27), measured as MegaFace measures it.

The real gallery is celebrities/train and the lfw/people train split (the first 70% of each
person's photos), through this service's training pipeline (bench/small.py's pool, cached by
content). The probes are celebrities/val and the lfw held-out photos; the strangers are
lfw/strangers. To it are added D distractor encodings, D = 10^3 .. 10^6, 10 photos per
synthetic person, drawn two ways:

* "fitted": person centres from a Gaussian fitted to real dlib centres (the lfw/people and
  celebrities people's means, corrected for the noise of a mean of n photos, pooled with
  lfw/strangers' single photos corrected for one photo's noise), photos around them from the
  within-person scatter measured on the same people;
* "filler": issue 27's filler, centres around the real mean at about 0.79, photos at about
  0.28 around their centre (isotropic).

Per size the classifier is fitted as ``main.py import`` fits it (calibration and all) and
decides through its index; the same fitted classifier searching exhaustively says which misses
the index's candidates owe (search) and which the rule owes (rule). The plain recipe (k-NN,
k = round(sqrt(n)), distance weights, named within 0.6) is decided on the same gallery.
The 10^6 distractors are drawn once per kind and cached in .cache/ (gitignored); smaller
sizes are their first people.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from bench import ROOT

CACHE = ROOT / ".cache"
PER_PERSON = 10
SIZES = (1_000, 10_000, 100_000, 1_000_000)
KINDS = ("fitted", "filler")
FILLER_CENTRE, FILLER_PHOTO = 0.79, 0.28  # issue 27's filler: distances from the real mean, and from a centre
PLAIN_THRESHOLD = 0.6


def real_sets(faces: Path, say=print) -> dict:
    """The real gallery (encodings, names), probes (encodings, names) and stranger encodings:
    see the module's docstring. Each person's photos in file-name order; one face per photo."""
    from bench.small import encoded_pool

    pool = encoded_pool(faces, ROOT / "dataset" / "cache", say=say)
    gallery, probes = ([], []), ([], [])
    for person, samples in sorted(pool.ours.items()):
        if "_" in person:  # lfw: the suggested split, in file-name order
            samples = sorted(samples, key=lambda s: s.file)
            cut = len(samples) - max(3, int(round(len(samples) * 0.3)))
        else:  # celebrities: the pool holds train's photos, then val's (bench/small.pool_paths)
            cut = sum(1 for path in (faces / "celebrities" / "train" / person).iterdir() if path.is_file())
        train = [s for s in samples[:cut] if s.faces == 1]
        test = [s for s in samples[cut:] if s.encoding is not None]
        for target, chosen in ((gallery, train), (probes, test)):
            target[0].extend(s.encoding for s in chosen)
            target[1].extend([person] * len(chosen))
    strangers = np.array([s.encoding for s in pool.ours_strangers if s.encoding is not None])
    return {"gallery": (np.array(gallery[0], np.float32), np.array(gallery[1])),
            "probes": (np.array(probes[0], np.float32), np.array(probes[1])), "strangers": strangers.astype(np.float32)}


def fitted_distribution(X: np.ndarray, y: np.ndarray, strangers: np.ndarray) -> dict:
    """The Gaussian of person centres and of within-person scatter of real dlib encodings."""
    people = np.unique(y)
    counts = np.array([np.sum(y == name) for name in people])
    means = np.array([X[y == name].mean(axis=0) for name in people], dtype=np.float64)
    residuals = np.vstack([X[y == name] - mean for name, mean in zip(people, means)])
    # unbiased within-person covariance: each person's residuals lose one degree of freedom
    within = residuals.T @ residuals / (len(X) - len(people))
    centre = np.vstack([means, strangers]).mean(axis=0)
    from_means = np.cov(means, rowvar=False) - within * float(np.mean(1.0 / counts))
    from_strangers = np.cov(strangers, rowvar=False) - within
    between = (len(means) * from_means + len(strangers) * from_strangers) / (len(means) + len(strangers))
    values, vectors = np.linalg.eigh(between)
    between = (vectors * np.maximum(values, 1e-7)) @ vectors.T
    return {"centre": centre, "between": between, "within": within}


def drawn_distractors(kind: str, count: int, distribution: dict, seed: int = 0) -> np.ndarray:
    """``count`` encodings of count / PER_PERSON synthetic people (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    persons = -(-count // PER_PERSON)
    if kind == "fitted":
        centres = rng.multivariate_normal(distribution["centre"], distribution["between"], persons, method="cholesky")
        scatter = rng.multivariate_normal(np.zeros(128), distribution["within"], persons * PER_PERSON, method="cholesky")
    else:
        centres = distribution["centre"] + rng.normal(0, FILLER_CENTRE / math.sqrt(128), (persons, 128))
        scatter = rng.normal(0, FILLER_PHOTO / math.sqrt(128), (persons * PER_PERSON, 128))
    return (np.repeat(centres, PER_PERSON, axis=0) + scatter)[:count].astype(np.float32)


def distractors(kind: str, largest: int, distribution: dict, say=print) -> np.ndarray:
    """The ``largest`` distractors of ``kind``, drawn once and cached in .cache/."""
    path = CACHE / f"distractors-{kind}-{largest}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    say(f"distractors: drawing {largest:,} ({kind}), cached in {path}")
    CACHE.mkdir(exist_ok=True)
    drawn = np.empty((largest, 128), np.float32)
    step = 100_000
    for number, start in enumerate(range(0, largest, step)):
        drawn[start:start + step] = drawn_distractors(kind, min(step, largest - start), distribution, seed=number)
    np.save(path, drawn)
    return np.load(path, mmap_mode="r")


def statistics_of(X: np.ndarray, y: np.ndarray, rng, samples: int = 20000) -> dict:
    """Median distance between photos of one person and between photos of two people."""
    first, second = rng.integers(0, len(X), samples), rng.integers(0, len(X), samples)
    distances = np.linalg.norm(X[first].astype(np.float64) - X[second], axis=1)
    same = (y[first] == y[second]) & (first != second)
    return {"between_median": round(float(np.median(distances[y[first] != y[second]])), 4),
            "within_median": round(float(np.median(distances[same])), 4) if same.any() else None}


def within_median(X: np.ndarray, y: np.ndarray) -> float:
    """Median distance between two photos of the same person (every pair of each person)."""
    values = []
    for name in np.unique(y):
        photos = X[y == name].astype(np.float64)
        if len(photos) > 1:
            d = np.linalg.norm(photos[:, None] - photos[None], axis=2)
            values.append(d[np.triu_indices(len(photos), 1)])
    return round(float(np.median(np.concatenate(values))), 4)


def exhaustive_top(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(rows, distances) of the k nearest gallery photos of each query, sorted, exactly."""
    norms = np.einsum("ij,ij->i", gallery, gallery)
    rows_out = np.empty((len(queries), k), np.int64)
    dist_out = np.empty((len(queries), k))
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        squared = norms[None, :] - 2.0 * (block @ gallery.T) + np.einsum("ij,ij->i", block, block)[:, None]
        part = np.argpartition(squared, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(squared, part, axis=1)
        order = np.argsort(values, axis=1)
        rows_out[start:start + chunk] = np.take_along_axis(part, order, axis=1)
        dist_out[start:start + chunk] = np.sqrt(np.maximum(np.take_along_axis(values, order, axis=1), 0))
    return rows_out, dist_out


def plain_names(rows: np.ndarray, distances: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The plain recipe: the k nearest photos vote with weights 1/distance; named within 0.6."""
    names = []
    for row, distance in zip(rows[:, :k], distances[:, :k]):
        votes: dict = {}
        for label, d in zip(labels[row], distance):
            votes[label] = votes.get(label, 0.0) + 1.0 / max(d, 1e-9)
        names.append(max(votes, key=votes.get) if distance[0] <= PLAIN_THRESHOLD else "unknown")
    return np.array(names)


def figures_of(named: np.ndarray, truth: np.ndarray, strangers: int) -> dict:
    """Recognised, wrong and unknown probes; strangers accepted (the last ``strangers`` rows)."""
    probes, others = named[:len(named) - strangers], named[len(named) - strangers:]
    right = probes == truth
    wrong = (probes != truth) & (probes != "unknown")
    celebrity = np.array(["_" not in name for name in truth])  # lfw names have underscores; "Madonna" has no space
    return {"recognised": round(float(right.mean()), 4), "wrong": int(wrong.sum()),
            "celebrities_val_right": int(right[celebrity].sum()), "celebrities_val": int(celebrity.sum()),
            "celebrities_val_wrong": int(wrong[celebrity].sum()),
            "false_accepts": round(float(np.mean(others != "unknown")), 4), "strangers_accepted": int(np.sum(others != "unknown"))}


def best_rule(decided: list, classifier, truth: np.ndarray, strangers: int, budget: float = 0.01) -> dict:
    """The (threshold, ratio) of the nearest-photo rule that, knowing the answers, names the most
    probes with at most ``budget`` of the strangers accepted: what any calibration could reach
    on this gallery, so a gap between it and ours is the calibration's, and what is left is the
    encoder's."""
    candidate = np.array([d.candidate for d in decided])
    distance = np.array([d.distance for d in decided])
    runner = np.array([np.inf if d.runner_up_distance is None else d.runner_up_distance for d in decided])
    scale = classifier.person_scales(candidate)
    n = len(truth)
    right = np.zeros(len(decided), bool)
    right[:n] = candidate[:n] == truth
    best = {"recognised": 0.0, "false_accepts": 0.0, "threshold": None, "ratio": None}
    for threshold in np.round(np.arange(0.30, 0.651, 0.01), 2):
        close = distance <= threshold * scale
        for ratio in np.round(np.arange(0.60, 1.001, 0.02), 2):
            kept = close & (distance <= ratio * runner)
            false = float(kept[n:].mean())
            recognised = float((kept[:n] & right[:n]).mean())
            if false <= budget + 1e-12 and recognised > best["recognised"]:
                best = {"recognised": round(recognised, 4), "false_accepts": round(false, 4),
                        "threshold": float(threshold), "ratio": float(ratio)}
    return best


def curve_point(real: dict, extra: np.ndarray, params: dict, say=print) -> dict:
    """One gallery: the real one plus ``extra`` distractors; ours (index and exhaustive) and plain."""
    from bench.gallery import exhaustive_twin
    from datastructure.classifier import FaceClassifier

    X_real, y_real = real["gallery"]
    count = len(extra)
    names = np.repeat(np.array([f"zz distractor {i:06d}" for i in range(-(-count // PER_PERSON))]), PER_PERSON)[:count]
    X = np.vstack([X_real, np.asarray(extra, np.float32)])
    y = np.concatenate([y_real, names])
    probes, truth = real["probes"]
    queries = np.vstack([probes, real["strangers"]]).astype(np.float32)
    began = time.perf_counter()
    classifier = FaceClassifier(**params).fit(X, y)
    fit_s = time.perf_counter() - began
    decided = classifier.decisions(queries)
    ours = np.array([d.name for d in decided])
    exact = exhaustive_twin(classifier) if classifier.gallery_.index.approximate else classifier
    reference = np.array([d.name for d in exact.decisions(queries)]) if exact is not classifier else ours
    k = max(1, int(round(math.sqrt(len(X)))))
    rows, distances = exhaustive_top(queries, X, k)
    plain = plain_names(rows, distances, y, k)
    n = len(truth)
    missed = ours[:n] != truth
    owed_search = missed & (reference[:n] == truth)
    calibration = classifier.calibration_
    return {"distractors": count, "gallery": len(X), "fit_s": round(fit_s, 1),
            "threshold": classifier.threshold_, "ratio": classifier.ratio_, "rule": classifier.rule_,
            "calibration": {key: calibration.get(key) for key in ("recognised", "strangers_accepted", "evidence", "budget")},
            "ours": figures_of(ours, truth, len(real["strangers"])),
            "exhaustive": figures_of(reference, truth, len(real["strangers"])),
            "plain": figures_of(plain, truth, len(real["strangers"])),
            "best_rule": best_rule(decided, classifier, truth, len(real["strangers"])),
            "misses": int(missed.sum()), "misses_owed_to_search": int(owed_search.sum()),
            "misses_owed_to_rule": int((missed & ~owed_search).sum())}


def distractor_curve(faces: Path, sizes=SIZES, kinds=KINDS, params: dict | None = None, say=print,
                     largest: int = max(SIZES)) -> dict:
    """The curve of every kind over ``sizes`` (see the module's docstring)."""
    if params is None:
        from bench import engine_config
        from utils.training import classifier_params

        params = classifier_params(engine_config(ROOT))
    real = real_sets(faces, say=say)
    X_real, y_real = real["gallery"]
    distribution = fitted_distribution(X_real.astype(np.float64), y_real, real["strangers"].astype(np.float64))
    rng = np.random.default_rng(0)
    result = {"real": {"gallery": len(y_real), "people": len(np.unique(y_real)), "probes": len(real["probes"][1]),
                       "strangers": len(real["strangers"]), "within_median": within_median(X_real, y_real),
                       "stranger_between_median": round(float(np.median(np.linalg.norm(
                           real["strangers"][:, None] - real["strangers"][None], axis=2)[np.triu_indices(len(real["strangers"]), 1)])), 4)},
              "kinds": {}}
    for kind in kinds:
        pool = distractors(kind, max(largest, max(sizes)), distribution, say=say)
        sample = np.asarray(pool[:20_000])
        labels = np.repeat(np.arange(2000), PER_PERSON)
        result["kinds"][kind] = {"statistics": {**statistics_of(sample, labels, rng),
                                                "within_median": within_median(sample[:2000], labels[:2000])},
                                 "points": []}
        for size in sizes:
            say(f"distractors: {kind} {size:,} ...")
            point = curve_point(real, pool[:size], params, say=say)
            say(f"distractors: {kind} {size:,}: {point}")
            result["kinds"][kind]["points"].append(point)
    return result


def curve_rows(curve: dict) -> list:
    """The table's rows: per kind and size, plain against ours (see the module's docstring)."""
    from bench import Row

    rows = []
    for kind, found in curve["kinds"].items():
        points = found["points"]
        base = points[0]["ours"]["recognised"] if points else None
        for point in points:
            label = f"distractors {kind} {point['distractors']:,}"
            ours, plain = point["ours"], point["plain"]
            big = point["distractors"] >= 1_000_000
            rows += [
                Row(f"{label}: % recognised (probes)", round(100 * plain["recognised"], 1), round(100 * ours["recognised"], 1),
                    target="within 2 points of the smallest" if big else "",
                    met=(ours["recognised"] >= base - 0.02) if big else None, digits=1),
                Row(f"{label}: % false accepts (lfw/strangers)", round(100 * plain["false_accepts"], 1),
                    round(100 * ours["false_accepts"], 1), target="<= 1%", met=ours["false_accepts"] <= 0.01, digits=1),
                Row(f"{label}: wrong names (celebrities/val + lfw split)", plain["wrong"], ours["wrong"], target="0",
                    met=ours["wrong"] == 0),
                Row(f"{label}: best rule knowing the answers: % recognised at <= 1% false accepts", None,
                    round(100 * point["best_rule"]["recognised"], 1), digits=1),
                Row(f"{label}: threshold / ratio; misses owed to search / rule", None,
                    f"{point['threshold']:.3f} / {point['ratio']:.3f}; {point['misses_owed_to_search']} / {point['misses_owed_to_rule']}"),
            ]
    return rows
