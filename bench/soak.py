"""A long day of mixed load (issue 27): ``python -m bench --only soak --minutes N``.

The server is started the way ``make run`` starts it (``python main.py serve``: gunicorn, the
configured workers and threads, the dashboard on), over a data folder trained on
celebrities/train with ``main.py train``. The bench's configuration only binds it to 127.0.0.1,
sets the API token and admin password, and lifts the per-client rate limits (every request
comes from one address); retention (annotated copies, models kept) is conf.json's.

Client threads, each with its own session, at a steady pace the machine can hold:

* photos (2 threads): POST /predict anonymous and with the token, /verify, DeepStack
  /face/recognize, CompreFace /recognition/recognize, in turn;
* people (1 thread, as changes queue for the model anyway): enrol, rename and remove a
  throw-away person; DeepStack register and delete; CompreFace add and delete a subject;
  enrol then forget; activate the active model again;
* video: POST /predict/video of 2 s of the Hamilton clip (re-encoded here), once a minute;
* dashboard: the admin's login, then the dashboard's overview page and its JSON, every 15 s;
* hostile: once a minute a burst of tests/hostile.py's bad inputs (bombs, lying zips, pickles,
  formats outside the allow-list, a wrong token, a path out of the folder...), each of which
  must be refused with a 4xx.

An error is any 5xx, a connection failure, or any answer other than the one expected (the
status code, and for the photo routes the answer's own success field). Each minute records:
requests, errors, p50/p95 latency of the photo requests (the steady part of the load; all
requests too), RSS, open file descriptors and threads of the master and each worker, the data
folder's size and file count, and the dashboard database's size (with its WAL).

Targets (30 minutes on this machine; CI does not run it): no error; after the first 5 minutes
each process's RSS within 30 MB and its descriptors within 5 of where they were at minute 5;
the photo requests' p95 over the last 5 minutes within 1.2x of minutes 5-10; the annotated
copies and models within their retention. Shorter runs scale the windows down.
"""
from __future__ import annotations

import json
import os
import random
import re
import secrets
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import ROOT, Row

PHOTO_CHOICES = ("celebrities/val/Madonna/2.jpg", "celebrities/val/Elton John/3.jpg", "samples/obama.jpg",
                 "celebrities/val/Mindy Kaling/1.jpg", "samples/two_people.jpg")
VERIFY_PAIR = ("celebrities/val/Madonna/2.jpg", "celebrities/val/Madonna/3.jpg")
THROWAWAY_PHOTOS = 20        # lfw/strangers photos the people thread enrols in turn
PHOTO_PAUSE = 0.5            # s between two requests of one photo thread
PEOPLE_PAUSE = 2.0           # s between two people changes
DASHBOARD_EVERY = 15
VIDEO_EVERY = 60
HOSTILE_EVERY = 60
CLIP_START, CLIP_SECONDS = 3.0, 2.0  # of the Hamilton clip: Lin-Manuel Miranda's face throughout
RSS_BUDGET_MB, FD_BUDGET, P95_BUDGET = 30, 5, 1.2
TIMEOUT = 120


@dataclass
class Record:
    """Every request's (second since start, latency s, kind, ok) and the first errors seen."""

    started: float = field(default_factory=time.perf_counter)
    requests: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, began: float, problem: str | None) -> None:
        now = time.perf_counter()
        with self.lock:
            self.requests.append((began - self.started, now - began, kind, problem is None))
            if problem:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {kind}: {problem}")


