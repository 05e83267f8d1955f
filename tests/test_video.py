"""Video: who appears when in ../shared/video's clip, over HTTP on a real server and in Chromium;
hostile and unsupported files (made here with PyAV) refused with their codes and nothing left on disk.

The clip's README says Lin-Manuel Miranda appears at about 0.0-0.4 s and 3.0-7.1 s, one other
face (a stranger to the two reference photos) near 8.0 s, and Alex Lacamoire not at all.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from fractions import Fraction
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.browser import Watched, check_on_a_phone, drop_file, screenshot
from tests.conftest import app_over
from tests.hostile import muxed
from tests.support import ROOT, TEST_CREDENTIALS, Server, envelope_of, video_dir

LIN, ALEX = "Lin-Manuel Miranda", "Alex Lacamoire"
LIN_RANGES = [(0.0, 0.4), (3.0, 7.1)]
TOLERANCE = 0.5


# --- test data, made at test time ---------------------------------------------------------


@pytest.fixture(scope="module")
def shared_video() -> Path:
    return video_dir()


@pytest.fixture(scope="module")
def clip(shared_video) -> Path:
    return shared_video / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def people_zip(shared_video, tmp_path_factory) -> Path:
    """A training zip of the two reference photos, one folder per person (built here, never stored)."""
    target = tmp_path_factory.mktemp("video-zip") / "people.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(shared_video / "lin-manuel-miranda.png", f"{LIN}/lin-manuel-miranda.png")
        archive.write(shared_video / "alex-lacamoire.png", f"{ALEX}/alex-lacamoire.png")
    return target


def synthetic(path: Path, container: str, codec: str, *, size=(64, 48), frames: int = 10, pix_fmt="yuv420p") -> Path:
    """Write a small video of grey frames with PyAV."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        muxed(out, stream, (av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), index * 20, np.uint8),
                                                       format="rgb24") for index in range(frames)))
    return path


def audio_only(path: Path, container: str = "mp4") -> Path:
    """Write a second of silence (AAC) with no video stream."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("aac", rate=48000)

        def silence():
            for index in range(47):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, index * 1024
                yield frame

        muxed(out, stream, silence())
    return path


def huge_header(path: Path) -> Path:
    """An AVI of small raw frames whose header says each frame is 16000x16000 (a video bomb):
    raw video takes its size from the header alone."""
    data = bytearray(synthetic(path, "avi", "rawvideo", pix_fmt="rgb24").read_bytes())
    strf = data.index(b"strf")  # BITMAPINFOHEADER: size, biWidth, biHeight
    data[strf + 12:strf + 20] = struct.pack("<ii", 16000, 16000)
    path.write_bytes(bytes(data))
    return path


def transcoded(clip: Path, path: Path, container: str, codec: str, *, seconds: float = 1.0,
               size=(160, 90), pix_fmt: str = "yuv420p", sideways: bool = False) -> Path:
    """The clip's first ``seconds``, scaled down, re-encoded with PyAV into ``container``;
    ``sideways``: stored turned a quarter clockwise, with a display matrix turning it back (as phones do)."""
    import av

    with av.open(str(clip)) as source, av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height = (size[1], size[0]) if sideways else size
        stream.pix_fmt = pix_fmt
        if sideways:
            stream.set_display_rotation(90)  # a player turns it a quarter counter-clockwise

        def pictures():
            for index, frame in enumerate(source.decode(video=0)):
                if index >= seconds * 30:
                    return
                picture = frame.reformat(width=size[0], height=size[1], format="rgb24")
                if sideways:
                    picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(picture.to_ndarray(), -1)),
                                                         format="rgb24")
                picture = picture.reformat(format=pix_fmt)
                picture.pts, picture.time_base = index, Fraction(1, 30)
                yield picture

        muxed(out, stream, pictures())
    return path


# --- the timeline ---------------------------------------------------------------------------


def check_timeline(result: dict) -> None:
    """The clip's README, within TOLERANCE seconds."""
    rows = {entry["name"]: entry for entry in result["timeline"]}
    assert ALEX not in rows, rows.keys()
    assert LIN in rows, rows.keys()
    lin = rows[LIN]
    assert len(lin["ranges"]) == len(LIN_RANGES), lin["ranges"]
    for found, (start, end) in zip(lin["ranges"], LIN_RANGES):
        assert abs(found["start"] - start) <= TOLERANCE and abs(found["end"] - end) <= TOLERANCE, lin["ranges"]
    assert lin["known"] and 0 < lin["confidence"] <= 1 and lin["frames"] > 50
    strangers = [entry for entry in result["timeline"] if not entry["known"]]
    assert len(strangers) == 1, [(entry["name"], entry["ranges"]) for entry in strangers]
    assert any(r["start"] - TOLERANCE <= 8.0 <= r["end"] + TOLERANCE for r in strangers[0]["ranges"]), strangers
    assert result["people"] == {LIN: lin["confidence"]}
    assert result["video"]["width"] == 640 and result["video"]["frames"] == 275
    assert result["video"]["offset"] == pytest.approx(0.844, abs=0.01)  # the audio starts first


