"""Encoding on a Dask cluster: the executor ``encoded_photos`` uses when ``cluster.scheduler`` is set.

The fan-out is the one the local process pool runs: batches of photo bytes go out with
``submit(fn, *args)``, come back in submission order, and at most two batches per worker
thread are in flight. Only where they run changes, so progress and skipped-photo reports are
the same on one machine and on a cluster.

This module imports nothing of the project, and Dask only when a scheduler is configured: the
web service and the default (local pool) training never pay for it. What the cluster must run
(the pipeline's version and how to ask a worker for it, a probe task) comes from the caller.

Only the workers run project code. A scheduler deserializes every task it is sent, so a task
naming a project function would need the project on the scheduler too ("Error during
deserialization of the task graph"). Each task is therefore ``pickle.loads`` (the standard
library's) of bytes the scheduler never opens: unpickling them on a worker runs the real call
there (``RemoteCall``) and gives back its result pickled again, so results and the objects in
them also cross the scheduler as plain bytes (an exception raised in a task stays serialized
there, and reaches the client as it was). The scheduler needs only dask and distributed,
of the client's versions; the workers need the project (see README, "Running on a cluster").

Before a photo is sent, the executor checks, in order: the scheduler answers, and runs the
client's dask and distributed versions (asked over a bare connection, since a Client's
handshake with another version can fail before saying which); it has a worker; every worker runs those versions and
this project's pipeline; a probe task makes the whole round trip. Each failure raises the
caller's ``error`` (the service's ClusterUnavailable) naming what is wrong and the fix.

Photo bytes travel inside the task (not ``scatter``-ed to one worker), so the scheduler can
run a batch again elsewhere when its worker dies; ``retries`` covers exceptions raised in a
task, Dask's ``allowed-failures`` covers workers that die while running one.
"""
from __future__ import annotations

import asyncio
import pickle
import time
import warnings
from concurrent.futures import CancelledError
from typing import Callable

RETRIES = 2  # a batch that raises is run up to twice more (elsewhere, if its worker is gone)
POLL = 1.0  # seconds between health checks while waiting for a batch
PACKAGES = ("dask", "distributed")  # what scheduler, workers and client must have alike
INSTALL_HINT = 'pip install "dask[distributed]" (see requirements.txt)'
WORKER_HINT = ("start `dask worker` from this project's folder with PYTHONPATH set to it, in the project's "
               "environment (`make install`)")


def pickled_result(fn: Callable, args: tuple) -> bytes:
    """Run on a worker, by unpickling a RemoteCall: ``fn(*args)``, pickled."""
    return pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL)


class RemoteCall:
    """``fn(*args)`` as bytes that run it when unpickled: ``pickle.loads(bytes(call))`` on a
    worker returns the pickled result. The scheduler sees only ``pickle.loads`` and bytes."""

    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return pickled_result, (self.fn, self.args)

    def __bytes__(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)


def versions_of(packages: dict) -> str:
    """Return e.g. "dask 2026.8.0, distributed 2026.8.0" from a Dask ``get_versions`` packages dict."""
    return ", ".join(f"{name} {packages.get(name)}" for name in PACKAGES)


def client_versions() -> str:
    """Return this process's dask and distributed versions, as ``versions_of`` writes them."""
    import dask
    import distributed

    return versions_of({"dask": dask.__version__, "distributed": distributed.__version__})


def scheduler_versions(address: str, timeout: float) -> str:
    """Return the dask and distributed versions of the scheduler at ``address``, asked over a bare
    connection: a Client's handshake with another version may fail before saying which it is."""
    from distributed.core import rpc

    async def ask() -> dict:
        async with rpc(address, timeout=timeout) as scheduler:
            return await scheduler.versions()

    # a second more than the connect timeout, so that its own error (refused, ...) is the one said
    return versions_of(asyncio.run(asyncio.wait_for(ask(), timeout + 1))["packages"])