class Load:
    """The clients: one method per thread, all sharing ``record`` and the stop event."""

    def __init__(self, base: str, token: str, password: str, faces: Path, record: Record, stop: threading.Event,
                 workdir: Path):
        self.base, self.token, self.password, self.faces = base, token, password, faces
        self.record, self.stop, self.workdir = record, stop, workdir
        self.photos = {name: (faces / name).read_bytes() for name in set(PHOTO_CHOICES) | set(VERIFY_PAIR)}
        strangers = sorted((faces / "lfw" / "strangers").iterdir())[:THROWAWAY_PHOTOS]
        self.throwaway = [path.read_bytes() for path in strangers]
        self.video = short_clip(Path(os.environ.get("PYRECOGNIZER_VIDEO") or ROOT.parent / "shared" / "video")
                                / "short_hamilton_clip.mp4", workdir / "clip.mp4")

    # -- one request ------------------------------------------------------------------
    def call(self, session, kind: str, method: str, path: str, expect, **kwargs):
        """Send one request; ``expect`` is the status codes wanted, or a function of the reply
        returning None when it is the expected answer, else what is wrong with it."""
        import requests

        began = time.perf_counter()
        try:
            reply = session.request(method, self.base + path, timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            self.record.add(kind, began, repr(exc)[:300])
            return None
        if callable(expect):
            try:
                problem = expect(reply)
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"unreadable answer ({exc!r})"
        else:
            problem = None if reply.status_code in expect else "unexpected status"
        if problem:
            problem = f"{method} {path}: HTTP {reply.status_code}, {problem}: {reply.text[:200]}"
        self.record.add(kind, began, problem)
        return reply

    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def pause(self, seconds: float) -> bool:
        """Wait; False once the run is over."""
        return not self.stop.wait(seconds)

    # -- the threads ------------------------------------------------------------------
    def photo_client(self, number: int) -> None:
        import requests

        rng = random.Random(number)
        with requests.Session() as session:
            step = number
            while self.pause(PHOTO_PAUSE):
                name = rng.choice(PHOTO_CHOICES)
                photo = self.photos[name]
                step += 1
                kind = step % 5
                if kind == 0:
                    self.call(session, "photo", "POST", "/predict", ok_envelope, files={"file": ("p.jpg", photo)})
                elif kind == 1:
                    self.call(session, "photo", "POST", "/predict", ok_envelope, files={"file": ("p.jpg", photo)},
                              headers=self.bearer())
                elif kind == 2:
                    first, second = (self.photos[n] for n in VERIFY_PAIR)
                    self.call(session, "photo", "POST", "/verify", same_person,
                              files={"file1": ("a.jpg", first), "file2": ("b.jpg", second)})
                elif kind == 3:
                    self.call(session, "photo", "POST", "/v1/vision/face/recognize", deepstack_success,
                              files={"image": ("p.jpg", photo)}, data={"api_key": self.token})
                else:
                    self.call(session, "photo", "POST", "/api/v1/recognition/recognize", compreface_result,
                              files={"file": ("p.jpg", photo)}, headers={"x-api-key": self.token})

    def people_client(self) -> None:
        import requests

        with requests.Session() as session:
            session.headers.update(self.bearer())
            number = 0
            while not self.stop.is_set():
                number += 1
                photo = self.throwaway[number % len(self.throwaway)]
                name = f"soak-{number}"
                steps = [
                    ("enrol", "POST", f"/people/{name}/photos", (201,), {"files": {"file": ("1.jpg", photo)}}),
                    ("rename", "PATCH", f"/people/{name}", (200,), {"json": {"name": f"{name}-b"}}),
                    ("remove", "DELETE", f"/people/{name}-b", (200,), {}),
                    ("deepstack register", "POST", "/v1/vision/face/register", deepstack_success,
                     {"files": {"image": ("1.jpg", photo)}, "data": {"userid": f"{name}-ds", "api_key": self.token}}),
                    ("deepstack delete", "POST", "/v1/vision/face/delete", deepstack_success,
                     {"data": {"userid": f"{name}-ds", "api_key": self.token}}),
                    ("compreface add", "POST", f"/api/v1/recognition/faces?subject={name}-cf", (201,),
                     {"files": {"file": ("1.jpg", photo)}, "headers": {"x-api-key": self.token}}),
                    ("compreface delete", "DELETE", f"/api/v1/recognition/subjects/{name}-cf", (200,),
                     {"headers": {"x-api-key": self.token}}),
                    ("enrol", "POST", f"/people/{name}-f/photos", (201,), {"files": {"file": ("1.jpg", photo)}}),
                    ("forget", "POST", f"/people/{name}-f/forget", (200,), {}),
                ]
                for kind, method, path, expect, kwargs in steps:
                    if not self.pause(PEOPLE_PAUSE):
                        return
                    self.call(session, "people", method, path, expect, **kwargs)
                if not self.pause(PEOPLE_PAUSE):
                    return
                listing = self.call(session, "people", "GET", "/models", (200,))
                active = listing.json()["response"].get("active") if listing is not None and listing.ok else None
                if active:
                    self.call(session, "people", "POST", f"/models/{active}/activate", (200,))

    def video_client(self) -> None:
        import requests

        with requests.Session() as session:
            while self.pause(VIDEO_EVERY if session.headers.get("x-started") else 5):
                session.headers["x-started"] = "1"
                self.call(session, "video", "POST", "/predict/video", video_timeline,
                          files={"file": ("clip.mp4", self.video, "video/mp4")}, headers=self.bearer())

    def dashboard_client(self) -> None:
        import requests

        with requests.Session() as session:
            logged = False
            while self.pause(DASHBOARD_EVERY):
                if not logged:
                    logged = self.login(session)
                    continue
                self.call(session, "dashboard", "GET", "/dashboard/overview", (200,), allow_redirects=False)
                self.call(session, "dashboard", "GET", "/dashboard/api/overview", dashboard_json, allow_redirects=False)

    def login(self, session) -> bool:
        page = self.call(session, "dashboard", "GET", "/login", (200,))
        found = page is not None and re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
        if not found:
            return False
        answer = self.call(session, "dashboard", "POST", "/login", (302,), allow_redirects=False,
                           data={"password": self.password, "csrf_token": found[1]},
                           headers={"Referer": self.base + "/login"})
        return answer is not None and answer.status_code == 302

    def hostile_client(self) -> None:
        import requests

        marker = self.workdir / "unpickled-marker"
        burst = hostile_burst(self.photos[PHOTO_CHOICES[0]], marker, self.token)
        with requests.Session() as session:
            while self.pause(HOSTILE_EVERY):
                for name, method, path, kwargs in burst:
                    self.call(session, f"hostile {name}", method, path, refused, **kwargs)
                if marker.exists():
                    self.record.add("hostile", time.perf_counter(), f"a pickle was loaded: {marker} exists")


def short_clip(source: Path, target: Path, start: float = CLIP_START, seconds: float = CLIP_SECONDS) -> bytes:
    """Return ``seconds`` of ``source`` from ``start`` (a face in most frames), encoded again
    with PyAV: a video a camera might send, a few seconds of work for the server."""
    import av

    with av.open(str(source)) as inside, av.open(str(target), "w", format="mp4") as out:
        video = inside.streams.video[0]
        stream = out.add_stream("mpeg4", rate=round(video.average_rate or 30))
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in inside.decode(video):
            if frame.time is None or frame.time < start:
                continue
            if frame.time >= start + seconds:
                break
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target.read_bytes()


# -- expected answers (None: as expected) -----------------------------------------------
def ok_envelope(reply) -> str | None:
    if reply.status_code != 200:
        return "not 200"
    return None if reply.json()["response"]["status"] == "OK" else "status is not OK"


def same_person(reply) -> str | None:
    if reply.status_code != 200:
        return "not 200"
    return None if reply.json()["response"]["data"]["same"] is True else "two photos of one person called different"


def deepstack_success(reply) -> str | None:
    return None if reply.status_code == 200 and reply.json().get("success") is True else "success is not true"


def compreface_result(reply) -> str | None:
    return None if reply.status_code == 200 and isinstance(reply.json().get("result"), list) else "no result list"


def video_timeline(reply) -> str | None:
    if reply.status_code != 200:
        return "not 200"
    return None if isinstance(reply.json()["response"]["data"]["timeline"], list) else "no timeline"


def dashboard_json(reply) -> str | None:
    return None if reply.status_code == 200 and isinstance(reply.json(), list) else "not the overview's list"


def refused(reply) -> str | None:
    return None if 400 <= reply.status_code < 500 else "a hostile input was not refused with a 4xx"


def hostile_burst(photo: bytes, marker: Path, token: str) -> list[tuple[str, str, str, dict]]:
    """(name, method, path, request arguments) of the bad inputs sent every minute: the
    builders of tests/hostile.py, the attack tests' own."""
    from tests import hostile

    auth = {"Authorization": f"Bearer {token}"}

    def upload(data: bytes, name: str = "x.jpg", field: str = "file") -> dict:
        return {"files": {field: (name, data)}}

    return [
        ("one-bit bomb", "POST", "/predict", upload(hostile.one_bit_bomb())),
        ("psd", "POST", "/predict", upload(hostile.psd(), "x.psd")),
        ("not an image", "POST", "/predict", upload(b"hello, world", "x.jpg")),
        ("truncated jpeg", "POST", "/predict", upload(photo[:len(photo) // 3])),
        ("empty file", "POST", "/predict", upload(b"")),
        ("no file", "POST", "/predict", {"data": {"x": "y"}}),
        ("wrong token", "GET", "/models", {"headers": {"Authorization": "Bearer wrong"}}),
        ("verify one photo", "POST", "/verify", upload(photo, field="file1")),
        ("photo as video", "POST", "/predict/video", upload(photo, "x.mp4")),
        ("ratio bomb", "POST", "/train", {**upload(hostile.ratio_bomb(), "x.zip"), "headers": auth}),
        ("symbolic link", "POST", "/train", {**upload(hostile.symbolic_link(), "x.zip"), "headers": auth}),
        ("bad crc", "POST", "/train", {**upload(hostile.bad_crc(), "x.zip"), "headers": auth}),
        ("encrypted", "POST", "/train", {**upload(hostile.encrypted(), "x.zip"), "headers": auth}),
        ("pickle", "POST", "/models/import", {**upload(hostile.pickle_payload(marker), "x.npz"), "headers": auth}),
        ("npy object", "POST", "/models/import", {**upload(hostile.npy_payload(marker), "x.npy"), "headers": auth}),
        ("name with a slash", "POST", "/people/..%2f..%2fetc/photos", {**upload(photo), "headers": auth}),
        ("path traversal", "GET", "/uploads/..%2f..%2fconf%2fconf.json", {}),
        ("deepstack no userid", "POST", "/v1/vision/face/register", {**upload(photo, field="image"), "data": {"api_key": token}}),
        ("compreface no key", "POST", "/api/v1/recognition/faces?subject=x", upload(photo)),
    ]


# -- what is measured each minute --------------------------------------------------------
def fd_kind(target: str) -> str:
    """What an open file descriptor is, from its /proc link: where growth would come from."""
    if target.startswith(("socket:", "pipe:", "anon_inode:")):
        return target.split(":", 1)[0]
    for fragment, kind in (("dashboard.db", "dashboard db"), ("/dataset/model/", "models"), ("/log/", "logs"),
                           ("/uploads/", "uploads"), ("/dataset/jobs/", "jobs"), ("/dataset/sessions/", "sessions")):
        if fragment in target:
            return kind
    return "other"


def process_figures(pid: int) -> dict | None:
    """RSS (MB), open file descriptors (and by kind) and threads of a process; None once it is gone."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        kinds: dict[str, int] = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                kind = fd_kind(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:  # closed while we looked
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
    except OSError:
        return None
    return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1), "fds": sum(kinds.values()),
            "threads": int(status["Threads"]), "fd_kinds": kinds}


def folder_figures(folder: Path) -> dict:
    """Bytes and files under ``folder``; the dashboard database's bytes (with its WAL); the
    annotated copies and models kept."""
    size = files = database = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                stat = path.stat()
                size += stat.st_size
                files += 1
                if ".db" in path.name:
                    database += stat.st_size
        except OSError:  # removed while we looked
            continue
    def count(sub: str, folders: bool) -> int:
        where = folder / sub
        return sum(1 for path in where.iterdir() if path.is_dir() == folders) if where.is_dir() else 0

    return {"data_mb": round(size / 1e6, 2), "data_files": files, "dashboard_db_mb": round(database / 1e6, 3),
            "annotated": count("uploads", False), "models": count("dataset/model", True)}


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def minute_figures(record: Record, minute: int, processes: dict, folder: dict) -> dict:
    """One row of the per-minute table."""
    with record.lock:
        rows = [row for row in record.requests if minute * 60 <= row[0] < (minute + 1) * 60]
    photo = [latency for _, latency, kind, _ in rows if kind == "photo"]
    return {"minute": minute + 1, "requests": len(rows), "errors": sum(1 for row in rows if not row[3]),
            "photo_requests": len(photo), "p50_ms": percentile_ms(photo, 50), "p95_ms": percentile_ms(photo, 95),
            "all_p95_ms": percentile_ms([row[1] for row in rows], 95), "processes": processes, **folder}


def watched(master: int) -> dict:
    """{"master": figures, "worker N": figures} by the workers' order of pids."""
    from bench.serve import children_of

    found = {"master": process_figures(master)}
    for number, pid in enumerate(children_of(master), 1):
        figures = process_figures(pid)
        if figures:
            found[f"worker {number}"] = {**figures, "pid": pid}
    return found


# -- the run -------------------------------------------------------------------------------
def soak_config(folder: Path, token: str, password: str) -> Path:
    path = folder / "soak-conf.json"
    path.write_text(json.dumps({
        "server": {"host": "127.0.0.1"},
        "security": {"api_token": token, "admin_password": password,
                     "rate_limits": {"predict": "1000000 per minute", "login": "1000 per minute",
                                     "train": "100000 per hour", "wrong_token": "100000 per minute"}}}))
    return path


def windows(minutes: int) -> tuple[int, int, int]:
    """(settled minute, first window's end, last window's start) as 0-based minutes: 5, 10 and
    minutes - 5 for 30 minutes; scaled down for short runs."""
    settled = min(5, max(1, minutes // 3))
    span = min(5, max(1, (minutes - settled) // 2))
    return settled, settled + span, max(settled + span, minutes - span)


def verdicts(table: list[dict], minutes: int, retention: dict) -> dict:
    """The targets over the per-minute table (see the module's docstring)."""
    settled, first_end, last_start = windows(len(table))
    errors = sum(row["errors"] for row in table)
    growth = {}
    for name in table[settled - 1]["processes"]:
        base = table[settled - 1]["processes"].get(name)
        later = [row["processes"].get(name) for row in table[settled:]]
        if base is None or any(figures is None or figures.get("pid") != base.get("pid") for figures in later):
            growth[name] = {"replaced": True}
            continue
        growth[name] = {"rss_mb": round(max([f["rss_mb"] for f in later] + [base["rss_mb"]]) - base["rss_mb"], 1),
                        "fds": max([f["fds"] for f in later] + [base["fds"]]) - base["fds"],
                        "threads": max([f["threads"] for f in later] + [base["threads"]]) - base["threads"]}
    first = [row["p95_ms"] for row in table[settled:first_end] if row["p95_ms"] is not None]
    last = [row["p95_ms"] for row in table[last_start:] if row["p95_ms"] is not None]
    p95_ratio = statistics.median(last) / statistics.median(first) if first and last else None
    kept = max(row["annotated"] for row in table), max(row["models"] for row in table)
    return {"errors": errors, "growth": growth, "windows": {"settled_minute": settled, "first": [settled + 1, first_end],
                                                             "last": [last_start + 1, len(table)]},
            "p95_ratio": None if p95_ratio is None else round(p95_ratio, 2),
            "annotated_max": kept[0], "models_max": kept[1], "retention": retention,
            "met": {"no errors": errors == 0,
                    "RSS within 30 MB": all(not g.get("replaced") and g["rss_mb"] <= RSS_BUDGET_MB for g in growth.values()),
                    "fds within 5": all(not g.get("replaced") and g["fds"] <= FD_BUDGET for g in growth.values()),
                    "p95 within 1.2x": p95_ratio is not None and p95_ratio <= P95_BUDGET,
                    "retention": kept[0] <= retention["annotated"] and kept[1] <= retention["models"] + 1}}


def summarised(table: list[dict]) -> dict:
    """The first, middle and last 5 minutes: requests, errors, median p50/p95, and each
    process's RSS and fds at the window's end; the data folder at its end."""
    def window(rows: list[dict]) -> dict:
        if not rows:
            return {}
        end = rows[-1]
        return {"minutes": [rows[0]["minute"], end["minute"]], "requests": sum(r["requests"] for r in rows),
                "errors": sum(r["errors"] for r in rows),
                "p50_ms": statistics.median([r["p50_ms"] for r in rows if r["p50_ms"] is not None] or [0]),
                "p95_ms": statistics.median([r["p95_ms"] for r in rows if r["p95_ms"] is not None] or [0]),
                "processes": {name: {k: v for k, v in figures.items() if k not in ("pid", "fd_kinds")}
                              for name, figures in end["processes"].items() if figures},
                **{key: end[key] for key in ("data_mb", "data_files", "dashboard_db_mb", "annotated", "models")}}

    middle = max(0, len(table) // 2 - 2)
    return {"first": window(table[:5]), "middle": window(table[middle:middle + 5]), "last": window(table[-5:])}


def soak_section(faces: Path, workdir: Path, minutes: float, say=print) -> tuple[list[Row], dict]:
    from bench.serve import clean_environment, free_port, main_py, seconds_until_ready, server_failures, stop, trained_model
    from conf.config import load_config

    minutes = max(1, int(round(minutes)))
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    token, password = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    config = soak_config(workdir, token, password)
    settings = load_config(str(config), {"data_dir": str(data_dir)}, environ={})
    retention = {"annotated": settings.annotated.keep, "models": settings.models.keep}
    say("soak: training on celebrities/train with `main.py train` ...")
    trained_model(config, data_dir, faces / "celebrities" / "train")
    port, log = free_port(), workdir / "server.log"
    base = f"http://127.0.0.1:{port}"
    say(f"soak: `main.py serve` on {base} ({settings.server.workers} workers x {settings.server.threads} threads, "
        f"dashboard {'on' if settings.dashboard.enabled else 'off'}), {minutes} min of mixed load ...")
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(main_py(config, data_dir, "serve", "--port", str(port)), cwd=ROOT,
                                   env=clean_environment(), stdout=output, stderr=subprocess.STDOUT)
    table: list[dict] = []
    try:
        ready = seconds_until_ready(base, process, started, log)
        record, stop_event = Record(), threading.Event()
        load = Load(base, token, password, faces, record, stop_event, workdir)
        threads = [threading.Thread(target=load.photo_client, args=(number,), daemon=True) for number in range(2)]
        threads += [threading.Thread(target=target, daemon=True) for target in
                    (load.people_client, load.video_client, load.dashboard_client, load.hostile_client)]
        for thread in threads:
            thread.start()
        for minute in range(minutes):
            time.sleep(max(0.0, record.started + 60 * (minute + 1) - time.perf_counter()))
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            row = minute_figures(record, minute, watched(process.pid), folder_figures(data_dir))
            table.append(row)
            workers = [f"{figures['rss_mb']:.0f}" for name, figures in row["processes"].items() if figures]
            say(f"soak: minute {row['minute']}: {row['requests']} requests, {row['errors']} errors, "
                f"photo p50/p95 {row['p50_ms']}/{row['p95_ms']} ms, RSS MB {'/'.join(workers)}, "
                f"data {row['data_mb']} MB in {row['data_files']} files, dashboard db {row['dashboard_db_mb']} MB")
        stop_event.set()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
    finally:
        stop(process)
    failures = server_failures(log, data_dir / "log" / "pyrecognizer.log")
    result = verdicts(table, minutes, retention)
    met = result["met"]
    growth = result["growth"]
    worst_rss = max((g.get("rss_mb", 0) for g in growth.values()), default=0)
    worst_fds = max((g.get("fds", 0) for g in growth.values()), default=0)
    summary = summarised(table)
    rows = [
        Row(f"soak ({minutes} min): requests / errors", None,
            f"{sum(r['requests'] for r in table)} / {result['errors']}", target="0 errors", met=met["no errors"]),
        Row(f"soak: worst RSS growth after minute {result['windows']['settled_minute']}, MB (any process)", None,
            worst_rss, target=f"<= {RSS_BUDGET_MB}", met=met["RSS within 30 MB"], digits=1),
        Row(f"soak: worst fd growth after minute {result['windows']['settled_minute']} (any process)", None,
            worst_fds, target=f"<= {FD_BUDGET}", met=met["fds within 5"], digits=0),
        Row(f"soak: photo p95, minutes {result['windows']['last']} vs {result['windows']['first']}", None,
            result["p95_ratio"], target=f"<= {P95_BUDGET}", met=met["p95 within 1.2x"]),
        Row("soak: annotated copies / models kept, at most", None,
            f"{result['annotated_max']} / {result['models_max']}",
            target=f"<= {retention['annotated']} / {retention['models'] + 1}", met=met["retention"]),
        Row("soak: worker crashes / exceptions logged", None,
            f"{failures['worker_crashes']} / {sum(failures['exceptions'].values())}"),
    ]
    return rows, {"minutes": minutes, "ready_s": round(ready, 1), "verdicts": result, "summary": summary,
                  "per_minute": table, "first_errors": record.errors[:20], "failures": failures,
                  "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}
