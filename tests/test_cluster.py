"""Training on a real Dask cluster (a scheduler and two workers on loopback), and two service
nodes sharing one model store: the cluster's model equals a local run's, the other node
serves it within seconds, a worker killed mid-training does not fail the job, and a
scheduler nobody answers at fails the job fast with CLUSTER_UNAVAILABLE."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datastructure.errors import ClusterUnavailable
from tests.support import ROOT, Server, free_port, make_config

distributed = pytest.importorskip("distributed") if os.environ.get("CI") != "true" else __import__("distributed")

pytestmark = [pytest.mark.usefixtures("faces"), pytest.mark.e2e, pytest.mark.slow]  # Dask and servers

NODE_CONFIG = {"dashboard": {"enabled": False}, "faces": {"cache": False}, "cluster": {"timeout": 5}}
FOLLOW_SECONDS = 5


class Process:
    """A `python -m dask ...` process in its own session, so it dies with all its children."""

    def __init__(self, name: str, args: list[str], logs: Path):
        self.name, self.log = name, logs / f"{name}.log"
        self._output = open(self.log, "ab")
        self.popen = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=ROOT,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=self._output,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a worker's nanny and the worker it started), then reap it."""
        if self.popen.returncode is None:  # not reaped yet, so its group id is still ours
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self._output.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes, every socket on 127.0.0.1."""
    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    loopback = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # its HTTP server too
    processes = {}
    try:
        processes["scheduler"] = Process("scheduler", ["scheduler", "--host", "127.0.0.1", "--port",
                                                       address.rsplit(":", 1)[1], *loopback], logs)
        for name in ("worker1", "worker2"):
            processes[name] = Process(name, ["worker", address, "--nworkers", "1", "--nthreads", "1",
                                             "--host", "127.0.0.1", *loopback], logs)
        client = distributed.Client(address, timeout=30, set_as_default=False)
        try:
            client.wait_for_workers(2, timeout=60)
        finally:
            client.close()
        yield address, processes
    except BaseException:
        for process in processes.values():
            print(f"--- {process.name}\n{process.output()}")
        raise
    finally:
        for process in processes.values():
            process.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def nodes(cluster, tmp_path_factory):
    """Node A trains on the cluster; node B only predicts; both use one data folder."""
    address, _ = cluster
    shared = tmp_path_factory.mktemp("shared-store")
    started = []
    try:
        for env in ({"PYRECOGNIZER_DASK_SCHEDULER": address}, {}):
            started.append(Server(shared, config=NODE_CONFIG, env=env).start())
        yield started
    finally:
        for server in started:
            server.stop()


def model_arrays(model_dir: Path) -> dict:
    """model.dat's arrays, rows sorted by file name."""
    with np.load(model_dir / "model.dat", allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in ("encodings", "labels", "files")}
    order = np.argsort(arrays["files"], kind="stable")
    return {name: values[order] for name, values in arrays.items()}


def assert_same_model(cluster_dir: Path, local_dir: Path) -> None:
    remote, local = model_arrays(cluster_dir), model_arrays(local_dir)
    assert remote["files"].tolist() == local["files"].tolist()
    assert remote["labels"].tolist() == local["labels"].tolist()
    assert np.allclose(remote["encodings"], local["encodings"])


def train_over_http(node: Server, celebrities_zip: Path, during=None) -> dict:
    started = node.post("/train", files={"file": ("celebrities.zip", celebrities_zip.open("rb"), "application/zip")})
    assert started.status_code == 202, started.text
    job_url = started.json()["response"]["job_url"]
    if during:
        during(job_url)
    return node.wait_for_job(job_url, timeout=240)


class Watcher:
    """Asks a node's /health which model it serves, ten times a second, while a job runs."""

    def __init__(self, node: Server):
        self.node, self.seen, self._stop = node, [], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            answer = self.node.get("/health", timeout=30)
            data = answer.json()["response"]["data"]
            self.seen.append((time.time(), answer.status_code, data["pid"], data["model"]))
            self._stop.wait(0.1)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)

    def assert_switched(self, old: str | None, new: str) -> None:
        """Every answer was the old model or the new one, and no process went back to the old."""
        assert self.seen and all(status == 200 for _, status, _, _ in self.seen), self.seen
        for pid in {pid for _, _, pid, _ in self.seen}:
            models = [model for _, _, who, model in self.seen if who == pid]
            switch = models.index(new) if new in models else len(models)
            assert set(models[:switch]) <= {old} and set(models[switch:]) <= {new}, (pid, models)


