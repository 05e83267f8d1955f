"""Hostile inputs, and the helpers the attack tests (tests/test_security_*.py) drive servers with.

Builders return bytes made here, by hand where a library would refuse to write them: zips
with lying headers, overlapping entries, links and unsafe names; images in formats outside
the allow-list, decompression bombs, pickles. tests/test_archive.py and tests/test_images.py
use the same builders on the validators directly; the security tests send them over HTTP to
real server processes (tests/support.py) and check that nothing is written and the service
stays up.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import strategies as st
from PIL import Image

from conf.config import merged
from tests.support import ROOT, Server, envelope_of

MiB = 1024**2

# --- photos and zips (moved from tests/test_archive.py) ---------------------------------


def jpeg(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


PHOTO = jpeg()


def archive_of(*entries, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name or ZipInfo, data) entries, written as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def photos(*names: str) -> bytes:
    return archive_of(*((name, jpeg(seed)) for seed, name in enumerate(names)))


def central_offsets(data: bytes) -> list[int]:
    """Where each central directory record starts, in directory order."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        offset, offsets = archive.start_dir, []
        for info in archive.infolist():
            offsets.append(offset)
            offset += 46 + len(info.orig_filename.encode()) + len(info.extra) + len(info.comment)
    return offsets


def local_offsets(data: bytes) -> list[int]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [info.header_offset for info in archive.infolist()]


def patched(data: bytes, *edits: tuple[int, str, int]) -> bytes:
    """``data`` with each (offset, struct format, value) written over it."""
    out = bytearray(data)
    for offset, fmt, value in edits:
        struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# Field offsets inside a central directory record and a local file header.
CENTRAL_FLAGS, CENTRAL_COMPRESSED, CENTRAL_SIZE, CENTRAL_HEADER_OFFSET = 8, 20, 24, 42
LOCAL_FLAGS, LOCAL_SIZE, LOCAL_NAME_LENGTH = 6, 22, 26


def named(name: str) -> zipfile.ZipInfo:
    """A ZipInfo carrying ``name`` as is (the constructor would cut it at a NUL byte)."""
    info = zipfile.ZipInfo("placeholder")
    info.filename = name
    return info


def tar_of_photo() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("1.jpg")
        info.size = len(PHOTO)
        archive.addfile(info, io.BytesIO(PHOTO))
    return buffer.getvalue()


def two_entries() -> bytes:
    return archive_of(("Ben/1.jpg", PHOTO), ("Ben/2.jpg", jpeg(1)), compression=zipfile.ZIP_STORED)


# --- more hostile zips -------------------------------------------------------------------


def declaring(data: bytes, index: int, size: int) -> bytes:
    """``data`` with entry ``index`` declaring ``size`` uncompressed bytes (central and local)."""
    return patched(data, (central_offsets(data)[index] + CENTRAL_SIZE, "<I", size),
                   (local_offsets(data)[index] + LOCAL_SIZE, "<I", size))


def declaring_all(data: bytes, size: int) -> bytes:
    """``data`` with every entry declaring ``size`` uncompressed bytes."""
    for index in range(len(local_offsets(data))):
        data = declaring(data, index, size)
    return data


def inflating_past_declared_size(declared: int = 1000, actual: int = 100_000) -> bytes:
    """An entry declaring ``declared`` uncompressed bytes whose deflated data inflates to ``actual``."""
    return declaring(archive_of(("Ben/1.jpg", b"A" * actual), ("Madonna/1.jpg", PHOTO)), 0, declared)


def bad_crc() -> bytes:
    """A stored photo with one byte flipped far from its start: the CRC-32 no longer matches."""
    name, content = "Ben/1.jpg", PHOTO + bytes(20_000)
    data = archive_of((name, content), ("Madonna/1.jpg", jpeg(1)), compression=zipfile.ZIP_STORED)
    start = local_offsets(data)[0] + 30 + len(name) + 15_000
    return patched(data, (start, "B", data[start] ^ 0xFF))


