"""Hostile photos sent to POST /predict (and its alias POST /) of a real server, and paths that
try to climb out of GET /uploads/<name>.

Every one is refused with a JSON envelope, a fitting 4xx and a specific code; no annotated
image is saved, the active model stays, and a health check and a good prediction right after
are served as usual. A pickle is refused as "not an image" and never unpickled.
"""
from __future__ import annotations

import http.client
import io
import struct
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.hostile import (
    assert_unharmed, encoded, good_photo, gradient, install_models, npy_payload, one_bit_bomb,
    pickle_payload, png, psd, server_config, start_server, stopped, written,
)
from tests.support import envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("faces")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("image")
    install_models(data_dir, hostile_models)
    server = start_server(data_dir, server_config())
    yield server
    stopped(server)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims ``width`` x ``height`` pixels."""
    data = bytearray(encoded(gradient(16, 16), "JPEG"))
    frame = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encoded(gradient(16, 16), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def real(faces, *parts) -> bytes:
    return faces.joinpath(*parts).read_bytes()


FILE_NOT_VALID = (400, "FILE_NOT_VALID")
IMAGE_TOO_LARGE = (413, "IMAGE_TOO_LARGE")
MISSING_FILE = (400, "MISSING_FILE")

HOSTILE = {
    # decompression bombs: refused from the header, before any pixel is decoded
    "1-bit PNG of 10000x10000": (lambda faces: one_bit_bomb(10_000), IMAGE_TOO_LARGE),
    "PNG header claiming 30000x30000": (lambda faces: png(30_000, 30_000, 8, 2), IMAGE_TOO_LARGE),
    "JPEG header claiming 65000x65000": (lambda faces: jpeg_claiming(65_000, 65_000), IMAGE_TOO_LARGE),
    "GIF screen of 65535x65535": (lambda faces: gif_claiming(65_535, 65_535), IMAGE_TOO_LARGE),
    # damaged photos
    "real JPEG cut in half": (lambda faces: (lambda data: data[: len(data) // 2])(real(faces, "samples", "obama.jpg")), FILE_NOT_VALID),
    "real PNG cut in half": (lambda faces: (lambda data: data[: len(data) // 2])(real(faces, "samples", "32bit.png")), FILE_NOT_VALID),
    "JPEG magic then zeros": (lambda faces: b"\xff\xd8\xff\xe0" + bytes(64), FILE_NOT_VALID),
    # other content named .jpg
    "HTML": (lambda faces: b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", FILE_NOT_VALID),
    "SVG with script": (lambda faces: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>', FILE_NOT_VALID),
    "PHP": (lambda faces: b"<?php system($_GET['c']); ?>", FILE_NOT_VALID),
    "GIF/PHP polyglot": (lambda faces: b"GIF89a<?php system($_GET['c']); ?>", FILE_NOT_VALID),
    "JPEG magic then HTML": (lambda faces: b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>", FILE_NOT_VALID),
    "random bytes": (lambda faces: bytes(range(256)) * 8, FILE_NOT_VALID),
    "a zip": (lambda faces: __import__("tests.hostile", fromlist=["photos"]).photos("Ben/1.jpg"), FILE_NOT_VALID),
    # formats Pillow reads but the allow-list does not name
    "ICO": (lambda faces: encoded(gradient(32, 32), "ICO"), FILE_NOT_VALID),
    "PSD": (lambda faces: psd(), FILE_NOT_VALID),
    "PDF": (lambda faces: encoded(gradient(32, 32), "PDF"), FILE_NOT_VALID),
    "EPS": (lambda faces: encoded(gradient(32, 32), "EPS"), FILE_NOT_VALID),
    "PPM": (lambda faces: encoded(gradient(32, 32), "PPM"), FILE_NOT_VALID),
    "TGA": (lambda faces: encoded(gradient(32, 32), "TGA"), FILE_NOT_VALID),
    "PCX": (lambda faces: encoded(gradient(32, 32), "PCX"), FILE_NOT_VALID),
    "XBM": (lambda faces: encoded(gradient(32, 32).convert("1"), "XBM"), FILE_NOT_VALID),
    "DDS": (lambda faces: encoded(gradient(32, 32), "DDS"), FILE_NOT_VALID),
    "ICNS": (lambda faces: encoded(gradient(32, 32), "ICNS"), FILE_NOT_VALID),
    "JPEG 2000": (lambda faces: encoded(gradient(32, 32), "JPEG2000"), FILE_NOT_VALID),
    # nothing
    "empty file": (lambda faces: b"", MISSING_FILE),
}


@pytest.mark.parametrize("build, expected", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_image_is_refused_and_nothing_is_written(server, faces, build, expected):
    status, code = expected
    before = written(server)
    answer = server.post("/predict", files={"file": ("photo.jpg", build(faces), "image/jpeg")})
    assert envelope_of(answer, status, code)["description"]
    assert_unharmed(server, before, faces)


@pytest.mark.parametrize("name", ["1-bit PNG of 10000x10000", "SVG with script", "PSD", "real JPEG cut in half"])
def test_the_root_alias_refuses_the_same_images(server, faces, name):
    build, (status, code) = HOSTILE[name]
    before = written(server)
    envelope_of(server.post("/", files={"file": ("photo.jpg", build(faces))}), status, code)
    assert_unharmed(server, before, faces)


@pytest.mark.parametrize("name", ["model.dat", "model.pkl", "photo.jpg", "model.npy"])
def test_a_pickle_is_refused_and_never_unpickled(server, faces, tmp_path, name):
    marker = tmp_path / "unpickled"
    payload = npy_payload(marker) if name.endswith(".npy") else pickle_payload(marker)
    before = written(server)
    answer = server.post("/predict", files={"file": (name, payload, "application/octet-stream")})
    envelope_of(answer, 400, "FILE_NOT_VALID")
    assert not marker.exists()
    assert_unharmed(server, before, faces)


@pytest.mark.parametrize("kwargs", [
    {"data": {"file": "not a file"}},
    {"files": {"photo": ("a.jpg", b"\xff\xd8\xff")}},
    {"json": {"file": "aGVsbG8="}},
    {"data": b"\xff\xd8\xff\xe0" * 100, "headers": {"Content-Type": "image/jpeg"}},
    {"data": b"--x\r\nbroken multipart", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
], ids=["form field", "other field name", "json", "raw body", "broken multipart"])
def test_a_request_without_an_uploaded_file_is_refused(server, faces, kwargs):
    before = written(server)
    answer = server.post("/predict", **kwargs)
    assert answer.status_code == 400
    assert envelope_of(answer)["error"] in ("MISSING_FILE", "BAD_REQUEST")
    assert_unharmed(server, before, faces)


def raw_get(server, path: str) -> tuple[int, dict, bytes]:
    """GET ``path`` exactly as written: no client-side normalisation of dots or escapes."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


