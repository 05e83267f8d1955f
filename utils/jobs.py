"""Background jobs (training, tuning, long videos): one at a time per slot, their state and progress on disk.

State lives in ``<jobs>/<id>.json`` so every worker process answers ``GET /jobs/<id>`` alike,
and "one at a time" is a file lock per slot (``<slot>.lock``), not a thread lock, so it holds
across processes. Slots keep callers apart: anonymous video jobs take one and token holders'
another, so an anonymous job never makes an admin wait. The lock dies with its process: a job
file still saying running while nobody holds its slot's lock was interrupted (e.g. SIGKILL)
and is reported as failed.

A job is cancelled through a marker file (``<id>.cancel``), which any process may write and
the job's own progress reports look for; the job then ends in the state "cancelled".
"""
from __future__ import annotations

import errno
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

from datastructure.errors import InsufficientStorage, NotFound, PyRecognizerError, TrainingInProgress
from datastructure.files import atomic_write

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
ACTIVE_STATES = ("queued", "running")
DEFAULT_SLOT = "train"


class JobCancelled(Exception):
    """Raised in a job by its progress report once someone asked it to stop."""


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
        if self._jobs.cancel_requested(self._id):
            raise JobCancelled(self._id)
        self._jobs._update(self._id, state="running", step=step,
                           progress={"done": done, "total": total})


class JobRunner:
    """Runs one job at a time per slot in a background thread and keeps every job's state."""

    def __init__(self, folder: Path, *, busy: type[PyRecognizerError] = TrainingInProgress,
                 busy_text: str = "a training job is already running; wait for it to finish"):
        self.folder = Path(folder)
        self._busy, self._busy_text = busy, busy_text  # the error a second job gets
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()

    def start(self, kind: str, work: Callable[[Progress], dict], *, cleanup: Callable[[], None] | None = None,
              slot: str = DEFAULT_SLOT, owner: str | None = None) -> dict:
        """Start ``work(progress)`` in the background and return the queued job.

        The busy error (TrainingInProgress by default) when a job already holds ``slot`` here or
        in another process; only the default slot's error names that job (another slot's may be
        a stranger's). ``cleanup`` runs when the job ends, however it ends. ``owner`` (who may
        cancel it besides an admin) is kept in the job.
        """
        lock = self._acquire(slot)
        job_id = self._created(kind, slot, owner)
        threading.Thread(target=self._run, args=(job_id, work, lock, cleanup),
                         name=f"job-{job_id[:8]}", daemon=True).start()
        return self.get(job_id)

    def run_here(self, kind: str, work: Callable[[Progress], dict]) -> dict:
        """Run ``work`` in this thread under the same lock and bookkeeping (the CLI's way)."""
        lock = self._acquire(DEFAULT_SLOT)
        job_id = self._created(kind, DEFAULT_SLOT, None)
        self._run(job_id, work, lock, None)
        return self.get(job_id)

    def _created(self, kind: str, slot: str, owner: str | None) -> str:
        """Write a new queued job and return its id (the caller holds the slot's lock)."""
        job_id = uuid.uuid4().hex
        self._write({"id": job_id, "kind": kind, "state": "queued", "step": "queued",
                     "progress": {"done": 0, "total": 0}, "created": time.time(), "pid": os.getpid(),
                     "slot": slot, "owner": owner, "result": None, "error": None})
        return job_id

    def _lock_path(self, slot: str) -> Path:
        return self.folder / f"{slot}.lock"

    def _acquire(self, slot: str):
        handle = open(self._lock_path(slot), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            running = [job["id"] for job in self.listing()
                       if job["state"] in ACTIVE_STATES and job.get("slot", DEFAULT_SLOT) == slot]
            named = running[0] if running and slot == DEFAULT_SLOT else None
            raise self._busy(self._busy_text, {"job": named}) from None
        return handle

    def _run(self, job_id: str, work, lock, cleanup) -> None:
        started = time.time()
        try:
            self._update(job_id, state="running", step="starting", started=started)
            result = work(Progress(self, job_id))
            self._update(job_id, state="done", step="done", result=result, finished=time.time())
            log.info("job %s done in %.1f s", job_id, time.time() - started)
        except JobCancelled:
            self._update(job_id, state="cancelled", step="cancelled", finished=time.time())
            log.info("job %s cancelled after %.1f s", job_id, time.time() - started)
        except PyRecognizerError as exc:
            self._update(job_id, state="failed", step="failed", finished=time.time(),
                         error={"code": exc.code, "description": exc.description, "data": exc.data})
            log.warning("job %s failed: %s %s", job_id, exc.code, exc.description)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._crashed(job_id, exc)
            else:
                log.error("job %s: the disk is full", job_id)
                try:
                    self._update(job_id, state="failed", step="failed", finished=time.time(),
                                 error={"code": InsufficientStorage.code, "data": None,
                                        "description": "the disk filled up during training: no model was saved"})
                except OSError:  # not even the job's state fits: the next start reads JOB_INTERRUPTED
                    log.error("job %s: its failure could not be recorded either", job_id)
        except Exception as exc:  # a job must always end in a state a client can read
            self._crashed(job_id, exc)
        finally:
            if cleanup:
                cleanup()
            self._cancel_path(job_id).unlink(missing_ok=True)
            lock.close()

    def _crashed(self, job_id: str, exc: Exception) -> None:
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        self._update(job_id, state="failed", step="failed", finished=time.time(),
                     error={"code": "INTERNAL_ERROR", "description": f"training crashed: {exc}", "data": None})

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

    def _cancel_path(self, job_id: str) -> Path:
        return self._path(job_id).with_suffix(".cancel")

    def cancel(self, job_id: str) -> dict:
        """Ask a queued or running job to stop (it ends "cancelled" at its next progress report,
        in whichever process runs it); return the job. An ended job is left as it is."""
        job = self.get(job_id)
        if job["state"] in ACTIVE_STATES:
            self._cancel_path(job_id).touch()
            job["cancel_requested"] = True
        return job

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked the job to stop."""
        return self._cancel_path(job_id).exists()

    def get(self, job_id: str) -> dict:
        """Return a job's state; one left running by a dead process is reported failed."""
        try:
            job = json.loads(self._path(job_id).read_text())
        except (OSError, ValueError):
            raise NotFound(f"no job {job_id!r}") from None
        if job["state"] in ACTIVE_STATES and not self._someone_holds_lock(job.get("slot", DEFAULT_SLOT)):
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
    def new_upload(folder: Path, suffix: str = ".zip") -> tuple[Path, BinaryIO]:
        """Create an empty upload file in ``folder``, in use for as long as the handle is open.

        "In use" is an flock on the file itself: it dies with its process, so ``stale_uploads``
        tells a killed job's upload (unlocked) from one that a worker here or on another node
        is still writing or training from, however young or old either is.
        """
        while True:
            path = folder / f"{uuid.uuid4().hex}{suffix}"
            handle = open(path, "xb")
            fcntl.flock(handle, fcntl.LOCK_EX)
            if os.fstat(handle.fileno()).st_nlink:  # not removed by a clean-up between open and flock
                return path, handle
            handle.close()

    @staticmethod
    def stale_uploads(folder: Path) -> list[str]:
        """Remove and return the uploads in ``folder`` that nobody uses any more.

        An upload nobody holds locked is a leftover of a killed training or video analysis: a
        full copy of someone's photos or video, not to be kept.
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
        return self._someone_holds_lock(DEFAULT_SLOT)

    def _someone_holds_lock(self, slot: str) -> bool:
        with open(self._lock_path(slot), "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
