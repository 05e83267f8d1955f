"""Encoding on a Dask cluster: the executor ``encoded_photos`` uses when ``cluster.scheduler`` is set.

The fan-out is the one the local process pool runs: batches of photo bytes go out with
``submit(batch_results, batch, options)``, come back in submission order, and at most two
batches per worker thread are in flight. Only where they run changes, so progress and
skipped-photo reports are the same on one machine and on a cluster.

Dask is imported here only, and only when a scheduler is configured: the web service and
the default (local pool) training never pay for it.

Workers run ``utils.faces.batch_results``, which pickles by reference, so every worker must
import this project: start ``dask worker`` from a checkout of the same version with
``PYTHONPATH`` set to it, in an environment with the project's requirements (dlib is needed
there anyway, so uploading the code with ``client.upload_file`` would not be enough). On
connecting, every worker is asked for its ``PIPELINE_VERSION``; a worker that cannot import
the project, or runs another pipeline, fails the job at once instead of producing encodings
that differ from a local run.

Photo bytes travel inside the task (not ``scatter``-ed to one worker), so the scheduler can
run a batch again elsewhere when its worker dies; ``retries`` covers exceptions raised in a
task, Dask's ``allowed-failures`` covers workers that die while running one.
"""
from __future__ import annotations

import time
from concurrent.futures import CancelledError

from datastructure.errors import ClusterUnavailable

RETRIES = 2  # a batch that raises is run up to twice more (elsewhere, if its worker is gone)
POLL = 1.0  # seconds between health checks while waiting for a batch
INSTALL_HINT = 'pip install "dask[distributed]" (see requirements.txt)'


def worker_pipeline() -> str:
    """Run on each worker: the pipeline version its ``utils.faces`` has, or why it has none."""
    try:
        from utils.faces import PIPELINE_VERSION
    except Exception as exc:  # reported to the service, which explains it
        return f"error: {exc!r}"
    return PIPELINE_VERSION


class ClusterFuture:
    """A Dask future whose ``result()`` fails with ClusterUnavailable instead of waiting forever."""

    def __init__(self, executor: "DaskExecutor", future):
        self.executor, self.future = executor, future

    def done(self) -> bool:
        return self.future.done()

    def result(self):
        while True:
            try:
                return self.future.result(timeout=POLL)
            except TimeoutError:
                self.executor.check_health()
            except CancelledError as exc:
                if self.executor.closing:
                    raise
                raise ClusterUnavailable(
                    f"lost the Dask scheduler at {self.executor.address} during the job: {exc}",
                    {"scheduler": self.executor.address}) from None


class DaskExecutor:
    """The ``submit``/``shutdown`` interface of ``concurrent.futures`` over a Dask Client.

    ``address`` is a running scheduler (``tcp://host:8786``). The constructor fails with
    ClusterUnavailable within about ``timeout`` seconds when the scheduler cannot be reached,
    has no worker, or has a worker that cannot run this project's pipeline; a job also fails
    when the scheduler goes away, or has had no worker for ``timeout`` seconds, while it waits.
    """

    def __init__(self, address: str, timeout: float = 10.0):
        self.address, self.timeout = address, float(timeout)
        self.closing = False
        self._since_healthy = time.monotonic()
        self._workers, self._workers_read = 1, 0.0
        try:
            from distributed import Client
        except ImportError:
            raise ClusterUnavailable(f"cluster.scheduler is {address} but Dask is not installed: {INSTALL_HINT}",
                                     {"scheduler": address}) from None
        try:
            self.client = Client(address, timeout=self.timeout, set_as_default=False)
        except Exception as exc:  # OSError on refusal and time-out, ValueError on a bad address...
            raise ClusterUnavailable(
                f"cannot reach the Dask scheduler at {address} within {self.timeout:g} s "
                f"(cluster.scheduler, PYRECOGNIZER_DASK_SCHEDULER): {exc}", {"scheduler": address}) from None
        try:
            self._check_workers()
        except BaseException:
            self.client.close()
            raise

    def _check_workers(self) -> None:
        """Fail unless the cluster has a worker and every worker runs this project's pipeline."""
        from utils.faces import PIPELINE_VERSION

        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
            versions = self.client.run(worker_pipeline, on_error="return")
        except Exception as exc:
            raise ClusterUnavailable(f"the Dask scheduler at {self.address} has no worker ready within "
                                     f"{self.timeout:g} s: {exc}", {"scheduler": self.address}) from None
        wrong = {worker: str(version) for worker, version in versions.items() if version != PIPELINE_VERSION}
        if wrong:
            raise ClusterUnavailable(
                f"{len(wrong)} Dask worker(s) cannot run this pipeline (version {PIPELINE_VERSION}), e.g. "
                f"{next(iter(wrong.items()))}: start `dask worker` from this project's folder with "
                "PYTHONPATH set to it, in the project's environment",
                {"scheduler": self.address, "workers": wrong})

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

    def submit(self, fn, *args) -> ClusterFuture:
        # pure=False: two batches with the same bytes are still two tasks, each with a result
        return ClusterFuture(self, self.client.submit(fn, *args, pure=False, retries=RETRIES))

    def check_health(self) -> None:
        """Fail when the scheduler is gone, or has had no worker for ``timeout`` seconds."""
        if self.client.status not in ("running", "connecting"):
            raise ClusterUnavailable(f"lost the Dask scheduler at {self.address} during the job",
                                     {"scheduler": self.address})
        try:
            alive = self.client.status == "running" and bool(
                self.client.nthreads(callback_timeout=self.timeout))
        except Exception:
            alive = False
        if alive:
            self._since_healthy = time.monotonic()
        elif time.monotonic() - self._since_healthy > self.timeout:
            raise ClusterUnavailable(f"the Dask scheduler at {self.address} has had no worker, or has not "
                                     f"answered, for {self.timeout:g} s", {"scheduler": self.address})

    def shutdown(self, cancel_futures: bool = False) -> None:
        """Close the connection; the scheduler forgets (and so cancels) every batch not gathered."""
        self.closing = True
        try:
            self.client.close(timeout=self.timeout)
        except Exception:
            pass  # the scheduler may be the reason we are shutting down
