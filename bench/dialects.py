"""CompreFace's photo routes at scale (issue 24, item 10): ``GET /api/v1/recognition/faces?size=1``
and ``POST /api/v1/recognition/faces/<id>/verify`` on a gallery of 10^5 synthetic encodings
(10,000 people), through the app in this process (Flask's test client: the route's own cost,
without the network).

* plain: what the routes cost before, once per request: reading the active model's gallery
  and hashing every row into its photo id (the old ``all_faces`` did it once per person, the
  old verify once per request, before looking at the photo);
* ours, first: the same read and hash, once per model and process (``People.photo_index``);
* ours, warm: the median of later requests, served from that index. Target: under 50 ms.

The machine is shared: medians of 20 requests, and the ratio against the plain figure of the
same run, say more than any one time.
"""
from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

from bench import Row, at_most, engine_config, ratio
from bench.people import saved_gallery

TARGET_MS = 50.0
REQUESTS = 20
CREDENTIALS = {"api_token": "bench-api-token-0123456789abcdef", "admin_password": "bench-admin-password"}


def milliseconds(function) -> float:
    began = time.perf_counter()
    function()
    return (time.perf_counter() - began) * 1000


def dialects_section(faces: Path, workdir: Path, photos: int = 100_000, say=print) -> tuple[list[Row], dict]:
    from api.app import create_app
    from utils.people import ModelRows

    data_dir = workdir / f"gallery-{photos}"
    data_dir.mkdir(parents=True, exist_ok=True)
    say(f"dialects: a {photos:,}-photo synthetic gallery (fit, save, activate) ...")
    saved_gallery(data_dir, photos)
    app = create_app(engine_config(data_dir, security=CREDENTIALS))
    client, key = app.test_client(), {"x-api-key": CREDENTIALS["api_token"]}
    service = app.extensions["pyrecognizer"]

    def rehashed():  # the old routes' work per request (per person, for the listing)
        model_id = service.store.active_id()
        arrays, _, metadata = service.store.contents(model_id)
        return ModelRows.of(arrays, metadata).ids

    plain = statistics.median(milliseconds(rehashed) for _ in range(3))
    first = milliseconds(lambda: client.get("/api/v1/recognition/faces?size=1", headers=key))
    page = client.get("/api/v1/recognition/faces?size=1", headers=key).get_json()
    assert page["total_elements"] == photos, page
    listing = statistics.median(milliseconds(lambda: client.get("/api/v1/recognition/faces?size=1&page=777", headers=key))
                                for _ in range(REQUESTS))
    subject = page["faces"][0]["subject"]
    one = statistics.median(milliseconds(lambda: client.get(f"/api/v1/recognition/faces?subject={subject}", headers=key))
                            for _ in range(REQUESTS))
    photo = (faces / "celebrities" / "val" / "Madonna" / "1.jpg").read_bytes()
    image_id = page["faces"][0]["image_id"]

    def verify(target: str, data: bytes | None):
        files = {"file": (io.BytesIO(data), "a.jpg")} if data else {}
        answer = client.post(f"/api/v1/recognition/faces/{target}/verify", data=files)
        assert answer.status_code in (200, 400, 404), answer.get_json()

    def detect():
        client.post("/api/v1/detection/detect", data={"file": (io.BytesIO(photo), "a.jpg")})

    no_photo = statistics.median(milliseconds(lambda: verify("0123456789abcdef", None)) for _ in range(REQUESTS))
    # a verify and a detect of the same photo, interleaved (the machine's load moves): the difference
    # is what the id costs
    pairs = [(milliseconds(lambda: verify("0123456789abcdef", photo)), milliseconds(detect)) for _ in range(9)]
    unknown, decode = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
    beyond = statistics.median(a - b for a, b in pairs)
    known = statistics.median(milliseconds(lambda: verify(image_id, photo)) for _ in range(5))
    say(f"dialects: read+hash {plain:.0f} ms; faces?size=1 first {first:.0f} ms, warm {listing:.1f} ms; "
        f"verify without photo {no_photo:.1f} ms, unknown id {unknown:.0f} ms, known id {known:.0f} ms (detect {decode:.0f} ms)")
    rows = [
        Row(f"compreface faces?size=1 at {photos:,} encodings, ms (plain: read+hash once)", plain, listing,
            ratio(listing, plain), f"< {TARGET_MS:.0f} ms", at_most(listing, TARGET_MS), 1),
        Row("compreface faces?subject=<one person>, ms", plain, one, ratio(one, plain), f"< {TARGET_MS:.0f} ms",
            at_most(one, TARGET_MS), 1),
        Row("compreface faces, first request after a change (builds the index), ms", plain, first, ratio(first, plain), "", None, 0),
        Row("compreface faces/<id>/verify without a photo (400), ms", plain, no_photo, ratio(no_photo, plain),
            f"< {TARGET_MS:.0f} ms", at_most(no_photo, TARGET_MS), 1),
        Row("compreface faces/<id>/verify, unknown id, minus a detect of the same photo, ms (median of 9 pairs)", None,
            beyond, None, f"< {TARGET_MS:.0f} ms", at_most(beyond, TARGET_MS), 1),
    ]
    return rows, {"photos": photos, "read_and_hash_ms": plain, "first_ms": first, "page_ms": listing, "subject_ms": one,
                  "verify_no_photo_ms": no_photo, "verify_unknown_ms": unknown, "verify_unknown_minus_detect_ms": beyond, "verify_known_ms": known,
                  "detect_ms": decode}
