"""Cameras end to end: a real service (gunicorn, and the camera supervisor `serve` starts),
GStreamer's RTSP server playing ../shared/video/short_hamilton_clip.mp4 in a loop, an MJPEG
server of this process, and the events read as a script reads them: server-sent events from
/events, and over MQTT through a real broker (Debian's mosquitto), with Home Assistant's
discovery, as a Home Assistant subscribed to it receives them.

Lin-Manuel Miranda and Alex Lacamoire are enrolled from their reference photos; Lin appears in
the clip, Alex does not (../shared/video/README.md)."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.browser import Watched, log_in, no_sideways_scroll, screenshot
from tests.mqtt_broker import Subscriber
from tests.streams import EventStream, MjpegServer, RtspCamera
from tests.support import envelope_of, video_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIN, ALEX = "Lin-Manuel Miranda", "Alex Lacamoire"
WAIT = 60  # seconds: the longest any state or event may take here (a loaded CI machine included)
CONFIG = {
    "cameras": {"open_timeout": 4, "read_timeout": 2, "max_backoff": 4, "sse_seconds": 4},
    "limits": {"max_video_pixels": 500_000},  # the clip (640x360) passes, /big.mjpg (1000x800) does not
    "server": {"threads": 4},  # event streams take a thread each: the page's and the test's
}


@pytest.fixture(scope="module")
def rig(server_module, tmp_path_factory):
    """The service with both people enrolled, the RTSP server, the MJPEG server and an events client."""
    video = video_dir()
    server = server_module
    for name, photo in ((LIN, "lin-manuel-miranda.png"), (ALEX, "alex-lacamoire.png")):
        with open(video / photo, "rb") as handle:
            envelope_of(server.post(f"/people/{name}/photos", files={"file": (photo, handle, "image/png")}), 201)
    rtsp = RtspCamera(tmp_path_factory.mktemp("rtsp"), video=video / "short_hamilton_clip.mp4", auth=True).start()
    mjpeg = MjpegServer(video / "short_hamilton_clip.mp4").start()
    events = EventStream(server)
    yield server, rtsp, mjpeg, events
    events.stopping.set()
    rtsp.stop()
    mjpeg.stop()


@pytest.fixture(scope="module")
def mqtt(broker):
    """What a Home Assistant (or any MQTT client) subscribed to the service's topics receives."""
    subscriber = Subscriber(broker, "pyrecognizer/#", "homeassistant/#")
    yield subscriber
    subscriber.close()


@pytest.fixture(scope="module")
def server_module(tmp_path_factory, broker, mqtt):
    from tests.support import Server

    config = {**CONFIG, "mqtt": {"url": broker.url()}}
    server = Server(tmp_path_factory.mktemp("cameras"), config=config).start()
    yield server
    server.stop()


def camera_status(server, name: str) -> dict:
    return envelope_of(server.get(f"/cameras/{name}"), 200)["data"]["status"]


def wait_for_state(server, name: str, test, timeout: float = WAIT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = camera_status(server, name)
        if test(status["state"]):
            return status
        time.sleep(0.3)
    raise AssertionError(f"camera {name} stayed {status}")


def test_a_camera_added_over_rest_names_lin_over_server_sent_events_and_mqtt(rig, mqtt):
    server, rtsp, mjpeg, events = rig
    added = envelope_of(server.post("/cameras", json={"name": "stage", "url": rtsp.url, "sample_fps": 4}), 201)
    assert added["data"]["url"] == rtsp.url  # no credentials in this one to hide
    envelope_of(server.post("/cameras", json={"name": "lobby", "url": f"{mjpeg.url}/clip.mjpg"}), 201)

    for camera in ("stage", "lobby"):  # the supervisor started (no restart) and watches both
        match = events.wait_for(lambda event: event["camera"] == camera and event["name"] == LIN, WAIT)
        assert match["type"] in ("new", "update") and match["confidence"] > 0.5
        assert match["source"] == "camera" and match["unknown_id"] is None
        assert abs(match["time"] - time.time()) < WAIT
        crop = server.get(match["crop_url"])
        assert crop.status_code == 200 and crop.content[:3] == b"\xff\xd8\xff"
        assert server.get(match["crop_url"], auth=False).status_code == 401
    wait_for_state(server, "stage", lambda state: state == "streaming")
    deadline = time.monotonic() + WAIT  # fps counts the frames looked at lately: a busy machine may pause
    while (status := camera_status(server, "stage"))["fps"] <= 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status["fps"] > 0 and status["dropped"] >= 0, status
    snapshot = server.get("/cameras/stage/snapshot")
    assert snapshot.status_code == 200 and snapshot.content[:3] == b"\xff\xd8\xff"
    health = envelope_of(server.get("/health"), 200)["data"]
    assert health["cameras"]["stage"]["state"] == "streaming" and "fps" in health["cameras"]["stage"]
    check_mqtt(mqtt)
    # one event per track, not per frame: each track starts with new and ends with end
    ended = events.wait_for(lambda event: event["camera"] == "stage" and event["type"] == "end", WAIT)
    kinds = [event["type"] for event in events.events if event["camera"] == "stage" and event["track_id"] == ended["track_id"]]
    assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"update"}, kinds
    # the ended track is one face record of the inbox, labelled with its camera
    record = envelope_of(server.get(f"/faces/{ended['face_id']}"), 200)["data"]
    assert record["source"]["route"] == "camera" and record["source"]["label"] == "stage", record
    assert record["name"] == ended["name"] and server.get(f"/faces/{ended['face_id']}/crop").status_code == 200
    assert events.streams >= 1


