"""Training on a real Dask cluster set up exactly as docs/cluster.md says, and two
service nodes sharing one model store.

The page's commands are read from the page itself and run as written; only what names
this machine is replaced: hosts (127.0.0.1), ports (free ones), the data and photo folders and
the secrets' placeholders. The scheduler runs from a temporary folder without PYTHONPATH, with
the project's environment on PATH only for the `dask` executable, so it cannot import the
project; each of two workers is the page's worker command (nproc honours OMP_NUM_THREADS=1:
one worker process per simulated machine). Checked: training through the CLI and through
POST /train gives the model of a local run, the other node serves it within seconds, a worker
killed mid-training does not fail the job, and a scheduler that is unreachable, of another
dask/distributed version, or has no usable worker fails the job up front with
CLUSTER_UNAVAILABLE.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datastructure.errors import ClusterUnavailable
from tests.support import ROOT, TEST_CREDENTIALS, Server, free_port, make_config, under_ci

distributed = pytest.importorskip("distributed") if not under_ci() else __import__("distributed")

pytestmark = [pytest.mark.usefixtures("faces"), pytest.mark.e2e, pytest.mark.slow]  # Dask and servers

NODE_CONFIG = {"dashboard": {"enabled": False}, "faces": {"cache": False}, "cluster": {"timeout": 5}}
FOLLOW_SECONDS = 5
VENV_BIN = Path(sys.executable).parent  # the project's environment: `dask` and `python`
OTHER_DASK = ROOT / ".cache" / "dask-other"  # `make dask-other`: dask/distributed of another version
SECRETS = {"PYRECOGNIZER_SECRET_KEY": "cluster-test-secret-key-0123456789",
           "PYRECOGNIZER_API_TOKEN": TEST_CREDENTIALS["api_token"],
           "PYRECOGNIZER_ADMIN_PASSWORD": TEST_CREDENTIALS["admin_password"]}


CLUSTER_PAGE = ROOT / "docs" / "cluster.md"


def readme_commands() -> list[str]:
    """The commands of docs/cluster.md's code block under "The commands", as written."""
    section = CLUSTER_PAGE.read_text().split("\n## The commands\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def on_this_machine(command: str, *, scheduler_port: int, data_dir: Path, photos: Path,
                    dashboard_port: int | None = None, port: int | None = None) -> str:
    """``command`` with the page's hosts, ports, folders and secret placeholders replaced."""
    values = {"10.0.0.5": "127.0.0.1", "0.0.0.0": "127.0.0.1", "8786": str(scheduler_port),
              "8787": str(dashboard_port or free_port()), "8081": str(port or free_port()),
              "/mnt/pyrecognizer": shlex.quote(str(data_dir)), "/mnt/photos": shlex.quote(str(photos))}
    for placeholder, value in values.items():
        command = re.sub(rf"(?<![\w.]){re.escape(placeholder)}(?![\w.])", value, command)
    command = re.sub(r"\b(PYRECOGNIZER_\w+)=…", lambda match: f"{match[1]}={shlex.quote(SECRETS[match[1]])}", command)
    assert not re.search(r"10\.0\.0\.5|0\.0\.0\.0|/mnt/|…", command), command
    return command


class Readme:
    """docs/cluster.md's commands by role, on this machine."""

    ROLES = {"scheduler": "dask scheduler ", "worker": "PYTHONPATH=$PWD dask worker ",
             "serve": "python main.py serve ", "train": "python main.py train "}

    def __init__(self, data_dir: Path, photos: Path, scheduler_port: int | None = None):
        self.scheduler_port = scheduler_port or free_port()
        self.address = f"tcp://127.0.0.1:{self.scheduler_port}"
        self.place = dict(scheduler_port=self.scheduler_port, data_dir=data_dir, photos=photos)
        commands = readme_commands()
        self.exports = [on_this_machine(line, **self.place) for line in commands if line.startswith("export ")]
        found = {role: [line for line in commands if line.startswith(start)] for role, start in self.ROLES.items()}
        assert all(len(lines) == 1 for lines in found.values()), found
        assert len(commands) == len(self.exports) + len(self.ROLES), f"a docs/cluster.md command no test runs: {commands}"
        self.raw = {role: lines[0] for role, lines in found.items()}

    def command(self, role: str, **ports) -> str:
        """The page's ``role`` command; a service node's after the page's exports (then
        exec-ed, so the shell's process is the service's)."""
        line = on_this_machine(self.raw[role], **self.place, **ports)
        return "; ".join([*self.exports, f"exec {line}"]) if role in ("serve", "train") else line


