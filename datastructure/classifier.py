"""The face classifier, in scikit-learn style.

KNN (``KNeighborsClassifier``) votes for a name; the unknown rule then asks two questions of
the 128-d dlib space, where distances are Euclidean whatever metric the vote used:

* is the face close enough to the chosen person? ``distance <= threshold_ * scale_[person]``,
  where ``scale_`` is how widely that person's own photos spread compared with a typical
  person's (their median distance from a photo to its nearest twin, shrunk towards everyone's
  median, clipped to [0.7, 1.4]): a person photographed in many settings gets a wider circle,
  a person whose photos are all alike a tighter one;
* is it clearly closer to them than to anyone else? ``distance <= ratio_ * runner_up_distance``.

Strangers are mostly caught by the second question: a stranger sits at similar distances from
several people, a known face sits much closer to its own. ``fit`` calibrates both from the
training encodings alone (leave-one-out: each photo against the others, and against everyone
else with its whole person held out as a stranger): of the (threshold, ratio) pairs that let
at most ``max_strangers`` of the simulated strangers through, it keeps the one that names the
most photos right. That choice is evidence, weighed against a prior (PRIOR_THRESHOLD,
PRIOR_RATIO: what lets at most 1% of real strangers into random small galleries) by the
number of simulated strangers n: the rule is (n x choice + PRIOR_PAIRS x prior) / (n +
PRIOR_PAIRS). A small gallery's few held-out members are all look-alike candidates, and
replacing the prior with their verdict picked the tightest ratio of the grid. Likewise the
typical spread that scales are measured against leans on large galleries' (PRIOR_SPREAD) by
the same weight. Parameters set to numbers are kept as they are.

Small galleries (under PRIOR_PAIRS photos, threshold and ratio calibrated) ask both questions of
each person's mean encoding instead of their nearest photo: the face must be within
CENTROID_THRESHOLD of the chosen person's mean and within CENTROID_RATIO of the nearest other
mean. A person's mean sits nearer their own new photos than any one photo does, while a
stranger who looks like one photo is no nearer the mean: on bench/small.py (encodings not yet
mirrored) a test face the plain recipe names and the nearest-photo rule loses sat 0.49 from its
person's mean (median), a stranger the rule refuses 0.57, where nearest-photo distances were
0.53 and 0.58. The person
is still chosen by the vote over photos.

A mean of n photos sits off the person's true centre by MEAN_NOISE / n in squared distance (the
within-person variance of dlib encodings, measured on lfw/people), so a face's squared distance
to it is inflated by that much: a person enrolled from one photo sat ~0.12 farther from their
new photos than a person with 20 (lfw/people: median 0.419 against 0.301). The mean rule
therefore measures *corrected* distances, sqrt(max(d^2 - MEAN_NOISE / n, 0)), for the chosen
person and for every other person alike (issue 25: a one-photo person enrolled into a gallery of
15-photo people was refused at 0.51 from his photo). Corrected, the median distance of a
person's new photo is 0.29 whatever n. Each person's own threshold is CENTROID_THRESHOLD, and a
person with one photo also keeps within the stranger budget from the LFW prior of dlib's
distances (ONE_PHOTO_TAIL: how often a stranger's corrected distance to one photo falls under
t): with N people, ``one_photo_threshold(N)`` lets at most max_strangers / N of strangers within
reach of each one-photo person, before the ratio test takes its share. A gallery of one photo
per person (not calibrated) and a gallery of one person decide by this rule too, unless
threshold or ratio are pinned.

The confidence of a name is P(the name is right) = sigmoid(a + b * distance / scale + c *
distance / runner_up_distance), with a, b, c fitted by logistic regression on the same
leave-one-out matches that the rule accepts (as many strangers as known faces asked), so a
confidence of 0.9 means about 9 in 10 such names are right. Unknown faces have confidence 0.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neighbors import KNeighborsClassifier

from datastructure.gallery import MAX_DELTA, SearchGallery, voted
from datastructure.index import EncodingIndex

UNKNOWN = "unknown"
# Without calibration pairs (one person, or one photo each) confidence falls through 0.5 at
# the classic 0.6 distance: sigmoid(7.2 - 12 * distance).
DEFAULT_CONFIDENCE = (7.2, -12.0, 0.0)
THRESHOLDS = np.round(np.arange(0.25, 0.605, 0.01), 2)
RATIOS = np.round(np.arange(0.50, 1.001, 0.02), 2)
MAX_CALIBRATION_QUERIES = 4000
CHUNK_ELEMENTS = 8_000_000  # distances computed at once: 64 MB of float64
SPREAD_QUERIES = 64         # photos per person measured for the person's spread
SPREAD_SHRINKAGE = 5        # a person's spread counts as this many photos of the typical spread more
SCALE_LIMITS = (0.7, 1.4)
MIN_CONFIDENCE_CASES = 10  # wrong and right accepted matches needed to fit on accepted matches alone
FALLBACK_THRESHOLD = 0.6   # face_recognition's tolerance: the threshold when nothing can be calibrated
# Issue 27: recognition a large gallery's rule may give up, against the prior rule on the same
# leave-one-out pairs, to keep strangers within budget before the calibration report and /health
# warn (its target: recognition at 10^6 within 2 points of 10^3; bench/distractors.py).
RECALL_BUDGET = 0.02
# From this many photos on, no rule can keep recognition within RECALL_BUDGET of a 10^3 gallery's
# at 1% strangers: bench/distractors.py's best rule knowing the answers (real gallery of 2,074
# photos + fitted distractors) named 96.8% at 10^3 distractors, 96.9% at 10^4, 94.3% at 10^5
# (2.5 points lost) and 91.3% at 10^6: the encoder's limit, which leave-one-out pairs drawn from
# the gallery itself cannot see (at 10^6 they said 0.95% strangers where real ones were 1.4%).
RECALL_BUDGET_SIZE = 100_000
# The prior: the (threshold, ratio) that let at most 1% of real strangers (lfw/strangers) through
# over random small galleries of LFW and web photos (bench/small.py, seed 0), and the number of
# simulated strangers the leave-one-out evidence must have to weigh as much as it.
PRIOR_THRESHOLD = 0.52
PRIOR_RATIO = 0.90
PRIOR_PAIRS = 200
PRIOR_SPREAD = 0.3341  # the typical person's spread (median distance to their nearest twin photo) on lfw/people
# Under PRIOR_PAIRS photos a person's spread is measured on a handful of photos: the threshold
# scale is shrunk towards 1 (its square root; on bench/small.py the full scale let 1.4-2.3% of
# strangers in, the square root 0.5-0.9%).
SMALL_SCALE_EXPONENT = 0.5
# Small galleries' rule on each person's mean encoding (see the module's docstring), for the
# pipeline's mirrored encodings (utils/faces.py), on corrected distances: 0.481 is the 0.49 on raw
# distances that bench/small.py measured (50 draws, seeds 0 to 5: 0.3-0.8% of real strangers in)
# at the draws' typical 10 photos per person, sqrt(0.49^2 - MEAN_NOISE / 10).
CENTROID_THRESHOLD = 0.481
CENTROID_RATIO = 0.90
# The within-person variance of mirrored dlib encodings: the mean squared distance from a photo to
# its person's mean, times n / (n - 1), pooled over lfw/people (90 people, 2,800 photos): 0.0886
# (per person, 10th-90th percentile 0.071-0.109; celebrities' web photos 0.121). bench/small.py's
# one_photo_prior() measures it again.
MEAN_NOISE = 0.0886
# The LFW prior of a one-photo person: (p, t) where a share p of strangers' photos fell within
# corrected distance t of one photo of someone else (lfw/people, each of the 90 people's photos
# against one random photo of every other, 3 draws: 72,090 pairs; bench/small.py one_photo_prior()).
ONE_PHOTO_TAIL = ((0.0005, 0.417), (0.001, 0.432), (0.002, 0.460), (0.005, 0.492), (0.01, 0.519), (0.02, 0.545))
# decision_is_certain's allowance on top of the caller's radius for float32 rounding (distances
# in the gallery's float32 are good to ~1e-6; this is far beyond it)
CERTAINTY_SLACK = 1e-4


@functools.lru_cache(maxsize=1)
def thread_pools() -> ThreadpoolController:
    """The process's thread pools, found once: looking them up costs ~4 ms, a vote ~1 ms."""
    return ThreadpoolController()