def check_mqtt(mqtt) -> None:
    """Lin's match on his topic, Home Assistant's entities announced and valid, his binary
    sensor on; nothing anywhere names Alex, who is not in the clip."""
    from tests.test_mqtt import discovery_problems

    match = json.loads(mqtt.last("pyrecognizer/matches/Lin-Manuel-Miranda", WAIT))
    assert match["name"] == LIN and match["camera"] in ("stage", "lobby") and match["confidence"] > 0.5

    def configs(messages):
        found = {topic: json.loads(payload) for topic, payload, _ in messages
                 if topic.startswith("homeassistant/") and topic.endswith("/config") and payload}
        wanted = [c for c in found.values() if c["name"] in (f"{LIN} seen", f"{ALEX} seen")
                  or c["name"].startswith("stage ")]
        return found if len(wanted) >= 4 else None

    found = mqtt.wait_for(configs, WAIT, "Home Assistant's discovery configs of both people and the camera")
    for topic, payload in found.items():
        assert discovery_problems(topic, payload, "homeassistant") == [], topic
    seen = next(config for config in found.values() if config["name"] == f"{LIN} seen")
    mqtt.wait_for(lambda messages: [p for t, p, _ in messages if t == seen["state_topic"] and p == "ON"], WAIT,
                  f"{LIN}'s binary sensor turning on")
    assert mqtt.last("pyrecognizer/availability") == "online"
    events = [(topic, payload) for topic, payload, _ in mqtt.messages
              if topic.startswith(("pyrecognizer/matches/", "pyrecognizer/cameras/"))]
    assert events and not [event for event in events if ALEX in event[1] or "Alex-Lacamoire" in event[0]]


def test_bad_cameras_show_why_and_are_retried_while_the_others_keep_serving(rig):
    server, rtsp, mjpeg, events = rig
    envelope_of(server.post("/cameras", json={"name": "ftp", "url": "ftp://127.0.0.1/x"}), 422, "CAMERA_NOT_VALID")
    envelope_of(server.post("/cameras", json={"name": "file", "url": "file:///etc/passwd"}), 422, "CAMERA_NOT_VALID")
    closed = rtsp.url.replace(f":{rtsp.port}/", ":1/")
    bad = {"refused": (closed, "connection refused"),
           "intruder": (rtsp.auth_url("camera", "wrong-password"), "wrong credentials"),
           "page": (f"{mjpeg.url}/page", "not an MJPEG stream (Content-Type text/html)"),
           "huge": (f"{mjpeg.url}/big.mjpg", "over limits.max_video_pixels"),
           "stalls": (f"{mjpeg.url}/stall.mjpg", "stalled"),
           "redirect": (f"{mjpeg.url}/to-file", "another scheme")}
    for name, (url, _) in bad.items():
        envelope_of(server.post("/cameras", json={"name": name, "url": url}), 201)
    envelope_of(server.post("/cameras", json={"name": "guarded", "url": rtsp.auth_url(rtsp.user, rtsp.password)}), 201)
    for name, (_, reason) in bad.items():
        status = wait_for_state(server, name, lambda state: state.startswith("error: "))
        assert reason in status["state"], (name, status)
    # retried: the attempts go on (each failure counted), with no secret in any answer
    deadline = time.monotonic() + WAIT
    while camera_status(server, "intruder")["reconnects"] < 2:
        assert time.monotonic() < deadline, "the camera with the wrong password was not retried"
        time.sleep(0.5)
    listing = server.get("/cameras").text + server.get("/health").text
    assert "wrong-password" not in listing and rtsp.password not in listing
    assert "wrong-password" not in (server.data_dir / "log" / "pyrecognizer.log").read_text()
    # the right credentials stream, and so do the cameras added before
    wait_for_state(server, "guarded", lambda state: state == "streaming")
    for name in ("stage", "lobby"):
        assert camera_status(server, name)["state"] == "streaming"
    assert "CAMERA_ERROR" in envelope_of(server.get("/health", auth=False), 200)["data"]["warnings"]
    for name in [*bad, "guarded"]:
        envelope_of(server.delete(f"/cameras/{name}"), 200)


