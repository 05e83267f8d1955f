"""The face classifier, in scikit-learn style.

KNN (``KNeighborsClassifier``) votes for a name; the unknown rule then asks two questions of
the 128-d dlib space, where distances are Euclidean whatever metric the vote used:

* is the face close enough to the chosen person (``distance <= threshold_``)?
* is it clearly closer to them than to anyone else (``distance <= ratio_ * runner_up_distance``)?

Strangers are mostly caught by the second question: a stranger sits at similar distances from
several people, a known face sits much closer to its own. ``fit`` calibrates both from the
training encodings alone (leave-one-out, each person in turn held out as a stranger) and fits
the confidence mapping on the same pairs, unless the parameters pin them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neighbors import KNeighborsClassifier

UNKNOWN = "unknown"
# Without calibration pairs (one person, or one photo each) confidence falls through 0.5 at
# the classic 0.6 distance: sigmoid(7.2 - 12 * distance).
DEFAULT_CONFIDENCE = (7.2, -12.0, 0.0)
THRESHOLDS = np.round(np.arange(0.25, 0.605, 0.01), 2)
RATIOS = np.round(np.arange(0.50, 1.001, 0.02), 2)
MAX_CALIBRATION_QUERIES = 4000
CHUNK_ELEMENTS = 8_000_000  # distances computed at once: 64 MB of float64


@dataclass(frozen=True)
class Decision:
    """What the classifier says of one face."""

    name: str
    confidence: float
    distance: float
    candidate: str            # the person the vote chose, even when the face stays unknown
    runner_up: str | None
    runner_up_distance: float | None


def sigmoid(value):
    return 1.0 / (1.0 + np.exp(-value))


def squared_distances(queries: np.ndarray, encodings: np.ndarray) -> np.ndarray:
    """Return the (queries x encodings) matrix of squared Euclidean distances."""
    return (np.einsum("ij,ij->i", queries, queries)[:, None]
            + np.einsum("ij,ij->i", encodings, encodings)[None, :]
            - 2.0 * queries @ encodings.T)


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


def accepted(distance, runner_up, threshold: float, ratio: float):
    """The unknown rule: close enough, and clearly closer than the runner-up."""
    return (distance <= threshold) & (distance <= ratio * runner_up)


def confidence_features(distance, runner_up):
    ratio = np.where(np.isfinite(runner_up), distance / np.maximum(runner_up, 1e-9), 0.5)
    return np.column_stack([np.atleast_1d(distance), np.atleast_1d(ratio)])


class FaceClassifier(ClassifierMixin, BaseEstimator):
    """KNN over face encodings with a calibrated unknown rule and confidence.

    ``threshold`` and ``ratio`` left as None are calibrated by ``fit``; numbers pin them.
    ``max_strangers`` is the share of simulated strangers calibration may let through.
    """

    def __init__(self, n_neighbors=1, weights="distance", metric="euclidean", algorithm="auto",
                 threshold=None, ratio=None, max_strangers=0.01):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.algorithm = algorithm
        self.threshold = threshold
        self.ratio = ratio
        self.max_strangers = max_strangers

    # -- learning --------------------------------------------------------------------
    def fit(self, X, y):
        self._index(X, y)
        self.calibration_ = self._calibration()
        self.threshold_ = self.calibration_["threshold"]
        self.ratio_ = self.calibration_["ratio"]
        self.confidence_coef_ = tuple(self.calibration_["confidence"])
        return self

    def _index(self, X, y) -> None:
        """Keep the encodings sorted by person and fit the KNN vote on them."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(str)
        order = np.argsort(y, kind="stable")
        self.encodings_, self.labels_ = X[order], y[order]
        self.classes_, self.starts_ = np.unique(self.labels_, return_index=True)
        self.knn_ = KNeighborsClassifier(
            n_neighbors=min(self.n_neighbors, len(X)), weights=self.weights,
            metric=self.metric, algorithm=self.algorithm).fit(self.encodings_, self.labels_)

    def _calibration(self) -> dict:
        """Choose threshold, ratio and the confidence mapping from leave-one-out pairs."""
        pairs = self._leave_one_out_pairs()
        fixed_threshold = None if self.threshold is None else float(self.threshold)
        fixed_ratio = None if self.ratio is None else float(self.ratio)
        if pairs is None:
            return {"threshold": fixed_threshold or 0.6, "ratio": fixed_ratio or 1.0,
                    "confidence": DEFAULT_CONFIDENCE, "calibrated": False,
                    "reason": "needs two people and a person with two photos"}
        genuine, strangers = pairs
        thresholds = [fixed_threshold] if fixed_threshold else THRESHOLDS
        ratios = [fixed_ratio] if fixed_ratio else RATIOS
        best = None
        for threshold in thresholds:
            for ratio in ratios:
                stranger_rate = accepted(strangers[0], strangers[1], threshold, ratio).mean()
                recognised = (accepted(genuine[0], genuine[1], threshold, ratio) & genuine[2]).mean()
                feasible = stranger_rate <= self.max_strangers
                # within the stranger budget recognise most; outside it, let fewest strangers in
                key = (feasible, recognised if feasible else -stranger_rate, -stranger_rate, recognised)
                if best is None or key > best[0]:
                    best = (key, threshold, ratio, recognised, stranger_rate)
        _, threshold, ratio, recognised, stranger_rate = best
        return {"threshold": float(threshold), "ratio": float(ratio),
                "confidence": self._fitted_confidence(genuine, strangers), "calibrated": True,
                "recognised": round(float(recognised), 4), "strangers_accepted": round(float(stranger_rate), 4),
                "genuine_pairs": int(len(genuine[0])), "stranger_pairs": int(len(strangers[0]))}

    def _leave_one_out_pairs(self):
        """Return (distance, runner-up distance, correct) for each training photo queried
        against the others, and (distance, runner-up distance) with its person held out."""
        counts = np.diff(np.append(self.starts_, len(self.labels_)))
        if len(self.classes_) < 2 or counts.max() < 2:
            return None
        rng = np.random.default_rng(0)
        queries = np.arange(len(self.labels_))
        if len(queries) > MAX_CALIBRATION_QUERIES:
            queries = np.sort(rng.choice(queries, MAX_CALIBRATION_QUERIES, replace=False))
        own = np.searchsorted(self.starts_, queries, side="right") - 1
        genuine, strangers = [], []
        rows_per_chunk = max(1, min(512, CHUNK_ELEMENTS // len(self.labels_)))
        for chunk in np.array_split(np.arange(len(queries)), max(1, -(-len(queries) // rows_per_chunk))):
            index, cls = queries[chunk], own[chunk]
            squared = squared_distances(self.encodings_[index], self.encodings_)
            rows = np.arange(len(chunk))
            squared[rows, index] = np.inf  # leave the photo itself out
            distances = nearest_per_class(squared, self.starts_)
            held_out = distances.copy()
            held_out[rows, cls] = np.inf
            first, d1, d2 = two_nearest(distances)
            valid = counts[cls] > 1
            genuine.append((d1[valid], d2[valid], (first == cls)[valid]))
            _, s1, s2 = two_nearest(held_out)
            strangers.append((s1, s2))
        genuine = tuple(np.concatenate(parts) for parts in zip(*genuine))
        strangers = tuple(np.concatenate(parts) for parts in zip(*strangers))
        return genuine, strangers

    @staticmethod
    def _fitted_confidence(genuine, strangers):
        """Logistic regression of 'this name is right' on (distance, distance/runner-up)."""
        from sklearn.linear_model import LogisticRegression

        features = np.vstack([confidence_features(genuine[0], genuine[1]),
                              confidence_features(strangers[0], strangers[1])])
        truth = np.concatenate([genuine[2], np.zeros(len(strangers[0]), bool)])
        if truth.all() or not truth.any():
            return DEFAULT_CONFIDENCE
        model = LogisticRegression(C=10.0, max_iter=1000).fit(features, truth)
        return (float(model.intercept_[0]), float(model.coef_[0][0]), float(model.coef_[0][1]))

    # -- prediction ------------------------------------------------------------------
    def decisions(self, X) -> list[Decision]:
        """Return a Decision per encoding: name or unknown, confidence, distances."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if len(X) == 0:
            return []
        votes = self.knn_.predict(X)
        distances = nearest_per_class(squared_distances(X, self.encodings_), self.starts_)
        result = []
        for row, vote in zip(distances, votes):
            chosen = int(np.searchsorted(self.classes_, vote))
            distance = float(row[chosen])
            others = np.delete(row, chosen)
            runner = int(np.argmin(others)) if len(others) else None
            runner_distance = float(others[runner]) if runner is not None else math.inf
            runner_name = None if runner is None else str(np.delete(self.classes_, chosen)[runner])
            known = bool(accepted(distance, runner_distance, self.threshold_, self.ratio_))
            confidence = self.confidence(distance, runner_distance) if known else 0.0
            result.append(Decision(
                name=str(vote) if known else UNKNOWN, confidence=round(confidence, 4),
                distance=round(distance, 4), candidate=str(vote), runner_up=runner_name,
                runner_up_distance=None if runner is None else round(runner_distance, 4)))
        return result

    def confidence(self, distance: float, runner_up_distance: float) -> float:
        """P(name is right) by the calibrated mapping sigmoid(a + b*distance + c*distance/runner_up)."""
        intercept, slope, ratio_slope = self.confidence_coef_
        features = confidence_features(distance, runner_up_distance)[0]
        return float(sigmoid(intercept + slope * features[0] + ratio_slope * features[1]))

    def predict(self, X) -> np.ndarray:
        return np.array([decision.name for decision in self.decisions(X)])

    # -- persistence without pickle --------------------------------------------------
    def state(self) -> dict:
        """Return the JSON-safe parameters and learned scalars (encodings travel separately)."""
        return {"params": self.get_params(), "threshold_": self.threshold_, "ratio_": self.ratio_,
                "confidence_coef_": list(self.confidence_coef_), "calibration_": self.calibration_}

    @classmethod
    def restored(cls, state: dict, encodings: np.ndarray, labels: np.ndarray) -> "FaceClassifier":
        """Rebuild a fitted classifier from ``state`` and its encodings, without calibrating again."""
        model = cls(**state["params"])
        model._index(encodings, labels)
        model.threshold_, model.ratio_ = float(state["threshold_"]), float(state["ratio_"])
        model.confidence_coef_ = tuple(state["confidence_coef_"])
        model.calibration_ = state.get("calibration_", {})
        return model
