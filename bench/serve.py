"""The real server under load, over loopback only.

The model is trained the way an operator would (``python main.py train``), then
``python main.py serve`` starts gunicorn (preloaded app, ``server.workers`` processes of
``server.threads`` threads, from conf.json) on a free 127.0.0.1 port. Figures: seconds from
starting the process to /health answering ``model_loaded: true``; POST /predict throughput
and latency from 1 client and from 4 concurrent clients (one requests.Session per client
thread), in alternating rounds; errors (any answer but 200 with status OK); workers killed
by a signal; each worker's peak RSS (VmHWM); the slowest /health answer while 32 clients
hold half-sent requests open (target 2 s, issue 13), and while 100 chunked bodies and 6 bodies
declaring 256 MB trickle in at a byte a second (issue 24). The slow clients connect from other
loopback addresses (127.0.x.y) than the probes, as other hosts would. The bench's configuration only binds to 127.0.0.1, logs less and
lifts the /predict rate limit (all requests come from one address); the rest is conf.json.

The clients run in this process, on the same cores as the server: on a 2-core machine they
take a little of the CPU the server could use (~1.5 ms a request, printed in the JSON), as
any client on the same host would.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import ROOT, Row, at_least, ratio

REQUEST_PHOTOS = ("samples/obama.jpg", "samples/two_people.jpg", "celebrities/val/Madonna/2.jpg",
                  "celebrities/val/Elton John/3.jpg", "samples/bush_test.jpg")
READY_TIMEOUT = 180
LOAD_ROUNDS = 4
REQUEST_TIMEOUT = 120
# One client's req/s on this machine before encodings were mirrored and with every face mirrored
# (issue 27): the skip is to win back the difference, measured against the always-mirror switch
UNMIRRORED_ONE_CLIENT, MIRRORED_ONE_CLIENT = 16.2, 11.3


@dataclass
class Load:
    clients: int
    wall: float
    latencies: list
    errors: list
    client_cpu: float  # CPU of this process (the clients) over the run

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    def summary(self) -> dict:
        return {"clients": self.clients, "requests": len(self.latencies), "wall_s": round(self.wall, 2),
                "req_per_s": round(self.throughput, 2), "errors": len(self.errors),
                "client_cpu_ms_per_request": round(1000 * self.client_cpu / max(len(self.latencies), 1), 1),
                "first_errors": self.errors[:5],
                **{f"p{q}_ms": round(self.percentile(q), 1) for q in (50, 95, 99)}}


def clean_environment() -> dict:
    # PYRECOGNIZER_* variables of the developer's shell would change what is measured
    return {key: value for key, value in os.environ.items() if not key.startswith("PYRECOGNIZER_")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_file(folder: Path, threads: int | None = None, *, always_mirror: bool = False) -> Path:
    """A configuration on top of conf.json: the server on loopback, quiet, and the per-client
    rate limit on /predict lifted (every request comes from 127.0.0.1: the bench measures the
    engine, not the limiter). ``threads`` overrides server.threads (e.g. 1, to compare);
    ``always_mirror``: faces.always_mirror, the reference the mirror skip is measured against."""
    server: dict = {"host": "127.0.0.1"}
    if threads:
        server["threads"] = threads
    path = folder / ("bench-conf-always-mirror.json" if always_mirror else "bench-conf.json")
    path.write_text(json.dumps({"server": server, "logging": {"level": "WARNING"},
                                "faces": {"always_mirror": always_mirror},
                                "security": {"rate_limits": {"predict": "1000000 per minute"}}}))
    return path


def main_py(config: Path, data_dir: Path, *command: str) -> list[str]:
    return [sys.executable, str(ROOT / "main.py"), "--config", str(config), "--data-dir", str(data_dir), *command]


def trained_model(config: Path, data_dir: Path, train_folder: Path) -> dict:
    """Train with the CLI; return its answer's data (model id, photos...)."""
    done = subprocess.run(main_py(config, data_dir, "train", str(train_folder)), cwd=ROOT, env=clean_environment(),
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    answer = json.loads(lines[-1])["response"] if lines else {}
    if done.returncode != 0 or answer.get("status") != "OK":
        raise RuntimeError(f"training failed ({done.returncode}): {answer or done.stderr[-2000:]}")
    return answer["data"]


def seconds_until_ready(base: str, process: subprocess.Popen, started: float, log: Path) -> float:
    """Poll /health until a worker answers with the model loaded; return seconds since ``started``."""
    import requests

    while time.perf_counter() - started < READY_TIMEOUT:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            answer = requests.get(f"{base}/health", timeout=5).json()["response"]["data"]
            if answer.get("model_loaded"):
                return time.perf_counter() - started
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server was not ready after {READY_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def load_test(base: str, payloads: list[tuple[str, bytes]], total: int, clients: int) -> Load:
    """Send ``total`` POST /predict from ``clients`` threads, each with its own Session,
    taking the next request number from a shared counter (photos in rotation)."""
    import requests

    latencies, errors, lock, counter = [], [], threading.Lock(), iter(range(total))

    def client():
        with requests.Session() as session:
            while True:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                name, data = payloads[number % len(payloads)]
                began = time.perf_counter()
                try:
                    reply = session.post(f"{base}/predict", files={"file": (Path(name).name, data, "image/jpeg")},
                                         timeout=REQUEST_TIMEOUT)
                    status = reply.json()["response"]["status"] if reply.status_code == 200 else None
                    problem = None if status == "OK" else f"{name}: HTTP {reply.status_code} {reply.text[:200]}"
                except (requests.RequestException, ValueError, KeyError) as exc:
                    problem = f"{name}: {exc!r}"
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(clients, time.perf_counter() - began, latencies, errors, time.process_time() - cpu)


def health_ms_with_slow_clients(port: int, count: int = 32, probes: int = 5) -> float:
    """Hold ``count`` connections that each send half a request (half a head, or a head and a
    body shorter than its Content-Length), then return the slowest of ``probes`` /health
    answers, in ms (issue 13: gthread alone stopped answering with four of them)."""
    held = []
    try:
        for number in range(count):
            connection = from_another_address(port, number)
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" if number % 2 else
                               b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n--")
            held.append(connection)
        time.sleep(0.5)
        return max(health_seconds(port) for _ in range(probes)) * 1000
    finally:
        for connection in held:
            connection.close()


def health_seconds(port: int) -> float:
    """Seconds /health takes to answer (from 127.0.0.1); infinite when it does not within 10 s."""
    import requests

    began = time.perf_counter()
    try:
        requests.get(f"http://127.0.0.1:{port}/health", timeout=10).raise_for_status()
    except requests.RequestException:
        return float("inf")
    return time.perf_counter() - began


def from_another_address(port: int, number: int) -> socket.socket:
    """A connection to the server from the loopback address 127.0.x.y of client ``number`` (the
    front caps connections per address; the probes come from 127.0.0.1)."""
    address = f"127.0.{1 + number // 250}.{1 + number % 250}"
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))


