"""Face verification and encoding, as CompreFace and deepface offer them; no model needed.

    POST /verify   multipart file1, file2 -> are they the same person? (utils/verification.py)
    POST /encode   multipart file         -> the 128-d encoding and box of every face

Both follow /predict's access policy (security.predict_requires_token) and rate limit.
"""
from __future__ import annotations

from flask import Blueprint

from api.auth import predict_access_required
from api.context import current_service
from api.limits import limit
from api.rest import uploaded_file
from datastructure.errors import MissingFile
from datastructure.response import envelope
from utils.faces import decoded, faces_in
from utils.recognition import box_dict
from utils.verification import VERIFY_THRESHOLD, main_face, settled_pair, verdict, verification_options

blueprint = Blueprint("verify", __name__)


def uploaded_bytes(field: str) -> bytes:
    """Return the bytes of the photo uploaded in ``field``; MissingFile when it is empty."""
    data = uploaded_file(field).read()
    if not data:
        raise MissingFile(f"the file in {field!r} is empty")
    return data


def faces_of(data: bytes):
    """Return (faces, decoded image) of photo bytes with /predict's face settings: what the
    DeepStack and CompreFace dialects detect and compare."""
    options = current_service().predict_options
    image = decoded(data, options)
    return faces_in(image, options), image


def verify_threshold() -> float:
    """Return verify.threshold of the config, or VERIFY_THRESHOLD when it is null."""
    value = current_service().config.verify.threshold
    return VERIFY_THRESHOLD if value is None else float(value)


@blueprint.post("/verify")
@limit("predict")
@predict_access_required("to verify and encode")
def verify():
    """Whether the main faces of two photos are the same person (see utils/verification.py)."""
    options = verification_options(current_service().predict_options)
    chosen = {field: main_face(uploaded_bytes(field), options, field, defer_mirror=True) for field in ("file1", "file2")}
    (first, first_count), (second, second_count) = chosen["file1"], chosen["file2"]
    threshold = verify_threshold()
    # the mirror pass only for a face whose verdict it could change (utils/faces.py)
    first, second, _ = settled_pair(first, second, threshold, options)
    data = {**verdict(first, second, threshold),
            "file1": {"box": box_dict(first.box), "faces": first_count},
            "file2": {"box": box_dict(second.box), "faces": second_count}}
    answer = "the same person" if data["same"] else "different people"
    return envelope(data, description=f"{answer} (distance {data['distance']:.3f}, threshold {threshold:.2f})")


@blueprint.post("/encode")
@limit("predict")
@predict_access_required("to verify and encode")
def encode():
    """The 128-d encoding and box of every face in the uploaded photo."""
    options = current_service().predict_options
    faces = faces_in(decoded(uploaded_bytes("file"), options), options)
    data = [{"box": box_dict(face.box), "encoding": [round(float(v), 8) for v in face.encoding]}
            for face in faces]
    if not faces:
        return envelope([], description="no face found in the photo", error="NO_FACE_FOUND")
    return envelope(data, description=f"{len(faces)} face(s), 128-d dlib encodings (Euclidean distance; "
                                      f"the same person is usually within 0.6)")
