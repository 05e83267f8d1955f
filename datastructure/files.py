"""Files written whole or not at all.

Every file the service writes that another process may read at the same time (models, the
ACTIVE pointer, secrets, cached encodings, annotated copies) goes through ``atomic_write``:
readers see the old content or the new, never a part, and a failed write (a full disk, a
kill) leaves no partial file behind, only, after a kill, a hidden staging file that the next
write of the same path replaces.
"""
from __future__ import annotations

import os
from pathlib import Path


def staging_path(path: Path) -> Path:
    """Return the hidden sibling that ``atomic_write`` writes before renaming it to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, with permissions ``mode``.

    ``durable`` fsyncs before the rename, so that after a power cut the file is the old one or
    the new one (models, pointers, secrets); caches that can be recomputed skip it.
    """
    path = Path(path)
    staging = staging_path(path)
    try:
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