@pytest.fixture(scope="module")
def video_server(tmp_path_factory, people_zip):
    """A real server that learned the two people from their reference photos over HTTP."""
    # two photos: encoded in the server's process, no pool of encoding processes to start
    server = Server(tmp_path_factory.mktemp("video-server"), config={"faces": {"workers": 1}}).start()
    try:
        answer = server.post("/train", files={"file": ("people.zip", people_zip.read_bytes(), "application/zip")})
        job = server.wait_for_job(envelope_of(answer, 202)["job_url"])
        assert job["state"] == "done", job
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_timeline_of_the_clip_over_http(video_server, clip):
    """Send the clip to the real server: who appears when, with thumbnails; the upload is gone."""
    server = video_server
    answer = server.post("/predict/video", auth=False, files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
    response = envelope_of(answer, 200)
    check_timeline(response["data"])
    assert LIN in response["description"] and "1 unknown face" in response["description"]
    for entry in response["data"]["timeline"]:
        thumbnail = server.get(entry["thumbnail_url"], auth=False)
        assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
        assert thumbnail.content[:3] == b"\xff\xd8\xff"
    assert not list((server.data_dir / "dataset" / "tmp").iterdir())  # the upload is gone
    spec = server.get("/openapi.json", auth=False).json()
    assert {"/predict/video", "/predict/video/jobs/{job_id}"} <= set(spec["paths"])


@pytest.mark.e2e
@pytest.mark.slow
def test_a_one_photo_person_enrolled_into_a_trained_gallery_is_found_in_the_clip(tmp_path, celebrities_zip,
                                                                                  shared_video, clip):
    """Issue 25: trained on celebrities/train (14-21 photos a person), then Lin-Manuel Miranda
    enrolled from his one photo, over HTTP. His face at 3-4 s sits 0.51-0.57 from that photo,
    beyond the mean rule's 0.49 for a mean of many photos: the rule measures his distance less
    the noise of a one-photo mean, so he is found from ~3 s as in a gallery of one-photo people,
    and the stranger near 8 s stays unknown."""
    server = Server(tmp_path, config={"faces": {"workers": 1}}).start()
    try:
        answer = server.post("/train", files={"file": ("celebrities.zip", celebrities_zip.read_bytes(), "application/zip")})
        assert server.wait_for_job(envelope_of(answer, 202)["job_url"])["state"] == "done"
        photo = (shared_video / "lin-manuel-miranda.png").read_bytes()
        added = envelope_of(server.post(f"/people/{LIN}/photos", files={"file": ("lin.png", photo, "image/png")}), 201)
        assert len(added["data"]["added"]) == 1
        answer = server.post("/predict/video", auth=False, files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
        result = envelope_of(answer, 200)["data"]
        check_timeline(result)  # Lin from ~3.0 s, within TOLERANCE; one stranger near 8 s
        assert not [entry for entry in result["timeline"] if entry["known"] and entry["name"] != LIN]
    finally:
        server.stop()


@pytest.mark.e2e
def test_each_track_is_kept_as_one_face_record(video_server, clip):
    """With the token, every track of the clip becomes one face record (the inbox)."""
    server = video_server
    answer = envelope_of(server.post("/predict/video", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")},
                                     data={"source": "stage"}), 200)
    records = envelope_of(server.get("/faces", params={"source": "stage", "limit": 200}), 200)["data"]["records"]
    assert len(records) == sum(entry["tracks"] for entry in answer["data"]["timeline"])
    assert {record["source"]["route"] for record in records} == {"video"}
    assert {record["source"]["file"] for record in records} == {"clip.mp4"}
    assert LIN in {record["name"] for record in records} and all(record["quality"] for record in records)


@pytest.mark.e2e
def test_cli_predicts_a_video(video_server, clip):
    """`main.py predict VIDEO` prints the same timeline, with a progress bar of frames on stderr."""
    result = subprocess.run([sys.executable, "main.py", "--data-dir", str(video_server.data_dir), "predict", str(clip)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    response = json.loads(line)["response"]
    assert response["file"] == str(clip)
    check_timeline(response["data"])
    assert "275/275" in result.stderr and "frame" in result.stderr


@pytest.mark.e2e
@pytest.mark.browser
def test_video_page_in_chromium(browser, video_server, clip, tmp_path):
    """Drop the clip on the /video page: progress, then a bar per person; a click on a bar seeks."""
    watched = Watched(browser, video_server.url)
    page = watched.page
    try:
        page.goto("/")
        page.get_by_role("link", name="Video").click()
        page.wait_for_url("**/video")
        drop_file(page, "[data-dropzone]", clip, "video/mp4")
        assert page.locator("#player").is_visible()
        page.get_by_role("button", name="Find the faces").click()
        page.locator(".timeline__row").first.wait_for(state="visible", timeout=60_000)
        names = page.locator(".timeline__name").all_text_contents()
        assert names == [LIN, "Unknown face 1"], names
        lin_bars = page.locator(f'.timeline__row[data-name="{LIN}"] .timeline__range')
        assert lin_bars.count() == 2
        second = float(lin_bars.nth(1).get_attribute("data-start"))
        assert abs(second - 3.0) <= TOLERANCE
        lin_bars.nth(1).click()
        # the player counts from the file's start, where the audio begins: 0.84 s before the first frame
        offset = 0.844
        assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(second + offset, abs=0.05)
        page.locator('.timeline__row--unknown .timeline__range').first.press("Enter")
        unknown_at = page.evaluate("document.getElementById('player').currentTime")
        assert abs(unknown_at - offset - 8.0) <= 1.0, unknown_at
        assert page.locator(".timeline__thumb").count() == 2
        assert page.evaluate("Array.from(document.querySelectorAll('.timeline__thumb')).every((i) => i.naturalWidth > 0)")
        screenshot(page, "video-timeline")
        watched.check()

        # a sound-only file: the error in words, and the timeline of the last video is gone
        silence = audio_only(tmp_path / "silence.m4a")
        page.set_input_files("#video-file", silence)
        page.get_by_role("button", name="Find the faces").click()
        alert = page.locator("#video-messages .alert")
        alert.wait_for(state="visible")
        assert alert.locator(".alert__title").text_content() == "There is no picture in this file"
        assert alert.get_attribute("data-code") == "NO_VIDEO_STREAM"
        assert page.locator(".timeline__row").count() == 0
        watched.check()
    finally:
        watched.close()

    check_on_a_phone(browser, video_server.url, "/video")


@pytest.mark.slow
def test_a_longer_video_runs_as_a_job_with_progress(tmp_path, people_zip, clip):
    """Past video.direct_seconds the answer is a job; it reports frames decoded and ends with the
    same timeline; the upload is removed when it ends."""
    app = app_over(tmp_path / "data", video={"direct_seconds": 5}, faces={"workers": 1})
    client = app.test_client()
    token = {"Authorization": f"Bearer {TEST_CREDENTIALS['api_token']}"}
    with open(people_zip, "rb") as handle:
        started = envelope_of(client.post("/train", headers=token, data={"file": (handle, "people.zip")}), 202)
    job = wait(client, started["job_url"], token)
    assert job["state"] == "done", job
    with open(clip, "rb") as handle:
        answer = envelope_of(client.post("/predict/video", data={"file": (handle, "clip.mp4")}), 202)
    job = wait(client, answer["job_url"], {})
    assert job["state"] == "done", job["error"]
    assert job["kind"] == "video" and job["progress"]["done"] == job["progress"]["total"] == 275
    check_timeline(job["result"])
    assert all(entry["thumbnail_url"].startswith("/uploads/") for entry in job["result"]["timeline"])
    assert not list((tmp_path / "data" / "dataset" / "tmp").iterdir())

    # a browser posting the form without JavaScript gets the page, with the timeline of a short
    # video, here one a phone recorded sideways: the frames are turned upright before detection
    short = transcoded(clip, tmp_path / "first-seconds.mp4", "mp4", "h264", seconds=2.0, size=(640, 360),
                       sideways=True)
    with open(short, "rb") as handle:
        page = client.post("/predict/video", data={"file": (handle, "first-seconds.mp4")}, headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    assert f'data-name="{LIN}"' in html and 'class="timeline__range"' in html and ALEX not in html


def wait(client, url: str, headers: dict, timeout: float = 120) -> dict:
    """Poll a job through the test client until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = envelope_of(client.get(url, headers=headers), 200)["data"]
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{url} did not finish")


# --- refusals -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refusing_app(tmp_path_factory):
    """A service with no model and a 5-second cap: every refusal comes before any model is needed."""
    data = tmp_path_factory.mktemp("video-refusals") / "data"
    return app_over(data, limits={"max_video_seconds": 5}), data


@pytest.mark.parametrize("make, status, code", [
    (lambda folder, clip: audio_only(folder / "silence.m4a"), 422, "NO_VIDEO_STREAM"),
    (lambda folder, clip: huge_header(folder / "bomb.avi"), 413, "VIDEO_TOO_LARGE"),
    (lambda folder, clip: clip, 413, "VIDEO_TOO_LARGE"),  # 9.2 s over the 5-second cap
    (lambda folder, clip: write(folder / "noise.mp4", np.random.default_rng(1).bytes(50_000)), 400, "VIDEO_NOT_VALID"),
    (lambda folder, clip: write(folder / "cut.mp4", clip.read_bytes()[:40_000]), 400, "VIDEO_NOT_VALID"),
    (lambda folder, clip: synthetic(folder / "old.flv", "flv", "flv"), 415, "VIDEO_FORMAT_NOT_SUPPORTED"),
    (lambda folder, clip: synthetic(folder / "tv.ts", "mpegts", "mpeg2video"), 415, "VIDEO_FORMAT_NOT_SUPPORTED"),
    (lambda folder, clip: write(folder / "list.mp4", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n"),
     415, "VIDEO_FORMAT_NOT_SUPPORTED"),  # a playlist would make FFmpeg open other files: never probed
    (lambda folder, clip: write(folder / "empty.mp4", b""), 400, "MISSING_FILE"),
], ids=["audio-only", "huge-dimensions", "too-long", "garbage", "truncated", "flv", "mpeg-ts", "playlist", "empty"])
def test_refused_videos(refusing_app, tmp_path, clip, make, status, code):
    app, data = refusing_app
    path = make(tmp_path, clip)
    client = app.test_client()
    with open(path, "rb") as handle:
        answer = client.post("/predict/video", data={"file": (handle, path.name)})
    envelope_of(answer, status, code)
    assert not list((data / "dataset" / "tmp").iterdir()), "the upload was left on disk"
    assert not list((data / "uploads").iterdir())
    envelope_of(client.get("/health"), 200)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- containers -----------------------------------------------------------------------------


@pytest.mark.parametrize("container, codec, suffix, pix_fmt", [
    ("mp4", "h264", ".mp4", "yuv420p"), ("matroska", "h264", ".mkv", "yuv420p"), ("webm", "libvpx", ".webm", "yuv420p"),
    ("mov", "mjpeg", ".mov", "yuvj420p"), ("avi", "mpeg4", ".avi", "yuv420p"),
])
def test_accepted_containers_decode(tmp_path, clip, container, codec, suffix, pix_fmt):
    """The clip transcoded into each accepted container is opened with its demuxer and decodes whole."""
    from utils.video import VideoLimits, is_video_file, opened_video, sampled_frames

    path = transcoded(clip, tmp_path / f"clip{suffix}", container, codec, pix_fmt=pix_fmt)
    assert is_video_file(path) and is_video_file(path.rename(tmp_path / "no-suffix"))
    path = tmp_path / "no-suffix"
    limits = VideoLimits()
    with opened_video(path, limits) as (source, stream, info):
        assert (info.width, info.height) == (160, 90)
        samples = list(sampled_frames(source, stream, info, limits, every=0.2))
    assert 4 <= len(samples) <= 6, [sample.time for sample in samples]
    assert samples[0].rgb().shape == (90, 160, 3) and samples[0].time == 0.0
    assert samples[-1].time == pytest.approx(0.8, abs=0.1)


# --- tracker and vote -----------------------------------------------------------------------


def decision(name: str, confidence: float):
    from datastructure.classifier import Decision

    return Decision(name=name, confidence=confidence, distance=0.4, candidate=name, runner_up=None,
                    runner_up_distance=None)


def test_a_track_is_named_by_the_vote_of_its_encodings():
    """One odd encoding (a blurry frame named someone else) cannot rename a track."""
    from utils.video import Track

    track = Track(id=0, box=(0, 10, 10, 0), times=[0.0, 1.0, 2.0])
    track.decisions = [decision(LIN, 0.9), decision(ALEX, 0.95), decision(LIN, 0.8)]
    assert track.name() == LIN and track.confidence() == 0.9
    track.decisions = [decision("unknown", 0.0), decision(LIN, 0.7)]  # a tie: the named, confident one
    assert track.name() == LIN


def test_the_tracker_follows_overlapping_boxes_and_lets_lost_faces_go():
    from utils.video import IouTracker

    tracker = IouTracker(min_iou=0.3, max_gap=1.0)
    first, second = tracker.update(0.0, [(10, 60, 60, 10), (10, 300, 60, 250)])
    assert first is not second
    moved, = tracker.update(0.25, [(14, 64, 64, 14)])  # the first face moved a little: the same track
    assert moved is first and first.times == [0.0, 0.25]
    far, = tracker.update(0.5, [(200, 400, 250, 350)])  # no overlap: a new face
    assert far not in (first, second)
    back, = tracker.update(2.0, [(14, 64, 64, 14)])  # gone longer than max_gap: a new track
    assert back is not first and len(tracker.tracks_) == 4


def test_time_ranges_join_close_samples_and_split_at_gaps():
    from utils.video import time_ranges

    ranges = time_ranges([0.0, 0.25, 0.5, 3.0, 3.25], gap=1.0, step=0.25, duration=3.3)
    assert ranges == [{"start": 0.0, "end": 0.62}, {"start": 2.88, "end": 3.3}]