def ratio_bomb(size: int = 8 * MiB) -> bytes:
    """A photo of ``size`` zero bytes: a few kilobytes compressed, a ratio of about 1,000."""
    return archive_of(("Ben/1.jpg", PHOTO), ("Ben/2.jpg", b"\0" * size))


def encrypted() -> bytes:
    data = archive_of(("Ben/1.jpg", PHOTO))
    (central,), (local,) = central_offsets(data), local_offsets(data)
    return patched(data, (central + CENTRAL_FLAGS, "<H", 1), (local + LOCAL_FLAGS, "<H", 1))


def overlapping(kind: str) -> bytes:
    data = two_entries()
    edit = {
        # The classic overlapping bomb: every entry points at the same compressed data.
        "same offset": (central_offsets(data)[1] + CENTRAL_HEADER_OFFSET, "<I", 0),
        "into next entry": (central_offsets(data)[0] + CENTRAL_COMPRESSED, "<I", len(PHOTO) + 40),
        "into central directory": (central_offsets(data)[1] + CENTRAL_COMPRESSED, "<I", len(PHOTO) + 40),
    }[kind]
    return patched(data, edit)


def symbolic_link(target: bytes = b"/etc/passwd") -> bytes:
    link = zipfile.ZipInfo("Ben/1.jpg")
    link.create_system = 3  # Unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return archive_of(("Ben/0.jpg", PHOTO), (link, target))


def many_entries(count: int) -> bytes:
    return archive_of(*((f"Ben/{index}.jpg", b"x") for index in range(count)), compression=zipfile.ZIP_STORED)


def nested(content: bytes, name: str = "Ben/2.jpg") -> bytes:
    return archive_of(("Ben/1.jpg", PHOTO), (name, content))


def gzip_of_photo() -> bytes:
    return gzip.compress(PHOTO)


# --- images (moved from tests/test_images.py) --------------------------------------------


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """A smooth colour picture: compresses like a photo, unlike noise."""
    x = np.linspace(0, 255, width).astype(np.uint8)
    y = np.linspace(0, 255, height).astype(np.uint8)[:, np.newaxis]
    channels = np.empty((height, width, 3), np.uint8)
    channels[..., 0], channels[..., 1], channels[..., 2] = x, y, 255 - x
    return Image.fromarray(channels)


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes = b"") -> bytes:
    """A PNG written chunk by chunk, to state what Pillow cannot write; no IDAT if no rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(rows)) if rows else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


# --- more hostile images -----------------------------------------------------------------


def psd(width: int = 8, height: int = 8) -> bytes:
    """A minimal Photoshop file (Pillow reads PSD but cannot write it): 3 channels, raw data."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, image resources, layers: empty
    return header + sections + struct.pack(">H", 0) + b"\x80" * (3 * width * height)


def one_bit_bomb(side: int = 20_000) -> bytes:
    """A real, complete 1-bit PNG of side x side pixels that compresses to a few kilobytes."""
    return encoded(Image.new("1", (side, side)), "PNG")


class Unpickled:
    """Unpickling this creates the folder ``marker``: proof that someone ran pickle.loads."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(Unpickled(marker))


def npy_payload(marker: Path) -> bytes:
    """A .npy holding an object array, whose loading with allow_pickle=True unpickles."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([Unpickled(marker)], dtype=object), allow_pickle=True)
    return buffer.getvalue()


# --- bounded fuzzing helpers (moved from tests/test_archive.py and tests/test_images.py) ---


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes overwritten, and maybe cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail whatever runs inside for longer than ``seconds`` (a hang would stall CI instead)."""

    def interrupt(signum, frame):
        # pytest.fail raises a BaseException, which no "except Exception" can swallow.
        pytest.fail(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- servers -----------------------------------------------------------------------------

# What every test server runs with unless a test says otherwise: no dashboard (it is tested
# in test_security_access), no CNN fallback (minutes on two cores), limits that the tests
# which do not test them never reach.
BASE_CONFIG = {
    "dashboard": {"enabled": False},
    "faces": {"cnn_fallback_train": False},
    "security": {"rate_limits": {"login": "1000 per minute", "predict": "10000 per minute",
                                 "train": "1000 per hour", "wrong_token": "1000 per minute"}},
}


def server_config(**sections) -> dict:
    """BASE_CONFIG with ``sections`` merged in."""
    return merged(BASE_CONFIG, sections)


_TRAIN_SCRIPT = """
import json, sys
from conf.config import load_config
from utils.service import build_service

