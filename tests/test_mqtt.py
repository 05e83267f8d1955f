"""Events out over MQTT, against a real broker (Debian's mosquitto) and paho-mqtt subscribers:
the topics, the retained "who is in view", Home Assistant discovery checked against the
schema facts taken from Home Assistant's source (tests/data/ha_mqtt_discovery.json), the last
will of a killed process, and a broker that goes away and comes back."""
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mqtt_broker import PASSWORD, Subscriber, retained
from tests.support import ROOT, make_config
from utils.events import EventHub, face_event
from utils.mqtt import MqttSink, Topics, broker_of, mqtt_sinks, object_id, topic_part

pytestmark = pytest.mark.e2e
FACTS = json.loads((Path(__file__).parent / "data" / "ha_mqtt_discovery.json").read_text())
BOX = {"top": 10, "right": 60, "bottom": 60, "left": 10}


def event(type_="new", camera="front", name="Lin-Manuel Miranda", track=1, confidence=0.9) -> dict:
    return face_event(type_, camera=camera, track_id=track, name=name, confidence=confidence, box=BOX,
                      frame_time=time.time())


def settings(tmp_path, broker, prefix: str, **homeassistant):
    return make_config(tmp_path / "data", mqtt={"url": broker.url(), "topic_prefix": prefix,
                                                "homeassistant": {"discovery_prefix": f"ha-{prefix}", **homeassistant}})


def eventually(check, what: str, timeout: float = 15) -> None:
    """Wait until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.05)


def connected(sink: MqttSink) -> MqttSink:
    eventually(sink.is_connected, "the sink's connection")
    return sink


# --- Home Assistant's discovery schema, as facts ---------------------------------------------


def value_problem(kind, value) -> str | None:
    """Why ``value`` is not of the fact's ``kind`` (None when it is)."""
    if isinstance(kind, list):
        return None if value in kind else f"{value!r} is not one of {kind}"
    checks = {
        "str": lambda v: isinstance(v, str), "str_or_null": lambda v: v is None or isinstance(v, str),
        "bool": lambda v: isinstance(v, bool), "qos": lambda v: v in (0, 1, 2), "list": lambda v: isinstance(v, list),
        "positive_int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "icon": lambda v: isinstance(v, str) and ":" in v, "template": lambda v: isinstance(v, str) and v.strip(),
        "subscribe_topic": lambda v: isinstance(v, str) and v and not re.search(FACTS["topic"]["forbidden"], v)
        and len(v.encode()) <= FACTS["topic"]["max_bytes"] and "#" not in v[:-1],
        "str_list": lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
        "pair_list": lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 for p in v),
        "url": lambda v: isinstance(v, str) and re.match(r"^(https?|homeassistant)://", v),
    }
    if kind in ("device", "origin"):
        return None  # checked on their own below
    return None if checks[kind](value) else f"{value!r} is not a valid {kind}"


def discovery_problems(topic: str, payload: dict, prefix: str) -> list[str]:
    """Everything Home Assistant's discovery would refuse or silently drop in one config."""
    match = re.match(FACTS["topic_pattern"], topic.removeprefix(prefix + "/"))
    if not match or match["component"] not in ("sensor", "binary_sensor"):
        return [f"{topic} is not a sensor or binary_sensor discovery topic"]
    config = {FACTS["abbreviations"].get(key, key): value for key, value in payload.items()}
    keys = FACTS["keys"]
    allowed = {**keys["base"], **keys["read_only"], **keys["availability"], **keys["common"], **keys[match["component"]]}
    problems = [f"unknown key {key}" for key in config if key not in allowed]
    problems += [f"missing {key}" for key in FACTS["required"] if key not in config]
    problems += [f"{a} and {b} together" for a, b in FACTS["exclusive"] if a in config and b in config]
    problems += [f"{key}: {problem}" for key, value in config.items() if key in allowed
                 for problem in [value_problem(allowed[key], value)] if problem]
    device = {FACTS["device_abbreviations"].get(key, key): value for key, value in config.get("device", {}).items()}
    if "device" in config:
        problems += [f"device: unknown key {key}" for key in device if key not in FACTS["device"]["keys"]]
        problems += [f"device.{key}: {p}" for key, value in device.items() if key in FACTS["device"]["keys"]
                     for p in [value_problem(FACTS["device"]["keys"][key], value)] if p]
        if not any(device.get(key) for key in FACTS["device"]["one_of_required"]):
            problems.append("device without identifiers or connections")
    if "origin" in config:
        origin = config["origin"]
        problems += [f"origin: unknown key {key}" for key in origin if key not in FACTS["origin"]["keys"]]
        problems += [f"origin without {key}" for key in FACTS["origin"]["required"] if key not in origin]
    if match["component"] == "sensor" and "options" in config:
        problems.append("options on a sensor that is not an enum")
    return problems