@dataclass(frozen=True)
class Decision:
    """What the classifier says of one face."""

    name: str
    confidence: float
    distance: float
    candidate: str            # the person the vote chose, even when the face stays unknown
    runner_up: str | None
    runner_up_distance: float | None


def one_photo_threshold(people: int, max_strangers: float = 0.01) -> float:
    """The corrected distance within which at most max_strangers / people of strangers fall of
    one photo (ONE_PHOTO_TAIL, interpolated in log p; beyond its ends, extrapolated linearly)."""
    share = max(float(max_strangers), 1e-9) / max(int(people), 1)
    logs = np.log([p for p, _ in ONE_PHOTO_TAIL])
    reach = np.array([t for _, t in ONE_PHOTO_TAIL])
    slope = (reach[-1] - reach[0]) / (logs[-1] - logs[0])
    at = math.log(share)
    if at < logs[0] or at > logs[-1]:
        end = 0 if at < logs[0] else -1
        return float(reach[end] + slope * (at - logs[end]))
    return float(np.interp(at, logs, reach))


def evidence_weight(pairs: int) -> float:
    """The share of the leave-one-out choice in the rule: pairs / (pairs + PRIOR_PAIRS)."""
    return pairs / (pairs + PRIOR_PAIRS)


def sigmoid(value):
    """Return the logistic function of ``value`` (a number or an array)."""
    return 1.0 / (1.0 + np.exp(-value))