data_dir, *sources = sys.argv[1:]
config = load_config(overrides={"data_dir": data_dir, "dashboard": {"enabled": False},
                                "faces": {"workers": 1, "cnn_fallback_train": False}}, environ={})
service = build_service(config, console_log=False)
print(json.dumps([service.train(source)["model"] for source in sources]))
"""

# Two small models trained once per session: A knows three people, B (newer) two others.
MODEL_A_PEOPLE = {"Elton John": 4, "Madonna": 4, "Mindy Kaling": 4}
MODEL_B_PEOPLE = {"Ben Afflek": 3, "Jerry Seinfield": 3}
def subset(faces: Path, people: dict[str, int], target: Path) -> Path:
    """Copy the first photos of each person of celebrities/train into ``target`` (a tmp folder)."""
    for person, count in people.items():
        (target / person).mkdir(parents=True, exist_ok=True)
        for photo in sorted((faces / "celebrities" / "train" / person).glob("*.jpg"),
                            key=lambda path: int(path.stem))[:count]:
            shutil.copyfile(photo, target / person / photo.name)
    return target


def trained_models(tmp_path_factory, faces: Path) -> tuple[Path, list[str]]:
    """(model folder, [id of A, id of B]), trained in a separate process (the session
    fixture ``hostile_models`` calls this once)."""
    root = tmp_path_factory.mktemp("hostile-models")
    sources = [subset(faces, MODEL_A_PEOPLE, root / "a"), subset(faces, MODEL_B_PEOPLE, root / "b")]
    done = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(root / "data"), *map(str, sources)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(ids) == 2 and ids[0] < ids[1], ids
    return root / "data" / "dataset" / "model", ids


def install_models(data_dir: Path, models: tuple[Path, list[str]], active: str | None = None) -> None:
    """Copy the trained model folders into ``data_dir`` and point ACTIVE at ``active``."""
    folder, ids = models
    target = Path(data_dir) / "dataset" / "model"
    target.mkdir(parents=True, exist_ok=True)
    for model_id in ids:
        shutil.copytree(folder / model_id, target / model_id)
    (target / "ACTIVE").write_text(active or ids[-1])


def start_server(data_dir: Path, config: dict | None = None, *, env: dict | None = None,
                 tls: bool = False, console: Path | None = None) -> Server:
    """Start a real server over ``data_dir``; ``console``: where its output goes instead of data_dir."""
    server = Server(data_dir, config=server_config() if config is None else config, env=env)
    if tls:
        server.url = server.url.replace("http://", "https://")
    if console is not None:
        server.log_path = console
    return server.start(timeout=90)


def stopped(server: Server) -> None:
    """Stop the whole process group at once: the tests need no graceful shutdown, whose
    seconds per server add up (its data folder is a throw-away one)."""
    server.stop(signal.SIGKILL)


def restarted(server: Server) -> Server:
    """A new server process over the same data folder, configuration and environment."""
    stopped(server)
    again = Server(server.data_dir, config=json.loads((server.data_dir / "test-conf.json").read_text()))
    again.env, again.url = server.env, server.url.rsplit(":", 1)[0] + f":{again.port}"
    again.token, again.password, again.log_path = server.token, server.password, server.log_path
    return again.start(timeout=90)


def files_under(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")) if folder.is_dir() else []


def written(server: Server) -> dict:
    """What the service has written where a hostile input could leave something behind."""
    root = server.data_dir
    return {
        "uploads": files_under(root / "uploads"),
        "tmp": files_under(root / "dataset" / "tmp"),
        "model": files_under(root / "dataset" / "model"),
        "ACTIVE": (root / "dataset" / "model" / "ACTIVE").read_text() if (root / "dataset" / "model" / "ACTIVE").exists() else None,
        "jobs": [name for name in files_under(root / "dataset" / "jobs") if name.endswith(".json")],
    }


def good_photo(faces: Path) -> Path:
    return faces / "celebrities" / "val" / "Madonna" / "1.jpg"


def assert_unharmed(server: Server, before: dict, faces: Path, *, client=None) -> None:
    """Nothing was written, the active model is the same, and the service still serves.

    ``client`` (default: the server's own) sends the health check and a good prediction.
    """
    client = client or server
    assert written(server) == before
    health = envelope_of(client.get("/health"), 200)["data"]
    assert health["up"] and health["model"] == before["ACTIVE"], health
    answer = client.post("/predict", files={"file": ("photo.jpg", good_photo(faces).read_bytes(), "image/jpeg")})
    assert envelope_of(answer, 200)["model"] == health["model"]


class SourceAddressAdapter(requests.adapters.HTTPAdapter):
    """Send from another loopback address, so that each test has its own rate-limit bucket."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Client:
    """A REST client of ``server`` sending from the loopback address ``address``."""

    def __init__(self, server: Server, address: str):
        self.server = server
        self.session = requests.Session()
        self.session.mount("http://", SourceAddressAdapter(address))
        self.session.mount("https://", SourceAddressAdapter(address))

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs):
        headers = {**({"Authorization": f"Bearer {self.server.token}"} if auth else {}), **kwargs.pop("headers", {})}
        return self.session.request(method, self.server.url + path, headers=headers,
                                    timeout=kwargs.pop("timeout", 60), verify=False, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)