def health_ms_with_trickled_bodies(port: int, chunked: int = 100, large: int = 6, seconds: float = 12) -> float:
    """Hold ``chunked`` chunked bodies and ``large`` bodies declaring 256 MB that trickle in at a
    byte a second, for ``seconds``; return the slowest /health answer meanwhile, in ms (issue 24:
    they held the service for as long as they lasted)."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    heads = [head + b"Transfer-Encoding: chunked\r\n\r\n"] * chunked + [head + b"Content-Length: 268435456\r\n\r\n"] * large
    held, slowest = [], 0.0
    try:
        for number, first in enumerate(heads):
            connection = from_another_address(port, number)
            connection.sendall(first)
            held.append(connection)
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            for connection in held:
                try:
                    connection.send(b"1")
                except OSError:  # closed by the server
                    pass
            took = health_seconds(port)
            slowest = max(slowest, took)
            time.sleep(max(0.0, 1 - took))
        return slowest * 1000
    finally:
        for connection in held:
            connection.close()


def combined(loads: list[Load]) -> Load:
    """One Load of several runs with the same number of clients, as if they ran back to back."""
    return Load(loads[0].clients, sum(load.wall for load in loads), [x for load in loads for x in load.latencies],
                [x for load in loads for x in load.errors], sum(load.client_cpu for load in loads))


def alternating_loads(base: str, payloads, requests_one: int, requests_many: int) -> tuple[Load, Load]:
    """1 client, then 4, ``LOAD_ROUNDS`` times over: a drift of the machine's speed (another
    tenant, a clock change) then weighs on both figures alike instead of on one of them."""
    def share(total: int, round_number: int) -> int:
        return total // LOAD_ROUNDS + (round_number < total % LOAD_ROUNDS)

    ones, fours = [], []
    for round_number in range(LOAD_ROUNDS):
        ones.append(load_test(base, payloads, share(requests_one, round_number), 1))
        fours.append(load_test(base, payloads, share(requests_many, round_number), 4))
    return combined(ones), combined(fours)


def mirror_comparison(base: str, always_base: str, payloads, requests_one: int) -> tuple[Load, Load]:
    """1 client against the server as configured, then against its always-mirror twin (the same
    model, faces.always_mirror on), ``LOAD_ROUNDS`` times over, so that drift weighs on both."""
    ours, always = [], []
    for round_number in range(LOAD_ROUNDS):
        count = requests_one // LOAD_ROUNDS + (round_number < requests_one % LOAD_ROUNDS)
        ours.append(load_test(base, payloads, count, 1))
        always.append(load_test(always_base, payloads, count, 1))
    return combined(ours), combined(always)


def started_server(config: Path, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str, int, float]:
    """Start `main.py serve` on a free loopback port; return (process, base URL, port, start time)."""
    port = free_port()
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(main_py(config, data_dir, "serve", "--port", str(port)), cwd=ROOT,
                                   env=clean_environment(), stdout=output, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}", port, started


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` forked (gunicorn's workers), from /proc: the tasks' ``children``
    lists where the kernel has them (CONFIG_PROC_CHILDREN), else every process's parent id."""
    tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if tasks:
        return sorted({int(child) for task in tasks for child in task.read_text().split()})
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:  # the process ended while we looked
            continue
        if int(fields.get("PPid", "0").strip() or 0) == pid:
            found.append(int(status.parent.name))
    return sorted(found)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM, the process's peak resident memory, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def server_failures(log: Path, service_log: Path) -> dict:
    """What went wrong on the server side: workers killed by a signal (gunicorn's log) and the
    distinct exceptions the service logged (their last line only: the logs also hold secrets
    generated for this throw-away data folder, which stay out of the results)."""
    crashes = [line.split("] ", 2)[-1] for line in log.read_text(errors="replace").splitlines()
               if "was sent SIG" in line]
    exceptions: dict[str, int] = {}
    if service_log.exists():
        lines = service_log.read_text(errors="replace").splitlines()
        for index, line in enumerate(lines):
            if line.startswith("Traceback"):
                last = next((later for later in lines[index + 1:] if later and not later.startswith(" ")), "?")
                exceptions[last] = exceptions.get(last, 0) + 1
    return {"worker_crashes": len(crashes), "crash_lines": crashes[:5], "exceptions": exceptions}


