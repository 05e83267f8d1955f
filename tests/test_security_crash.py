"""Crash safety of a real server (gunicorn, two workers): one training at a time across
workers, SIGKILL in the middle of a training, a tampered model file, and predictions while
the active model keeps changing.

The tests run in order on one data folder; each restart replaces the module's server.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.hostile import (good_photo, install_models, restarted, server_config, sha256,
                           start_server, stopped, subset, written, archive_of)
from tests.support import envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("faces")]


@pytest.fixture(scope="module")
def crash(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("crash")
    install_models(data_dir, hostile_models)
    # keep-alive on: a requests.Session then stays with one worker, which these tests target
    state = {"server": start_server(data_dir, server_config(faces={"workers": 1}, server={"keepalive": 5}))}
    yield state
    stopped(state["server"])


def model_ids(server) -> list[str]:
    return [model["id"] for model in envelope_of(server.get("/models", headers={"Accept": "application/json"}), 200)["data"]]


def zipped_folder(folder) -> bytes:
    """The zip of a folder of person folders, as bytes."""
    return archive_of(*[(f"{person.name}/{photo.name}", photo.read_bytes())
                        for person in sorted(folder.iterdir()) for photo in sorted(person.iterdir())])


def living_in_group(group: int) -> list[int]:
    """Pids of the processes of process group ``group`` that are not zombies."""
    living = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                living.append(int(entry))
    return living


def pinned_sessions(server, wanted: int, attempts: int = 80) -> dict[int, list[requests.Session]]:
    """About ``wanted`` keep-alive sessions, each bound to a worker process (known by its pid),
    at least one on each of two workers."""
    found: dict[int, list[requests.Session]] = {}
    for _ in range(attempts):
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {server.token}"
        pid = session.get(server.url + "/health", timeout=30).json()["response"]["data"]["pid"]
        if len(found.setdefault(pid, [])) < wanted - 1:
            found[pid].append(session)
        else:
            session.close()
        if len(found) >= 2 and sum(map(len, found.values())) >= wanted:
            return found
    pytest.fail(f"could not reach two workers: {[(pid, len(group)) for pid, group in found.items()]}")


def worker_of(session: requests.Session, server) -> int:
    return session.get(server.url + "/health", timeout=30).json()["response"]["data"]["pid"]


def test_a_second_training_is_refused_across_workers(crash, faces, tmp_path):
    server = crash["server"]
    archive = zipped_folder(subset(faces, {"Elton John": 6, "Madonna": 6, "Mindy Kaling": 6}, tmp_path / "set"))
    sessions = pinned_sessions(server, wanted=6)
    attempts = [session for group in sessions.values() for session in group]
    barrier = threading.Barrier(len(attempts))

    def post(session):
        barrier.wait()
        answer = session.post(server.url + "/train", files={"file": ("set.zip", archive)}, timeout=60)
        # The same keep-alive connection, hence the worker that answered the POST.
        return worker_of(session, server), answer

    with ThreadPoolExecutor(len(attempts)) as pool:
        answers = list(pool.map(post, attempts))
    statuses = sorted(answer.status_code for _, answer in answers)
    assert statuses == [202] + [409] * (len(attempts) - 1), statuses
    (winner, started), = [(pid, answer) for pid, answer in answers if answer.status_code == 202]
    job = envelope_of(started, 202)["data"]
    assert job["pid"] == winner
    for pid, answer in answers:
        if answer.status_code == 409:
            envelope_of(answer, 409, "TRAINING_IN_PROGRESS")
    refused_by = {pid for pid, answer in answers if answer.status_code == 409}

    # While the job runs, the other worker refuses too, and names the running job.
    for _ in range(5):
        if refused_by - {job["pid"]}:
            break
        other = next(group[0] for pid, group in pinned_sessions(server, wanted=2).items() if pid != job["pid"])
        refused = other.post(server.url + "/train", files={"file": ("again.zip", archive)}, timeout=60)
        assert envelope_of(refused, 409, "TRAINING_IN_PROGRESS")["data"]["job"] == job["id"]
        refused_by.add(worker_of(other, server))
    assert refused_by - {job["pid"]}, "no refusal came from the other worker"
    done = server.wait_for_job(f"/jobs/{job['id']}", timeout=180)
    assert done["state"] == "done", done
    assert [entry["id"] for entry in envelope_of(server.get("/jobs"), 200)["data"]] == [job["id"]]


def test_sigkill_during_training_loses_nothing(crash, celebrities_zip):
    server = crash["server"]
    active_before = envelope_of(server.get("/health"), 200)["data"]["model"]
    ids_before = model_ids(server)
    started = server.post("/train", files={"file": ("celebrities.zip", celebrities_zip.read_bytes())})
    job_id = envelope_of(started, 202)["data"]["id"]
    deadline = time.monotonic() + 120
    while True:
        job = envelope_of(server.get(f"/jobs/{job_id}"), 200)["data"]
        if job["state"] == "running" and job["progress"]["done"] > 0:
            break
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["progress"]["done"] < job["progress"]["total"]

    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(30)
    deadline = time.monotonic() + 10
    while living_in_group(server.process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not living_in_group(server.process.pid)  # the whole group is gone: workers and all
    # What a kill during the very last step (renaming the staged model) would leave behind.
    models = server.data_dir / "dataset" / "model"
    staging = models / ".staging-20991231_235959-4242"
    staging.mkdir()
    (staging / "model.dat").write_bytes(b"half a model")

    crash["server"] = server = restarted(server)
    crash["tmp_after_restart"] = written(server)["tmp"]

    health = envelope_of(server.get("/health"), 200)["data"]
    assert health["model"] == active_before
    assert model_ids(server) == ids_before  # no new model, no half model
    assert not list(models.glob(".staging-*"))
    for model_id in ids_before:  # every listed model is whole and verifies
        manifest = json.loads((models / model_id / "manifest.json").read_text())
        assert {name: sha256((models / model_id / name).read_bytes()) for name in manifest} == manifest
        envelope_of(server.get(f"/models/{model_id}"), 200)
    job = envelope_of(server.get(f"/jobs/{job_id}"), 200)["data"]
    assert job["state"] == "failed" and job["error"]["code"] == "JOB_INTERRUPTED", job
    listed = {entry["id"]: entry for entry in envelope_of(server.get("/jobs"), 200)["data"]}
    assert listed[job_id]["state"] == "failed"
    answer = server.post("/predict", files={"file": good_photo_bytes()})
    assert envelope_of(answer, 200)["model"] == active_before


def good_photo_bytes() -> bytes:
    from tests.support import faces_dir

    return good_photo(faces_dir()).read_bytes()


def test_sigkill_leaves_no_upload_behind(crash):
    # The killed job's uploaded zip (a copy of everyone's photos) must not stay on disk for ever.
    assert crash["tmp_after_restart"] == []


def test_training_works_again_after_the_kill(crash, faces, tmp_path):
    server = crash["server"]
    archive = zipped_folder(subset(faces, {"Madonna": 2, "Mindy Kaling": 2}, tmp_path / "small"))
    started = server.post("/train", files={"file": ("small.zip", archive)})
    job = server.wait_for_job(envelope_of(started, 202)["job_url"], timeout=120)
    assert job["state"] == "done", job
    assert envelope_of(server.get("/health"), 200)["data"]["model"] == job["result"]["model"]


def test_a_tampered_model_is_refused_and_the_previous_one_served(crash):
    server = crash["server"]
    ids = sorted(model_ids(server))
    tampered, previous = ids[-1], ids[-2]
    assert envelope_of(server.get("/health"), 200)["data"]["model"] == tampered
    stopped(server)
    classifier = server.data_dir / "dataset" / "model" / tampered / "model.clf"
    state = json.loads(classifier.read_text())
    state["threshold"] = 10.0  # anyone would now be recognised as someone
    classifier.write_text(json.dumps(state, indent=2))
    log_size = (server.data_dir / "log" / "pyrecognizer.log").stat().st_size

    crash["server"] = server = restarted(server)
    health = envelope_of(server.get("/health"), 200)["data"]
    assert health["model_loaded"] and health["model"] == previous, health
    for _ in range(4):  # every worker
        assert envelope_of(server.post("/predict", files={"file": good_photo_bytes()}), 200)["model"] == previous
    with open(server.data_dir / "log" / "pyrecognizer.log", errors="replace") as log:
        log.seek(log_size)
        lines = [line for line in log if f"refusing model {tampered}" in line]
    assert lines and "ERROR" in lines[0] and "model.clf does not match its manifest" in lines[0], lines
    envelope_of(server.post(f"/models/{tampered}/activate"), 409, "MODEL_NOT_VALID")
    assert envelope_of(server.get("/health"), 200)["data"]["model"] == previous


def test_predictions_during_model_switches_all_succeed(crash, hostile_models):
    server = crash["server"]
    _, (model_a, model_b) = hostile_models
    envelope_of(server.post(f"/models/{model_a}/activate"), 200)
    photo = good_photo_bytes()
    stop = threading.Event()
    activations = []

    def switch():
        for index in range(30):
            if stop.is_set():
                break
            target = model_b if index % 2 == 0 else model_a
            activations.append(server.post(f"/models/{target}/activate").status_code)
            time.sleep(0.1)

    def predict(_):
        session = requests.Session()  # one connection per thread, spread over the workers
        answers = []
        for _ in range(10):
            answer = session.post(server.url + "/predict", files={"file": ("p.jpg", photo)}, timeout=60)
            answers.append((answer.status_code, answer.json()["response"].get("model"), answer.json()["response"]["error"]))
        return answers

    switcher = threading.Thread(target=switch)
    switcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = [answer for batch in pool.map(predict, range(4)) for answer in batch]
    finally:
        stop.set()
        switcher.join()
    assert len(answers) == 40
    assert all(status == 200 for status, _, _ in answers), answers
    assert {model for _, model, _ in answers} <= {model_a, model_b}, answers
    assert len({model for _, model, _ in answers}) == 2, "the switches did not overlap the predictions"
    assert activations and all(status == 200 for status in activations), activations


def test_an_upload_in_use_is_kept_and_a_dead_ones_removed_whatever_their_age(tmp_path):
    # Another node's upload of a second ago must survive this node's start-up clean-up; a
    # killed job's upload must not wait for an age to pass before it goes.
    import subprocess
    import sys

    from utils.jobs import JobRunner

    in_use, handle = JobRunner.new_upload(tmp_path)
    handle.write(b"PK")
    # an upload whose process died (SIGKILL): created and locked by a child that is gone now
    dead = subprocess.run([sys.executable, "-c", (
        "import sys; from pathlib import Path; from utils.jobs import JobRunner; "
        "path, handle = JobRunner.new_upload(Path(sys.argv[1])); handle.write(b'PK'); handle.flush(); "
        "print(path.name, flush=True); import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
        str(tmp_path)], capture_output=True, text=True, cwd=os.getcwd()).stdout.strip()
    assert dead and (tmp_path / dead).exists()
    assert JobRunner.stale_uploads(tmp_path) == [dead]
    assert in_use.exists() and not (tmp_path / dead).exists()
    handle.close()
    assert JobRunner.stale_uploads(tmp_path) == [in_use.name]