def csrf_token_of(page: str) -> str:
    import re

    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page)
    assert found, page[:500]
    return found[1]


def logged_in(server: Server, session: requests.Session | None = None, password: str | None = None) -> tuple[requests.Session, str]:
    """A browser-like session logged in at /login, and its CSRF token for later requests."""
    session = session or requests.Session()
    token = csrf_token_of(session.get(server.url + "/login", verify=False, timeout=30).text)
    answer = session.post(server.url + "/login", data={"password": password or server.password, "csrf_token": token},
                          allow_redirects=False, verify=False, timeout=30,
                          headers={"Referer": server.url + "/login"})
    assert answer.status_code == 302, (answer.status_code, answer.text[:500])
    page = session.get(server.url + "/login", verify=False, timeout=30).text
    return session, csrf_token_of(page)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- videos ------------------------------------------------------------------------------


def muxed(out, stream, frames) -> None:
    """Encode every frame of ``frames`` into ``stream`` of the container ``out``, then flush it."""
    for frame in frames:
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def grey_video(path: Path, seconds: float, *, fps: int = 10, size=(16, 16), codec: str = "mpeg4") -> Path:
    """An mp4 of ``seconds`` of grey frames (a few bytes each), written with PyAV."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        grey = np.full((size[1], size[0], 3), 128, np.uint8)
        muxed(out, stream, (av.VideoFrame.from_ndarray(grey, format="rgb24") for _ in range(int(seconds * fps))))
    return path


# Where a duration sits after a box's type: (version 0 offset, size), (version 1 offset, size).
DURATION_FIELDS = {b"mvhd": ((20, 4), (28, 8)), b"mdhd": ((20, 4), (28, 8)), b"tkhd": ((24, 4), (32, 8))}


def lying_about_its_length(path: Path) -> Path:
    """``path`` (an mp4) with every duration box (mvhd, mdhd, tkhd) saying 1 tick: the header of a
    short clip over all its frames (issue 24: 3,000 s decoded inside a request)."""
    data = bytearray(path.read_bytes())
    for box, fields in DURATION_FIELDS.items():
        start = 0
        while (start := data.find(box, start)) >= 0:
            offset, size = fields[data[start + 4]]  # the byte after the type is the box's version
            data[start + offset:start + offset + size] = (1).to_bytes(size, "big")
            start += 4
    path.write_bytes(bytes(data))
    return path