def test_the_schema_check_refuses_what_home_assistant_refuses():
    """The validator itself: each rule taken from Home Assistant's schemas catches its mistake."""
    good = {"name": "x", "state_topic": "a/b", "unique_id": "u", "device": {"identifiers": ["d"]},
            "availability_topic": "a/availability"}
    assert discovery_problems("ha/sensor/node/x/config", good, "ha") == []
    assert discovery_problems("ha/sensor/node/x/config", {"stat_t": "a/b", "dev": {"ids": ["d"]}}, "ha") == []
    for bad, rule in [({**good, "state_topic": None}, "state_topic"), ({"name": "x"}, "missing state_topic"),
                      ({**good, "colour": "red"}, "unknown key"), ({**good, "device": {"name": "d"}}, "identifiers"),
                      ({**good, "availability": []}, "together"), ({**good, "icon": "account"}, "icon"),
                      ({**good, "expire_after": -1}, "positive_int"), ({**good, "state_class": "sum"}, "state_class"),
                      ({**good, "origin": {"sw_version": "1"}}, "origin without name")]:
        assert any(rule in problem for problem in discovery_problems("ha/sensor/node/x/config", bad, "ha")), bad
    assert discovery_problems("ha/sensor/node/x y/config", good, "ha")  # object ids are [a-zA-Z0-9_-]
    assert any("device_class" in p for p in discovery_problems("ha/binary_sensor/n/x/config",
                                                                {**good, "device_class": "person"}, "ha"))


# --- topics ----------------------------------------------------------------------------------


def test_names_become_topic_levels_and_discovery_ids():
    assert topic_part("Lin-Manuel Miranda") == "Lin-Manuel-Miranda"  # Double Take's form
    assert topic_part("a/b+c#d  e") == "abcd-e"
    assert topic_part("José") == "José"
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", object_id("José Ñúñez"))
    assert object_id("José") != object_id("Jose")
    assert Topics("home/pyrecognizer", "homeassistant").node == "home_pyrecognizer"


def test_broker_urls_are_parsed_and_never_echo_credentials():
    broker = broker_of("mqtts://user%40x:p%2Fss@example.org")
    assert (broker.host, broker.port, broker.username, broker.password, broker.tls) == \
        ("example.org", 8883, "user@x", "p/ss", True)
    assert broker.shown == "mqtts://example.org:8883"
    from conf.config import ConfigError
    for url in ("http://user:secret-pw@host:1883", "mqtt://user:secret-pw@:1883", "mqtt://user:secret-pw@host:99999"):
        with pytest.raises(ConfigError) as refused:
            broker_of(url)
        assert "secret-pw" not in str(refused.value)


def test_events_reach_a_subscriber_on_their_topics(tmp_path, broker, caplog):
    caplog.set_level(logging.DEBUG)
    config = settings(tmp_path, broker, "t1")
    subscriber = Subscriber(broker, "t1/#")
    hub = EventHub(mqtt_sinks(config))
    try:
        connected(hub.queues[0].sink)
        assert subscriber.last("t1/availability") == "online"
        seen, stranger = event(track=1), event(name="unknown", track=2, confidence=0.2)
        hub.publish(seen)
        hub.publish(stranger)
        match = json.loads(subscriber.last("t1/matches/Lin-Manuel-Miranda"))
        assert match == seen
        assert json.loads(subscriber.last("t1/matches/unknown"))["id"] == stranger["id"]
        in_view = json.loads(subscriber.wait_for(
            lambda m: [p for t, p, _ in m if t == "t1/cameras/front/person" and json.loads(p)["count"] == 2],
            what="two faces in view")[0])
        assert in_view["names"] == ["Lin-Manuel Miranda"] and in_view["unknown"] == 1
        assert json.loads(subscriber.last("t1/people/Lin-Manuel-Miranda"))["camera"] == "front"
        assert subscriber.last("t1/people/Lin-Manuel-Miranda/seen") == "ON"
        # an update names the match again; an end leaves the match topics alone
        hub.publish(event("update", track=1, confidence=0.95))
        hub.publish(event("end", track=1, confidence=0.95))
        subscriber.wait_for(lambda m: [p for t, p, _ in m if t == "t1/cameras/front/person"
                                       and json.loads(p)["names"] == []], what="only the stranger left in view")
        assert [json.loads(p)["type"] for p in subscriber.on("t1/matches/Lin-Manuel-Miranda")] == ["new", "update"]
        # retained: a client arriving now learns who is in view and the latest event
        now = json.loads(retained(broker, "t1/cameras/front/person"))
        assert (now["names"], now["unknown"], now["count"]) == ([], 1, 1)
        assert json.loads(retained(broker, "t1/cameras/front"))["type"] == "end"
        assert hub.stats()["sinks"]["mqtt"]["failed"] == 0
    finally:
        hub.close()
        subscriber.close()
    assert retained(broker, "t1/availability") == "offline"
    assert PASSWORD not in caplog.text
    assert hub.queues[0].sink.status() == {"broker": f"mqtt://127.0.0.1:{broker.port}", "connected": False}


