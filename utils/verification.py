"""Face verification: are the main faces of two photos the same person? No model needed.

    photo bytes x 2 --> decode --> faces (predict's detection, plus the CNN detector where
                                    HOG finds nothing) --> the main face of each (the largest,
                                    most central: utils/samples.py) --> one distance --> verdict

    same        distance <= threshold (VERIFY_THRESHOLD, or the config's verify.threshold)
    confidence  P(same person | distance) = sigmoid(a + b * distance), fitted by logistic
                regression on LFW pairs (see VERIFY_CONFIDENCE): 0.9 means about 9 in 10
                pairs at that distance are the same person, for an even mix of pairs;
                ``verdict_confidence`` is the probability that ``same`` is right.

Unlike /predict, a verification is two photos and one question, so it affords the CNN
fallback for photos where HOG found no face (see bench/verify.py for what each lever buys).
Encodings are mirrored like every encoding of the pipeline (utils/faces.py). dlib's
``num_jitters`` would add more on LFW pairs, but its jitters are random: the same photo twice
comes out ~0.1 apart, and an answer must not change between two requests.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from datastructure.errors import PyRecognizerError
from utils.faces import Face, Options, chip_encodings, decoded, faces_in, mirror_images, mirror_radius
from utils.samples import main_face_index

# Fitted once on LFW (shared/faces/lfw/people, train split of its README: 20,000 same-person
# pairs, each person as likely as any other, against as many different-person pairs, dlib
# encodings of this pipeline); tests/test_quality.py re-fits them on the LFW model and checks.
VERIFY_CONFIDENCE = (27.17, -45.39)     # P(same) = 0.5 at distance 0.599
# On lfw/people's train split 0.9% of different-person pairs pass as the same and 98.5% of
# same-person pairs pass. Mirrored encodings (utils/faces.py) bring the same person's photos
# nearer: at face_recognition's 0.6, 1.2% of different-person pairs would pass; 0.59 keeps
# what 0.6 let through before (0.9%) and passes more same-person pairs (98.5% for 98.4%).
VERIFY_THRESHOLD = 0.59


class NoFaceFound(PyRecognizerError):
    """A photo to verify holds no face."""

    code, status = "NO_FACE_FOUND", 422


def verification_options(options: Options) -> Options:
    """Return the pipeline verification runs: ``options`` with the CNN detection fallback."""
    return replace(options, cnn_fallback=True)


def central_face(faces: list[Face], image) -> Face:
    """Return the main face of a photo's ``faces``: the largest, most central one (as the
    evaluation picks it)."""
    return faces[main_face_index([face.box for face in faces], image.original_size)]


def main_face(data: bytes, options: Options, field: str, *, defer_mirror: bool = False) -> tuple[Face, int]:
    """Return the main face of a photo and how many faces it holds; NoFaceFound without one.
    ``defer_mirror``: its encoding is the first pass alone, for ``settled_pair`` to finish."""
    image = decoded(data, options)
    faces = faces_in(image, options, defer_mirror=defer_mirror)
    if not faces:
        raise NoFaceFound(f"no face found in {field}", {"file": field})
    return central_face(faces, image), len(faces)


def face_distance(first: Face, second: Face) -> float:
    """Return the Euclidean distance of two faces' encodings."""
    return float(np.linalg.norm(first.encoding - second.encoding))


# pair_encodings' allowance for float rounding on top of the mirror's radius
SETTLED_SLACK = 1e-4


def pair_encodings(encodings, owed, mirrored_mean, threshold: float, radius: float | None) -> tuple[list, int]:
    """Return the two encodings to decide ``same`` on, and how many mirror passes were spared.

    ``encodings``: the two faces'; ``owed``: whether each is a first pass whose mirror pass is
    still owed; ``mirrored_mean(i)``: face i's mirrored mean; ``radius``: how far a mirror pass
    may move an encoding (None: run every owed pass). Each owed pass moves its face by at most
    the radius, so the distance of the mirrored means lies within the current distance +- one
    radius per face still owed: while the verdict (distance <= threshold) is the same over that
    interval the first passes stand, else the first face is mirrored and the question is asked
    again with one radius, then the second."""
    encodings, owed = list(encodings), list(owed)
    for me in (0, 1):
        if not owed[me]:
            continue
        if radius is not None:
            distance = float(np.linalg.norm(np.asarray(encodings[0]) - np.asarray(encodings[1])))
            if abs(distance - threshold) > sum(owed) * radius + SETTLED_SLACK:
                return encodings, sum(owed)
        encodings[me], owed[me] = mirrored_mean(me), False
    return encodings, 0


def settled_pair(first: Face, second: Face, threshold: float, options: Options) -> tuple[Face, Face, int]:
    """Return the two faces with the encodings the verdict is made on (see ``pair_encodings``)
    and how many mirror passes were spared, for faces from ``main_face(..., defer_mirror=True)``."""
    faces = (first, second)

    def mirrored_mean(number: int) -> np.ndarray:
        face = faces[number]
        return (face.encoding + chip_encodings(mirror_images([face.chip]), options.jitters)[0]) / 2

    encodings, spared = pair_encodings([face.encoding for face in faces], [face.chip is not None for face in faces],
                                       mirrored_mean, threshold, mirror_radius(options.always_mirror))
    return Face(first.box, encodings[0]), Face(second.box, encodings[1]), spared


def same_probability(distance: float) -> float:
    """Return P(same person | distance) from VERIFY_CONFIDENCE."""
    intercept, slope = VERIFY_CONFIDENCE
    return 1.0 / (1.0 + math.exp(-(intercept + slope * distance)))


def verdict(first: Face, second: Face, threshold: float) -> dict:
    """Return same, distance, threshold, confidence and verdict_confidence of two faces."""
    distance = face_distance(first, second)
    same = distance <= threshold
    probability = same_probability(distance)
    return {"same": bool(same), "distance": round(distance, 4), "threshold": threshold,
            "confidence": round(probability, 4),
            "verdict_confidence": round(probability if same else 1 - probability, 4)}
