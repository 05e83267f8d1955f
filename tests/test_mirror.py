"""The mirror pass where it matters (issue 27): a decision settled on the first pass is the one
the mirrored mean gets, and no encoding within the mirror's radius changes it.

Real dlib encodings of celebrities/val (the known people) and lfw/strangers, against the
celebrities model (the centroid rule of a small gallery) and a nearest-photo rule pinned on the
same gallery. ``decision_is_certain`` is checked against ``decisions`` itself at the worst
points the radius allows (towards and away from every photo and every person's mean) and at
random ones: a rule changed without it fails here.
"""
from __future__ import annotations

import numpy as np
import pytest

from datastructure.classifier import FaceClassifier
from utils.faces import (MIRROR_RADIUS, MIRROR_RADIUS_PIPELINE, PIPELINE_VERSION, Options, decoded, face_encodings,
                         face_locations, faces_in, mirror_radius, settled_faces)
from utils.verification import VERIFY_THRESHOLD, central_face, pair_encodings

OPTIONS = Options(cnn_fallback=True)  # a small gallery's predict pipeline
SMALL_RADIUS = 0.08  # below the mirror's median shift: many faces settle, of both kinds
NEVER = lambda encodings, radius: np.zeros(len(encodings), bool)  # noqa: E731 - settles nothing


def main_face_passes(path) -> tuple[np.ndarray, np.ndarray] | None:
    """(first pass, mirrored mean) of a photo's main face, as predict computes them."""
    image = decoded(path.read_bytes(), OPTIONS)
    found = faces_in(image, OPTIONS, defer_mirror=True)
    if not found:
        return None
    main = central_face(found, image)
    (final,), _ = settled_faces([main], NEVER, OPTIONS)
    return main.encoding, final.encoding


@pytest.fixture(scope="module")
def passes(faces):
    """(first passes, mirrored means, truth) of celebrities/val and 15 lfw/strangers photos."""
    paths = sorted((faces / "celebrities" / "val").glob("*/*.jpg"))
    paths += sorted((faces / "lfw" / "strangers").glob("*.jpg"))[:15]
    firsts, means, truth = [], [], []
    for path in paths:
        found = main_face_passes(path)
        if found is not None:
            firsts.append(found[0])
            means.append(found[1])
            truth.append(path.parent.name if "val" in path.parts else "")
    return np.array(firsts), np.array(means), truth


def test_the_first_pass_is_face_recognitions_and_finishing_it_gives_the_pipelines_encoding(faces):
    image = decoded((faces / "samples" / "two_people.jpg").read_bytes(), OPTIONS)
    deferred = faces_in(image, OPTIONS, defer_mirror=True)
    boxes = face_locations(image.array, OPTIONS)
    assert len(deferred) == 2 and all(face.chip is not None for face in deferred)
    np.testing.assert_array_equal([face.encoding for face in deferred], face_encodings(image.array, boxes, mirror=False))
    finished, skipped = settled_faces(deferred, NEVER, OPTIONS)
    assert not skipped.any() and all(face.chip is None for face in finished)
    np.testing.assert_array_equal([face.encoding for face in finished],
                                  [face.encoding for face in faces_in(image, OPTIONS)])


def test_the_radius_is_recorded_for_this_pipeline_and_covers_these_photos(passes):
    firsts, means, _ = passes
    assert MIRROR_RADIUS_PIPELINE == PIPELINE_VERSION, "the pipeline changed: measure the radius again (bench/mirror.py)"
    assert mirror_radius() == MIRROR_RADIUS and MIRROR_RADIUS is not None
    shifts = np.linalg.norm(means - firsts, axis=1)
    assert shifts.max() <= MIRROR_RADIUS
    assert shifts.min() > 0  # the mirror does move encodings: the radius is not vacuous


def test_the_always_mirror_switch_mirrors_every_face(faces):
    options = Options(cnn_fallback=True, always_mirror=True)
    image = decoded((faces / "samples" / "obama.jpg").read_bytes(), options)
    asked = []
    finished, skipped = settled_faces(faces_in(image, options, defer_mirror=True),
                                      lambda encodings, radius: asked.append(radius) or np.ones(len(encodings), bool),
                                      options)
    assert asked == [] and not skipped.any()
    np.testing.assert_array_equal(finished[0].encoding, faces_in(image, options)[0].encoding)


