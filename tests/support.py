"""Test helpers: where the real photos are, test configurations, real server processes."""
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

ROOT = Path(__file__).resolve().parent.parent
PHOTOS_HINT = ("real face photos are missing: put them in ../shared/faces beside the project "
               "or set PYRECOGNIZER_FACES (see ../shared/faces/README.md)")


def faces_dir() -> Path:
    """Return the shared photo folder; skip (or fail under CI) when it is missing."""
    folder = Path(os.environ.get("PYRECOGNIZER_FACES") or ROOT.parent / "shared" / "faces")
    if not (folder / "celebrities").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(PHOTOS_HINT, pytrace=False)
        pytest.skip(PHOTOS_HINT)
    return folder



def zipped(folder: Path, target: Path, prefix: str = "") -> Path:
    """Zip ``folder``'s person folders as a user would upload them."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def make_config(data_dir: Path, **sections) -> dict:
    """Return a configuration over ``data_dir``, with ``sections`` merged in."""
    from conf.config import load_config

    overrides = {"data_dir": str(data_dir), "dashboard": {"enabled": False}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(overrides=overrides, environ={})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A real PyRecognizer server process (gunicorn, as `main.py serve` runs it)."""

    def __init__(self, data_dir: Path, *, config: dict | None = None, env: dict | None = None, dev: bool = False):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = self.data_dir / "test-conf.json"
        config_file.write_text(json.dumps(config or {}))
        self.command = [sys.executable, "main.py", "--config", str(config_file), "--data-dir", str(self.data_dir),
                        "serve", "--port", str(self.port)] + (["--dev"] if dev else [])
        self.token, self.password = "test-api-token-0123456789", "test-admin-password"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYRECOGNIZER_API_TOKEN": self.token,
                    "PYRECOGNIZER_ADMIN_PASSWORD": self.password, **(env or {})}
        self.log_path = self.data_dir / "server-output.log"
        self.process = None

    def start(self, timeout: float = 120) -> "Server":
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=open(self.log_path, "ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/health", timeout=2, verify=False).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = 15) -> None:
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
            if job["state"] in ("done", "failed"):
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_url} did not finish in {timeout} s")
