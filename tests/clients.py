"""The third-party clients the compatibility tests drive, installed as their users install them.

Each client gets its own virtual environment under ``.cache/clients/<name>`` (gitignored),
outside the project's venv, with exactly the packages below: ``make test`` builds them first
(``python -m tests.clients``) and the tests build a missing one themselves, so a clean clone
under CI gets them too. The scripts in ``tests/client_scripts/`` run inside these environments
and import nothing of this project.

    compreface  the official CompreFace Python SDK. 0.6.0 pins requests-toolbelt 0.9.1, which
                imports ``urllib3.contrib.appengine``, gone in urllib3 2: users pin urllib3<2.
    deepstack   deepstack-python, the client of Home Assistant's deepstack_face integration;
                it imports Pillow without declaring it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS_DIR = ROOT / ".cache" / "clients"
SCRIPTS_DIR = Path(__file__).resolve().parent / "client_scripts"

CLIENTS = {
    "compreface": ["compreface-sdk==0.6.0", "requests-toolbelt==0.9.1", "urllib3==1.26.20", "requests==2.34.2"],
    "deepstack": ["deepstack-python==0.9", "pillow==13.0.0", "requests==2.34.2"],
}


def client_python(name: str) -> Path:
    """Return the python of client ``name``'s environment, creating it when missing or stale."""
    folder = CLIENTS_DIR / name
    python = folder / "bin" / "python"
    marker = folder / ".installed"
    wanted = "\n".join(CLIENTS[name])
    if marker.is_file() and marker.read_text() == wanted and python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *CLIENTS[name]], check=True)
    marker.write_text(wanted)
    return python


def run_client(name: str, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``tests/client_scripts/<script>`` with client ``name``'s python; its output as text."""
    return subprocess.run([str(client_python(name)), str(SCRIPTS_DIR / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
    for client in CLIENTS:
        print(f"{client}: {client_python(client)}")
