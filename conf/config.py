"""Configuration, loaded once and checked: conf/conf.json (the defaults), then a JSON file, then
environment variables, then the caller's overrides, into one frozen ``Config``.

Each section is a dataclass below; a field's type and its ``setting(...)`` bounds are what
``load_config`` checks, so a file with an unknown key, a wrong type or a value out of range is
refused at start with a ``ConfigError`` naming the setting. Adding a setting: one line in its
dataclass here and its default in conf/conf.json.

Nothing here touches the disk beyond reading the files; ``create_app`` and the CLI receive
the ``Config`` and derive every path from ``data_dir``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = PROJECT_ROOT / "conf" / "conf.json"

# Environment variables an operator sets instead of editing the file (secrets above all).
ENVIRONMENT = {
    "PYRECOGNIZER_DATA_DIR": ("data_dir",),
    "PYRECOGNIZER_HOST": ("server", "host"),
    "PYRECOGNIZER_PORT": ("server", "port"),
    "PYRECOGNIZER_WORKERS": ("server", "workers"),
    "PYRECOGNIZER_SECRET_KEY": ("security", "secret_key"),
    "PYRECOGNIZER_API_TOKEN": ("security", "api_token"),
    "PYRECOGNIZER_ADMIN_PASSWORD": ("security", "admin_password"),
    "PYRECOGNIZER_TLS": ("security", "tls"),
    "PYRECOGNIZER_LOG_LEVEL": ("logging", "level"),
    "PYRECOGNIZER_DASK_SCHEDULER": ("cluster", "scheduler"),
    "PYRECOGNIZER_MQTT_URL": ("mqtt", "url"),  # mqtt://user:password@host:1883: credentials stay out of files
    "PYRECOGNIZER_WEBHOOK_SECRET": ("webhooks", "secret"),
    "RATELIMIT_STORAGE_URI": ("security", "rate_limit_storage"),  # Flask-Limiter's own name for it
}
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key, wrong type or value out of range."""


def setting(*, min: float | None = None, max: float | None = None, choices: tuple = (),
            min_length: int | None = None) -> Any:
    """A dataclass field checked by ``load_config``: within [min, max], one of ``choices``, or
    (a text) at least ``min_length`` characters long."""
    return field(metadata={"min": min, "max": max, "choices": choices, "min_length": min_length})


# --- the sections ------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """How `main.py serve` listens (gunicorn, see api/wsgi.py)."""

    host: str  # address to listen on (0.0.0.0: every interface)
    port: int = setting(min=0, max=65535)  # TCP port to listen on
    # gunicorn worker processes (one per core is best: dlib runs one call at a time per process)
    workers: int = setting(min=1)
    threads: int = setting(min=1)  # threads per worker (one reads an upload while the other runs dlib)
    keepalive: int = setting(min=0)  # seconds an idle connection stays open; 0 spreads requests over the workers best
    timeout: int = setting(min=1)  # seconds a worker may spend on one request before gunicorn restarts it
    header_timeout: float = setting(min=0.1)  # seconds for a request's headers to arrive whole
    body_timeout: float = setting(min=0.1)  # seconds a body may pause, or lag behind min_body_rate (api/worker.py)
    min_body_rate: int = setting(min=1)  # bytes a second every body must keep up after its first body_timeout seconds
    max_buffered: int = setting(min=1)  # requests each worker reads at once before a thread takes them
    buffer_bytes: int = setting(min=0)  # body bytes each worker holds for them; past it a request is refused (503)
    client_connections: int = setting(min=1)  # connections one client address may have being read, per worker (429)
    client_buffer_bytes: int = setting(min=0)  # body bytes one client address may have buffered, per worker (429)


