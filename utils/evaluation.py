"""Evaluation: how well a model names the people it knows and refuses the ones it does not.

    test photos (training layout: one folder per person)  --+
    stranger photos (any folder of photos, nobody known)  --+--> the same face pipeline
                                                              --> the model's decisions
                                                              --> figures, a curve (PNG), JSON

Each photo counts once, through its main face: the largest, most central one (the same rule
as ``/verify``), so a bystander in a news photo neither helps nor hurts. A photo of a known
person is *recognised* when that face gets the person's name, *wrong* when it gets someone
else's, *unknown* otherwise; a photo without a face counts as not recognised. A stranger is
*accepted* when their face gets any name. People of the test set whom the model does not
know are strangers too.

The curve sweeps the decision rule's parameters over the same decisions (the distances do
not change, only where the line is drawn), so it shows what any other setting would give:
recognition against strangers accepted. ``baseline`` adds the plain face_recognition recipe
(KNN with k = round(sqrt(n)), distance weights, named when the nearest photo is within 0.6)
computed on the very same encodings.
"""
from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from datastructure.classifier import UNKNOWN, FaceClassifier, accepted
from datastructure.errors import DatasetNotValid
from utils import archive
from utils.encoding import encoded_photos
from utils.faces import Face, Options
from utils.images import oriented_size

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PLAIN_THRESHOLD = 0.6
RELIABILITY_BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


# ---------------------------------------------------------------------------------------
# Photos -> main faces

@dataclass(frozen=True)
class Sample:
    """One evaluated photo: whose it is (None for a stranger) and its main face, if any."""

    person: str | None
    file: str
    faces: int                      # faces the pipeline found in the photo
    box: tuple[int, int, int, int] | None
    encoding: np.ndarray | None
    reason: str | None = None       # why the photo could not be read, when it could not


def photo_size(data: bytes) -> tuple[int, int] | None:
    """Return (width, height) after EXIF orientation, reading the header only; None if unknown."""
    from PIL import ExifTags, Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return oriented_size(img.size, img.getexif().get(ExifTags.Base.Orientation))
    except Exception:  # the pipeline reports unreadable photos itself
        return None