def test_the_camera_recovers_when_its_rtsp_server_comes_back(rig):
    server, rtsp, mjpeg, events = rig
    wait_for_state(server, "stage", lambda state: state == "streaming")
    rtsp.stop_server()  # SIGKILL: the connection drops without a goodbye
    wait_for_state(server, "stage", lambda state: state != "streaming")
    assert camera_status(server, "lobby")["state"] == "streaming"  # the other camera goes on
    rtsp.start_server()
    back = time.monotonic()
    wait_for_state(server, "stage", lambda state: state == "streaming")
    frames = camera_status(server, "stage")["frames"]
    time.sleep(1)
    assert camera_status(server, "stage")["frames"] > frames
    print(f"recovered {time.monotonic() - back:.1f} s after the RTSP server was back")


def test_a_killed_supervisor_is_started_again_and_the_service_keeps_serving(rig):
    server, rtsp, mjpeg, events = rig
    state = json.loads((server.data_dir / "dataset" / "cameras" / "state.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    assert envelope_of(server.get("/health"), 200)["data"]["up"]
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            again = json.loads((server.data_dir / "dataset" / "cameras" / "state.json").read_text())
        except (OSError, ValueError):
            again = {}
        if again.get("pid") not in (None, state["pid"]) and again["cameras"].get("stage", {}).get("state") == "streaming":
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the camera supervisor was not started again")


def test_no_event_names_someone_not_in_the_clip(rig):
    server, rtsp, mjpeg, events = rig
    assert [event for event in events.events if event["name"] == LIN]
    assert not [event for event in events.events if event["name"] == ALEX]


@pytest.mark.browser
def test_cameras_page_in_chromium(rig, browser):
    server, rtsp, mjpeg, events = rig
    watched = Watched(browser, server.url)
    page = watched.page
    try:
        log_in(page, server.password, "/cameras")
        card = page.locator('li[data-camera="stage"]')
        card.locator('.camera__state[data-state="streaming"]').wait_for(timeout=WAIT * 1000)
        deadline = time.monotonic() + WAIT  # polled here: wait_for_function's eval is what the page's CSP forbids
        while not page.evaluate("() => document.querySelector('li[data-camera=stage] img').naturalWidth > 0"):
            assert time.monotonic() < deadline, "the camera's last frame was never shown"
            time.sleep(0.3)
        assert rtsp.url in card.locator(".camera__url").inner_text()
        page.locator(f'#events li[data-name="{LIN}"]').first.wait_for(timeout=WAIT * 1000)
        screenshot(page, "cameras")
        page.get_by_label("Name").fill("door")
        page.get_by_label("Stream URL").fill("ftp://127.0.0.1/x")
        page.get_by_role("button", name="Add the camera").click()
        alert = page.locator(".messages .alert--error")
        alert.wait_for()
        assert "scheme ftp: is refused" in alert.inner_text()
        page.get_by_label("Stream URL").fill(f"{mjpeg.url}/page")
        page.get_by_role("button", name="Add the camera").click()
        page.locator('li[data-camera="door"] .camera__state[data-state^="error"]').wait_for(timeout=WAIT * 1000)
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator('button[data-remove="door"]').click()
        page.locator('li[data-camera="door"]').wait_for(state="detached")
        assert not [camera for camera in envelope_of(server.get("/cameras"), 200)["data"] if camera["name"] == "door"]
        watched.check()
        phone = Watched(browser, server.url, phone=True, storage_state=watched.context.storage_state())
        try:
            phone.page.goto("/cameras")
            phone.page.locator('li[data-camera="stage"]').wait_for()
            assert no_sideways_scroll(phone.page)
            phone.check()
        finally:
            phone.close()
    finally:
        watched.close()