@dataclass(frozen=True)
class Limits:
    """Caps on what a client may send: request sizes, image pixels, zip archives."""

    max_content_length: int = setting(min=1)  # bytes of one request; more: 413
    max_form_memory_size: int = setting(min=1)  # bytes of a form's non-file fields held in memory
    max_form_parts: int = setting(min=1)  # parts of one multipart form
    max_image_pixels: int = setting(min=1)  # pixels of one image (decompression bombs); more: 413
    max_archive_bytes: int = setting(min=1)  # bytes of an uploaded zip once inflated
    max_entry_bytes: int = setting(min=1)  # bytes of one file in a zip once inflated
    max_entries: int = setting(min=1)  # files in one zip
    max_ratio: float = setting(min=1)  # inflated / compressed size of a zip entry (zip bombs)
    min_free_disk: int = setting(min=0)  # bytes free in the data folder under which /health warns and training is refused
    max_enrol_photos: int = setting(min=1)  # photos of one enrolment; more: 413 pointing to /train
    max_video_pixels: int = setting(min=1)  # per frame: width x height
    max_video_frames: int = setting(min=1)  # frames of one video
    max_video_seconds: float = setting(min=0)  # seconds of one video


@dataclass(frozen=True)
class Faces:
    """How hard to look for faces, and how encodings are computed and cached."""

    detect_size: int = setting(min=1)  # pixels of the longest side HOG looks at (photos are scaled down to it)
    # JPEGs are decoded at reduced scale while their longest side stays at least this
    decode_size: int = setting(min=1)
    upsample_fallback: bool  # look again at a finer scale where no face was found, or faces are small
    cnn_fallback_train: bool  # training tries dlib's CNN detector on photos where HOG finds no face
    cnn_fallback_predict: bool  # predict does so too, whatever the gallery's size
    # predict runs the CNN fallback anyway when the active model has fewer training photos than
    # this (a family's or small office's gallery: few photos, each one matters); 0: never
    cnn_fallback_gallery_under: int = setting(min=0)
    cnn_size: int = setting(min=1)  # pixels of the longest side the CNN detector looks at
    workers: int = setting(min=0)  # 0: one per core
    cache: bool  # keep training encodings by content hash, so re-training skips unchanged photos
    # enrolment (zip, people API, inbox, dialects) refuses faces whose quality score is under
    # this, in [0, 1] (utils/quality.py; 0.5: a 40-px face, half-sharp, or turned ~45 degrees)
    min_enrol_quality: float = setting(min=0, max=1)
    # true: every face predict, /verify and video decide on is encoded mirrored too; false: the
    # mirror pass runs only where it could change the decision (utils/faces.py; bench reference)
    always_mirror: bool


@dataclass(frozen=True)
class Cluster:
    """An optional Dask scheduler to encode training photos on."""

    scheduler: str | None  # a Dask scheduler address (tcp://host:8786); null: encode on this machine's cores
    # seconds the scheduler, a worker or a probe task may take to answer before CLUSTER_UNAVAILABLE
    timeout: float = setting(min=0)


@dataclass(frozen=True)
class Classifier:
    """The classifier's parameters for /train (see datastructure/classifier.py)."""

    n_neighbors: int = setting(min=1)  # neighbours of the KNN vote (a training's tuning may choose another)
    weights: str = setting(choices=("uniform", "distance"))  # KNN vote weights
    metric: str  # KNN distance (euclidean is what dlib's encodings are made for)
    algorithm: str = setting(choices=("auto", "ball_tree", "kd_tree", "brute"))  # scikit-learn's neighbour search
    # pins the unknown rule's distance threshold; null: calibrated per gallery
    threshold: float | None = setting(min=0)
    # pins the unknown rule's nearest / runner-up ratio; null: calibrated per gallery
    ratio: float | None = setting(min=0)
    # share of each person's photos held out to report a training's accuracy
    test_size: float = setting(min=0, max=0.9)
    index_min: int = setting(min=2)  # galleries this large or larger are searched through a faiss index
    nprobe: int = setting(min=1)     # index cells searched per face (more: slower, fewer misses)


@dataclass(frozen=True)
class Models:
    """Model versions: how many are kept, when a changed gallery is calibrated again, how long a
    change waits for another."""

    keep: int = setting(min=0)  # newest versions kept after each change (0: all); active and previous always
    recalibrate_share: float = setting(min=0, max=1)  # changes since the last calibration, as a share of its gallery
    busy_wait: float = setting(min=0)  # seconds a change waits for another (or a training) before MODELS_BUSY