def configs(messages) -> dict:
    """The latest payload of each discovery topic (prefix ``ha-``) among ``messages``."""
    return {topic: payload for topic, payload, _ in messages if topic.startswith("ha-")}


def configs_naming(text: str, count: int = 2):
    """A ``wait_for`` check: the topics of the discovery configs that mention ``text``, once there are ``count``."""
    def check(messages):
        found = [topic for topic, payload in configs(messages).items() if payload and text in payload]
        return found if len(found) >= count else None
    return check


def test_home_assistant_discovery(tmp_path, broker):
    config = settings(tmp_path, broker, "t2", seen_minutes=0.1)
    people = ["Lin-Manuel Miranda", "Alex Lacamoire"]
    subscriber = Subscriber(broker, "ha-t2/#", "t2/#")
    sink = connected(MqttSink(config.mqtt, people=lambda: list(people)))
    hub = EventHub([sink])
    try:
        hub.publish(event(camera="front door"))

        def announced(messages):
            found = {topic: payload for topic, payload in configs(messages).items() if payload}
            return found if len(found) >= 6 else None

        found = subscriber.wait_for(announced, what="six discovery configs")
        assert len(found) == 6  # the camera's two sensors, each person's binary sensor and sensor
        for topic, payload in found.items():
            assert discovery_problems(topic, json.loads(payload), "ha-t2") == [], topic
        by_id = {json.loads(p)["unique_id"]: json.loads(p) for p in found.values()}
        assert len(by_id) == 6 and len({json.dumps(c["device"], sort_keys=True) for c in by_id.values()}) == 1
        seen = next(c for c in by_id.values() if c["name"] == "Lin-Manuel Miranda seen")
        assert seen["off_delay"] == 6 and seen["availability_topic"] == "t2/availability"
        # his binary sensor turns on, and off seen_minutes later
        assert subscriber.last(seen["state_topic"]) == "ON"
        subscriber.wait_for(lambda m: [p for t, p, _ in m if t == seen["state_topic"] and p == "OFF"], 20,
                            "his sensor turning off")
        camera = next(c for c in by_id.values() if c["name"] == "front door last person")
        assert json.loads(subscriber.last(camera["state_topic"]))["name"] == "Lin-Manuel Miranda"

        # a person enrolled gets entities; a person removed loses them and their states (no restart)
        people[:] = ["Alex Lacamoire", "Renée Elise Goldsberry"]
        lin = [t for t, p in found.items() if json.loads(p)["name"].startswith("Lin-Manuel Miranda")]
        subscriber.wait_for(lambda m: all(configs(m).get(t) == "" for t in lin), what="his configs emptied")
        renee = subscriber.wait_for(configs_naming("Renée"), what="Renée's two configs")
        assert len(renee) == 2
        for topic in [*lin, "t2/people/Lin-Manuel-Miranda", "t2/people/Lin-Manuel-Miranda/seen"]:
            assert retained(broker, topic) is None, topic
        assert all(discovery_problems(t, json.loads(configs(subscriber.messages)[t]), "ha-t2") == [] for t in renee)
        # a camera added before anyone is seen gets its entities; a camera deleted loses them
        sink.announce_camera("garden")
        garden = subscriber.wait_for(configs_naming("garden"), what="the garden camera's two configs")
        assert len(garden) == 2
        assert all(discovery_problems(t, json.loads(configs(subscriber.messages)[t]), "ha-t2") == [] for t in garden)
        sink.forget_camera("front door")
        door = [t for t, p in found.items() if json.loads(p)["name"].startswith("front door")]
        subscriber.wait_for(lambda m: all(configs(m).get(t) == "" for t in door), what="the door's configs emptied")
        assert retained(broker, "t2/cameras/front-door") is None
    finally:
        hub.close()
        subscriber.close()

    # a person forgotten while the service was down is removed at the next start
    people[:] = ["Alex Lacamoire"]
    subscriber = Subscriber(broker, "ha-t2/#")
    sink = connected(MqttSink(config.mqtt, people=lambda: list(people)))
    try:
        subscriber.wait_for(lambda m: all(configs(m).get(t) == "" for t in renee), what="Renée's configs emptied")
        alex = [t for t, p in found.items() if json.loads(p)["name"].startswith("Alex Lacamoire")]
        assert all(retained(broker, topic) for topic in alex)  # still known: kept
    finally:
        sink.close()
        subscriber.close()


