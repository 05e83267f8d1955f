"""Evaluation: how well a model names the people it knows and refuses the ones it does not.

    test photos (training layout: one folder per person)  --+
    stranger photos (any folder of photos, nobody known)  --+--> utils/samples.py: main faces
                                                              --> the model's decisions
                                                              --> figures (here), a curve
                                                                  (utils/plots.py), JSON

A photo of a known person is *recognised* when its main face gets the person's name, *wrong*
when it gets someone else's, *unknown* otherwise (lost to the rule); a photo without a face
counts as not recognised (lost to detection). A stranger is *accepted* when their face gets
any name. People of the test set whom the model does not know are strangers too.

The curve sweeps the decision rule's parameters over the same decisions (the distances do
not change, only where the line is drawn), so it shows what any other setting would give:
recognition against strangers accepted. ``baseline`` adds the plain face_recognition recipe
(KNN with k = round(sqrt(n)), distance weights, named when the nearest photo is within 0.6)
computed on the very same encodings.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from datastructure.classifier import UNKNOWN, FaceClassifier, accepted
from utils.plots import plot
from utils.recognition import options_for
from utils.samples import ProgressCallback, Sample, dataset_samples, folder_samples

log = logging.getLogger(__name__)

PLAIN_THRESHOLD = 0.6
RELIABILITY_BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


# ---------------------------------------------------------------------------------------
# Decisions -> figures

def rate(part: int, whole: int) -> float | None:
    """Return part / whole to 4 places; None when there is no whole."""
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


def evaluations_folder(data_dir) -> Path:
    """Return the folder the evaluation runs of a data folder go to."""
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
    lines.extend(losses(figures))
    return "\n".join(lines)


def losses(figures: dict, most: int = 20) -> list[str]:
    """Return lines naming, per person who lost test photos, how many went to detection (no
    face found), to the rule (face found, left unknown) and to a wrong name; most losses first."""
    people = [(name, f) for name, f in figures["per_person"].items() if f["photos"] > f["recognised"]]
    if not people:
        return []
    people.sort(key=lambda item: (item[1]["recognised"] - item[1]["photos"], item[0]))
    lines = [f"test photos lost, per person ({len(people)} of {len(figures['per_person'])} people lost any):",
             f"  {'person':<28} {'photos':>6} {'no face':>8} {'rule':>5} {'wrong':>6}"]
    for name, f in people[:most]:
        lines.append(f"  {name[:28]:<28} {f['photos']:>6} {f['no_face']:>8} {f['unknown']:>5} {f['wrong']:>6}")
    if len(people) > most:
        lines.append(f"  ... and {len(people) - most} more (see the JSON file)")
    return lines


def brief(figures: dict) -> dict:
    """Return the headline figures and the files, without curves or per-person tables (those
    stay in the JSON file): what the CLI prints."""
    keys = ("model", "dataset", "strangers_source", "rule", "photos", "recognised", "recognition_rate", "wrong",
            "wrong_rate", "unknown", "no_face", "strangers", "strangers_accepted", "strangers_accepted_rate", "files")
    result = {key: figures[key] for key in keys if key in figures}
    if "baseline" in figures:
        result["baseline"] = {key: figures["baseline"][key] for key in keys if key in figures["baseline"]}
    return result


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
    # the photos go through the pipeline predict would run for this model
    options = options_for(model.classifier, service.predict_options, service.config.faces.cnn_fallback_gallery_under)
    samples = dataset_samples(dataset, service.config, options, cache, progress)
    others = folder_samples(strangers, service.config, options, cache, progress) if strangers else []
    figures = {"model": model.id, "dataset": str(dataset), "strangers_source": str(strangers) if strangers else None,
               "created": datetime.now().isoformat(timespec="seconds"), "pipeline": options.signature(),
               **evaluation(model.classifier, samples, others, baseline=baseline)}
    folder = new_run_folder(evaluations_folder(service.config.data_dir))
    figures["files"] = saved(figures, folder, title=f"model {model.id} on {Path(str(dataset)).name}")
    log.info("evaluated model %s: %s", model.id, figures["files"])
    return figures
