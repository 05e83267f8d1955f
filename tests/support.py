"""The one module of test helpers: where the real photos are, test configurations, the zip of a
folder, the envelope check, a free port and real server processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from conf.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
PHOTOS_HINT = ("real face photos are missing: put them in ../shared/faces beside the project "
               "or set PYRECOGNIZER_FACES (see ../shared/faces/README.md)")


# The API token and admin password of every test service (in-process apps and server processes).
TEST_CREDENTIALS = {"api_token": "test-api-token-0123456789", "admin_password": "test-admin-password"}


CI_TRUE = ("1", "true", "yes", "on")  # how CI services spell "set" (CI=true, CI=1, ...)


def under_ci() -> bool:
    """Whether the tests run under CI, where missing data or tools fail instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in CI_TRUE


def faces_dir() -> Path:
    """Return the shared photo folder; skip (or fail under CI) when it is missing."""
    folder = Path(os.environ.get("PYRECOGNIZER_FACES") or ROOT.parent / "shared" / "faces")
    if not (folder / "celebrities").is_dir():
        if under_ci():
            pytest.fail(PHOTOS_HINT, pytrace=False)
        pytest.skip(PHOTOS_HINT)
    return folder


def video_dir() -> Path:
    """Return the shared video folder (a clip and two reference photos); skip, or fail under CI, when missing."""
    folder = Path(os.environ.get("PYRECOGNIZER_VIDEO") or ROOT.parent / "shared" / "video")
    if not (folder / "short_hamilton_clip.mp4").is_file():
        message = "the video test data is missing: ../shared/video or PYRECOGNIZER_VIDEO (see its README.md)"
        if under_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return folder


def zipped(folder: Path, target: Path, prefix: str = "") -> Path:
    """Zip ``folder``'s person folders as a user would upload them."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def make_config(data_dir: Path, **sections) -> Config:
    """Return a configuration over ``data_dir``, with ``sections`` merged in."""
    overrides = {"data_dir": str(data_dir), "dashboard": {"enabled": False}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(overrides=overrides, environ={})


def envelope_of(answer, status: int | None = None, code: str | None = None) -> dict:
    """The ``response`` of a JSON envelope (a requests or Flask test response), checking its
    shape, and its status and code if given."""
    content_type = answer.headers.get("Content-Type", "")
    text = answer.text if hasattr(answer, "text") else answer.get_data(as_text=True)
    assert content_type.startswith("application/json"), (answer.status_code, content_type, text[:300])
    body = answer.json() if callable(answer.json) else answer.json
    assert set(body) == {"response"}, body
    response = body["response"]
    assert {"status", "error", "description", "data", "date"} <= set(response), response
    if status is not None:
        assert answer.status_code == status, (answer.status_code, response)
        assert response["status"] == ("OK" if status < 400 else "KO"), response
    if code is not None:
        assert response["error"] == code, response
    return response


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A server in its own process group: by default a real PyRecognizer server (gunicorn, as
    `main.py serve` runs it); ``command`` runs another one (e.g. tests/test_dashboard.py's app),
    which must listen on ``self.port`` and answer ``ready_path``."""

    def __init__(self, data_dir: Path, *, config: dict | None = None, env: dict | None = None, dev: bool = False,
                 command: list[str] | None = None, ready_path: str = "/health", cwd: Path = ROOT):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path, self.cwd = ready_path, cwd
        if command is None:
            config_file = self.data_dir / "test-conf.json"
            config_file.write_text(json.dumps(config or {}))
            command = [sys.executable, "main.py", "--config", str(config_file), "--data-dir", str(self.data_dir),
                       "serve", "--port", str(self.port)] + (["--dev"] if dev else [])
        self.command = command
        self.token, self.password = TEST_CREDENTIALS["api_token"], TEST_CREDENTIALS["admin_password"]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYRECOGNIZER_API_TOKEN": self.token,
                    "PYRECOGNIZER_ADMIN_PASSWORD": self.password, **(env or {})}
        self.log_path = self.data_dir / "server-output.log"
        self.process = None

    def start(self, timeout: float = 120) -> "Server":
        """Start the process and wait until ``ready_path`` answers."""
        self.process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdout=open(self.log_path, "ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + self.ready_path, timeout=2, verify=False).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        """The end of what the process printed."""
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = 15) -> None:
        """Send ``sig`` to the process group and wait (SIGKILL after 20 s)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs):
        """Send a request as a REST client: with the API token unless ``auth`` is False."""
        headers = {**({"Authorization": f"Bearer {self.token}"} if auth else {}), **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=kwargs.pop("timeout", 120),
                                verify=False, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def wait_for_job(self, job_url: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_url).json()["response"]["data"]
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_url} did not finish in {timeout} s")