def test_a_broker_that_goes_away_buffers_drops_the_oldest_and_resumes(tmp_path, broker):
    """Events wait (to the hub's bound) while the broker is down; the oldest are dropped and
    counted; publishing resumes by itself once the broker is back."""
    config = settings(tmp_path, broker, "t3")
    sink = connected(MqttSink(config.mqtt))
    hub = EventHub([sink], queue_size=4)
    try:
        broker.stop()
        eventually(lambda: not sink.is_connected(), "the sink noticing the broker is gone")
        hub.publish(event(camera="cam0", track=0))  # taken by the sink's thread, which waits in send
        while hub.stats()["sinks"]["mqtt"]["queued"]:
            time.sleep(0.01)
        for number in range(1, 10):  # one camera each: the retained topics show which got through
            hub.publish(event(camera=f"cam{number}", track=number))
        stats = hub.stats()["sinks"]["mqtt"]
        assert (stats["dropped"], stats["queued"], stats["sent"]) == (5, 4, 0)  # 1 waiting in send, 4 queued
        broker.start()
        eventually(lambda: hub.stats()["sinks"]["mqtt"]["sent"] >= 5, "publishing after the broker's return", 60)
        delivered = [number for number in range(10) if retained(broker, f"t3/cameras/cam{number}", 0.5)]
        assert delivered == [0, 6, 7, 8, 9]
    finally:
        if broker.process.poll() is not None:
            broker.start()
        hub.close()


def test_a_killed_process_leaves_its_last_will(tmp_path, broker):
    """The broker itself announces ``offline`` when the process holding the sink dies."""
    config_file = tmp_path / "conf.json"
    config_file.write_text(json.dumps({"mqtt": {"url": broker.url(), "topic_prefix": "t4"},
                                       "data_dir": str(tmp_path / "data")}))
    subscriber = Subscriber(broker, "t4/#")
    process = subprocess.Popen([sys.executable, "-m", "tests.events_process", str(config_file)], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        process.stdin.write(json.dumps(event(camera="door")) + "\n")
        process.stdin.flush()
        assert json.loads(subscriber.last("t4/cameras/door"))["name"] == "Lin-Manuel Miranda"
        assert subscriber.on("t4/availability")[-1] == "online"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert subscriber.wait_for(lambda m: [p for t, p, _ in m if t == "t4/availability"][-1:] == ["offline"],
                                   what="the last will")
        assert retained(broker, "t4/availability") == "offline"
        assert PASSWORD not in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
        subscriber.close()


def test_wrong_credentials_are_refused_and_never_logged(tmp_path, broker, caplog):
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path / "data", mqtt={"url": broker.url(password="not-the-password-42"),
                                                  "topic_prefix": "t5"})
    sink = MqttSink(config.mqtt)
    try:
        eventually(lambda: "refused the connection" in caplog.text, "the broker's refusal")
        assert not sink.is_connected()
    finally:
        sink.close()
    assert "not-the-password-42" not in caplog.text
    assert f"mqtt://127.0.0.1:{broker.port}" in caplog.text


def test_mqtts_with_the_brokers_ca(tmp_path, caplog):
    """``mqtts://`` with ``mqtt.tls.ca_certs``: connects and publishes; without it (the system's
    CAs) the self-signed broker is refused."""
    from tests.mqtt_broker import Mosquitto

    tls_broker = Mosquitto(tmp_path / "tls-broker", tls=True).start()
    subscriber = Subscriber(tls_broker, "t6/#")  # on the plain listener
    url = tls_broker.url().replace("mqtt://", "mqtts://").replace(f":{tls_broker.port}", f":{tls_broker.tls_port}")
    trusting = MqttSink(make_config(tmp_path / "a", mqtt={"url": url, "topic_prefix": "t6", "tls": {
        "ca_certs": str(tls_broker.certificate)}}).mqtt)
    doubting = MqttSink(make_config(tmp_path / "b", mqtt={"url": url, "topic_prefix": "t7"}).mqtt)
    hub = EventHub([connected(trusting)])
    try:
        hub.publish(event(camera="tls"))
        assert json.loads(subscriber.last("t6/cameras/tls"))["camera"] == "tls"
        eventually(lambda: "certificate verify failed" in caplog.text, "the certificate's refusal")
        assert not doubting.is_connected()
    finally:
        hub.close()
        doubting.close()
        subscriber.close()
        tls_broker.stop()