def scheduler_env(dask_bin: Path, folder: Path) -> dict:
    """A scheduler machine's environment: ``dask_bin``'s `dask` on PATH (and the system's
    tools), no PYTHONPATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "dask").unlink(missing_ok=True)
    (bin_dir / "dask").symlink_to(dask_bin / "dask")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"}


def project_env(**extra) -> dict:
    """A worker's or service node's environment: the project's environment first on PATH."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", **extra}


class Process:
    """A shell command in its own session, so it dies with all its children."""

    def __init__(self, name: str, command: str, logs: Path, *, cwd: Path, env: dict):
        self.name, self.command, self.log = name, command, logs / f"{name}.log"
        self._output = open(self.log, "ab")
        self.popen = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=self._output,
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
        return f"$ {self.command}\n" + self.log.read_text(errors="replace")[-3000:]


def wait_for_workers(address: str, count: int) -> None:
    client = distributed.Client(address, timeout=30, set_as_default=False)
    try:
        client.wait_for_workers(count, timeout=60)
    finally:
        client.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The service nodes' one data folder, with their configuration (PYRECOGNIZER_CONFIG)."""
    folder = tmp_path_factory.mktemp("shared-store")
    (folder / "node-conf.json").write_text(json.dumps(NODE_CONFIG))
    return folder


@pytest.fixture(scope="module")
def readme(shared, faces) -> Readme:
    return Readme(shared, faces / "celebrities" / "train")


