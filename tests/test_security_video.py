"""Videos against a real server, as an anonymous outsider would send them (issue 24 items 1, 9, 12).

- A header that lies about the video's length (1 tick over 10 s of frames) no longer buys
  an analysis inside the request: what is decoded counts, and past video.direct_seconds it
  becomes a job.
- Anonymous callers have a quota (video.anonymous_max_seconds per upload) and their own job
  slot: an anonymous job never makes a token holder wait, and its owner or an admin cancels it.
- Anonymous answers name neither the upload's path nor a worker's pid.

The videos are grey frames made here with PyAV (tests/hostile.py).
"""
from __future__ import annotations

import http.client
import json
import zipfile

import pytest

from tests.hostile import grey_video, lying_about_its_length
from tests.support import Server, envelope_of, faces_dir, video_dir, zipped

pytestmark = pytest.mark.e2e

DIRECT_SECONDS, ANONYMOUS_SECONDS = 2, 100


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server that knows the two people of ../shared/video's reference photos."""
    photos = video_dir()
    people = tmp_path_factory.mktemp("people") / "people.zip"
    with zipfile.ZipFile(people, "w") as archive:
        archive.write(photos / "lin-manuel-miranda.png", "Lin-Manuel Miranda/1.png")
        archive.write(photos / "alex-lacamoire.png", "Alex Lacamoire/1.png")
    started = Server(tmp_path_factory.mktemp("video-attacks"), config={
        "video": {"direct_seconds": DIRECT_SECONDS, "anonymous_max_seconds": ANONYMOUS_SECONDS},
        "faces": {"workers": 1}}).start()
    try:
        answer = started.post("/train", files={"file": ("people.zip", people.read_bytes(), "application/zip")})
        assert started.wait_for_job(envelope_of(answer, 202)["job_url"])["state"] == "done"
        yield started
    finally:
        started.stop()


def upload(server, path, *, auth: bool = False):
    return server.post("/predict/video", auth=auth, files={"file": (path.name, path.read_bytes(), "video/mp4")})


def delete_from(server, path: str, address: str):
    """DELETE ``path`` anonymously from the loopback ``address``: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30, source_address=(address, 0))
    try:
        connection.request("DELETE", path)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_a_video_whose_header_lies_about_its_length_becomes_a_job(server, tmp_path):
    """Its boxes say 1 tick; it holds 10 s of frames (the issue's had 3,000): decoded inside the
    request before, however long, now a job past direct_seconds of decoded video."""
    video = lying_about_its_length(grey_video(tmp_path / "liar.mp4", 10))
    answer = envelope_of(upload(server, video), 202)
    assert not {"pid", "owner", "slot"} & set(answer["data"]), answer["data"]  # item 12: no pid for anonymous callers
    job = server.wait_for_job(answer["job_url"])
    assert job["state"] == "done" and job["progress"]["done"] == 100, job
    assert job["result"]["video"]["frames"] == 100 and job["result"]["video"]["seconds"] == pytest.approx(10, abs=0.2)
    followed = envelope_of(server.get(answer["job_url"], auth=False), 200)["data"]
    assert "pid" not in followed and "owner" not in followed


def test_an_anonymous_video_error_does_not_name_the_upload(server, tmp_path):
    """FFmpeg's message carries the absolute path of the stored upload: refusals give the reason only."""
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\0\0\0\x20ftypisom" + bytes(5000))
    refused = envelope_of(upload(server, damaged), 400, "VIDEO_NOT_VALID")
    assert "/" not in refused["description"] and str(server.data_dir) not in json.dumps(refused), refused


def test_anonymous_jobs_have_a_quota_and_their_own_slot_and_are_cancelled_by_owner_or_admin(server, tmp_path):
    """One anonymous long video held the only video slot: every other long video got 409, an
    admin's included, and nothing could cancel it."""
    long_video = grey_video(tmp_path / "long.mp4", 90, size=(320, 240))  # ~1 min of detection on 360 frames
    started = []
    try:
        first = envelope_of(upload(server, long_video), 202)
        started.append(first["job_url"])
        busy = envelope_of(upload(server, long_video), 409, "VIDEO_IN_PROGRESS")
        assert busy["data"] == {"job": None}  # a stranger's job id would show the stranger's result
        admins = envelope_of(upload(server, long_video, auth=True), 202)  # its own slot: no wait
        started.append(admins["job_url"])
        assert admins["data"]["owner"] == "token"

        status, body = delete_from(server, first["job_url"], "127.0.0.2")  # another anonymous address
        assert status == 403 and body["response"]["error"] == "FORBIDDEN", body
        status, body = delete_from(server, first["job_url"], "127.0.0.1")  # its owner
        assert status == 200 and body["response"]["data"]["cancel_requested"], body
        assert envelope_of(server.delete(admins["job_url"]), 200)["data"]["cancel_requested"]  # an admin
        for url in (first["job_url"], admins["job_url"]):
            assert server.wait_for_job(url, timeout=60)["state"] == "cancelled"
        started.append(envelope_of(upload(server, long_video), 202)["job_url"])  # the slot is free again
    finally:
        for url in started:
            server.delete(url)
        for url in started:  # ended, so that stopping the server does not wait for them
            server.wait_for_job(url, timeout=60)
    over_quota = grey_video(tmp_path / "over-quota.mp4", ANONYMOUS_SECONDS + 20)
    envelope_of(upload(server, over_quota), 413, "VIDEO_TOO_LARGE")
    envelope_of(server.delete("/jobs/" + "0" * 32), 404)


def test_an_admin_cancels_a_training_and_the_active_model_stays(server, tmp_path):
    """DELETE /jobs/<id>: a training stops at its next progress report, saves nothing, and the
    model that was active stays so."""
    active = envelope_of(server.get("/health"), 200)["data"]["model"]
    photos = zipped(faces_dir() / "celebrities" / "train", tmp_path / "celebrities.zip")
    started = envelope_of(server.post("/train", files={"file": ("celebrities.zip", photos.read_bytes())}), 202)
    assert envelope_of(server.delete(started["job_url"]), 200)["data"]["cancel_requested"]
    job = server.wait_for_job(started["job_url"], timeout=120)
    assert job["state"] == "cancelled" and job["result"] is None, job
    assert envelope_of(server.get("/health"), 200)["data"]["model"] == active
    envelope_of(server.delete(started["job_url"]), 200)  # an ended job is left as it is
