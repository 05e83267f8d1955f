"""The plain pipeline every ratio is measured against, written once, as face_recognition's own
KNN example (examples/face_recognition_knn.py) does it:

* decode: ``face_recognition.load_image_file`` (Pillow, to RGB, at full resolution);
* detect: ``face_locations(image)``: HOG, upsampled once (the default), full resolution;
* encode: ``face_encodings(image, known_face_locations=boxes)``;
* train: keep photos with exactly one face, ``KNeighborsClassifier(n_neighbors=round(sqrt(n)),
  algorithm="ball_tree", weights="distance")``;
* predict: the KNN's name, or "unknown" when the nearest encoding is further than 0.6.

Photos come in as bytes (``io.BytesIO``), as ours do, so neither side is timed reading files.
"""
from __future__ import annotations

import io
import math
from collections.abc import Iterable

import numpy as np

from utils.faces import face_library

UNKNOWN = "unknown"
THRESHOLD = 0.6


def fr():
    # The same face_recognition module ours uses (imported once per process, with its models);
    # face_library only adds the guards against face_recognition's quit() and Pillow flags.
    return face_library()


def image_of(data: bytes) -> np.ndarray:
    return fr().load_image_file(io.BytesIO(data))


def boxes_and_encodings(data: bytes) -> tuple[list, list]:
    """Return every face's box and encoding: the plain pipeline from bytes to encodings."""
    image = image_of(data)
    boxes = fr().face_locations(image)
    return boxes, (fr().face_encodings(image, known_face_locations=boxes) if boxes else [])


def training_step(data: bytes) -> int:
    """One photo of the example's training loop; return the number of faces HOG found.

    As in the example, only a photo with exactly one face is encoded (the others are skipped).
    """
    image = image_of(data)
    boxes = fr().face_locations(image)
    if len(boxes) == 1:
        fr().face_encodings(image, known_face_locations=boxes)
    return len(boxes)


def trained_knn(photos: Iterable[tuple[str, bytes]]):
    """Return the example's KNN classifier fitted on (name, photo bytes) pairs."""
    from sklearn.neighbors import KNeighborsClassifier

    encodings, names = [], []
    for name, data in photos:
        image = image_of(data)
        boxes = fr().face_locations(image)
        if len(boxes) != 1:
            continue
        encodings.append(fr().face_encodings(image, known_face_locations=boxes)[0])
        names.append(name)
    n_neighbors = int(round(math.sqrt(len(encodings))))
    return KNeighborsClassifier(n_neighbors=n_neighbors, algorithm="ball_tree", weights="distance").fit(
        encodings, names)


def predicted_names(data: bytes, knn) -> list[str]:
    """Return a name (or "unknown") per face found: the example's ``predict``."""
    boxes, encodings = boxes_and_encodings(data)
    if not boxes:
        return []
    closest = knn.kneighbors(encodings, n_neighbors=1)[0]
    return [str(name) if closest[i][0] <= THRESHOLD else UNKNOWN
            for i, name in enumerate(knn.predict(encodings))]