@pytest.fixture(scope="module")
def cluster(readme, tmp_path_factory):
    """The page's scheduler, from an empty folder that cannot import the project, and its
    worker command run twice from the project's folder."""
    logs = tmp_path_factory.mktemp("dask")
    elsewhere = tmp_path_factory.mktemp("scheduler-machine")
    env = scheduler_env(VENV_BIN, elsewhere)
    cannot = subprocess.run(["dask", "--version"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert cannot.returncode == 0, cannot.stderr
    python = (VENV_BIN / "dask").read_text().splitlines()[0].removeprefix("#!").strip()
    imports = subprocess.run([python, "-c", "import utils.encoding"], cwd=elsewhere, env=env, capture_output=True)
    assert imports.returncode != 0, "the scheduler's environment can import the project: it would hide issue 18"
    processes = {}
    try:
        processes["scheduler"] = Process("scheduler", readme.command("scheduler"), logs, cwd=elsewhere, env=env)
        for name in ("worker1", "worker2"):
            processes[name] = Process(name, readme.command("worker"), logs, cwd=ROOT,
                                      env=project_env(OMP_NUM_THREADS="1"))
        wait_for_workers(readme.address, 2)
        yield readme.address, processes
    except BaseException:
        for process in processes.values():
            print(f"--- {process.name}\n{process.output()}")
        raise
    finally:
        for process in processes.values():
            process.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def nodes(cluster, readme, shared):
    """Node A is the page's service node (it trains on the cluster); node B only predicts;
    both use one data folder."""
    env = {"PYRECOGNIZER_CONFIG": str(shared / "node-conf.json")}
    node_a = Server(shared / "node-a", env=project_env(**env), command=["true"])  # its log folder
    node_a.command = ["bash", "-c", readme.command("serve", port=node_a.port)]  # on the port Server chose
    started = []
    try:
        for node in (node_a, Server(shared, config=NODE_CONFIG)):
            started.append(node.start())
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
    assert remote["encodings"].shape == local["encodings"].shape
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


def test_cli_training_on_the_readme_cluster_equals_local_and_the_other_node_follows(
        readme, nodes, shared, trained, faces):
    _, node_b = nodes
    photo = faces / "celebrities" / "val" / "Elton John" / "1.jpg"
    before = node_b.post("/predict", files={"file": photo.open("rb")})
    assert before.status_code == 503 and before.json()["response"]["error"] == "CLASSIFIER_NOT_LOADED"

    with Watcher(node_b) as watcher:
        run = subprocess.run(["bash", "-c", readme.command("train")], cwd=ROOT, capture_output=True, text=True,
                             env=project_env(PYRECOGNIZER_CONFIG=str(shared / "node-conf.json")), timeout=240)
        finished = time.time()
        assert run.returncode == 0, run.stdout + run.stderr[-3000:]
        answer = json.loads(run.stdout.splitlines()[-1])["response"]
        assert answer["status"] == "OK", answer
        assert_follows(node_b, answer["data"]["model"], finished, photo)
    watcher.assert_switched(None, answer["data"]["model"])
    service, local = trained
    result = answer["data"]
    assert "93/93" in run.stderr  # the progress bar, all photos encoded
    assert result["photos"] == local["photos"] and result["skipped"] == local["skipped"]
    assert_same_model(shared / "dataset" / "model" / result["model"], service.store.folder / local["model"])


def test_http_training_with_a_worker_killed_midway_still_equals_local(cluster, nodes, shared, trained,
                                                                      celebrities_zip, faces):
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
    assert job["progress"] == {"done": 93, "total": 93}
    assert job["result"]["photos"] == local["photos"] and job["result"]["skipped"] == local["skipped"]
    assert_same_model(shared / "dataset" / "model" / job["result"]["model"],
                      service.store.folder / local["model"])


def failed_training(tmp_path: Path, faces: Path, scheduler: str, timeout: float = 2) -> dict:
    """The job of a training on ``scheduler``, run by the service's own job path (as `main.py
    train` and POST /train run it) in this process."""
    from utils.service import build_service

    service = build_service(make_config(tmp_path / "data", cluster={"scheduler": scheduler, "timeout": timeout}),
                            console_log=False)
    job = service.jobs.run_here("train", lambda progress: service.train(faces / "celebrities" / "train",
                                                                      progress=progress))
    assert job["state"] == "failed" and job["error"]["code"] == "CLUSTER_UNAVAILABLE", job
    assert not list((tmp_path / "data" / "dataset" / "model").glob("2*")), "no model may be written"
    return job


def test_unreachable_scheduler_fails_the_job_fast(tmp_path, faces):
    nobody = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    job = failed_training(tmp_path, faces, nobody)
    assert nobody in job["error"]["description"] and "PYRECOGNIZER_DASK_SCHEDULER" in job["error"]["description"]
    assert time.monotonic() - started < 2 + 5  # the timeout, plus importing dask
    assert ClusterUnavailable.status == 503


@pytest.fixture(scope="module")
def other_dask() -> Path:
    """The bin folder of an environment with dask/distributed of another version (`make dask-other`)."""
    subprocess.run(["make", "--no-print-directory", "dask-other"], cwd=ROOT, check=True, capture_output=True)
    return OTHER_DASK / "bin"


def test_a_scheduler_of_another_dask_version_is_refused_naming_both(other_dask, readme, tmp_path, faces):
    """The page's scheduler command, run with another dask/distributed than the service's."""
    import dask

    versions = subprocess.run([other_dask / "python", "-c", "import dask, distributed; print(dask.__version__, "
                               "distributed.__version__)"], capture_output=True, text=True, check=True)
    other_dask_version, other_distributed = versions.stdout.split()
    assert other_distributed != distributed.__version__, "make dask-other must install another version"
    other = Readme(readme.place["data_dir"], readme.place["photos"])
    elsewhere = tmp_path / "scheduler-machine"
    env = scheduler_env(other_dask, elsewhere)
    scheduler = Process("other-scheduler", other.command("scheduler"), tmp_path, cwd=elsewhere, env=env)
    try:
        job = failed_training(tmp_path, faces, other.address, timeout=10)
    except BaseException:
        print(scheduler.output())
        raise
    finally:
        scheduler.kill(signal.SIGTERM)
    description = job["error"]["description"]
    assert f"distributed {other_distributed}" in description and f"dask {other_dask_version}" in description
    assert f"distributed {distributed.__version__}" in description and f"dask {dask.__version__}" in description
    assert other.address in description


def test_a_cluster_without_usable_workers_fails_fast(cluster, readme, tmp_path, faces):
    """Last: it stops the workers left. A scheduler with no worker would queue batches forever;
    a worker that cannot import the project would fail every batch."""
    from utils.encoding import encoded_photos
    from utils.faces import Options

    address, processes = cluster
    for name in ("worker1", "worker2"):
        processes[name].kill(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="no worker"):
        list(encoded_photos([b"not even a photo"], Options(), scheduler=address, cluster_timeout=2))
    assert time.monotonic() - started < 2 + 5

    # the page's worker command, from another folder than the project's
    elsewhere = tmp_path / "not-the-project"
    elsewhere.mkdir()
    stray = Process("stray-worker", readme.command("worker"), tmp_path, cwd=elsewhere, env=project_env(OMP_NUM_THREADS="1"))
    try:
        wait_for_workers(address, 1)
        job = failed_training(tmp_path, faces, address, timeout=10)
    except BaseException:
        print(stray.output())
        raise
    finally:
        stray.kill(signal.SIGTERM)
    assert "cannot run this pipeline" in job["error"]["description"]
    assert "PYTHONPATH" in job["error"]["description"]
