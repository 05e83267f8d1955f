"""Configuration, loaded once: built-in defaults, then a JSON file, then environment variables.

Nothing here touches the disk beyond reading the files; ``create_app`` and the CLI receive
the resulting dict and derive every path from ``data_dir``.
"""
import copy
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = PROJECT_ROOT / "conf" / "conf.json"

# Environment variables an operator sets instead of editing the file (secrets above all).
ENVIRONMENT = {
    "PYRECOGNIZER_DATA_DIR": ("data_dir",),
    "PYRECOGNIZER_HOST": ("server", "host"),
    "PYRECOGNIZER_PORT": ("server", "port"),
    "PYRECOGNIZER_WORKERS": ("server", "workers"),
    "PYRECOGNIZER_MODEL": ("classifier", "timestamp"),
    "PYRECOGNIZER_SECRET_KEY": ("security", "secret_key"),
    "PYRECOGNIZER_API_TOKEN": ("security", "api_token"),
    "PYRECOGNIZER_ADMIN_PASSWORD": ("security", "admin_password"),
    "PYRECOGNIZER_TLS": ("security", "tls"),
    "PYRECOGNIZER_LOG_LEVEL": ("logging", "level"),
    "PYRECOGNIZER_DASK_SCHEDULER": ("cluster", "scheduler"),
}


def merged(base: dict, override: dict) -> dict:
    """Return ``base`` deep-updated with ``override`` (neither is modified)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def environment_overrides(environ) -> dict:
    """Return the nested overrides named by PYRECOGNIZER_* variables."""
    overrides: dict = {}
    for variable, path in ENVIRONMENT.items():
        if environ.get(variable) in (None, ""):
            continue
        value = environ[variable]
        if path[-1] in ("port", "workers"):
            value = int(value)
        elif path[-1] == "tls":
            value = value.lower() in ("1", "true", "yes", "on")
        node = overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return overrides


def load_config(path=None, overrides: dict | None = None, environ=None) -> dict:
    """Return the configuration: defaults < file (``path`` or $PYRECOGNIZER_CONFIG) < env < overrides."""
    environ = os.environ if environ is None else environ
    config = json.loads(DEFAULTS_FILE.read_text())
    path = path or environ.get("PYRECOGNIZER_CONFIG")
    if path:
        config = merged(config, json.loads(Path(path).read_text()))
    config = merged(config, environment_overrides(environ))
    config = merged(config, overrides or {})
    config["data_dir"] = str(Path(config["data_dir"] or PROJECT_ROOT).resolve())
    return config


class Paths:
    """Every path the service writes, derived from the one data directory."""

    def __init__(self, data_dir):
        root = Path(data_dir)
        self.root = root
        self.models = root / "dataset" / "model"
        self.uploads = root / "uploads"
        self.log = root / "log"
        self.log_file = self.log / "pyrecognizer.log"
        self.jobs = root / "dataset" / "jobs"
        self.cache = root / "dataset" / "cache"
        self.tmp = root / "dataset" / "tmp"
        self.dashboard_db = self.log / "dashboard.db"
        self.secrets = root / "dataset" / "secrets.json"
        self.tls = root / "dataset" / "tls"

    def create(self) -> "Paths":
        for folder in (self.models, self.uploads, self.log, self.jobs, self.cache, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        return self
