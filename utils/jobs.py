"""Background jobs (training, tuning): one at a time, their state and progress on disk.

State lives in ``<jobs>/<id>.json`` so every worker process answers ``GET /jobs/<id>`` alike,
and "one at a time" is a file lock, not a thread lock, so it holds across processes. The
lock dies with its process: a job file still saying running while nobody holds the lock was
interrupted (e.g. SIGKILL) and is reported as failed.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

from datastructure.errors import NotFound, PyRecognizerError, TrainingInProgress
from datastructure.files import atomic_write

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ACTIVE_STATES = ("queued", "running")


class Progress:
    """What a job reports while it runs; written to disk at most a few times a second."""

    def __init__(self, jobs: "JobRunner", job_id: str):
        self._jobs, self._id = jobs, job_id
        self._written = 0.0

    def __call__(self, done: int, total: int, step: str) -> None:
        now = time.monotonic()
        if done < total and now - self._written < 0.25:
            return
        self._written = now
        self._jobs._update(self._id, state="running", step=step,
                           progress={"done": done, "total": total})


class JobRunner:
    """Runs one job at a time in a background thread and keeps every job's state."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.folder / "train.lock"
        self._write_lock = threading.Lock()

    def start(self, kind: str, work: Callable[[Progress], dict], *, cleanup: Callable[[], None] | None = None) -> dict:
        """Start ``work(progress)`` in the background and return the queued job.

        TrainingInProgress when a job is already running here or in another process.
        ``cleanup`` runs when the job ends, however it ends.
        """
        lock = self._acquire()
        job_id = self._created(kind)
        threading.Thread(target=self._run, args=(job_id, work, lock, cleanup),
                         name=f"job-{job_id[:8]}", daemon=True).start()
        return self.get(job_id)

    def run_here(self, kind: str, work: Callable[[Progress], dict]) -> dict:
        """Run ``work`` in this thread under the same lock and bookkeeping (the CLI's way)."""
        lock = self._acquire()
        job_id = self._created(kind)
        self._run(job_id, work, lock, None)
        return self.get(job_id)

    def _created(self, kind: str) -> str:
        """Write a new queued job and return its id (the caller holds the lock)."""
        job_id = uuid.uuid4().hex
        self._write({"id": job_id, "kind": kind, "state": "queued", "step": "queued",
                     "progress": {"done": 0, "total": 0}, "created": time.time(), "pid": os.getpid(),
                     "result": None, "error": None})
        return job_id

    def _acquire(self):
        handle = open(self._lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            running = [job["id"] for job in self.listing() if job["state"] in ACTIVE_STATES]
            raise TrainingInProgress("a training job is already running; wait for it to finish",
                                     {"job": running[0] if running else None}) from None
        return handle

    def _run(self, job_id: str, work, lock, cleanup) -> None:
        started = time.time()
        try:
            self._update(job_id, state="running", step="starting", started=started)
            result = work(Progress(self, job_id))
            self._update(job_id, state="done", step="done", result=result, finished=time.time())
            log.info("job %s done in %.1f s", job_id, time.time() - started)
        except PyRecognizerError as exc:
            self._update(job_id, state="failed", step="failed", finished=time.time(),
                         error={"code": exc.code, "description": exc.description, "data": exc.data})
            log.warning("job %s failed: %s %s", job_id, exc.code, exc.description)
        except Exception as exc:  # a job must always end in a state a client can read
            log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
            self._update(job_id, state="failed", step="failed", finished=time.time(),
                         error={"code": "INTERNAL_ERROR", "description": f"training crashed: {exc}",
                                "data": None})
        finally:
            if cleanup:
                cleanup()
            lock.close()

    # -- state on disk ---------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id or ""):
            raise NotFound(f"no job {job_id!r}")
        return self.folder / f"{job_id}.json"

    def _write(self, job: dict) -> None:
        atomic_write(self._path(job["id"]), json.dumps(job).encode())

    def _update(self, job_id: str, **changes) -> None:
        with self._write_lock:
            job = json.loads(self._path(job_id).read_text())
            job.update(changes)
            self._write(job)

    def get(self, job_id: str) -> dict:
        """Return a job's state; one left running by a dead process is reported failed."""
        try:
            job = json.loads(self._path(job_id).read_text())
        except (OSError, ValueError):
            raise NotFound(f"no job {job_id!r}") from None
        if job["state"] in ACTIVE_STATES and not self._someone_holds_lock():
            job.update(state="failed", step="failed", error={
                "code": "JOB_INTERRUPTED", "description": "the service stopped while this job ran",
                "data": None})
            self._write(job)
        return job

    def listing(self) -> list[dict]:
        """Return every job, newest first."""
        jobs = []
        for path in self.folder.glob("*.json"):
            try:
                jobs.append(self.get(path.stem))
            except NotFound:
                continue
        return sorted(jobs, key=lambda job: job["created"], reverse=True)

    @staticmethod
    def new_upload(folder: Path) -> tuple[Path, BinaryIO]:
        """Create an empty upload file in ``folder``, in use for as long as the handle is open.

        "In use" is an flock on the file itself: it dies with its process, so ``stale_uploads``
        tells a killed job's upload (unlocked) from one that a worker here or on another node
        is still writing or training from, however young or old either is.
        """
        while True:
            path = folder / f"{uuid.uuid4().hex}.zip"
            handle = open(path, "xb")
            fcntl.flock(handle, fcntl.LOCK_EX)
            if os.fstat(handle.fileno()).st_nlink:  # not removed by a clean-up between open and flock
                return path, handle
            handle.close()

    @staticmethod
    def stale_uploads(folder: Path) -> list[str]:
        """Remove and return the uploads in ``folder`` that nobody uses any more.

        An upload nobody holds locked is a leftover of a killed training: a full copy of
        someone's photos, not to be kept.
        """
        if not folder.is_dir():
            return []
        removed = []
        for path in folder.iterdir():
            try:
                with open(path, "rb") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
            except (BlockingIOError, FileNotFoundError, IsADirectoryError):
                continue
            removed.append(path.name)
        return removed

    def running(self) -> bool:
        """Whether a training or tuning job runs now, in this process or another."""
        return self._someone_holds_lock()

    def _someone_holds_lock(self) -> bool:
        with open(self._lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
