"""The annotated copies /predict writes (``uploads/<32 hex>.jpg``), and how long they are kept.

A copy shows who is in a photo, so it is kept only as long as a client needs to fetch it:
at most ``keep`` copies and none older than ``max_age`` seconds, applied on every write and
at start (a second process sharing the folder may remove a copy first: that is fine). Each
copy is written whole or not at all (``atomic_write``); a write that fails, e.g. on a full
disk, raises and leaves nothing behind, and ``clean`` removes what a kill left (hidden
staging files, empty copies).

Beside a copy, ``<name>.faces.npy`` keeps the encodings of the faces it shows, as /predict
computed them: forgetting a person deletes the copies showing them, and without these it had to
run the face pipeline on every kept copy again (minutes under load, bench/soak.py). The file
shares the copy's retention and is never served (``path_of`` serves copies only).
"""
from __future__ import annotations

import io
import os
import re
import secrets
import time
from pathlib import Path

import numpy as np

from datastructure.files import atomic_write

COPY_NAME = re.compile(r"^[0-9a-f]{32}\.jpg$")
STAGING_NAME = re.compile(r"^\.[0-9a-f]{32}\.jpg\.\d+\.tmp$")
STAGING_GRACE = 60  # seconds
FACES_NAME = re.compile(r"^[0-9a-f]{32}\.faces\.npy$")


def faces_file(copy: Path) -> Path:
    """Where the encodings of the faces a copy shows are kept: ``<32 hex>.faces.npy``."""
    return copy.with_name(copy.stem + ".faces.npy")


def saved_faces(copy: Path) -> np.ndarray | None:
    """Return the (n, 128) encodings kept beside a copy, or None when it has none (a video
    thumbnail, a copy written before they were kept, or an unreadable file)."""
    try:
        encodings = np.load(faces_file(copy), allow_pickle=False)
    except (OSError, ValueError):
        return None
    return encodings.reshape(-1, 128) if encodings.size % 128 == 0 else None


class AnnotatedCopies:
    """The folder of annotated copies, with its retention: ``keep`` copies, ``max_age`` seconds
    (0 for either turns copies off)."""

    def __init__(self, folder: Path, keep: int = 100, max_age: float = 3600):
        self.folder = Path(folder)
        self.keep = keep
        self.max_age = max_age

    @property
    def enabled(self) -> bool:
        """False when the configuration keeps no copy at all."""
        return self.keep > 0 and self.max_age > 0

    def save(self, data: bytes, faces: np.ndarray | None = None) -> str:
        """Write one copy under a random name only the service can generate, and the encodings
        of the ``faces`` it shows beside it; return the name. Raises OSError (nothing written)
        when the copy cannot be written."""
        name = f"{secrets.token_hex(16)}.jpg"
        self.folder.mkdir(parents=True, exist_ok=True)
        if faces is not None:  # first: a copy never exists without its faces' file
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(faces, dtype=np.float32).reshape(-1, 128), allow_pickle=False)
            atomic_write(faces_file(self.folder / name), buffer.getvalue(), durable=False)
        try:
            atomic_write(self.folder / name, data, durable=False)  # a lost copy is no loss after a power cut
        except OSError:
            faces_file(self.folder / name).unlink(missing_ok=True)
            raise
        self.prune()
        return name

    def path_of(self, name: str) -> Path | None:
        """Return the path of the copy ``name`` if it is one and still kept, else None."""
        if not COPY_NAME.match(name):
            return None
        path = self.folder / name
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        return path if age <= self.max_age else None

    def copies(self) -> list[tuple[float, Path]]:
        """Return (modification time, path) of every copy, newest first."""
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        for entry in entries:
            if COPY_NAME.match(entry.name):
                try:
                    found.append((entry.stat().st_mtime, Path(entry.path)))
                except OSError:  # removed meanwhile by another process
                    continue
        return sorted(found, reverse=True)

    def prune(self, now: float | None = None) -> int:
        """Remove the copies past ``keep`` or older than ``max_age``; return how many."""
        now = time.time() if now is None else now
        removed = 0
        for index, (modified, path) in enumerate(self.copies()):
            if index >= self.keep or now - modified > self.max_age:
                path.unlink(missing_ok=True)
                faces_file(path).unlink(missing_ok=True)
                removed += 1
        return removed

    def clean(self) -> int:
        """At start: remove staging files and empty copies a kill left, then prune; return how many."""
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return 0
        for entry in entries:
            try:
                # a staging file younger than a minute may be another process's write in progress
                stale = STAGING_NAME.match(entry.name) and time.time() - entry.stat().st_mtime > STAGING_GRACE
                leftover = stale or COPY_NAME.match(entry.name) and entry.stat().st_size == 0
                # the faces of a copy that is gone (a kill between the two writes, or a copy removed by hand)
                leftover = leftover or FACES_NAME.match(entry.name) and not (
                    self.folder / entry.name.replace(".faces.npy", ".jpg")).exists()
            except OSError:
                continue
            if leftover:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed + self.prune()