def pss_mb(pid: int) -> float | None:
    """Proportional set size now, in MB: pages shared with the master (the preloaded models)
    count for a share only, so this is what a worker really adds, unlike RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the master this bench started (gunicorn stops its workers), then wait."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_section(faces: Path, workdir: Path, requests_many: int, requests_one: int,
                  threads: int | None = None, say=print) -> tuple[list[Row], dict]:
    data_dir = workdir / "serve"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = config_file(workdir, threads)
    train_folder = faces / "celebrities" / "train"
    say("serve: training on celebrities/train with `main.py train` ...")
    began = time.perf_counter()
    model = trained_model(config, data_dir, train_folder)
    train_seconds = time.perf_counter() - began
    log = workdir / "server.log"
    payloads = [(name, (faces / name).read_bytes()) for name in REQUEST_PHOTOS]
    from conf.config import load_config

    server = load_config(str(config), {"data_dir": str(data_dir)}, environ={}).server
    process, base, port, started = started_server(config, data_dir, log)
    say(f"serve: started `main.py serve` on 127.0.0.1:{port} ({server.workers} workers x "
        f"{server.threads} threads) ...")
    always_process = None
    try:
        ready = seconds_until_ready(base, process, started, log)
        load_test(base, payloads, 4 * len(payloads), 4)  # warm-up: every worker and thread answers once
        say(f"serve: {requests_one} requests from 1 client and {requests_many} from 4, "
            f"in {LOAD_ROUNDS} alternating rounds ...")
        one, four = alternating_loads(base, payloads, requests_one, requests_many)
        say("serve: /health with 32 slow clients held ...")
        slow_health = health_ms_with_slow_clients(port)
        say("serve: /health with 106 trickling bodies held ...")
        trickle_health = health_ms_with_trickled_bodies(port)
        workers = {pid: peak_rss_mb(pid) for pid in children_of(process.pid)}
        shares = {pid: pss_mb(pid) for pid in [process.pid, *workers]}
        master = peak_rss_mb(process.pid)
        # the same model served with faces.always_mirror: the reference of the mirror skip
        always_dir = workdir / "serve-always-mirror"
        shutil.copytree(data_dir / "dataset" / "model", always_dir / "dataset" / "model")
        always_log = workdir / "server-always-mirror.log"
        always_process, always_base, _, always_started = started_server(
            config_file(workdir, threads, always_mirror=True), always_dir, always_log)
        seconds_until_ready(always_base, always_process, always_started, always_log)
        load_test(always_base, payloads, 4 * len(payloads), 4)
        say(f"serve: {requests_one} requests from 1 client, mirror where needed against always, alternating ...")
        mirror_one, always_one = mirror_comparison(base, always_base, payloads, requests_one)
    finally:
        stop(process)
        if always_process is not None:
            stop(always_process)
    failures = server_failures(log, data_dir / "log" / "pyrecognizer.log")
    scaling = ratio(four.throughput, one.throughput)
    errors = len(one.errors) + len(four.errors) + len(mirror_one.errors) + len(always_one.errors)
    skip_gain = ratio(mirror_one.throughput, always_one.throughput)
    worst = max((rss for rss in workers.values() if rss), default=None)
    rows = [
        Row("serve: s from process start to /health model_loaded", None, ready, digits=1),
        Row(f"serve: errors ({len(one.latencies) + len(four.latencies)} requests)", None, errors, None, "0",
            errors == 0, 0),
        Row("serve: worker processes killed by a signal", None, failures["worker_crashes"], None, "0",
            failures["worker_crashes"] == 0, 0),
        Row("serve: req/s, 1 client", None, one.throughput, digits=2),
        Row("serve: req/s, 4 clients (ratio: vs 1 client)", None, four.throughput, scaling, ">= 1.8",
            at_least(scaling, 1.8), 2),
        Row("serve: req/s, 1 client, always mirrored (faces.always_mirror) vs where needed", always_one.throughput,
            mirror_one.throughput, skip_gain, f">= {UNMIRRORED_ONE_CLIENT / MIRRORED_ONE_CLIENT:.2f} (16.2 vs 11.3)",
            at_least(skip_gain, UNMIRRORED_ONE_CLIENT / MIRRORED_ONE_CLIENT)),
        Row("serve: latency p50/p95/p99 ms, 1 client", None,
            "/".join(f"{one.percentile(q):.0f}" for q in (50, 95, 99))),
        Row("serve: latency p50/p95/p99 ms, 4 clients", None,
            "/".join(f"{four.percentile(q):.0f}" for q in (50, 95, 99))),
        Row("serve: /health ms with 32 slow clients held (slowest of 5)", None, slow_health, None, "<= 2000",
            slow_health <= 2000, 0),
        Row("serve: /health ms with 100 chunked + 6 large bodies trickling (slowest)", None, trickle_health, None,
            "<= 2000", trickle_health <= 2000, 0),
        Row(f"serve: peak RSS MB per worker (max of {len(workers)}; master {master or 0:.0f})", None, worst,
            digits=0),
    ]
    details = {"server": dataclasses.asdict(server), "photos": list(REQUEST_PHOTOS), "train_s": round(train_seconds, 1),
               "model": {key: model.get(key) for key in ("model", "photos", "people", "metrics")},
               "ready_s": round(ready, 2), "failures": failures, "health_ms_slow_clients": slow_health,
               "health_ms_trickled_bodies": trickle_health,
               "one_client": one.summary(), "four_clients": four.summary(),
               "one_client_mirror_where_needed": mirror_one.summary(), "one_client_always_mirror": always_one.summary(),
               "peak_rss_mb": {"master": master, "workers": {str(pid): rss for pid, rss in workers.items()}},
               "pss_mb_at_end": {str(pid): pss for pid, pss in shares.items()}}
    return rows, details