@dataclass(frozen=True)
class Tune:
    """The parameter grid /tune searches, and its cross-validation folds."""

    n_neighbors: list[int]  # candidate KNN neighbours /tune tries
    weights: list[str]  # candidate vote weights
    metric: list[str]  # candidate distances
    algorithm: list[str]  # candidate neighbour searches
    cv_folds: int = setting(min=2)  # cross-validation folds of each candidate

    def grid(self) -> dict[str, list]:
        """Return the searched parameters and their candidate values (cv_folds excluded)."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self) if item.name != "cv_folds"}


@dataclass(frozen=True)
class Annotated:
    """The annotated copies /predict writes (datastructure/annotated.py): how many, how long, how large."""

    keep: int = setting(min=0)  # at most this many copies; 0: none written
    max_age: float = setting(min=0)  # seconds a copy is kept; 0: none written
    max_side: int = setting(min=64)  # pixels of a copy's longest side


@dataclass(frozen=True)
class Inbox:
    """The face records (utils/inbox.py): every face decided for an authorised caller, kept
    with a small crop, grouped when unknown, to name, ignore or correct."""

    enabled: bool  # false: no face record is kept
    keep: int = setting(min=0)  # at most this many records; the oldest go first
    max_age: float = setting(min=0)  # seconds a record is kept
    max_bytes: int = setting(min=0)  # disk budget of the records' database (crops, encodings)
    keep_anonymous: bool  # keep the faces of predictions made without the token or the admin login
    crop_side: int = setting(min=32, max=600)  # px of a crop's long side
    min_cluster_faces: int = setting(min=2)  # similar unknown faces needed to form a new cluster
    cluster_distance: float = setting(min=0.05, max=1.0)  # a face joins a cluster holding a face this near
    duplicate_distance: float = setting(min=0, max=1.0)  # an assign keeps one of faces this near (the same frame twice)
    max_assign: int = setting(min=1)  # faces enrolled by one assign at most (the best by quality)


@dataclass(frozen=True)
class Video:
    """How /predict/video looks at a video (see utils/video.py)."""

    direct_seconds: float = setting(min=0)  # up to this length (decoded, not declared) the request answers; longer: a job
    anonymous_max_seconds: float = setting(min=0)  # the longest video an anonymous caller may send (their quota per upload)
    sample_fps: float = setting(min=0.1, max=120)  # frames looked at per second of video
    detect_size: int = setting(min=80)  # frames are scaled (up or down) to this longest side for detection
    confirm_seconds: float = setting(min=0)  # seconds between re-encodings of a tracked face
    min_iou: float = setting(min=0, max=1)  # box overlap with the last sample that continues a track
    gap_seconds: float = setting(min=0)  # seconds a face may vanish and stay one range of the timeline


@dataclass(frozen=True)
class Cameras:
    """Live cameras watched by the camera supervisor (see utils/cameras.py and docs/cameras.md)."""

    start: str = setting(choices=("auto", "always", "never"))  # `serve` starts the supervisor: when a camera is defined, always, never
    allow_files: bool  # a local video file (looped) may be a camera: for tests and demos only
    # cameras defined here: {"name", "url", and optionally "sample_fps", "min_face_px", "enabled"};
    # more are added over REST (POST /cameras), kept in the data folder
    cameras: list[dict]
    sample_fps: float = setting(min=0.1, max=30)  # frames looked at per second, for cameras that do not say
    min_face_px: int = setting(min=0)  # faces shorter than this (pixels of the frame) are ignored
    detect_size: int = setting(min=80)  # frames are scaled (up or down) to this longest side for detection
    open_timeout: float = setting(min=0.5)  # seconds to connect and get a first frame
    read_timeout: float = setting(min=0.5)  # seconds without a frame before a stream counts as stalled
    max_backoff: float = setting(min=1)  # seconds between reconnection attempts double from 1 up to this
    journal_size: int = setting(min=1)  # recent events kept for /events and the Cameras page
    crops_keep: int = setting(min=0)  # face crops of events kept (0: none saved)
    crops_max_age: float = setting(min=0)  # seconds a crop is kept
    sse_seconds: float = setting(min=1)  # an /events stream ends after this long; EventSource reconnects


@dataclass(frozen=True)
class Verify:
    """/verify's decision."""

    threshold: float | None = setting(min=0)  # None: utils/verification.py's VERIFY_THRESHOLD