def worst_points(classifier: FaceClassifier, query: np.ndarray, radius: float, rng) -> np.ndarray:
    """Encodings at ``radius`` from ``query``: towards and away from every photo and every
    person's mean (where the rule's distances move most), and random directions."""
    means = np.add.reduceat(np.asarray(classifier.encodings_, float), classifier.starts_, axis=0) / classifier.counts_[:, None]
    targets = np.vstack([classifier.gallery_.encodings, means])
    directions = targets - query
    directions = np.vstack([directions, -directions, rng.normal(size=(100, 128))])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return query + radius * directions


def certain_holds(classifier: FaceClassifier, passes, radius: float = MIRROR_RADIUS) -> np.ndarray:
    """Check decision_is_certain against decisions at ``radius``; return which faces were certain."""
    firsts, means, _ = passes
    rng = np.random.default_rng(0)
    certain = classifier.decision_is_certain(firsts, radius)
    for first, mean, settled in zip(firsts, means, certain):
        if not settled:
            continue
        name = classifier.decisions(first)[0].name
        if radius >= MIRROR_RADIUS:  # the mirrored mean is within the radius
            assert classifier.decisions(mean)[0].name == name
        assert {decision.name for decision in classifier.decisions(worst_points(classifier, first, radius, rng))} == {name}
    return certain


def test_a_small_gallerys_settled_names_hold_within_the_radius(trained, passes):
    classifier = trained[0].active.current().classifier
    assert classifier.rule_ == "centroid"
    certain = certain_holds(classifier, passes)
    certain_holds(classifier, passes, SMALL_RADIUS)
    # some faces are settled (the pass is spared), some are not (the test can tell them apart)
    assert 0 < certain.sum() < len(certain)


def test_the_nearest_photo_rules_settled_names_hold_within_the_radius(trained, passes):
    small = trained[0].active.current().classifier
    classifier = FaceClassifier(threshold=0.5, ratio=0.9).fit(small.encodings_, small.labels_)
    assert classifier.rule_ == "nearest"
    certain_holds(classifier, passes)
    # the contract holds at any radius: at a smaller one, faces settle both ways, known and unknown
    certain = certain_holds(classifier, passes, SMALL_RADIUS)
    assert 0 < certain.sum() < len(certain)
    names = [decision.name for decision in classifier.decisions(passes[0][certain])]
    assert "unknown" in names and set(names) - {"unknown"}


def test_an_indexed_gallery_is_never_called_certain(trained, passes):
    small = trained[0].active.current().classifier
    indexed = FaceClassifier(threshold=0.5, ratio=0.9, index_min=10).fit(small.encodings_, small.labels_)
    assert indexed.gallery_.index.approximate
    assert not indexed.decision_is_certain(passes[0], MIRROR_RADIUS).any()


def test_verification_spares_the_mirror_only_where_the_verdict_cannot_change(passes):
    firsts, means, truth = passes
    spared_total = 0
    for a in range(0, len(firsts), 3):
        for b in range(1, len(firsts), 4):
            reference = np.linalg.norm(means[a] - means[b]) <= VERIFY_THRESHOLD
            encodings, spared = pair_encodings([firsts[a], firsts[b]], [True, True], [means[a], means[b]].__getitem__,
                                               VERIFY_THRESHOLD, MIRROR_RADIUS)
            assert (np.linalg.norm(np.asarray(encodings[0]) - np.asarray(encodings[1])) <= VERIFY_THRESHOLD) == reference
            spared_total += spared
    assert spared_total > 0
    # without a radius (the always-mirror switch) every owed pass runs
    encodings, spared = pair_encodings([firsts[0], firsts[1]], [True, True], [means[0], means[1]].__getitem__,
                                       VERIFY_THRESHOLD, None)
    assert spared == 0 and np.array_equal(encodings[0], means[0]) and np.array_equal(encodings[1], means[1])