def assert_follows(node: Server, model_id: str, since: float, photo: Path) -> float:
    """The node predicts with ``model_id`` within FOLLOW_SECONDS of ``since``; return how long it took."""
    while True:
        answer = node.post("/predict", files={"file": photo.open("rb")}).json()["response"]
        if answer.get("model") == model_id:
            took = time.time() - since
            break
        assert time.time() - since < FOLLOW_SECONDS, f"node still answers with {answer.get('model')}: {answer}"
        time.sleep(0.1)
    assert took < FOLLOW_SECONDS and list(answer["data"]) == ["Elton John"]
    for _ in range(4):  # every gunicorn worker of the node, not just the first to answer
        assert node.post("/predict", files={"file": photo.open("rb")}).json()["response"]["model"] == model_id
    print(f"the other node predicted with model {model_id} {took:.2f} s after its activation")
    return took


def test_cluster_training_equals_local_and_the_other_node_follows(nodes, trained, celebrities_zip, faces):
    node_a, node_b = nodes
    photo = faces / "celebrities" / "val" / "Elton John" / "1.jpg"
    before = node_b.post("/predict", files={"file": photo.open("rb")})
    assert before.status_code == 503 and before.json()["response"]["error"] == "CLASSIFIER_NOT_LOADED"

    with Watcher(node_b) as watcher:
        job = train_over_http(node_a, celebrities_zip)
        assert job["state"] == "done", job
        assert_follows(node_b, job["result"]["model"], job["finished"], photo)
    watcher.assert_switched(None, job["result"]["model"])
    service, local = trained
    result = job["result"]
    assert job["progress"] == {"done": 93, "total": 93}
    assert result["photos"] == local["photos"] and result["skipped"] == local["skipped"]
    assert_same_model(node_a.data_dir / "dataset" / "model" / result["model"], service.store.folder / local["model"])


def test_unreachable_scheduler_fails_the_job_fast(tmp_path, faces):
    """The service's own job path (as `main.py train` and POST /train run it), in this process."""
    from utils.service import build_service

    nobody = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    service = build_service(make_config(tmp_path / "data", cluster={"scheduler": nobody, "timeout": 2}),
                           console_log=False)
    started = time.monotonic()
    job = service.jobs.run_here("train", lambda progress: service.train(faces / "celebrities" / "train",
                                                                      progress=progress))
    assert job["state"] == "failed" and job["error"]["code"] == "CLUSTER_UNAVAILABLE", job
    assert nobody in job["error"]["description"] and "PYRECOGNIZER_DASK_SCHEDULER" in job["error"]["description"]
    assert time.monotonic() - started < 2 + 5  # the timeout, plus importing dask
    assert ClusterUnavailable.status == 503


def test_a_worker_killed_mid_training_still_gives_the_same_model(cluster, nodes, trained, celebrities_zip, faces):
    _, processes = cluster
    node_a, node_b = nodes
    victim = processes["worker2"]

    def kill_a_worker(job_url: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = node_a.get(job_url).json()["response"]["data"]
            assert job["state"] not in ("done", "failed"), f"the job ended before a worker was killed: {job}"
            done, total = job["progress"]["done"], job["progress"]["total"]
            if total and done / total > 0.2:
                victim.kill()
                return
            time.sleep(0.1)
        raise AssertionError("the job made no progress")

    previous = node_b.get("/health").json()["response"]["data"]["model"]
    with Watcher(node_b) as watcher:
        job = train_over_http(node_a, celebrities_zip, during=kill_a_worker)
        assert victim.popen.poll() is not None
        assert job["state"] == "done", job
        assert_follows(node_b, job["result"]["model"], job["finished"],
                       faces / "celebrities" / "val" / "Elton John" / "1.jpg")
    watcher.assert_switched(previous, job["result"]["model"])
    service, local = trained
    assert job["progress"] == {"done": 93, "total": 93} and job["result"]["skipped"] == local["skipped"]
    assert_same_model(node_a.data_dir / "dataset" / "model" / job["result"]["model"],
                      service.store.folder / local["model"])


def test_a_cluster_without_workers_fails_fast(cluster):
    """Last: it stops the workers left. A scheduler with no worker would queue batches forever."""
    from utils.faces import Options, encoded_photos

    address, processes = cluster
    for name in ("worker1", "worker2"):
        processes[name].kill(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="no worker"):
        list(encoded_photos([b"not even a photo"], Options(), scheduler=address, cluster_timeout=2))
    assert time.monotonic() - started < 2 + 5