def main_face_index(boxes, size: tuple[int, int] | None) -> int:
    """Return the index of the largest, most central box (top, right, bottom, left).

    Score = area x (1 - offset / half-diagonal)^2, where offset is the distance from the box's
    centre to the photo's centre: a face twice as large wins unless it sits far off-centre.
    Without the photo's size the boxes' own extent stands for it.
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    top, right, bottom, left = boxes.T
    if size is None:
        width, height = right.max() + left.min(), bottom.max() + top.min()
    else:
        width, height = size
    half_diagonal = max(math.hypot(width, height) / 2, 1.0)
    offset = np.hypot((left + right) / 2 - width / 2, (top + bottom) / 2 - height / 2)
    centrality = np.clip(1 - offset / half_diagonal, 0.05, 1.0)
    score = (right - left) * (bottom - top) * centrality ** 2
    return int(np.argmax(score))


def main_face(faces: list[Face] | tuple[Face, ...], size: tuple[int, int] | None) -> Face | None:
    """Return the face a one-person question is about (see ``main_face_index``)."""
    if not faces:
        return None
    return faces[main_face_index([face.box for face in faces], size)]


def stranger_photos(folder: Path) -> list[tuple[str, Path]]:
    """Return (name, path) of every photo under ``folder``, in name order (dot-files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotValid(f"{str(folder)!r} is not a folder of photos")
    paths = sorted(path for path in folder.rglob("*")
                   if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES
                   and not any(part.startswith(".") for part in path.relative_to(folder).parts))
    return [(path.relative_to(folder).as_posix(), path) for path in paths]


def encoded_samples(items: Iterable[tuple[str | None, str, bytes]], options: Options, *, workers: int = 0,
                    cache_folder: Path | None = None, total: int = 0, step: str = "encoding photos",
                    progress: ProgressCallback = lambda *_: None) -> list[Sample]:
    """Run (person, file name, bytes) through the face pipeline; return a Sample per photo."""
    pending: deque = deque()
    done = [0]

    def photo_bytes():
        for person, name, data in items:
            pending.append((person, name, photo_size(data)))
            yield data

    def tick():
        done[0] += 1
        progress(done[0], total, step)

    progress(0, total, step)
    samples = []
    for result in encoded_photos(photo_bytes(), options, workers=workers, cache_folder=cache_folder, on_result=tick):
        person, name, size = pending.popleft()
        face = main_face(result.faces, size)
        samples.append(Sample(person, name, len(result.faces), None if face is None else tuple(face.box),
                              None if face is None else np.asarray(face.encoding, dtype=np.float64), result.reason))
    return samples


def dataset_samples(source, config: dict, options: Options, cache_folder: Path | None = None,
                    progress: ProgressCallback = lambda *_: None) -> list[Sample]:
    """Return the Samples of a zip or folder in training layout (person folders)."""
    limits = archive.limits_from(config.limits)
    total = archive.photo_count(source, limits)
    items = ((photo.person, photo.name, photo.data) for photo in archive.photo_source(source, limits))
    return encoded_samples(items, options, workers=int(config.faces.workers), cache_folder=cache_folder,
                           total=total, step="encoding test photos", progress=progress)


def folder_samples(folder, config: dict, options: Options, cache_folder: Path | None = None,
                   progress: ProgressCallback = lambda *_: None) -> list[Sample]:
    """Return the Samples of a folder of stranger photos (any layout)."""
    photos = stranger_photos(Path(folder))
    items = ((None, name, path.read_bytes()) for name, path in photos)
    return encoded_samples(items, options, workers=int(config.faces.workers), cache_folder=cache_folder,
                           total=len(photos), step="encoding strangers", progress=progress)


# ---------------------------------------------------------------------------------------
# Decisions -> figures

def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class Outcome:
    """Per-photo arrays the figures and the curve are computed from."""

    truth: np.ndarray        # person, or "" for strangers (and people the model does not know)
    found: np.ndarray        # bool: a face was found
    named: np.ndarray        # the name given ("unknown" when none, "" when no face)
    candidate: np.ndarray    # the person the vote chose ("" when no face)
    distance: np.ndarray     # to the candidate (inf when no face)
    runner_up: np.ndarray    # to the nearest other person (inf when none)
    confidence: np.ndarray
    scale: np.ndarray        # the candidate's threshold scale (1 for the plain recipe)


def empty_outcome(samples: list[Sample], known: set[str]):
    """Return (truth, found, named, candidate, distance) before any decision: truth is the
    person when the model knows them, "" for a stranger; nothing named, distances infinite."""
    n = len(samples)
    truth = np.array([s.person if s.person in known else "" for s in samples], dtype=object)
    found = np.array([s.encoding is not None for s in samples], dtype=bool)
    return truth, found, np.full(n, "", dtype=object), np.full(n, "", dtype=object), np.full(n, np.inf)


def outcome_of(classifier: FaceClassifier, samples: list[Sample]) -> Outcome:
    """Return the model's decisions on every sample's main face."""
    n = len(samples)
    truth, found, named, candidate, distance = empty_outcome(samples, set(map(str, classifier.classes_)))
    runner_up = np.full(n, np.inf)
    confidence = np.zeros(n)
    if found.any():
        decisions = classifier.decisions(np.vstack([s.encoding for s in samples if s.encoding is not None]))
        for index, decision in zip(np.flatnonzero(found), decisions):
            named[index], candidate[index] = decision.name, decision.candidate
            distance[index] = decision.distance
            runner_up[index] = np.inf if decision.runner_up_distance is None else decision.runner_up_distance
            confidence[index] = decision.confidence
    scale = np.ones(n)
    if found.any():
        scale[found] = classifier.person_scales(candidate[found].astype(str))
    return Outcome(truth, found, named, candidate, distance, runner_up, confidence, scale)


def summary(truth: np.ndarray, named: np.ndarray, found: np.ndarray) -> dict:
    """Return recognised / wrong / unknown / strangers-accepted counts and rates."""
    people = truth != ""
    given = (named != UNKNOWN) & (named != "")
    right = people & (named == truth)
    wrong = people & given & ~right
    strangers_accepted = ~people & given
    photos, strangers = int(people.sum()), int((~people).sum())
    return {
        "photos": photos, "recognised": int(right.sum()), "recognition_rate": rate(int(right.sum()), photos),
        "wrong": int(wrong.sum()), "wrong_rate": rate(int(wrong.sum()), photos),
        "unknown": int((people & found & ~given).sum()), "no_face": int((people & ~found).sum()),
        "strangers": strangers, "strangers_accepted": int(strangers_accepted.sum()),
        "strangers_accepted_rate": rate(int(strangers_accepted.sum()), strangers),
        "strangers_no_face": int((~people & ~found).sum()),
    }


def per_person(outcome: Outcome, samples: list[Sample]) -> dict:
    """Return each known person's figures in the test set."""
    result = {}
    files = np.array([s.file for s in samples], dtype=object)
    for person in sorted(set(outcome.truth) - {""}):
        mask = outcome.truth == person
        figures = summary(outcome.truth[mask], outcome.named[mask], outcome.found[mask])
        result[person] = {key: figures[key] for key in ("photos", "recognised", "recognition_rate", "wrong",
                                                        "unknown", "no_face")}
        wrong = mask & (outcome.named != person) & (outcome.named != UNKNOWN) & (outcome.named != "")
        if wrong.any():
            result[person]["named_as"] = dict(Counter(outcome.named[wrong]))
            result[person]["wrong_files"] = [str(name) for name in files[wrong]]
    return result


def confusions(outcome: Outcome) -> list[dict]:
    """Return (person, named as) pairs for every wrong name and accepted stranger, commonest first."""
    pairs = Counter((truth or "(stranger)", named) for truth, named in zip(outcome.truth, outcome.named)
                    if named not in (UNKNOWN, "") and truth != named)
    return [{"person": person, "named_as": named, "photos": count}
            for (person, named), count in sorted(pairs.items(), key=lambda item: (-item[1], item[0]))]


def reliability(outcome: Outcome, bins=RELIABILITY_BINS) -> dict:
    """Return, per confidence bin, how many named faces fell in it and how many were right.

    Only named faces carry a confidence (unknown faces have 0): this is the check that
    "0.9" means about 9 right in 10.
    """
    given = (outcome.named != UNKNOWN) & (outcome.named != "")
    right = given & (outcome.named == outcome.truth)
    confidence = outcome.confidence[given]
    correct = right[given]
    table = []
    for low, high in zip(bins[:-1], bins[1:]):
        mask = (confidence >= low) & ((confidence < high) if high < 1 else (confidence <= high))
        if mask.any():
            table.append({"bin": f"{low:.2f}-{high:.2f}", "faces": int(mask.sum()),
                          "mean_confidence": round(float(confidence[mask].mean()), 4),
                          "right": int(correct[mask].sum()), "right_rate": round(float(correct[mask].mean()), 4)})
    count = int(given.sum())
    return {
        "named_faces": count, "table": table,
        "mean_confidence": round(float(confidence.mean()), 4) if count else None,
        "right_rate": round(float(correct.mean()), 4) if count else None,
        # expected calibration error: |confidence - right rate| per bin, weighted by faces
        "ece": round(float(sum(row["faces"] * abs(row["mean_confidence"] - row["right_rate"]) for row in table)
                           / count), 4) if count else None,
        "brier": round(float(np.mean((confidence - correct) ** 2)), 4) if count else None,
    }


def sweep(outcome: Outcome, thresholds, ratios) -> list[dict]:
    """Return recognition, wrong names and strangers accepted for each (threshold, ratio)."""
    people, has_face = outcome.truth != "", outcome.found
    right_candidate = people & (outcome.candidate == outcome.truth)
    photos, strangers = max(int(people.sum()), 1), max(int((~people).sum()), 1)
    points = []
    for threshold, ratio in zip(np.broadcast_to(thresholds, np.broadcast(thresholds, ratios).shape),
                                np.broadcast_to(ratios, np.broadcast(thresholds, ratios).shape)):
        named = has_face & accepted(outcome.distance, outcome.runner_up, float(threshold) * outcome.scale, float(ratio))
        points.append({"threshold": round(float(threshold), 4), "ratio": round(float(ratio), 4),
                       "recognised": round(float((named & right_candidate).sum() / photos), 4),
                       "wrong": round(float((named & people & ~right_candidate).sum() / photos), 4),
                       "strangers_accepted": round(float((named & ~people).sum() / strangers), 4)})
    return points


def curves(outcome: Outcome, threshold: float, ratio: float) -> dict:
    """Our rule with one parameter moving and the other at the model's value."""
    ratios = np.round(np.arange(0.40, 1.0001, 0.01), 2)
    thresholds = np.round(np.arange(0.20, 0.7001, 0.01), 2)
    return {"ratio": sweep(outcome, threshold, ratios), "threshold": sweep(outcome, thresholds, ratio)}


# ---------------------------------------------------------------------------------------
# The plain recipe, on the same encodings

def plain_outcome(encodings: np.ndarray, labels: np.ndarray, samples: list[Sample], known: set[str]) -> Outcome:
    """Return the plain face_recognition KNN recipe's decisions on the samples' main faces.

    k = round(sqrt(training encodings)), distance weights; a face gets the vote's name when
    its nearest training photo (of anyone) is within 0.6, as in face_recognition's example.
    """
    from sklearn.neighbors import KNeighborsClassifier

    n = len(samples)
    truth, found, named, candidate, distance = empty_outcome(samples, known)
    if found.any():
        k = max(1, int(round(math.sqrt(len(encodings)))))
        knn = KNeighborsClassifier(n_neighbors=min(k, len(encodings)), weights="distance",
                                   algorithm="ball_tree").fit(encodings, labels)
        queries = np.vstack([s.encoding for s in samples if s.encoding is not None])
        nearest = knn.kneighbors(queries, n_neighbors=1)[0][:, 0]
        votes = knn.predict(queries)
        candidate[found] = votes
        distance[found] = nearest
        named[found] = np.where(nearest <= PLAIN_THRESHOLD, votes, UNKNOWN)
    return Outcome(truth, found, named, candidate, distance, np.full(n, np.inf), np.zeros(n), np.ones(n))


def plain_curve(outcome: Outcome) -> list[dict]:
    """The plain recipe with its threshold moving (ratio 1 is no ratio test: d <= d)."""
    return sweep(outcome, np.round(np.arange(0.20, 0.7001, 0.01), 2), 10.0)


# ---------------------------------------------------------------------------------------
# Everything together, and the files

def evaluation(classifier: FaceClassifier, samples: list[Sample], strangers: list[Sample],
               *, baseline: bool = False) -> dict:
    """Return every figure of an evaluation (JSON-safe)."""
    everything = list(samples) + list(strangers)
    outcome = outcome_of(classifier, everything)
    known = set(map(str, classifier.classes_))
    figures = {
        "rule": {"threshold": classifier.threshold_, "ratio": classifier.ratio_,
                 "person_scale": [round(float(classifier.scale_.min()), 4), round(float(classifier.scale_.max()), 4)],
                 "n_neighbors": classifier.n_neighbors},
        **summary(outcome.truth, outcome.named, outcome.found),
        "not_in_model": sorted({s.person for s in samples if s.person not in known}),
        "strangers_named_as": dict(Counter(outcome.named[(outcome.truth == "") & (outcome.named != UNKNOWN)
                                                         & (outcome.named != "")]).most_common()),
        "per_person": per_person(outcome, everything),
        "confusions": confusions(outcome),
        "reliability": reliability(outcome),
        "curve": curves(outcome, classifier.threshold_, classifier.ratio_),
        "unreadable": [{"file": s.file, "reason": s.reason} for s in everything if s.reason],
    }
    if baseline:
        plain = plain_outcome(classifier.encodings_, classifier.labels_, everything, known)
        figures["baseline"] = {
            "recipe": f"KNN k=round(sqrt({len(classifier.labels_)})), distance weights, "
                      f"nearest photo within {PLAIN_THRESHOLD}",
            **summary(plain.truth, plain.named, plain.found), "confusions": confusions(plain)[:20],
            "curve": plain_curve(plain),
            # the same encodings, nearest photo only and one threshold (no ratio, no per-person scale)
            "nearest_curve": sweep(Outcome(outcome.truth, outcome.found, outcome.named, outcome.candidate,
                                           outcome.distance, outcome.runner_up, outcome.confidence,
                                           np.ones(len(outcome.truth))),
                                   np.round(np.arange(0.20, 0.7001, 0.01), 2), 10.0)
            if classifier.n_neighbors == 1 else None,
        }
    return figures


def plot(figures: dict, path: Path, title: str = "") -> Path:
    """Draw recognition against strangers accepted (or wrong names, without strangers) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    against = "strangers_accepted" if figures["strangers"] else "wrong"
    label = "strangers accepted (%)" if figures["strangers"] else "wrong names (%)"
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 5))
    curve = figures["curve"]
    for points, style, name in ((curve["ratio"], "-", f"ours, ratio 0.40-1.00 (threshold {figures['rule']['threshold']:.2f})"),
                                (curve["threshold"], "--", f"ours, threshold 0.20-0.70 (ratio {figures['rule']['ratio']:.2f})")):
        left.plot([100 * p[against] for p in points], [100 * p["recognised"] for p in points], style, label=name)
    left.plot([100 * figures[f"{against}_rate" if against == "strangers_accepted" else "wrong_rate"]],
              [100 * figures["recognition_rate"]], "o", color="black", label="this model")
    if "baseline" in figures:
        plain = figures["baseline"]
        left.plot([100 * p[against] for p in plain["curve"]], [100 * p["recognised"] for p in plain["curve"]], ":",
                  label="plain recipe, threshold 0.20-0.70")
        left.plot([100 * plain[f"{against}_rate" if against == "strangers_accepted" else "wrong_rate"]],
                  [100 * plain["recognition_rate"]], "s", color="grey", label="plain recipe at 0.6")
        if plain.get("nearest_curve"):
            left.plot([100 * p[against] for p in plain["nearest_curve"]],
                      [100 * p["recognised"] for p in plain["nearest_curve"]], "-.", color="grey",
                      label="nearest photo only, threshold 0.20-0.70")
    left.axvline(1.0, color="red", alpha=0.4, linewidth=1, label="1%")
    left.set_xscale("symlog", linthresh=1.0)
    left.set_xlim(0, 100)
    left.set_ylim(0, 100)
    left.set_xlabel(label)
    left.set_ylabel("test photos recognised (%)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    left.set_title("recognition against " + label.split(" (")[0])

    points = curve["ratio"]
    ratios = [p["ratio"] for p in points]
    right.plot(ratios, [100 * p["recognised"] for p in points], label="recognised")
    right.plot(ratios, [100 * p["wrong"] for p in points], label="wrong names")
    if figures["strangers"]:
        right.plot(ratios, [100 * p["strangers_accepted"] for p in points], label="strangers accepted")
    right.axvline(figures["rule"]["ratio"], color="black", linestyle=":", label="this model's ratio")
    right.set_xlabel(f"ratio (distance / runner-up distance), threshold {figures['rule']['threshold']:.2f}")
    right.set_ylabel("%")
    right.set_ylim(0, 100)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    right.set_title("the decision parameter")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def evaluations_folder(data_dir) -> Path:
    return Path(data_dir) / "dataset" / "evaluations"


def new_run_folder(root: Path) -> Path:
    """Return a new, empty folder named by the time (suffixed when two runs share a second)."""
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    for attempt in range(1000):
        folder = root / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free folder for {stamp} in {root}")


def saved(figures: dict, folder: Path, title: str = "") -> dict:
    """Write evaluation.json and curve.png into ``folder``; return their paths."""
    png = plot(figures, folder / "curve.png", title)
    files = {"json": str(folder / "evaluation.json"), "png": str(png)}
    (folder / "evaluation.json").write_text(json.dumps({**figures, "files": files}, indent=2, default=str))
    return files


def headline(figures: dict) -> str:
    """Return a few lines of text: ours beside the plain recipe's."""
    def row(name: str, f: dict) -> str:
        def pct(value):
            return "   -  " if value is None else f"{100 * value:5.1f}%"
        return (f"{name:<14} {f['recognised']:>5}/{f['photos']:<5} {pct(f['recognition_rate'])}   "
                f"{f['wrong']:>4} {pct(f['wrong_rate'])}   {f['strangers_accepted']:>4}/{f['strangers']:<4} "
                f"{pct(f['strangers_accepted_rate'])}")

    lines = [f"{'':<14} {'recognised':<20}   {'wrong names':<11}   strangers accepted", row("this model", figures)]
    if "baseline" in figures:
        lines.append(row("plain recipe", figures["baseline"]))
    rel = figures["reliability"]
    if rel["named_faces"]:
        lines.append(f"confidence: mean {rel['mean_confidence']:.3f} for {rel['right_rate']:.3f} right "
                     f"(ECE {rel['ece']:.3f}) over {rel['named_faces']} named faces")
    return "\n".join(lines)


def run(service, dataset, *, strangers=None, model_id: str | None = None, baseline: bool = False,
        progress: ProgressCallback = lambda *_: None) -> dict:
    """Evaluate a saved model (the active one, or ``model_id``) on a dataset and strangers;
    write the JSON and the PNG under <data_dir>/dataset/evaluations/<time>/; return the figures."""
    from datastructure.errors import ClassifierNotLoaded

    model_id = model_id or service.store.active_id()
    if model_id is None:
        raise ClassifierNotLoaded("no model to evaluate: train one first, or name one with --model")
    model = service.store.load(model_id)
    cache = service.paths.cache if service.config.faces.cache else None
    options = service.predict_options
    samples = dataset_samples(dataset, service.config, options, cache, progress)
    others = folder_samples(strangers, service.config, options, cache, progress) if strangers else []
    figures = {"model": model.id, "dataset": str(dataset), "strangers_source": str(strangers) if strangers else None,
               "created": datetime.now().isoformat(timespec="seconds"), "pipeline": options.signature(),
               **evaluation(model.classifier, samples, others, baseline=baseline)}
    folder = new_run_folder(evaluations_folder(service.config.data_dir))
    figures["files"] = saved(figures, folder, title=f"model {model.id} on {Path(str(dataset)).name}")
    log.info("evaluated model %s: %s", model.id, figures["files"])
    return figures


def command(args, config) -> int:
    """``python main.py evaluate DATASET [--strangers DIR] [--model ID] [--baseline]``: print
    the JSON envelope on stdout, a summary and the files written on stderr."""
    import sys

    from datastructure.response import envelope
    from utils.progress import progress_bar
    from utils.service import build_service

    service = build_service(config, console_log=False)
    with progress_bar(only_on_a_terminal=True) as progress:
        figures = run(service, Path(args.dataset), strangers=Path(args.strangers) if args.strangers else None,
                      model_id=args.model, baseline=args.baseline, progress=progress)
    print(headline(figures), file=sys.stderr)
    print(f"figures: {figures['files']['json']}\ncurve:   {figures['files']['png']}", file=sys.stderr)
    print(json.dumps(envelope(figures, description=f"model {figures['model']} evaluated: "
                                                   f"{figures['files']['json']}, {figures['files']['png']}"),
                     ensure_ascii=False), flush=True)
    return 0