def squared_distances(queries: np.ndarray, encodings: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """Return the (queries x encodings) matrix of squared Euclidean distances, in the dtype
    of the arguments (``norms``: the encodings' squared norms, when already known)."""
    if norms is None:
        norms = np.einsum("ij,ij->i", encodings, encodings)
    product = queries @ encodings.T
    product *= -2.0
    product += np.einsum("ij,ij->i", queries, queries)[:, None]
    product += norms[None, :]
    return product


def nearest_per_class(squared: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Return each row's distance to the nearest photo of each class; ``starts`` gives where
    each class begins in the columns, which are sorted by class."""
    return np.sqrt(np.maximum(np.minimum.reduceat(squared, starts, axis=1), 0.0))


def two_nearest(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per row the nearest class index, its distance and the runner-up's distance."""
    if distances.shape[1] == 1:
        return np.zeros(len(distances), int), distances[:, 0], np.full(len(distances), np.inf)
    order = np.argpartition(distances, 1, axis=1)[:, :2]
    rows = np.arange(len(distances))
    first = np.where(distances[rows, order[:, 0]] <= distances[rows, order[:, 1]], order[:, 0], order[:, 1])
    second = np.where(first == order[:, 0], order[:, 1], order[:, 0])
    return first, distances[rows, first], distances[rows, second]


def accepted(distance, runner_up, threshold, ratio):
    """The unknown rule: close enough, and clearly closer than the runner-up.

    ``threshold`` is the person's own (``threshold_ * scale_``), a number or an array."""
    return (distance <= threshold) & (distance <= ratio * runner_up)


def rule_settled(low: np.ndarray, high: np.ndarray, candidates: np.ndarray, thresholds: np.ndarray,
                 ratio: float) -> bool:
    """Whether the unknown rule gives one answer for every distance vector between ``low`` and
    ``high`` (one bound each per person), given that the vote can only choose among
    ``candidates``: one candidate accepted at its farthest and the runner-up at its nearest, or
    every candidate refused at its nearest and its runner-up at its farthest (see
    ``decision_is_certain``)."""
    def runner_up(bounds: np.ndarray, person: int) -> float:
        others = np.delete(bounds, person)
        return float(others.min()) if len(others) else math.inf

    if len(candidates) == 1:
        person = int(candidates[0])
        if high[person] <= thresholds[person] and high[person] <= ratio * runner_up(low, person):
            return True
    return all(low[p] > thresholds[p] or low[p] > ratio * runner_up(high, int(p)) for p in candidates)


def confidence_features(distance, runner_up, scale=1.0):
    """(distance / the person's scale, distance / runner-up distance) per face."""
    distance, runner_up = np.atleast_1d(distance).astype(float), np.atleast_1d(runner_up).astype(float)
    ratio = np.where(np.isfinite(runner_up), distance / np.maximum(runner_up, 1e-9), 0.5)
    return np.column_stack([distance / np.atleast_1d(scale), ratio])


def twin_median(photos: np.ndarray, rng) -> tuple[float, int]:
    """(median distance from a photo to the nearest other photo, photos measured) of one
    person's photos, on up to SPREAD_QUERIES of them; (nan, 0) under two photos."""
    count = len(photos)
    if count < 2:
        return math.nan, 0
    queries = np.arange(count)
    if count > SPREAD_QUERIES:
        queries = np.sort(rng.choice(count, SPREAD_QUERIES, replace=False))
    squared = squared_distances(photos[queries], photos)
    squared[np.arange(len(queries)), queries] = np.inf
    return float(np.median(np.sqrt(np.maximum(squared.min(axis=1), 0.0)))), len(queries)


class FaceClassifier(ClassifierMixin, BaseEstimator):
    """KNN over face encodings with a calibrated unknown rule and confidence.

    ``threshold`` and ``ratio`` left as None are calibrated by ``fit``; numbers pin them.
    ``max_strangers`` is the share of simulated strangers calibration may let through.
    ``index_min``: galleries of this many encodings or more are searched through an index
    (datastructure/gallery.py), smaller ones exhaustively; ``nprobe``: the index's cells per query.
    """

    def __init__(self, n_neighbors=1, weights="distance", metric="euclidean", algorithm="auto",
                 threshold=None, ratio=None, max_strangers=0.01, index_min=30_000, nprobe=16):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.algorithm = algorithm
        self.threshold = threshold
        self.ratio = ratio
        self.max_strangers = max_strangers
        self.index_min = index_min
        self.nprobe = nprobe

    # -- learning --------------------------------------------------------------------
    def fit(self, X, y):
        """Learn the gallery (X: n x 128 encodings, y: names) and calibrate the unknown rule
        and the confidence on it (see the module's docstring)."""
        self._index(X, y)
        self.spread_, spread_figures = self._spreads()
        # a person's spread is measured against the typical spread of large galleries as much as
        # against this gallery's: in a small gallery of web photos every person may spread wide
        weight = evidence_weight(len(self.labels_))
        spread_figures["typical_used"] = round(weight * spread_figures["typical"] + (1 - weight) * PRIOR_SPREAD, 4)
        self.scale_ = self._scales(self.spread_, spread_figures["typical_used"])
        if len(self.labels_) < PRIOR_PAIRS:
            self.scale_ = self.scale_ ** SMALL_SCALE_EXPONENT
        self.calibration_ = {**self._calibration(), "spread": spread_figures}
        self.threshold_ = self.calibration_["threshold"]
        self.ratio_ = self.calibration_["ratio"]
        self.confidence_coef_ = tuple(self.calibration_["confidence"])
        self.rule_ = self._rule()
        self.calibration_["rule"] = self.rule_
        if self.rule_ == "centroid":
            self.calibration_["centroid"] = self.centroid_figures()
        return self

    def _rule(self) -> str:
        """"centroid" for a small gallery whose threshold and ratio are not pinned (calibrated, or
        one photo per person, or one person), else "nearest" (see the module's docstring)."""
        small = len(self.labels_) < PRIOR_PAIRS
        free = self.threshold is None and self.ratio is None
        return "centroid" if small and free else "nearest"

    def refitted(self, X, y, *, changed: int, recalibrate_share: float) -> "FaceClassifier":
        """Return a new classifier with these parameters fitted on (X, y), a gallery that differs
        from this one's by ``changed`` photos (added, removed or renamed).

        Calibration is O(n^2) in the gallery (capped at MAX_CALIBRATION_QUERIES queries), so
        a gallery changed by a few photos keeps this one's threshold, ratio and confidence:
        the changes since the last calibration are counted, and the gallery is calibrated
        again once they exceed ``recalibrate_share`` of the gallery it was calibrated on, or
        when this one was never calibrated (small galleries, where calibrating is cheap).
        The vote index and each person's spread are always rebuilt; they cost O(n).
        """
        calibration = dict(getattr(self, "calibration_", {}) or {})
        gallery = int(calibration.get("gallery") or len(self.labels_))
        since = int(calibration.get("changed_since", 0)) + int(changed)
        fresh = type(self)(**self.get_params())
        fresh.negatives_ = self.negatives.kept(np.unique(np.asarray(y).astype(str)))  # a removed person's go
        if not calibration.get("calibrated") or since > recalibrate_share * gallery:
            fresh.fit(X, y)
            fresh.calibration_ = {**fresh.calibration_, "gallery": int(len(fresh.labels_)), "changed_since": 0}
            return fresh
        fresh._index(X, y, cells=self.gallery_.index)  # the index's cells are kept too
        fresh.spread_, spread_figures = fresh._spreads(reuse=self)
        fresh.scale_ = fresh._scales(fresh.spread_, spread_figures["typical"])
        fresh.threshold_, fresh.ratio_ = self.threshold_, self.ratio_
        fresh.confidence_coef_ = tuple(self.confidence_coef_)
        fresh.rule_ = getattr(self, "rule_", "nearest")
        fresh.calibration_ = {**calibration, "spread": spread_figures, "gallery": gallery, "changed_since": since}
        if fresh.rule_ == "centroid":  # its one-photo threshold follows the number of people
            fresh.calibration_["centroid"] = fresh.centroid_figures()
        return fresh

    def extendable(self, rows: int, *, recalibrate_share: float) -> bool:
        """Whether ``rows`` new photos can join this classifier's gallery as a delta (``extended``):
        an indexed, calibrated gallery whose calibration is not due, and a delta within MAX_DELTA."""
        calibration = getattr(self, "calibration_", {}) or {}
        gallery = int(calibration.get("gallery") or len(self.gallery_))
        since = int(calibration.get("changed_since", 0)) + int(rows)
        return (self.metric == "euclidean" and self.gallery_.index.approximate and bool(calibration.get("calibrated"))
                and gallery > 0 and since <= recalibrate_share * gallery
                and len(self.gallery_.delta) + int(rows) <= MAX_DELTA)

    def extended(self, X, y) -> "FaceClassifier":
        """Return a new classifier: this one plus the photos (X, y), kept in the gallery's delta.

        Nothing of the base is copied or searched again (its memory-mapped encodings and index
        are shared); the threshold, ratio and confidence are kept as ``refitted`` keeps them,
        and only the spreads of the people who got photos are measured. See ``extendable``."""
        X = np.asarray(X, dtype=np.float32).reshape(-1, 128)
        y = np.asarray(y).astype(str)
        names = np.unique(y)
        at = np.minimum(np.searchsorted(self.classes_, names), max(len(self.classes_) - 1, 0))
        new_names = names[self.classes_[at] != names] if len(self.classes_) else names
        inserted = np.searchsorted(self.classes_, new_names)
        fresh = type(self)(**self.get_params())
        fresh.classes_ = np.insert(self.classes_, inserted, new_names) if len(new_names) else self.classes_
        fresh.gallery_ = self.gallery_.with_delta(X, np.searchsorted(fresh.classes_, y), inserted)
        fresh.norms_, fresh.knn_ = fresh.gallery_.norms, None
        fresh.threshold_, fresh.ratio_ = self.threshold_, self.ratio_
        fresh.confidence_coef_ = tuple(self.confidence_coef_)
        typical = float(self.calibration_.get("spread", {}).get("typical", PRIOR_SPREAD))
        spread = np.insert(self.spread_, inserted, typical) if len(new_names) else self.spread_.copy()
        rng = np.random.default_rng(0)
        for cls in np.unique(np.searchsorted(fresh.classes_, y)):
            photos = fresh.gallery_.photos(fresh.gallery_.rows_of(cls))
            median, measured = twin_median(photos, rng)
            spread[cls] = typical if measured == 0 else (measured * median + SPREAD_SHRINKAGE * typical) \
                / (measured + SPREAD_SHRINKAGE)
        fresh.spread_ = spread
        fresh.scale_ = fresh._scales(spread, typical)
        fresh.calibration_ = {**self.calibration_,
                              "changed_since": int(self.calibration_.get("changed_since", 0)) + len(y)}
        fresh.negatives_ = self.negatives
        return fresh

    def stranger_rate(self) -> dict:
        """Return what the current (threshold, ratio) do on this gallery's leave-one-out pairs:
        the share of simulated strangers accepted and of photos recognised (O(n^2); for checks)."""
        pairs = self._leave_one_out_pairs()
        if pairs is None:
            return {"stranger_pairs": 0, "strangers_accepted": None, "recognised": None}
        (g_distance, g_runner, g_right, g_scale), (s_distance, s_runner, s_scale) = pairs
        return {"stranger_pairs": int(len(s_distance)),
                "strangers_accepted": round(float(np.mean(accepted(s_distance, s_runner, self.threshold_ * s_scale, self.ratio_))), 4),
                "recognised": round(float(np.mean(accepted(g_distance, g_runner, self.threshold_ * g_scale, self.ratio_) & g_right)), 4)}

    def _index(self, X, y, cells: EncodingIndex | None = None) -> None:
        """Keep the encodings sorted by person, in float32 (dlib's are good to ~1e-7 of
        their spread), and index them; a metric other than euclidean votes with scikit-learn."""
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(str)
        order = np.argsort(y, kind="stable")
        self.encodings_, self.labels_ = X[order], y[order]
        self.classes_, self.starts_ = np.unique(self.labels_, return_index=True)
        self.counts_ = np.diff(np.append(self.starts_, len(self.labels_)))
        index = EncodingIndex(min_size=self.index_min, nprobe=self.nprobe).fit(self.encodings_, cells)
        self._searched(SearchGallery(self.encodings_, self.starts_, self.counts_, index))

    def _searched(self, gallery: SearchGallery) -> None:
        self.gallery_ = gallery
        self.norms_ = gallery.norms
        self.centroids_ = None  # each person's mean encoding, made on first use (centroid rule)
        self.knn_ = None
        if self.metric != "euclidean":
            self.knn_ = KNeighborsClassifier(
                n_neighbors=min(self.n_neighbors, len(gallery)), weights=self.weights,
                metric=self.metric, algorithm=self.algorithm).fit(gallery.encodings, self.labels_)

    def __getattr__(self, name):
        # a gallery restored from its files has no per-photo label array (10^6 strings would
        # cost each worker ~100 MB); the few callers that want one get it made on first use
        if name == "labels_" and "classes_" in self.__dict__ and ("counts_" in self.__dict__ or "gallery_" in self.__dict__):
            self.labels_ = np.repeat(self.classes_, self.counts_)
            return self.labels_
        # a gallery with a delta keeps it apart from its sorted base; callers that want every
        # photo sorted by person (calibration, evaluation, a full refit) get them merged, once
        if name in ("encodings_", "starts_", "counts_") and "gallery_" in self.__dict__ and "classes_" in self.__dict__:
            gallery = self.__dict__["gallery_"]
            rows = np.arange(len(gallery))
            order = np.argsort(gallery.class_of(rows), kind="stable")
            self.encodings_ = gallery.photos(order)
            self.counts_ = gallery.total_counts()
            self.starts_ = np.concatenate([[0], np.cumsum(self.counts_)[:-1]]).astype(np.int64)
            return getattr(self, name)
        raise AttributeError(name)

    def _spreads(self, reuse: "FaceClassifier | None" = None) -> tuple[np.ndarray, dict]:
        """Return each person's spread and the figures behind it.

        A person's spread is the median distance from one of their photos to the nearest other
        photo of them (measured on up to SPREAD_QUERIES photos), shrunk towards the typical
        person's (the median over people) as if SPREAD_SHRINKAGE more photos had the typical
        spread; a person with one photo has the typical spread.

        ``reuse``: a fitted classifier whose calibration is kept (``refitted``): people whose
        photos are unchanged keep their measured spread, the others are measured, and the
        typical spread stays the calibrated one, so a small change costs O(its people).
        """
        rng = np.random.default_rng(0)
        medians = np.full(len(self.classes_), np.nan)
        measured = np.zeros(len(self.classes_), int)
        known_before = reuse._measured_spreads() if reuse is not None else {}
        fingerprints = self._fingerprints()
        for index, (start, count) in enumerate(zip(self.starts_, self.counts_)):
            before = known_before.get((str(self.classes_[index]), fingerprints[index]))
            if before is not None:
                medians[index], measured[index] = before
                continue
            if count < 2:
                continue
            medians[index], measured[index] = twin_median(self.encodings_[start:start + count], rng)
        known = ~np.isnan(medians)
        # nobody with two photos (one reference photo each): large galleries' typical spread, so
        # that every scale is 1 and the threshold stays the calibrated (or fallback) one
        typical = float(np.median(medians[known])) if known.any() else PRIOR_SPREAD
        if reuse is not None:
            typical = float(reuse.calibration_.get("spread", {}).get("typical", typical))
        self.spread_medians_ = medians  # kept in memory only: a later refit reuses them
        spread = np.where(known, (measured * np.nan_to_num(medians) + SPREAD_SHRINKAGE * typical)
                          / (measured + SPREAD_SHRINKAGE), typical)
        figures = {"typical": round(typical, 4), "people_measured": int(known.sum()),
                   "shrinkage": SPREAD_SHRINKAGE, "scale_limits": list(SCALE_LIMITS)}
        if known.any():
            scales = self._scales(spread, typical)
            figures.update({"scale_min": round(float(scales.min()), 4), "scale_max": round(float(scales.max()), 4)})
        return spread, figures

    def _fingerprints(self) -> np.ndarray:
        """One number per person that changes when any of their photos does (sum of encodings)."""
        return np.add.reduceat(self.encodings_.sum(axis=1), self.starts_) if len(self.starts_) else np.zeros(0)

    def _measured_spreads(self) -> dict:
        """{(person, fingerprint): (median, photos measured)} of this fitted classifier's people."""
        measured = np.minimum(self.counts_, SPREAD_QUERIES)
        medians = getattr(self, "spread_medians_", None)
        if medians is None:  # restored from disk: undo the shrinkage of the saved spreads
            typical = float(self.calibration_.get("spread", {}).get("typical", math.nan))
            if math.isnan(typical) or np.isnan(self.spread_).any():
                return {}
            with np.errstate(divide="ignore", invalid="ignore"):
                medians = np.where(self.counts_ >= 2, (self.spread_ * (measured + SPREAD_SHRINKAGE)
                                                       - SPREAD_SHRINKAGE * typical) / measured, np.nan)
        return {(str(name), fingerprint): (median, count if not np.isnan(median) else 0)
                for name, fingerprint, median, count in zip(self.classes_, self._fingerprints(), medians, measured)}

    @staticmethod
    def _scales(spread: np.ndarray, typical: float) -> np.ndarray:
        """Return each person's threshold scale: spread / typical spread, clipped."""
        if typical <= 0:
            return np.ones(len(spread))
        return np.clip(np.asarray(spread, dtype=float) / typical, *SCALE_LIMITS)

    def _calibration(self) -> dict:
        """Choose threshold, ratio and the confidence mapping from leave-one-out pairs."""
        pairs = self._leave_one_out_pairs()
        fixed_threshold = None if self.threshold is None else float(self.threshold)
        fixed_ratio = None if self.ratio is None else float(self.ratio)
        if pairs is None:
            return {"threshold": FALLBACK_THRESHOLD if fixed_threshold is None else fixed_threshold,
                    "ratio": 1.0 if fixed_ratio is None else fixed_ratio,
                    "confidence": list(DEFAULT_CONFIDENCE), "calibrated": False,
                    "reason": "needs two people and a person with two photos"}
        genuine, strangers = pairs
        thresholds = np.array([fixed_threshold]) if fixed_threshold is not None else THRESHOLDS
        ratios = np.array([fixed_ratio] if fixed_ratio is not None else RATIOS)
        g_distance, g_runner, g_right, g_scale = genuine
        s_distance, s_runner, s_scale = strangers
        # every (threshold, ratio) at once: rows thresholds, columns ratios
        g_close = g_distance[None, :] <= thresholds[:, None] * g_scale[None, :]
        s_close = s_distance[None, :] <= thresholds[:, None] * s_scale[None, :]
        g_margin = g_distance[None, :] <= ratios[:, None] * g_runner[None, :]
        s_margin = s_distance[None, :] <= ratios[:, None] * s_runner[None, :]
        recognised = np.einsum("tq,rq->tr", (g_close & g_right[None, :]).astype(float), g_margin.astype(float)) / len(g_right)
        stranger_rate = np.einsum("tq,rq->tr", s_close.astype(float), s_margin.astype(float)) / len(s_distance)
        feasible = stranger_rate <= self.max_strangers + 1e-12
        if feasible.any():  # within the stranger budget, recognise most; ties: fewer strangers
            key = np.where(feasible, recognised - 1e-6 * stranger_rate, -np.inf)
        else:  # outside it, let the fewest strangers in
            key = -stranger_rate + 1e-6 * recognised
        row, column = np.unravel_index(int(np.argmax(key)), key.shape)
        # The leave-one-out choice is the evidence; the prior, what galleries in general need.
        # Few simulated strangers (a small gallery: its few held-out members are all look-alike
        # candidates) say little, so the choice shrinks towards the prior by their number.
        weight = evidence_weight(len(s_distance))
        threshold = fixed_threshold if fixed_threshold is not None else \
            round(weight * float(thresholds[row]) + (1 - weight) * PRIOR_THRESHOLD, 4)
        ratio = fixed_ratio if fixed_ratio is not None else \
            round(weight * float(ratios[column]) + (1 - weight) * PRIOR_RATIO, 4)
        g_kept = accepted(g_distance, g_runner, threshold * g_scale, ratio)
        s_kept = accepted(s_distance, s_runner, threshold * s_scale, ratio)
        confidence, confidence_fit = self._fitted_confidence(genuine, strangers, threshold, ratio)
        source = "pinned" if fixed_threshold is not None else "calibrated"
        prior_g = accepted(g_distance, g_runner, PRIOR_THRESHOLD * g_scale, PRIOR_RATIO) & g_right
        prior_s = accepted(s_distance, s_runner, PRIOR_THRESHOLD * s_scale, PRIOR_RATIO)
        budget = self._budget(float(np.mean(g_kept & g_right)), float(np.mean(s_kept)),
                              float(np.mean(prior_g)), float(np.mean(prior_s)))
        return {"threshold": threshold, "ratio": ratio, "confidence": confidence,
                "confidence_fit": confidence_fit, "calibrated": True, "budget": budget,
                "max_strangers": self.max_strangers,
                "recognised": round(float(np.mean(g_kept & g_right)), 4),
                "strangers_accepted": round(float(np.mean(s_kept)), 4),
                "wrong": round(float(np.mean(g_kept & ~g_right)), 4),
                "evidence": {"threshold": float(thresholds[row]), "ratio": float(ratios[column]),
                             "weight": round(weight, 4), "recognised": round(float(recognised[row, column]), 4),
                             "strangers_accepted": round(float(stranger_rate[row, column]), 4)},
                "prior": {"threshold": PRIOR_THRESHOLD, "ratio": PRIOR_RATIO, "pairs": PRIOR_PAIRS},
                "genuine_pairs": int(len(g_distance)), "stranger_pairs": int(len(s_distance)),
                "threshold_source": source, "ratio_source": "pinned" if fixed_ratio is not None else "calibrated",
                # the leave-one-out figures behind the evidence: [value, recognised, strangers accepted] with the other parameter fixed
                "curve": {"ratio": [[float(value), round(float(recognised[row, i]), 4), round(float(stranger_rate[row, i]), 4)]
                                    for i, value in enumerate(ratios)],
                          "threshold": [[float(value), round(float(recognised[i, column]), 4),
                                         round(float(stranger_rate[i, column]), 4)] for i, value in enumerate(thresholds)]}}

    def _budget(self, recognised: float, strangers: float, prior_recognised: float, prior_strangers: float) -> dict:
        """What this gallery's size costs (issue 27), on the leave-one-out pairs: the chosen rule's
        recognition and strangers accepted next to the prior rule's (what a small gallery decides
        by), and warnings when a gallery of PRIOR_PAIRS photos or more cannot keep its strangers
        within max_strangers (STRANGER_BUDGET_EXCEEDED), or keeps them there only by giving up more
        than RECALL_BUDGET of the prior rule's recognition, or holds RECALL_BUDGET_SIZE photos or
        more, where the encoder itself loses more than that (RECALL_BUDGET_EXCEEDED)."""
        warnings = []
        if len(self.labels_) >= PRIOR_PAIRS:
            if strangers > self.max_strangers + 1e-12:
                warnings.append("STRANGER_BUDGET_EXCEEDED")
            if recognised < prior_recognised - RECALL_BUDGET or len(self.labels_) >= RECALL_BUDGET_SIZE:
                warnings.append("RECALL_BUDGET_EXCEEDED")
        return {"max_strangers": self.max_strangers, "recall_budget": RECALL_BUDGET, "recall_budget_size": RECALL_BUDGET_SIZE,
                "recognised": round(recognised, 4), "strangers_accepted": round(strangers, 4),
                "prior_rule": {"recognised": round(prior_recognised, 4), "strangers_accepted": round(prior_strangers, 4)},
                "gallery": int(len(self.labels_)), "warnings": warnings}

    def budget_warnings(self) -> list[str]:
        """The calibration's warnings on this gallery's size (``_budget``); none for old models."""
        return list((getattr(self, "calibration_", {}) or {}).get("budget", {}).get("warnings", []))

    def _leave_one_out_pairs(self):
        """Return (distance, runner-up distance, correct, scale) for each training photo queried
        against the others, and (distance, runner-up distance, scale) with its person held out.

        Queries are a random subset of at most MAX_CALIBRATION_QUERIES photos, each compared
        with every training photo in chunks of at most CHUNK_ELEMENTS distances."""
        counts = self.counts_
        if len(self.classes_) < 2 or counts.max() < 2:
            return None
        rng = np.random.default_rng(0)
        queries = np.arange(len(self.labels_))
        if len(queries) > MAX_CALIBRATION_QUERIES:
            queries = np.sort(rng.choice(queries, MAX_CALIBRATION_QUERIES, replace=False))
        own = np.searchsorted(self.starts_, queries, side="right") - 1
        if self.gallery_.index.approximate:
            return self._indexed_pairs(queries, own)
        genuine, strangers = [], []
        # float32 halves the work of the one heavy product; distances stay good to ~1e-4
        encodings = self.encodings_.astype(np.float32)
        norms = np.einsum("ij,ij->i", encodings, encodings)
        rows_per_chunk = max(1, min(512, CHUNK_ELEMENTS // len(self.labels_)))
        for chunk in np.array_split(np.arange(len(queries)), max(1, -(-len(queries) // rows_per_chunk))):
            index, cls = queries[chunk], own[chunk]
            squared = squared_distances(encodings[index], encodings, norms)
            rows = np.arange(len(chunk))
            squared[rows, index] = np.inf  # leave the photo itself out
            distances = nearest_per_class(squared, self.starts_).astype(np.float64)
            first, d1, d2 = two_nearest(distances)
            valid = counts[cls] > 1
            genuine.append((d1[valid], d2[valid], (first == cls)[valid], self.scale_[first][valid]))
            distances[rows, cls] = np.inf  # the whole person held out: a stranger
            nearest, s1, s2 = two_nearest(distances)
            strangers.append((s1, s2, self.scale_[nearest]))
        genuine = tuple(np.concatenate(parts) for parts in zip(*genuine))
        strangers = tuple(np.concatenate(parts) for parts in zip(*strangers))
        return genuine, strangers

    def _indexed_pairs(self, queries: np.ndarray, own: np.ndarray):
        """``_leave_one_out_pairs`` through the index: each query against the people among its
        candidates, exactly (an exhaustive pass over 10^6 photos per query would take minutes)."""
        gallery, counts = self.gallery_, self.counts_
        found = gallery.index.search(gallery.encodings[queries], gallery.candidates)
        genuine, strangers = [], []
        for query, cls, rows in zip(queries, own, found):
            encoding = gallery.encodings[query]
            if counts[cls] > 1:
                near = gallery.nearest_people(encoding, skip_row=query, rows=rows)
                (first, d1, d2) = two_nearest(near.distances[None, :])
                genuine.append((d1[0], d2[0], near.classes[first[0]] == cls, self.scale_[near.classes[first[0]]]))
            near = gallery.nearest_people(encoding, skip_row=query, skip_class=cls, rows=rows)
            (first, s1, s2) = two_nearest(near.distances[None, :])
            strangers.append((s1[0], s2[0], self.scale_[near.classes[first[0]]]))
        genuine = tuple(np.array(column) for column in zip(*genuine))
        strangers = tuple(np.array(column) for column in zip(*strangers))
        return genuine, strangers

    @staticmethod
    def _fitted_confidence(genuine, strangers, threshold: float, ratio: float) -> tuple[list, str]:
        """Logistic regression of 'this name is right' on (distance / scale, distance / runner-up).

        Fitted on the matches the chosen rule accepts, when they hold enough right and wrong
        ones; else on every match; else the default mapping. Returns (a, b, c) and which."""
        from sklearn.linear_model import LogisticRegression

        g_distance, g_runner, g_right, g_scale = genuine
        s_distance, s_runner, s_scale = strangers
        features = np.vstack([confidence_features(g_distance, g_runner, g_scale),
                              confidence_features(s_distance, s_runner, s_scale)])
        truth = np.concatenate([g_right, np.zeros(len(s_distance), bool)])
        kept = np.concatenate([accepted(g_distance, g_runner, threshold * g_scale, ratio),
                               accepted(s_distance, s_runner, threshold * s_scale, ratio)])
        for mask, name in ((kept, "accepted matches"), (np.ones(len(truth), bool), "all matches")):
            right = int(truth[mask].sum())
            if min(right, int(mask.sum()) - right) >= MIN_CONFIDENCE_CASES:
                model = LogisticRegression(C=10.0, max_iter=1000).fit(features[mask], truth[mask])
                return [float(model.intercept_[0]), float(model.coef_[0][0]), float(model.coef_[0][1])], name
        return list(DEFAULT_CONFIDENCE), "default"

    # -- prediction ------------------------------------------------------------------
    def person_scales(self, names) -> np.ndarray:
        """Return each named person's threshold scale (see the module's docstring)."""
        index = np.searchsorted(self.classes_, np.asarray(names, dtype=str))
        return self.scale_[np.clip(index, 0, len(self.classes_) - 1)]

    def person_thresholds(self, names) -> np.ndarray:
        """Return the distance threshold of each named person (``threshold_ * scale_``)."""
        return self.threshold_ * self.person_scales(names)

    def decisions(self, X) -> list[Decision]:
        """Return a Decision per encoding: name or unknown, confidence, distances."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float32))
        if len(X) == 0:
            return []
        gallery = self.gallery_
        votes = found = None
        if self.knn_ is not None:
            # One face is a tiny search: scikit-learn's OpenMP threads would cost more than the
            # search and fight the server's worker processes for the cores.
            with thread_pools().limit(limits=1, user_api="openmp"):
                votes = np.searchsorted(self.classes_, self.knn_.predict(X))
        elif gallery.index.approximate:
            found = gallery.index.search(X, gallery.candidates)
        result = []
        for number, query in enumerate(X):
            near = gallery.nearest_people(query, rows=None if found is None else found[number],
                                          want=len(self.classes_) if votes is not None else 2)
            chosen_class = int(votes[number]) if votes is not None else voted(
                gallery.class_of(near.rows), near.row_distances, self.n_neighbors, self.weights)
            chosen = int(np.flatnonzero(near.classes == chosen_class)[0])
            vote = self.classes_[chosen_class]
            row, others_classes = near.distances, np.delete(near.classes, chosen)
            distance = float(row[chosen])
            others = np.delete(row, chosen)
            runner = int(np.argmin(others)) if len(others) else None
            runner_distance = float(others[runner]) if runner is not None else math.inf
            runner_name = None if runner is None else str(self.classes_[others_classes[runner]])
            scale = float(self.scale_[chosen_class])
            if getattr(self, "rule_", "nearest") == "centroid":
                known = self._near_mean(query, chosen_class)
            else:
                known = bool(accepted(distance, runner_distance, self.threshold_ * scale, self.ratio_))
            known = known and not self.negatives.refuse(query, str(vote), distance)
            confidence = self.confidence(distance, runner_distance, scale) if known else 0.0
            result.append(Decision(
                name=str(vote) if known else UNKNOWN, confidence=round(confidence, 4),
                distance=round(distance, 4), candidate=str(vote), runner_up=runner_name,
                runner_up_distance=None if runner is None else round(runner_distance, 4)))
        return result

    def decision_is_certain(self, X, radius: float) -> np.ndarray:
        """Return, per encoding, whether its name is settled within ``radius``: True only where
        every encoding within ``radius`` of it gets the same name from ``decisions`` (the same
        person, or unknown), so a face known to lie within ``radius`` of X[i] (the mirrored mean
        of a first pass, utils/faces.py) may be named from X[i] alone.

        The contract, to keep in step with ``decisions`` and the unknown rule: by the triangle
        inequality each distance the rule reads (to a photo, or to a person's mean) moves by at
        most ``radius``. The vote can choose only people with a photo within the k-th nearest
        photo's distance + 2 x radius; the answer is settled when there is one such person and
        the rule accepts them at every distance in the bounds, or when the rule refuses every such
        person at every distance in the bounds. False (not known: decide on the exact encoding)
        for an indexed gallery (its candidates depend on the query) or a metric other than
        Euclidean. A change to the rule must change this method with it (tests/test_mirror.py).
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float32))
        certain = np.zeros(len(X), bool)
        gallery = self.gallery_
        if (self.knn_ is not None or gallery.index.approximate or not len(X) or not len(self.classes_)
                or len(self.negatives)):  # a negative may refuse a name anywhere: decide on the exact encoding
            return certain
        slack = float(radius) + CERTAINTY_SLACK
        centroid = getattr(self, "rule_", "nearest") == "centroid"
        for number, query in enumerate(X):
            near = gallery.nearest_people(query, want=len(self.classes_))
            k = min(max(int(self.n_neighbors), 1), len(near.row_distances))
            kth = float(np.partition(near.row_distances, k - 1)[k - 1])
            candidates = np.unique(gallery.class_of(near.rows[near.row_distances <= kth + 2 * slack]))
            if centroid:  # raw distances to the means move by the radius; the rule reads them corrected
                raw = np.linalg.norm(self.centroid_means() - np.asarray(query, dtype=np.float64), axis=1)
                low, high = self.corrected(np.maximum(raw - slack, 0.0)), self.corrected(raw + slack)
                thresholds, ratio = self.centroid_thresholds(), CENTROID_RATIO
            else:
                distances = np.full(len(self.classes_), np.inf)
                distances[near.classes] = near.distances
                low, high = distances - slack, distances + slack
                thresholds, ratio = self.threshold_ * self.scale_, self.ratio_
            certain[number] = rule_settled(low, high, candidates, thresholds, ratio)
        return certain

    def _near_mean(self, query: np.ndarray, chosen_class: int) -> bool:
        """The mean rule: is ``query``'s corrected distance to the chosen person's mean within
        their threshold (``centroid_thresholds``), and within CENTROID_RATIO of the nearest other
        person's corrected distance? (see the module's docstring)"""
        distances = self.centroid_distances(query)
        others = np.delete(distances, chosen_class)
        runner_up = float(others.min()) if len(others) else math.inf
        return bool(accepted(float(distances[chosen_class]), runner_up,
                             float(self.centroid_thresholds()[chosen_class]), CENTROID_RATIO))

    def centroid_distances(self, query: np.ndarray) -> np.ndarray:
        """Each person's corrected distance from ``query`` to their mean encoding:
        sqrt(max(d^2 - MEAN_NOISE / n, 0)), n their photos (see the module's docstring)."""
        return self.corrected(np.linalg.norm(self.centroid_means() - np.asarray(query, dtype=np.float64), axis=1))

    def centroid_means(self) -> np.ndarray:
        """Each person's mean encoding (computed once)."""
        if self.centroids_ is None:
            sums = np.add.reduceat(np.asarray(self.encodings_, dtype=np.float64), self.starts_, axis=0)
            self.centroids_ = sums / self.counts_[:, None]
        return self.centroids_

    def corrected(self, distances: np.ndarray) -> np.ndarray:
        """Distances to each person's mean less the noise of a mean of their n photos:
        sqrt(max(d^2 - MEAN_NOISE / n, 0)), which grows with d."""
        return np.sqrt(np.maximum(np.asarray(distances) ** 2 - MEAN_NOISE / self.counts_, 0.0))

    def centroid_thresholds(self) -> np.ndarray:
        """Each person's threshold on corrected distances under the mean rule: CENTROID_THRESHOLD,
        and for a person with one photo at most ``one_photo_threshold`` of the gallery's size."""
        one = min(CENTROID_THRESHOLD, one_photo_threshold(len(self.classes_), self.max_strangers))
        return np.where(np.asarray(self.counts_) == 1, one, CENTROID_THRESHOLD)

    def centroid_figures(self) -> dict:
        """The mean rule's parameters, for the calibration report."""
        return {"threshold": CENTROID_THRESHOLD, "ratio": CENTROID_RATIO, "mean_noise": MEAN_NOISE,
                "one_photo_threshold": round(min(CENTROID_THRESHOLD, one_photo_threshold(
                    len(self.classes_), self.max_strangers)), 4),
                "one_photo_people": int(np.sum(np.asarray(self.counts_) == 1))}

    def confidence(self, distance: float, runner_up_distance: float, scale: float = 1.0) -> float:
        """P(name is right) = sigmoid(a + b * distance / scale + c * distance / runner_up)."""
        intercept, slope, ratio_slope = self.confidence_coef_
        features = confidence_features(distance, runner_up_distance, scale)[0]
        return float(sigmoid(intercept + slope * features[0] + ratio_slope * features[1]))

    def predict(self, X) -> np.ndarray:
        """Return a name per row of X, ``unknown`` where the rule refuses."""
        return np.array([decision.name for decision in self.decisions(X)])

    # -- persistence without pickle --------------------------------------------------
    def state(self) -> dict:
        """Return the JSON-safe parameters and learned scalars (encodings travel separately)."""
        return {"params": self.get_params(), "threshold_": self.threshold_, "ratio_": self.ratio_,
                "rule_": getattr(self, "rule_", "nearest"),
                "confidence_coef_": list(self.confidence_coef_), "calibration_": self.calibration_,
                "spread_": {str(name): float(value) for name, value in zip(self.classes_, self.spread_)},
                "scale_": {str(name): float(value) for name, value in zip(self.classes_, self.scale_)},
                "gallery": self._gallery_state(), "negatives_": self.negatives.state()}

    def _gallery_state(self) -> dict:
        """The saved gallery's shape: people, each one's base photos, and the delta rows' people."""
        gallery = self.gallery_
        if not len(gallery.delta):
            return {"classes": [str(name) for name in self.classes_], "counts": [int(c) for c in self.counts_]}
        return {"classes": [str(name) for name in self.classes_], "counts": [int(c) for c in gallery.counts],
                "delta": [str(self.classes_[c]) for c in gallery.delta_classes]}

    @classmethod
    def restored(cls, state: dict, encodings: np.ndarray | None, labels: np.ndarray | None,
                 gallery_folder=None) -> "FaceClassifier":
        """Rebuild a fitted classifier from ``state`` and its encodings, without calibrating again;
        from ``gallery_folder`` (a model folder's saved gallery, memory-mapped) when given."""
        model = cls(**state["params"])
        if gallery_folder is not None:
            saved = state["gallery"]
            model.classes_ = np.asarray(saved["classes"], dtype=str)
            counts = np.asarray(saved["counts"], dtype=np.int64)
            delta = np.searchsorted(model.classes_, np.asarray(saved.get("delta") or [], dtype=str))
            gallery = SearchGallery.loaded(gallery_folder, counts, min_size=model.index_min, nprobe=model.nprobe,
                                     delta_classes=delta)
            if not len(gallery.delta):  # with a delta, the merged view is made when asked (__getattr__)
                model.counts_, model.starts_, model.encodings_ = counts, gallery.starts, gallery.encodings
            model._searched(gallery)
        else:
            model._index(encodings, labels)
        model.threshold_, model.ratio_ = float(state["threshold_"]), float(state["ratio_"])
        model.confidence_coef_ = tuple(state["confidence_coef_"])
        model.calibration_ = state.get("calibration_", {})
        # models saved before the centroid rule decided on nearest photos: they still do
        model.rule_ = state.get("rule_", "nearest")
        # models saved before per-person spreads have none: every scale is 1, as they were fitted
        scales, spreads = state.get("scale_") or {}, state.get("spread_") or {}
        names = model.classes_.tolist()  # Python strings: 10^5 look-ups by NumPy strings take 0.1 s more
        model.scale_ = np.array([scales.get(name, 1.0) for name in names], dtype=float)
        model.spread_ = np.array([spreads.get(name, math.nan) for name in names], dtype=float)
        model.negatives_ = Negatives.restored(state.get("negatives_"))
        return model

    # -- negatives (see Negatives, below) ----------------------------------------------
    @property
    def negatives(self) -> "Negatives":
        """The faces the user said are not someone (none until a user adds some)."""
        return getattr(self, "negatives_", None) or Negatives()


# -- negatives: faces the user said are not someone ------------------------------------------
# "Not this person" (utils/inbox.py) makes a face's encoding a hard negative for one person; an
# ignored cluster of unknown faces (a postman, a neighbour) makes its faces negatives of
# everyone (owner ""). The rule, for every door alike: a face the vote names X stays unknown
# when a negative for X, or of a stranger, is nearer to it than X's nearest photo.


@dataclass(frozen=True)
class Negatives:
    """A model's negative examples: record ids, owners ("" for strangers) and encodings."""

    ids: tuple = ()
    owners: tuple = ()
    encodings: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def refuse(self, query: np.ndarray, name: str, distance: float) -> bool:
        """Whether a face named ``name`` at ``distance`` from their nearest photo sits nearer to
        a negative of ``name`` or of a stranger (it then stays unknown)."""
        if not self.ids:
            return False
        mine = np.array([owner in ("", name) for owner in self.owners])
        if not mine.any():
            return False
        nearest = float(np.min(np.linalg.norm(self.encodings[mine] - np.asarray(query, dtype=np.float32), axis=1)))
        return nearest < distance

    def of(self, name: str) -> list[dict]:
        """The negatives owned by ``name`` ("" for strangers): their ids."""
        return [{"id": id_} for id_, owner in zip(self.ids, self.owners) if owner == name]

    def added(self, ids, owners, encodings) -> "Negatives":
        """These negatives plus new ones (an id already held is replaced)."""
        keep = [i for i, id_ in enumerate(self.ids) if id_ not in set(ids)]
        return Negatives(tuple(self.ids[i] for i in keep) + tuple(ids), tuple(self.owners[i] for i in keep) + tuple(owners),
                         np.vstack([self.encodings[keep], np.asarray(encodings, dtype=np.float32).reshape(-1, 128)]))

    def without(self, ids) -> "Negatives":
        """These negatives less ``ids``."""
        keep = [i for i, id_ in enumerate(self.ids) if id_ not in set(ids)]
        return Negatives(tuple(self.ids[i] for i in keep), tuple(self.owners[i] for i in keep), self.encodings[keep])

    def kept(self, classes) -> "Negatives":
        """The negatives of strangers and of people still in ``classes`` (a removed person's go)."""
        names = set(np.asarray(classes).astype(str).tolist())
        return self.without([id_ for id_, owner in zip(self.ids, self.owners) if owner and owner not in names])

    def state(self) -> list[dict]:
        """The JSON form, saved in model.clf: one entry per negative (so that forget, which drops
        the entries naming a person, leaves whole ones)."""
        return [{"id": id_, "owner": owner, "encoding": [round(float(v), 6) for v in row]}
                for id_, owner, row in zip(self.ids, self.owners, self.encodings)]

    @classmethod
    def restored(cls, state: list | None) -> "Negatives":
        """The Negatives of a ``state`` (models saved before negatives have none)."""
        if not state:
            return cls()
        return cls(tuple(str(entry["id"]) for entry in state), tuple(str(entry["owner"]) for entry in state),
                   np.asarray([entry["encoding"] for entry in state], dtype=np.float32).reshape(-1, 128))
