"""The classifier: scikit-learn behaviour, the unknown rule, calibration, confidence."""
import numpy as np
import pytest
from sklearn.base import clone

from datastructure.classifier import UNKNOWN, FaceClassifier


def clusters(people: int, photos: int, spread: float = 0.02, seed: int = 0):
    """Synthetic 128-d encodings: one tight cluster per person, like dlib's space."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 128)) * 0.06
    X = np.vstack([centre + rng.normal(size=(photos, 128)) * spread for centre in centres])
    y = np.repeat([f"person{i}" for i in range(people)], photos)
    return X, y, centres


def test_follows_the_estimator_conventions():
    X, y, _ = clusters(4, 5)
    model = FaceClassifier(n_neighbors=3, threshold=0.5)
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(model, "knn_")
    fitted = model.fit(X, y)
    assert fitted is model and hasattr(model, "knn_") and list(model.classes_) == sorted(set(y))
    assert model.threshold_ == 0.5  # a pinned parameter is kept, not calibrated away


def test_names_known_faces_and_keeps_strangers_unknown():
    X, y, centres = clusters(5, 8)
    model = FaceClassifier().fit(X, y)
    rng = np.random.default_rng(1)
    fresh = centres[2] + rng.normal(size=128) * 0.02
    stranger = rng.normal(size=128) * 0.06
    known, unknown = model.decisions(np.vstack([fresh, stranger]))
    assert known.name == "person2" and 0.5 < known.confidence <= 1
    assert unknown.name == UNKNOWN and unknown.confidence == 0
    assert unknown.candidate.startswith("person") and unknown.runner_up is not None
    assert list(model.predict(np.vstack([fresh, stranger]))) == ["person2", UNKNOWN]


def test_predict_is_pure():
    X, y, _ = clusters(3, 4)
    model = FaceClassifier().fit(X, y)
    state = model.state()
    first = model.decisions(X[:3])
    assert model.decisions(X[:3]) == first and model.state() == state


def test_confidence_falls_as_distance_grows():
    X, y, _ = clusters(5, 8)
    model = FaceClassifier().fit(X, y)
    values = [model.confidence(distance, 0.8) for distance in (0.1, 0.3, 0.45, 0.6)]
    assert values == sorted(values, reverse=True)
    assert all(0 <= value <= 1 for value in values)


def test_one_person_and_people_with_one_photo_still_work():
    X, y, centres = clusters(1, 3)
    model = FaceClassifier().fit(X, y)
    assert model.predict(centres[:1])[0] == "person0"
    assert model.calibration_["calibrated"] is False and model.threshold_ == 0.6

    X, y, centres = clusters(6, 1)
    model = FaceClassifier(n_neighbors=5).fit(X, y)
    assert list(model.predict(X)) == list(y)


def test_few_photo_people_are_not_outvoted():
    """k = round(sqrt(n)) outvotes people with few photos; the distance rule must not."""
    X, y, centres = clusters(2, 40)
    rng = np.random.default_rng(3)
    few = rng.normal(size=(2, 128)) * 0.06
    X = np.vstack([X, few[0] + rng.normal(size=(2, 128)) * 0.02])
    y = np.concatenate([y, ["rare", "rare"]])
    model = FaceClassifier(n_neighbors=1).fit(X, y)
    assert model.predict(few[:1] + rng.normal(size=(1, 128)) * 0.02)[0] == "rare"


def test_restored_model_decides_exactly_like_the_fitted_one():
    X, y, _ = clusters(4, 6)
    model = FaceClassifier().fit(X, y)
    restored = FaceClassifier.restored(model.state(), X, y)
    assert restored.decisions(X) == model.decisions(X)


@pytest.mark.parametrize("bad", [np.empty((0, 128))])
def test_no_encodings_no_decisions(bad):
    X, y, _ = clusters(2, 3)
    assert FaceClassifier().fit(X, y).decisions(bad) == []