class ClusterFuture:
    """A Dask future whose ``result()`` is the call's (unpickled) result, and fails with the
    executor's ``error`` instead of waiting forever."""

    def __init__(self, executor: "DaskExecutor", future):
        self.executor, self.future = executor, future

    def done(self) -> bool:
        """True when the batch has finished (or failed)."""
        return self.future.done()

    def result(self):
        """Return the call's result, checking the cluster's health while waiting."""
        while True:
            try:
                return pickle.loads(self.future.result(timeout=POLL))
            except TimeoutError:
                self.executor.check_health()
            except CancelledError as exc:
                if self.executor.closing:
                    raise
                raise self.executor.error(
                    f"lost the Dask scheduler at {self.executor.address} during the job: {exc}",
                    {"scheduler": self.executor.address}) from None


class DaskExecutor:
    """The ``submit``/``shutdown`` interface of ``concurrent.futures`` over a Dask Client.

    ``address`` is a running scheduler (``tcp://host:8786``). ``pipeline`` is what every
    worker must answer, and ``pipeline_probe`` the function that asks it (run on each worker
    with ``Client.run``); ``probe`` is a call that must complete as a task before any photo
    is sent; ``error(description, data)`` is the exception raised when the cluster cannot
    serve. The constructor raises it within a few ``timeout`` seconds when any check fails
    (see the module's docstring); a job also fails when the scheduler goes away, or has had
    no worker for ``timeout`` seconds, while it waits.
    """

    def __init__(self, address: str, timeout: float = 10.0, *, pipeline: str,
                 pipeline_probe: Callable[[], str], probe: Callable[[], object],
                 error: Callable[[str, dict], Exception]):
        self.address, self.timeout, self.error = address, float(timeout), error
        self.closing = False
        self._since_healthy = time.monotonic()
        self._workers, self._workers_read = 1, 0.0
        try:
            from distributed import Client
            from distributed.versions import VersionMismatchWarning
        except ImportError:
            raise self.error(f"cluster.scheduler is {address} but Dask is not installed: {INSTALL_HINT}",
                             {"scheduler": address}) from None
        self._check_scheduler()
        try:
            with warnings.catch_warnings():  # checked above, and said in the job's error
                warnings.simplefilter("ignore", VersionMismatchWarning)
                self.client = Client(address, timeout=self.timeout, set_as_default=False)
        except Exception as exc:  # e.g. the scheduler went away since
            raise self.error(self._unreachable(exc), {"scheduler": address}) from None
        try:
            self._check_workers(pipeline, pipeline_probe)
            self._check_probe(probe)
        except BaseException:
            self.client.close()
            raise

    def _unreachable(self, exc: BaseException) -> str:
        return (f"cannot reach the Dask scheduler at {self.address} within {self.timeout:g} s "
                f"(cluster.scheduler, PYRECOGNIZER_DASK_SCHEDULER): {str(exc) or type(exc).__name__}; start it as "
                "README's \"Running on a cluster\" says, or correct the address")

    def _versions(self) -> dict:
        """Dask's version report: {"scheduler": {"packages": ...}, "workers": {address: ...}}."""
        try:
            return self.client.get_versions(check=False)
        except Exception as exc:
            raise self.error(f"the Dask scheduler at {self.address} does not answer a version query "
                             f"({exc!r}); it must run {client_versions()}, as this service does",
                             {"scheduler": self.address}) from None

    def _check_scheduler(self) -> None:
        """Fail unless the scheduler answers and runs the client's dask and distributed."""
        try:
            theirs = scheduler_versions(self.address, self.timeout)
        except Exception as exc:  # OSError on refusal, TimeoutError, ValueError on a bad address...
            raise self.error(self._unreachable(exc), {"scheduler": self.address}) from None
        ours = client_versions()
        if theirs != ours:
            raise self.error(
                f"the Dask scheduler at {self.address} runs {theirs}, this service {ours}: run the "
                f"scheduler with the versions in requirements.txt (it needs only those two packages)",
                {"scheduler": self.address, "scheduler_versions": theirs, "service_versions": ours})

    def _check_workers(self, pipeline: str, pipeline_probe: Callable[[], str]) -> None:
        """Fail unless the cluster has a worker and every worker runs the client's dask and
        distributed, and ``pipeline``."""
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except Exception as exc:
            raise self.error(f"the Dask scheduler at {self.address} has no worker ready within "
                             f"{self.timeout:g} s ({str(exc) or type(exc).__name__}): {WORKER_HINT}",
                             {"scheduler": self.address}) from None
        ours = client_versions()
        wrong = {worker: versions_of(report["packages"])
                 for worker, report in self._versions()["workers"].items() if versions_of(report["packages"]) != ours}
        if wrong:
            raise self.error(
                f"{len(wrong)} Dask worker(s) run other versions than this service ({ours}), e.g. "
                f"{next(iter(wrong.items()))}: {WORKER_HINT}", {"scheduler": self.address, "workers": wrong})
        try:
            answers = self.client.run(pipeline_probe, on_error="return")
        except Exception as exc:
            raise self.error(f"the Dask workers at {self.address} could not be asked for their pipeline "
                             f"version ({exc!r}): {WORKER_HINT}", {"scheduler": self.address}) from None
        wrong = {worker: str(answer) if isinstance(answer, str) else repr(answer)
                 for worker, answer in answers.items() if answer != pipeline}
        if wrong:
            raise self.error(
                f"{len(wrong)} Dask worker(s) cannot run this pipeline (version {pipeline}), e.g. "
                f"{next(iter(wrong.items()))}: {WORKER_HINT}", {"scheduler": self.address, "workers": wrong})

    def _check_probe(self, probe: Callable[[], object]) -> None:
        """Fail unless ``probe`` makes the round trip as a task (client, scheduler, worker, back)."""
        try:
            pickle.loads(self.submit(probe).future.result(timeout=self.timeout))
        except Exception as exc:
            raise self.error(
                f"the Dask cluster at {self.address} could not run a probe task within {self.timeout:g} s "
                f"({exc!r}): the scheduler needs only {client_versions()}; {WORKER_HINT}",
                {"scheduler": self.address}) from None

    @property
    def workers(self) -> int:
        """Worker threads in the cluster now (re-read at most every two seconds); at least 1."""
        if time.monotonic() - self._workers_read > 2:
            self._workers_read = time.monotonic()
            try:
                self._workers = max(1, sum(self.client.nthreads(callback_timeout=self.timeout).values()))
            except Exception:
                pass  # check_health says what is wrong when a result is waited for
        return self._workers

    def submit(self, fn: Callable, *args) -> ClusterFuture:
        """Run ``fn(*args)`` on a worker; the scheduler only passes the pickled call along."""
        # pure=False: two batches with the same bytes are still two tasks, each with a result
        return ClusterFuture(self, self.client.submit(pickle.loads, bytes(RemoteCall(fn, args)), pure=False,
                                                      retries=RETRIES))

    def check_health(self) -> None:
        """Fail when the scheduler is gone, or has had no worker for ``timeout`` seconds."""
        if self.client.status not in ("running", "connecting"):
            raise self.error(f"lost the Dask scheduler at {self.address} during the job",
                                     {"scheduler": self.address})
        try:
            alive = self.client.status == "running" and bool(
                self.client.nthreads(callback_timeout=self.timeout))
        except Exception:
            alive = False
        if alive:
            self._since_healthy = time.monotonic()
        elif time.monotonic() - self._since_healthy > self.timeout:
            raise self.error(f"the Dask scheduler at {self.address} has had no worker, or has not "
                                     f"answered, for {self.timeout:g} s", {"scheduler": self.address})

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Close the connection; the scheduler forgets (and so cancels) every batch not gathered."""
        self.closing = True
        try:
            self.client.close(timeout=self.timeout)
        except Exception:
            pass  # the scheduler may be the reason we are shutting down
