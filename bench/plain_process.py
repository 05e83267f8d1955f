"""The plain recipe (bench/plain.py) in a process of its own, with whichever dlib its Python has.

The recipe's cost depends as much on the dlib build as on the recipe: its 128-d encoding
takes ~0.06 s per face with a dlib compiled without BLAS (what ``pip install
face_recognition`` compiles on a machine without OpenBLAS, and the dlib-bin wheel) and
~0.01 s with one linked to OpenBLAS (what ``make install`` builds here). Two dlib builds
cannot share one process, so each plain side runs in a child: ``.venv-plain`` (dlib-bin,
the recipe as installed) and this interpreter (the recipe on our own dlib build).

The child times each call itself (CPU and wall around the recipe, not the pipe), so both
sides are timed the same way as ours in this process. Messages are one JSON line each way;
photo bytes follow a request line as a counted binary payload.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import ROOT

PLAIN_VENV = ROOT / ".venv-plain"
OWN_BUILD = "plain on our dlib"  # the name of the side running the recipe on our dlib


def installed_python() -> Path:
    """The interpreter of the plain recipe as installed (``make .venv-plain``), checked to exist."""
    python = PLAIN_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: `make .venv-plain` creates it (face_recognition over "
                         "dlib-bin, the recipe as a user installs it)")
    return python


class PlainProcess:
    """A child running the plain recipe; every call returns (answer, wall s, CPU s)."""

    def __init__(self, python: str | Path = sys.executable):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.child = subprocess.Popen([str(python), "-m", "bench.plain_process"], cwd=ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.dlib = self.call("dlib")[0]

    def call(self, command: str, payloads: list[bytes] = (), **arguments):
        request = {"command": command, "sizes": [len(data) for data in payloads], **arguments}
        self.child.stdin.write(json.dumps(request).encode() + b"\n")
        for data in payloads:
            self.child.stdin.write(data)
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the plain recipe's process ({command}) ended with code {self.child.wait()}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the plain recipe's process failed on {command}: {answer['error']}")
        return answer["result"], answer["wall"], answer["cpu"]

    def fit(self, photos: list[tuple[str, bytes]]) -> None:
        """Fit the example's KNN on (name, bytes) pairs; later ``names`` calls use it."""
        self.call("fit", [data for _, data in photos], names=[name for name, _ in photos])

    def names(self, data: bytes):
        return self.call("names", [data])

    def training_step(self, data: bytes):
        return self.call("training_step", [data])

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.stdin.close()
            self.child.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def dlib_build() -> dict:
    import dlib

    return {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS),
            "avx": bool(getattr(dlib, "USE_AVX_INSTRUCTIONS", False)), "path": str(Path(dlib.__file__).parent)}


def serve() -> None:
    """The child's loop: one request line (plus payloads) in, one answer line out, until EOF."""
    from bench import plain, timed

    fitted = {}

    def fit(payloads, request):
        fitted["knn"] = plain.trained_knn(zip(request["names"], payloads))

    commands = {
        "dlib": lambda payloads, request: dlib_build(),
        "fit": fit,
        "training_step": lambda payloads, request: plain.training_step(payloads[0]),
        "names": lambda payloads, request: plain.predicted_names(payloads[0], fitted["knn"]),
    }
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while line := source.readline():
        request = json.loads(line)
        payloads = [source.read(size) for size in request["sizes"]]
        try:
            result, wall, cpu = timed(commands[request["command"]])(payloads, request)
            answer = {"result": result, "wall": wall, "cpu": cpu}
        except Exception as exc:  # reported to the parent, which raises it there
            answer = {"error": repr(exc)}
        sink.write(json.dumps(answer).encode() + b"\n")
        sink.flush()


if __name__ == "__main__":
    serve()
