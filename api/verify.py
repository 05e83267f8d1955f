"""Face verification and encoding, as CompreFace and deepface offer them; no model needed.

    POST /verify   multipart file1, file2 -> are they the same person?
    POST /encode   multipart file         -> the 128-d encoding and box of every face

``/verify`` compares the main face of each photo (the largest, most central one, as the
evaluation does) by the Euclidean distance of their dlib encodings:

    same        distance <= threshold (VERIFY_THRESHOLD, or the config's verify.threshold)
    confidence  P(same person | distance) = sigmoid(a + b * distance), fitted by logistic
                regression on LFW pairs (see VERIFY_CONFIDENCE): 0.9 means about 9 in 10
                pairs at that distance are the same person, for an even mix of pairs;
                ``verdict_confidence`` is the probability that ``same`` is right.

Both follow /predict's access policy (security.predict_requires_token) and rate limit.
"""
from __future__ import annotations

import math

import numpy as np
from flask import Blueprint

from api.auth import predict_access_required
from api.context import current_service
from api.limits import limit
from api.rest import uploaded_file
from datastructure.errors import MissingFile, PyRecognizerError
from datastructure.response import envelope
from utils.samples import main_face_index
from utils.faces import decoded, faces_in
from utils.recognition import box_dict

blueprint = Blueprint("verify", __name__)

# Fitted once on LFW (shared/faces/lfw/people, train split of its README: 20,000 same-person
# pairs, each person as likely as any other, against as many different-person pairs, dlib
# encodings of this pipeline); tests/test_quality.py re-fits them on the LFW model and checks.
VERIFY_CONFIDENCE = (27.54, -44.82)     # P(same) = 0.5 at distance 0.614
# face_recognition's own tolerance. On LFW: 0.6-0.9% of different-person pairs pass as the
# same, 98% of same-person pairs pass.
VERIFY_THRESHOLD = 0.6


class NoFaceFound(PyRecognizerError):
    """A photo to verify holds no face."""

    code, status = "NO_FACE_FOUND", 422


def photo_faces(field: str):
    """Return (faces, decoded image) of the photo uploaded in ``field``."""
    data = uploaded_file(field).read()
    if not data:
        raise MissingFile(f"the file in {field!r} is empty")
    return faces_of(data)


def faces_of(data: bytes):
    """Return (faces, decoded image) of photo bytes, with /predict's face settings."""
    options = current_service().predict_options
    image = decoded(data, options)
    return faces_in(image, options), image


def main_face(faces, image):
    """Return the main face (the largest, most central one, as the evaluation picks it)."""
    return faces[main_face_index([face.box for face in faces], image.original_size)]


def same_probability(distance: float) -> float:
    """Return P(same person | distance) from VERIFY_CONFIDENCE."""
    intercept, slope = VERIFY_CONFIDENCE
    return 1.0 / (1.0 + math.exp(-(intercept + slope * distance)))


def face_distance(first, second) -> float:
    """Return the Euclidean distance of two faces' encodings."""
    return float(np.linalg.norm(first.encoding - second.encoding))


def verify_threshold() -> float:
    """Return verify.threshold of the config, or VERIFY_THRESHOLD when it is null."""
    value = current_service().config.verify.threshold
    return VERIFY_THRESHOLD if value is None else float(value)


@blueprint.post("/verify")
@limit("predict")
@predict_access_required("to verify and encode")
def verify():
    """Whether the main faces of two photos are the same person (see the module's docstring)."""
    chosen = {}
    for field in ("file1", "file2"):
        faces, image = photo_faces(field)
        if not faces:
            raise NoFaceFound(f"no face found in {field}", {"file": field})
        chosen[field] = (main_face(faces, image), len(faces))
    (first, first_count), (second, second_count) = chosen["file1"], chosen["file2"]
    distance = face_distance(first, second)
    threshold = verify_threshold()
    same = distance <= threshold
    probability = same_probability(distance)
    data = {
        "same": bool(same), "distance": round(distance, 4), "threshold": threshold,
        "confidence": round(probability, 4),
        "verdict_confidence": round(probability if same else 1 - probability, 4),
        "file1": {"box": box_dict(first.box), "faces": first_count},
        "file2": {"box": box_dict(second.box), "faces": second_count},
    }
    verdict = "the same person" if same else "different people"
    return envelope(data, description=f"{verdict} (distance {distance:.3f}, threshold {threshold:.2f})")


@blueprint.post("/encode")
@limit("predict")
@predict_access_required("to verify and encode")
def encode():
    """The 128-d encoding and box of every face in the uploaded photo."""
    faces, _ = photo_faces("file")
    data = [{"box": box_dict(face.box), "encoding": [round(float(v), 8) for v in face.encoding]}
            for face in faces]
    if not faces:
        return envelope([], description="no face found in the photo", error="NO_FACE_FOUND")
    return envelope(data, description=f"{len(faces)} face(s), 128-d dlib encodings (Euclidean distance; "
                                      f"the same person is usually within 0.6)")