TRAVERSALS = [
    "/uploads/../main.py", "/uploads/..%2fmain.py", "/uploads/..%2f..%2fconf%2fconf.json",
    "/uploads/%2e%2e%2fmain.py", "/uploads/%2e%2e/main.py", "/uploads/..%5cmain.py", "/uploads/....//main.py",
    "/uploads/..%2f..%2fdataset%2fsecrets.json", "/uploads/..%252f..%252fmain.py",
    "/uploads/" + "0" * 32 + ".jpg%2f..%2f..%2fmain.py", "/uploads/" + "0" * 32 + ".jpg%00.png",
    "/uploads/%00", "/uploads/.", "/uploads/..", "/uploads/planted.json", "/uploads/" + "0" * 32 + ".jpg",
    "/uploads/" + "0" * 32 + ".JPG", "//uploads/../main.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_uploads_cannot_be_climbed_out_of(server, path):
    (server.data_dir / "uploads" / "planted.json").write_text('{"secret": "planted"}')
    status, headers, body = raw_get(server, path)
    assert status == 404, (path, status, body[:200])
    assert headers.get("Content-Type", "").startswith("application/json")
    assert b"planted" not in body and b"import" not in body and b"api_token" not in body


def test_an_annotated_image_is_served(server, faces):
    answer = envelope_of(server.post("/predict", files={"file": good_photo(faces).read_bytes()}), 200)
    image = server.get(answer["image_url"])
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).format == "JPEG"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