@dataclass(frozen=True)
class Dashboard:
    """Flask-MonitoringDashboard at /dashboard."""

    enabled: bool  # serve Flask-MonitoringDashboard at /dashboard (admin login)
    username: str  # the dashboard's one user (its password is the admin password)
    sampling_period: float = setting(min=0)  # seconds between profiler samples at monitor level 3 (0: continuously)
    # what each new route records: 0 nothing, 1 time, 2 outliers, 3 profiles
    monitor_level: int = setting(min=0, max=3)


@dataclass(frozen=True)
class Logging:
    """The log level of log/pyrecognizer.log and stderr."""

    # log level (PYRECOGNIZER_LOG_LEVEL)
    level: str = setting(choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))


@dataclass(frozen=True)
class RateLimits:
    """Flask-Limiter limits ("10 per minute") per client address, by area."""

    login: str  # admin login attempts
    predict: str  # /predict, /predict/video, /verify, /encode and the dialects' recognition
    train: str  # /train, /tune and gallery imports
    wrong_token: str  # wrong bearer tokens, counted per client address (api/limits.py)


@dataclass(frozen=True)
class Security:
    """Secrets, who may predict, TLS, sessions and rate limits."""

    # Short secrets are guessed: refused at start (None: generated at first start, see api/auth.py).
    api_token: str | None = setting(min_length=16)  # the bearer token of programs, the dialects' key
    admin_password: str | None = setting(min_length=10)  # the admin login's password (at least 10 characters)
    secret_key: str | None  # signs sessions and CSRF tokens; None: generated at first start
    predict_requires_token: bool  # /predict and the dialects' recognition need the API token too
    tls: bool  # serve HTTPS (with HSTS)
    certificate: str | None  # PEM certificate file for TLS; null: a self-signed one in dataset/tls/
    private_key: str | None  # its PEM private key file
    session_hours: float = setting(min=0)  # hours an admin login lasts
    rate_limits: RateLimits  # per client address, over a moving window
    rate_limit_storage: str  # Flask-Limiter storage URI; memory:// counts per worker process


@dataclass(frozen=True)
class MqttTls:
    """TLS of an ``mqtts://`` broker (utils/mqtt.py); the system's CAs unless ``ca_certs``."""

    ca_certs: str | None  # a PEM file of the CAs that sign the broker's certificate
    certfile: str | None  # a client certificate (PEM), for brokers that ask for one
    keyfile: str | None   # its private key (PEM)
    insecure: bool  # accept a certificate whose host name does not match (a test broker only)


@dataclass(frozen=True)
class HomeAssistant:
    """Home Assistant MQTT discovery (utils/mqtt.py): a device, entities per camera and person."""

    enabled: bool  # announce entities through Home Assistant's MQTT discovery
    discovery_prefix: str  # Home Assistant's discovery prefix (its MQTT integration's setting)
    seen_minutes: float = setting(min=0.1)  # a person's "seen" binary sensor stays on this long after a sighting


@dataclass(frozen=True)
class Mqtt:
    """Events out over MQTT, and the broker Frigate mode listens on (utils/mqtt.py)."""

    url: str | None  # mqtt://[user:password@]host[:1883] or mqtts://...; None: no MQTT
    topic_prefix: str  # pyrecognizer/matches/<name>, pyrecognizer/cameras/<camera>, ...
    client_id: str | None  # None: pyrecognizer-<host>-<pid>
    keepalive: int = setting(min=5)  # seconds; the broker sends the last will after 1.5 times this
    qos: int = setting(choices=(0, 1, 2))  # of events (1: at least once, resent after a reconnect)
    tls: MqttTls
    homeassistant: HomeAssistant


