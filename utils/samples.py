"""Evaluated photos: each photo of a test set or a stranger folder, through the face pipeline, to
its main face.

Each photo counts once, through its main face: the largest, most central one (the same rule
as ``/verify``), so a bystander in a news photo neither helps nor hurts.
"""
from __future__ import annotations

import io
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from datastructure.errors import DatasetNotValid
from utils import archive
from utils.encoding import encoded_photos
from utils.faces import Face, Options
from utils.images import oriented_size

ProgressCallback = Callable[[int, int, str], None]
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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

