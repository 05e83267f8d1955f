"""Cameras without streams: definitions checked and kept (REST, conf.json), URLs refused and
redacted, the event journal bounded, /events as server-sent events, the events a track makes
(the real pipeline on the shared clip's frames). The streams themselves (RTSP, MJPEG, the
supervisor process) are tests/test_cameras_e2e.py's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conf.config import ConfigError, Paths
from tests.conftest import app_over
from tests.support import TEST_CREDENTIALS, envelope_of, make_config, video_dir
from utils.camera_sources import redacted, scrubbed, url_problems
from utils.cameras import CameraStore, CameraWatch, Strangers, checked_camera
from utils.events import EventHub, Journal, journal_entries, journal_path

TOKEN = {"Authorization": f"Bearer {TEST_CREDENTIALS['api_token']}"}
SECRET_URL = "rtsp://admin:s3cret-pass@192.168.1.20:554/Streaming/Channels/101?user=admin&password=hunter22&channel=1"


def test_urls_of_other_schemes_are_refused():
    assert url_problems("rtsp://cam.local/stream", allow_files=False) == []
    assert url_problems("rtsps://cam.local:322/stream", allow_files=False) == []
    assert url_problems("https://cam.local/video.mjpg", allow_files=False) == []
    for url in ("ftp://cam.local/x", "file:///etc/passwd", "gopher://x", "javascript:alert(1)", "concat:a|b",
                "/etc/passwd", "rtsp:///no-host", "rtsp://cam.local/a b", "rtsp://cam.local/\x1b[2J", "", None):
        assert url_problems(url, allow_files=False), url
    assert "allow_files" in url_problems("file:///etc/passwd", allow_files=False)[0]


def test_files_only_where_allowed_and_only_videos_that_exist(tmp_path):
    assert url_problems(f"file://{tmp_path}/missing.mp4", allow_files=True) == ["no such video file"]
    clip = video_dir() / "short_hamilton_clip.mp4"
    assert url_problems(f"file://{clip}", allow_files=True) == []
    assert url_problems("file://host/etc/passwd", allow_files=True)


def test_credentials_never_show():
    shown = redacted(SECRET_URL)
    assert "admin" not in shown and "s3cret" not in shown and "hunter22" not in shown
    assert shown.startswith("rtsp://***@192.168.1.20:554/Streaming/Channels/101?") and "channel=1" in shown
    message = f"could not open '{SECRET_URL}': s3cret-pass rejected"
    assert "s3cret" not in scrubbed(message, SECRET_URL) and "hunter22" not in scrubbed(message, SECRET_URL)


def test_camera_settings_are_checked(config):
    camera = checked_camera({"name": "front-door_1", "url": SECRET_URL}, config.cameras)
    assert camera.sample_fps == config.cameras.sample_fps and camera.enabled
    assert camera.public()["url"] == redacted(SECRET_URL)
    with pytest.raises(Exception) as refused:
        checked_camera({"name": "a/b", "url": "ftp://x", "sample_fps": 0, "min_face_px": -1, "enabled": "yes",
                        "colour": 1}, config.cameras)
    assert refused.value.code == "CAMERA_NOT_VALID" and len(refused.value.data["problems"]) == 6


def test_a_bad_camera_in_the_config_file_is_refused_at_start(tmp_path):
    config = make_config(tmp_path, cameras={"cameras": [{"name": "front", "url": "ftp://x"}]})
    with pytest.raises(ConfigError, match=r"cameras\.cameras\[0\]: url: the scheme ftp: is refused"):
        CameraStore(Paths(tmp_path), config.cameras)


@pytest.fixture
def camera_app(tmp_path):
    return app_over(tmp_path / "data", cameras={"cameras": [{"name": "gate", "url": "rtsp://gate.local/1"}],
                                                "sse_seconds": 1})


def test_cameras_over_rest(camera_app):
    client = camera_app.test_client()
    assert client.get("/cameras").status_code == 401
    assert client.post("/cameras", json={"name": "front", "url": "rtsp://x/1"}).status_code == 401

    added = envelope_of(client.post("/cameras", json={"name": "front", "url": SECRET_URL, "sample_fps": 2},
                                    headers=TOKEN), 201)
    assert added["data"]["url"] == redacted(SECRET_URL) and added["data"]["sample_fps"] == 2
    assert "s3cret" not in json.dumps(added)
    envelope_of(client.post("/cameras", json={"name": "front", "url": "rtsp://y/1"}, headers=TOKEN), 409, "CAMERA_EXISTS")
    envelope_of(client.post("/cameras", json={"name": "gate", "url": "rtsp://y/1"}, headers=TOKEN), 409, "CAMERA_EXISTS")
    envelope_of(client.post("/cameras", json={"name": "side", "url": "file:///etc/passwd"}, headers=TOKEN), 422,
                "CAMERA_NOT_VALID")
    envelope_of(client.post("/cameras", data="not json", headers=TOKEN), 422, "CAMERA_NOT_VALID")

    listing = envelope_of(client.get("/cameras", headers=TOKEN), 200)
    assert [(camera["name"], camera["defined_in"]) for camera in listing["data"]] == [("gate", "config"), ("front", "api")]
    assert listing["data"][1]["status"]["state"].startswith("not watched")  # no supervisor in this process
    assert "s3cret" not in json.dumps(listing)

    changed = envelope_of(client.patch("/cameras/front", json={"enabled": False, "min_face_px": 60}, headers=TOKEN), 200)
    assert changed["data"]["enabled"] is False and changed["data"]["status"]["state"] == "disabled"
    envelope_of(client.patch("/cameras/front", json={"name": "back"}, headers=TOKEN), 422, "CAMERA_NOT_VALID")
    envelope_of(client.patch("/cameras/front", json={"url": "gopher://x"}, headers=TOKEN), 422, "CAMERA_NOT_VALID")
    envelope_of(client.patch("/cameras/gate", json={"enabled": False}, headers=TOKEN), 409, "CAMERA_IN_CONFIG")
    envelope_of(client.delete("/cameras/gate", headers=TOKEN), 409, "CAMERA_IN_CONFIG")
    envelope_of(client.get("/cameras/front/snapshot", headers=TOKEN), 404, "NOT_FOUND")
    envelope_of(client.get("/cameras/front/crops/0123.jpg", headers=TOKEN), 404, "NOT_FOUND")

    stored = json.loads(Path(camera_app.extensions["pyrecognizer"].paths.camera_list).read_text())
    assert stored["cameras"][0]["url"] == SECRET_URL  # kept to connect with (the file is private: 0600)
    envelope_of(client.delete("/cameras/front", headers=TOKEN), 200)
    envelope_of(client.get("/cameras/front", headers=TOKEN), 404, "NOT_FOUND")
    health = envelope_of(client.get("/health", headers=TOKEN), 200)
    assert set(health["data"]["cameras"]) == {"gate"}
    assert "cameras" not in envelope_of(client.get("/health"), 200)["data"]


def test_the_journal_keeps_the_newest_events_with_their_numbers(tmp_path):
    journal = Journal(tmp_path / "events.jsonl", size=5)
    for number in range(23):
        journal.send({"n": number})
    entries = journal_entries(tmp_path / "events.jsonl")
    assert 5 <= len(entries) < 10 and entries[-1] == {"seq": 23, "event": {"n": 22}}
    assert [entry["seq"] for entry in journal_entries(tmp_path / "events.jsonl", after=20)] == [21, 22, 23]
    assert Journal(tmp_path / "events.jsonl", size=5).seq == 23  # a restarted supervisor numbers on


def test_events_stream_as_server_sent_events(camera_app):
    paths = camera_app.extensions["pyrecognizer"].paths
    journal = Journal(paths.cameras / "events.jsonl")
    for number in range(3):
        journal.send({"type": "new", "name": f"person {number}"})
    client = camera_app.test_client()
    assert client.get("/events").status_code == 401
    with client.get("/events?recent=2", headers=TOKEN) as answer:  # a server closes the answer: so does the test
        assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
        first, *blocks = [block for block in answer.get_data(as_text=True).split("\n\n") if block]
    assert first == "retry: 1000\nid: 1"  # where a stream without events would resume
    blocks = [block for block in blocks if block.startswith("id:")]
    assert blocks == [f"id: {seq}\nevent: face\ndata: " + json.dumps({"type": "new", "name": f"person {seq - 1}"})
                      for seq in (2, 3)]
    with client.get("/events", headers={**TOKEN, "Last-Event-ID": "1"}) as answer:
        resumed = answer.get_data(as_text=True)
    assert "id: 2\nevent: face" in resumed and "id: 3\nevent: face" in resumed and "id: 1\nevent" not in resumed


class Recorder:
    name = "recorder"

    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)

    def close(self):
        pass


def test_a_track_makes_one_event_when_named_and_one_when_it_ends_and_forget_erases_them(tmp_path, config):
    """The shared clip's frames through the real pipeline: Lin-Manuel Miranda's two appearances
    are two tracks, each announced once (then confirmed, not repeated per frame) and ended.
    Forgetting him erases his events from the journal and his face crops."""
    import av

    from datastructure.annotated import AnnotatedCopies
    from utils.people import Upload
    from utils.service import build_service
    from utils.video import Sample, VideoOptions

    video = video_dir()
    service = build_service(config, console_log=False)
    service.people.enrol("Lin-Manuel Miranda", [Upload("lin.png", (video / "lin-manuel-miranda.png").read_bytes())])
    service.people.enrol("Alex Lacamoire", [Upload("alex.png", (video / "alex-lacamoire.png").read_bytes())])
    recorder = Recorder()
    hub = EventHub([recorder, Journal(journal_path(service.paths))])
    camera = checked_camera({"name": "stage", "url": "rtsp://stage.local/1", "min_face_px": 0}, config.cameras)
    crops = AnnotatedCopies(service.paths.cameras / "crops")
    watch = CameraWatch(camera, VideoOptions(sample_fps=4), hub, Strangers(), crops)
    classifier = service.active.current().classifier
    with av.open(str(video / "short_hamilton_clip.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 8 == 0:  # ~4 a second of 29.97
                watch.observe(Sample(index, frame.time, frame), 1_800_000_000 + frame.time, classifier)
    watch.finish(1_800_000_100.0)
    hub.close()
    events = recorder.events
    lin = [event for event in events if event["name"] == "Lin-Manuel Miranda"]
    tracks = {event["track_id"] for event in lin}
    for track in tracks:  # each track: one new first, one end last, updates only between
        kinds = [event["type"] for event in events if event["track_id"] == track]
        assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"update"}, kinds
    assert lin and all(event["confidence"] > 0.5 for event in lin if event["type"] == "new")
    assert not [event for event in events if event["name"] == "Alex Lacamoire"]
    assert len(events) < 20  # per track, not per frame (the clip has ~37 sampled frames with faces)
    for event in events:
        if event["name"] == "unknown":
            assert isinstance(event["unknown_id"], int)
        assert event["crop_url"].startswith("/cameras/stage/crops/")
        assert set(event["box"]) == {"top", "right", "bottom", "left"}

    crops_before = len(crops.copies())
    erased = service.people.forget("Lin-Manuel Miranda")["erased"]
    assert erased["camera_events"] == len(lin) and erased["camera_crops"] >= 1
    assert not [entry for entry in journal_entries(journal_path(service.paths)) if "Lin-Manuel" in json.dumps(entry)]
    assert len(crops.copies()) == crops_before - erased["camera_crops"]