@dataclass(frozen=True)
class Webhooks:
    """Events POSTed as JSON to URLs, signed with HMAC-SHA256 (utils/webhooks.py)."""

    urls: list[str]  # where each event is POSTed, signed (see docs/integrations-mqtt.md)
    secret: str | None = setting(min_length=16)  # the HMAC key; required when there are URLs
    timeout: float = setting(min=0.1)  # seconds for one POST
    retries: int = setting(min=0)  # further tries after a failed POST
    backoff: float = setting(min=0)  # seconds before the first retry, doubled for each next one (at most 60)


@dataclass(frozen=True)
class Frigate:
    """Frigate mode (utils/frigate.py): Frigate's person events in, its sub-labels out."""

    enabled: bool  # follow Frigate's person events on mqtt.url and recognise their snapshots
    url: str | None  # Frigate's HTTP API, e.g. http://frigate:5000 (its API port, not the UI behind a login)
    topic: str  # Frigate's events topic on the mqtt.url broker
    cameras: list[str]  # only these Frigate cameras; []: all
    attempts: int = setting(min=1)  # snapshots recognised per Frigate event at most (new and updates)
    sub_label_min_confidence: float = setting(min=0, max=1)  # a known face this sure sets the event's sub-label
    timeout: float = setting(min=0.1)  # seconds for one request to Frigate


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``data_dir`` is absolute once loaded."""

    data_dir: str | None  # where models, uploads, logs, jobs and caches live (null: the project folder)
    server: Server
    limits: Limits
    faces: Faces
    cluster: Cluster
    classifier: Classifier
    models: Models
    tune: Tune
    annotated: Annotated
    video: Video
    cameras: Cameras
    inbox: Inbox
    verify: Verify
    dashboard: Dashboard
    logging: Logging
    security: Security
    mqtt: Mqtt
    webhooks: Webhooks
    frigate: Frigate


# --- loading -----------------------------------------------------------------------------


def merged(base: dict, override: dict) -> dict:
    """Return ``base`` deep-updated with ``override`` (neither is modified)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def field_type(path: tuple[str, ...]) -> Any:
    """Return the declared type of the setting at ``path`` (e.g. ("server", "port") -> int)."""
    kind: Any = Config
    for key in path:
        kind = typing.get_type_hints(kind)[key]
    return kind


