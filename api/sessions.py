"""Server-side admin sessions, so that logging out (or changing the password) ends them.

Flask's session is a signed cookie: on its own it stays valid until it expires, wherever a
copy of it went. A login therefore also opens a session here, one small file per session under
the data folder (every gunicorn worker and every node sharing the folder sees it, and it
survives restarts), and the cookie carries only its random id. A request whose cookie names no
open session is treated as anonymous (``api.auth.check_session``). The file is named by the
id's SHA-256, so that the folder's listing gives nobody a usable id, and it records a
fingerprint of the admin password's stored hash: a new password makes every older session
void, on every node, with nothing to delete.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path

from datastructure.files import atomic_write


def file_name(session_id: str) -> str:
    """Return the name of the file of ``session_id`` (never the id itself)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Open sessions, one file each in ``folder``: ``{"expires": unix time, "password": fingerprint}``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def open(self, lifetime: float, password: str) -> str:
        """Open a session for ``lifetime`` seconds under the password ``password`` (a
        fingerprint); return its id. Expired sessions are swept at the same time."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()
        session_id = secrets.token_urlsafe(32)
        record = {"expires": time.time() + lifetime, "password": password}
        atomic_write(self.folder / file_name(session_id), json.dumps(record).encode(), mode=0o600, durable=False)
        return session_id

    def is_open(self, session_id, password: str) -> bool:
        """Whether ``session_id`` names an open, unexpired session opened under ``password``."""
        if not isinstance(session_id, str) or not session_id:
            return False
        try:
            record = json.loads((self.folder / file_name(session_id)).read_text())
            return record["expires"] > time.time() and record["password"] == password
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def close(self, session_id) -> None:
        """End ``session_id`` (nothing happens if it is not open)."""
        if isinstance(session_id, str) and session_id:
            (self.folder / file_name(session_id)).unlink(missing_ok=True)

    def sweep(self) -> None:
        """Remove the files of expired (or unreadable) sessions."""
        now = time.time()
        for path in self.folder.glob("*"):
            if path.name.startswith("."):
                continue  # an atomic_write staging file of another process
            try:
                expired = json.loads(path.read_text())["expires"] <= now
            except (OSError, ValueError, KeyError, TypeError):
                expired = True
            if expired:
                path.unlink(missing_ok=True)