def from_text(text: str, kind: Any, name: str) -> Any:
    """Return an environment variable's text as a value of the setting's type."""
    kinds = typing.get_args(kind) if _is_union(kind) else (kind,)
    if bool in kinds:
        if text.lower() in TRUE_WORDS + FALSE_WORDS:
            return text.lower() in TRUE_WORDS
        raise ConfigError(f"{name}={text!r}: expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    for number in (int, float):
        if number in kinds:
            try:
                return number(text)
            except ValueError:
                raise ConfigError(f"{name}={text!r}: expected {number.__name__}") from None
    return text


def environment_overrides(environ) -> dict:
    """Return the nested overrides named by PYRECOGNIZER_* variables, converted to each setting's type."""
    overrides: dict = {}
    for variable, path in ENVIRONMENT.items():
        if environ.get(variable) in (None, ""):
            continue
        node = overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = from_text(environ[variable], field_type(path), variable)
    return overrides


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (Union, types.UnionType)


def _type_name(kind: Any) -> str:
    if _is_union(kind):
        return " or ".join("null" if arg is type(None) else _type_name(arg) for arg in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    if dataclasses.is_dataclass(kind):
        return "an object"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def checked(value: Any, kind: Any, name: str) -> Any:
    """Return ``value`` as the declared ``kind`` (a section for a dict), or raise ConfigError."""
    if _is_union(kind):
        for option in typing.get_args(kind):
            if option is type(None) and value is None:
                return None
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        return checked(value, options[0], name) if len(options) == 1 and value is not None else _refuse(value, kind, name)
    if dataclasses.is_dataclass(kind):
        return section(kind, value, name) if isinstance(value, dict) else _refuse(value, kind, name)
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            return _refuse(value, kind, name)
        return [checked(item, typing.get_args(kind)[0], f"{name}[{index}]") for index, item in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, bool) or not isinstance(value, kind):
        return _refuse(value, kind, name)
    return value


def _refuse(value: Any, kind: Any, name: str):
    raise ConfigError(f"{name}: expected {_type_name(kind)}, got {json.dumps(value)}")


def _in_range(value: Any, item: dataclasses.Field, name: str) -> None:
    low, high, choices = item.metadata.get("min"), item.metadata.get("max"), item.metadata.get("choices")
    if value is None:
        return
    shortest = item.metadata.get("min_length")
    if shortest is not None and len(value) < shortest:
        # never echo the value: it is a secret
        raise ConfigError(f"{_named(name)} is too short: {len(value)} characters, at least {shortest} needed")
    if choices and value not in choices:
        raise ConfigError(f"{name}: {json.dumps(value)} is not one of {', '.join(map(str, choices))}")
    if low is not None and value < low or high is not None and value > high:
        bounds = f"at least {low}" if high is None else f"at most {high}" if low is None else f"from {low} to {high}"
        raise ConfigError(f"{name}: {value} is out of range (expected {bounds})")


def _named(name: str) -> str:
    """Return a setting's name, with the environment variable that sets it if there is one."""
    variables = [variable for variable, path in ENVIRONMENT.items() if ".".join(path) == name]
    return f"{name} ({variables[0]})" if variables else name


def section(cls: type, values: dict, name: str = "") -> Any:
    """Return the dataclass ``cls`` built from ``values``, every key checked."""
    known = {item.name: item for item in dataclasses.fields(cls)}
    prefix = f"{name}." if name else ""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting {prefix}{unknown[0]} (known in {name or 'the top level'}: "
                          f"{', '.join(known)})")
    missing = [key for key in known if key not in values]
    if missing:
        raise ConfigError(f"missing setting {prefix}{missing[0]} (conf/conf.json names every setting)")
    hints = typing.get_type_hints(cls)
    built = {}
    for key, item in known.items():
        built[key] = checked(values[key], hints[key], prefix + key)
        _in_range(built[key], item, prefix + key)
    return cls(**built)


def load_config(path=None, overrides: dict | None = None, environ=None) -> Config:
    """Return the checked configuration: defaults < file (``path`` or $PYRECOGNIZER_CONFIG) < env < overrides."""
    environ = os.environ if environ is None else environ
    values = json.loads(DEFAULTS_FILE.read_text())
    path = path or environ.get("PYRECOGNIZER_CONFIG")
    if path:
        try:
            values = merged(values, json.loads(Path(path).read_text()))
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    values = merged(values, environment_overrides(environ))
    values = merged(values, overrides or {})
    values["data_dir"] = str(Path(values["data_dir"] or PROJECT_ROOT).resolve())
    return section(Config, values)


def as_dict(config: Config) -> dict:
    """Return ``config`` as the nested dict of conf/conf.json (to write a config file)."""
    return dataclasses.asdict(config)


class Paths:
    """Every folder and file the service writes under the one data directory (the evaluation
    writes its runs in a folder of its own: see utils.evaluation.evaluations_folder)."""

    def __init__(self, data_dir):
        root = Path(data_dir)
        self.root = root
        self.models = root / "dataset" / "model"
        self.annotated = root / "uploads"  # the annotated copies /predict writes (the original project's folder)
        self.incoming = root / "dataset" / "tmp"  # uploaded zips, kept while their training runs
        self.log = root / "log"
        self.log_file = self.log / "pyrecognizer.log"
        self.jobs = root / "dataset" / "jobs"
        self.cache = root / "dataset" / "cache"
        self.dashboard_db = self.log / "dashboard.db"
        self.secrets = root / "dataset" / "secrets.json"
        self.sessions = root / "dataset" / "sessions"  # open admin sessions (api/sessions.py)
        self.tls = root / "dataset" / "tls"
        self.camera_list = root / "dataset" / "cameras.json"  # cameras added over REST
        self.cameras = root / "dataset" / "cameras"  # the supervisor's state, event journal, snapshots, crops
        self.inbox = root / "dataset" / "inbox"  # the face records' database (utils/inbox.py)

    def create(self) -> "Paths":
        """Create the folders (not the files) and return self."""
        for folder in (self.models, self.annotated, self.log, self.jobs, self.cache, self.incoming, self.inbox):
            folder.mkdir(parents=True, exist_ok=True)
        return self
