"""Events out over MQTT (paho-mqtt), with Home Assistant MQTT discovery and a last will.

Topics, under ``mqtt.topic_prefix`` (``pyrecognizer``), in the spirit of Double Take's:

    <prefix>/availability              online / offline, retained; "offline" is the last will
    <prefix>/matches/<name>            each event naming a known person (new, update), JSON
    <prefix>/matches/unknown           each new unknown face, JSON
    <prefix>/cameras/<camera>          the camera's latest event, JSON, retained
    <prefix>/cameras/<camera>/person   who is in view now, retained: {"names", "unknown", "count", "time"}
    <prefix>/people/<name>             where the person was last seen, retained: {"name", "camera", ...}
    <prefix>/people/<name>/seen        ON when seen, OFF ``seen_minutes`` later, retained

``<name>`` in a topic is ``topic_part(name)``: white space becomes ``-`` and the MQTT wildcards
and ``/`` are dropped (Double Take's ``Lin-Manuel-Miranda`` for "Lin-Manuel Miranda").

Home Assistant discovery (``mqtt.homeassistant``): one device for the service; per camera a
sensor of the last person seen and one of the faces in view; per person of the active model a
``binary_sensor`` "seen in the last N minutes" and a sensor of the last camera. The people
are watched: a person enrolled gets their entities within seconds, and a person no longer in
the active model (removed, renamed, forgotten) has them removed with an empty retained config,
their retained states cleared too. The broker is the memory of what was announced: the sink
subscribes to its own retained configs, so a person forgotten while the service was down is
cleaned up at the next start.

The binary sensor turns off through ``off_delay`` rather than ``expire_after``: Home Assistant
makes an expired entity *unavailable*, while "not seen lately" is *off* (see
docs/integrations-mqtt.md). The service also publishes OFF itself, so the retained state is
right for a Home Assistant that starts later.

A broker that goes away: ``send`` waits for the reconnection (paho retries, 1 s doubling to
30 s), while the hub's queue for this sink holds the newest events and drops and counts the
oldest (utils/events.py). Events are published with QoS ``mqtt.qos`` (1): one in flight when
the connection drops is sent again after the reconnection.

Credentials in ``mqtt.url`` are never logged: logs name the broker by scheme, host and port.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho

from conf.config import ConfigError, Mqtt
from datastructure.errors import ClassifierNotLoaded, PyRecognizerError
from datastructure.names import UNKNOWN
from utils.outbound import redacted

log = logging.getLogger(__name__)

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
ONLINE, OFFLINE = "online", "offline"
RECONNECT_DELAYS = (1, 30)  # seconds: paho's first retry, doubling up to the second
PEOPLE_POLL = 2.0  # seconds between looks at the active model's people (and the OFF timers)
MAX_QUEUED = 1000  # paho's own queue of unacknowledged messages, past which publish refuses
SERVICE_NAME = "PyRecognizer"


@dataclass(frozen=True)
class Broker:
    """Where ``mqtt.url`` points: host, port, credentials, TLS."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @property
    def shown(self) -> str:
        """The broker as logs show it (never the credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_of(url: str) -> Broker:
    """Return the broker of ``mqtt://[user:password@]host[:port]`` or ``mqtts://...``; ConfigError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"mqtt.url {redacted(url)} is not a valid URL") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(f"mqtt.url {redacted(url)}: expected mqtt://host:port or mqtts://host:port")
    return Broker(host=parts.hostname, port=port or SCHEMES[parts.scheme],
                  username=unquote(parts.username) if parts.username else None,
                  password=unquote(parts.password) if parts.password else None, tls=parts.scheme == "mqtts")


def broker_client(settings: Mqtt, purpose: str, *, will: tuple[str, str] | None = None) -> tuple[paho.Client, Broker]:
    """Return a paho client for the ``mqtt.url`` broker (not connected yet) and the broker.

    ``purpose`` ends the client id (``events``, ``frigate``): the sink and Frigate mode hold
    one connection each, and a broker drops the older of two clients with the same id."""
    broker = broker_of(settings.url)
    client_id = f"{settings.client_id or f'pyrecognizer-{socket.gethostname()}-{os.getpid()}'}-{purpose}"
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        tls = settings.tls
        client.tls_set(ca_certs=tls.ca_certs, certfile=tls.certfile, keyfile=tls.keyfile,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(tls.insecure)
    if will:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(*RECONNECT_DELAYS)
    client.max_queued_messages_set(MAX_QUEUED)

    def connect_failed(client, userdata) -> None:
        # paho calls this inside its ``except OSError``: the reason (refused, TLS, DNS) is the
        # exception being handled, and holds no credentials
        log.warning("MQTT: cannot reach %s: %s (retrying)", broker.shown, sys.exc_info()[1] or "connection failed")
    client.on_connect_fail = connect_failed
    return client, broker


def topic_part(name: str) -> str:
    """Return ``name`` as one topic level: white space runs as ``-``, no ``/``, ``+``, ``#``."""
    return re.sub(r"[/+#\x00]", "", re.sub(r"\s+", "-", name.strip())) or "_"


def object_id(name: str) -> str:
    """Return an id Home Assistant accepts in a discovery topic ([a-zA-Z0-9_-]): the name in
    ASCII, then a hash of it, so ``José`` and ``Jose`` stay two people."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")[:40]
    return f"{slug}_{hashlib.sha1(name.encode()).hexdigest()[:6]}" if slug else hashlib.sha1(name.encode()).hexdigest()[:12]


def active_people(active) -> Callable[[], list[str] | None]:
    """Return a function giving the active model's people ([] before any model; None when
    the model cannot be read now, so nobody's entities are removed for a passing error)."""

    def people() -> list[str] | None:
        try:
            return sorted(str(name) for name in active.current().metadata.get("people", {}))
        except ClassifierNotLoaded:
            return []
        except PyRecognizerError as exc:
            log.warning("the active model's people could not be read: %s", exc.description)
            return None
    return people


class Topics:
    """The topic names of one service (``mqtt.topic_prefix``) and of its discovery."""

    def __init__(self, prefix: str, discovery_prefix: str):
        self.prefix, self.discovery_prefix = prefix.strip("/"), discovery_prefix.strip("/")
        self.node = object_id(self.prefix).rsplit("_", 1)[0] or "pyrecognizer"  # the discovery node id
        self.availability = f"{self.prefix}/availability"

    def match(self, name: str) -> str:
        return f"{self.prefix}/matches/{topic_part(name)}"

    def camera(self, camera: str) -> str:
        return f"{self.prefix}/cameras/{topic_part(camera)}"

    def in_view(self, camera: str) -> str:
        return f"{self.camera(camera)}/person"

    def person(self, name: str) -> str:
        return f"{self.prefix}/people/{topic_part(name)}"

    def seen(self, name: str) -> str:
        return f"{self.person(name)}/seen"

    def config(self, component: str, object_id_: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id_}/config"

    def our_configs(self) -> str:
        """The subscription that returns every retained discovery config of this service."""
        return f"{self.discovery_prefix}/+/{self.node}/+/config"


class Discovery:
    """Home Assistant MQTT discovery payloads (keys from HA's mqtt sensor and binary_sensor
    schemas: tests/data/ha_mqtt_discovery.json holds what the tests check them against)."""

    def __init__(self, topics: Topics, seen_seconds: int):
        self.topics, self.seen_seconds = topics, seen_seconds

    def device(self) -> dict:
        return {"identifiers": [f"pyrecognizer_{self.topics.node}"], "name": SERVICE_NAME,
                "manufacturer": SERVICE_NAME, "model": "Face recognition service"}

    def common(self, unique: str, name: str) -> dict:
        return {"name": name, "unique_id": f"{self.topics.node}_{unique}",
                "availability_topic": self.topics.availability, "payload_available": ONLINE,
                "payload_not_available": OFFLINE, "device": self.device(), "origin": {"name": SERVICE_NAME}}

    def camera_configs(self, camera: str) -> dict[str, dict]:
        """Return {config topic: payload} of a camera's two sensors."""
        oid = f"camera_{object_id(camera)}"
        last = {**self.common(f"{oid}_last", f"{camera} last person"), "icon": "mdi:account-eye",
                "state_topic": self.topics.camera(camera), "value_template": "{{ value_json.name }}",
                "json_attributes_topic": self.topics.camera(camera)}
        count = {**self.common(f"{oid}_faces", f"{camera} faces"), "icon": "mdi:account-group",
                 "state_topic": self.topics.in_view(camera), "value_template": "{{ value_json.count }}",
                 "json_attributes_topic": self.topics.in_view(camera), "state_class": "measurement",
                 "unit_of_measurement": "faces"}
        return {self.topics.config("sensor", f"{oid}_last"): last,
                self.topics.config("sensor", f"{oid}_faces"): count}

    def person_configs(self, name: str) -> dict[str, dict]:
        """Return {config topic: payload} of a person's binary sensor and last-camera sensor."""
        oid = f"person_{object_id(name)}"
        seen = {**self.common(f"{oid}_seen", f"{name} seen"), "device_class": "presence",
                "state_topic": self.topics.seen(name), "payload_on": "ON", "payload_off": "OFF",
                "off_delay": self.seen_seconds, "json_attributes_topic": self.topics.person(name)}
        camera = {**self.common(f"{oid}_camera", f"{name} last camera"), "icon": "mdi:cctv",
                  "state_topic": self.topics.person(name), "value_template": "{{ value_json.camera }}",
                  "json_attributes_topic": self.topics.person(name)}
        return {self.topics.config("binary_sensor", f"{oid}_seen"): seen,
                self.topics.config("sensor", f"{oid}_camera"): camera}


def is_person_config(topic: str) -> bool:
    """True for the discovery config topic of a person's entity (``.../person_<id>_.../config``)."""
    return topic.rsplit("/", 2)[-2].startswith("person_")


class MqttSink:
    """The hub's MQTT sink: topics, presence, Home Assistant discovery, availability."""

    name = "mqtt"

    def __init__(self, settings: Mqtt, people: Callable[[], list[str] | None] = lambda: None):
        ha = settings.homeassistant
        self.settings, self.people = settings, people
        self.topics = Topics(settings.topic_prefix, ha.discovery_prefix)
        self.seen_seconds = max(1, round(ha.seen_minutes * 60))
        self.discovery = Discovery(self.topics, self.seen_seconds) if ha.enabled else None
        self.qos = int(settings.qos)
        self.client, self.broker = broker_client(settings, "events", will=(self.topics.availability, OFFLINE))
        self.client.on_connect, self.client.on_disconnect = self._connected, self._disconnected
        self.client.on_message = self._message
        self.connected = threading.Event()
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.in_view: dict[str, dict[int, str]] = {}  # camera -> track id -> name, of tracks not ended
        self.seen_until: dict[str, float] = {}  # person -> monotonic time their binary sensor turns off
        self.cameras_announced: set[str] = set()
        self.people_announced: set[str] = set()
        self.retained_people: dict[str, dict] = {}  # person config topic -> its retained payload
        self.announce_all = threading.Event()  # on (re)connection and Home Assistant's birth
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=int(settings.keepalive))
        self.client.loop_start()
        self.watcher = threading.Thread(target=self._watch, name="mqtt-people", daemon=True)
        self.watcher.start()
        log.info("MQTT: publishing events to %s under %s/", self.broker.shown, self.topics.prefix)

    # -- the connection (paho's network thread) -----------------------------------------
    def _connected(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.warning("MQTT: %s refused the connection: %s", self.broker.shown, reason)
            return
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        if self.discovery:
            client.subscribe([(self.topics.our_configs(), 1), (f"{self.topics.discovery_prefix}/status", 1)])
            self.announce_all.set()
        self.connected.set()
        log.info("MQTT: connected to %s", self.broker.shown)

    def _disconnected(self, client, userdata, flags, reason, properties) -> None:
        self.connected.clear()
        if not self.closing.is_set():
            log.warning("MQTT: lost %s (%s); reconnecting, events wait in the queue", self.broker.shown, reason)

    def _message(self, client, userdata, message) -> None:
        topic = message.topic
        if topic == f"{self.topics.discovery_prefix}/status":
            if message.payload == b"online":  # Home Assistant (re)started: announce again
                self.announce_all.set()
            return
        if not is_person_config(topic):
            return
        with self.lock:
            if message.payload:
                try:
                    self.retained_people[topic] = json.loads(message.payload)
                except ValueError:
                    self.retained_people[topic] = {}
            else:
                self.retained_people.pop(topic, None)

    def is_connected(self) -> bool:
        return self.connected.is_set()

    def status(self) -> dict:
        """What /health may show of this sink: the broker (no credentials) and whether it is connected."""
        return {"broker": self.broker.shown, "connected": self.connected.is_set()}

    def _publish(self, topic: str, payload, *, retain: bool = False, wait: bool = False) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        info = self.client.publish(topic, text, qos=self.qos, retain=retain)
        if info.rc == paho.MQTT_ERR_NO_CONN and self.qos:
            return  # the connection dropped just now: paho keeps the message and sends it once back
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"MQTT publish to {self.broker.shown} failed: {paho.error_string(info.rc)}")
        if wait and self.qos:
            # the broker's acknowledgement (a connection lost meanwhile: paho sends it again once back)
            info.wait_for_publish(float(self.settings.keepalive))

    # -- events (the hub's thread for this sink) ------------------------------------------
    def send(self, event: dict) -> None:
        """Publish one event on its topics; wait while the broker is away."""
        while not self.connected.wait(0.5):
            if self.closing.is_set():
                raise ConnectionError(f"closed while {self.broker.shown} was away")
        camera, name, kind = event["camera"], event["name"], event["type"]
        self.announce_camera(camera)
        with self.lock:
            present = self.in_view.setdefault(camera, {})
            if kind == "end":
                present.pop(event["track_id"], None)
            else:
                present[event["track_id"]] = name
            names = sorted({who for who in present.values() if who != UNKNOWN})
            view = {"names": names, "unknown": sum(who == UNKNOWN for who in present.values()),
                    "count": len(present), "time": event["time"]}
        self._publish(self.topics.camera(camera), event, retain=True, wait=True)
        self._publish(self.topics.in_view(camera), view, retain=True)
        if kind == "end":
            return
        if name == UNKNOWN:
            if kind == "new":
                self._publish(self.topics.match(UNKNOWN), event)
            return
        self._publish(self.topics.match(name), event)
        self._publish(self.topics.person(name), {"name": name, "camera": camera, "confidence": event["confidence"],
                                                 "time": event["time"], "event_id": event["id"]}, retain=True)
        self._publish(self.topics.seen(name), "ON", retain=True)
        with self.lock:
            self.seen_until[name] = time.monotonic() + self.seen_seconds

    def announce_camera(self, camera: str) -> None:
        """Give a camera its Home Assistant entities (done at its first event; the supervisor
        may call it when a camera is added, before anyone is seen)."""
        with self.lock:
            new = self.discovery is not None and camera not in self.cameras_announced
            self.cameras_announced.add(camera)
        if new and self.connected.is_set():  # else announced on connection, with the others
            self._announce(self.discovery.camera_configs(camera))

    def forget_camera(self, camera: str) -> None:
        """Remove a deleted camera's entities and retained states."""
        if self.discovery:
            self._announce({topic: "" for topic in self.discovery.camera_configs(camera)})
        for topic in (self.topics.camera(camera), self.topics.in_view(camera)):
            self._publish(topic, "", retain=True)
        with self.lock:
            self.cameras_announced.discard(camera)
            self.in_view.pop(camera, None)

    def close(self) -> None:
        """Say ``offline`` (retained) and disconnect."""
        self.closing.set()
        self.watcher.join(PEOPLE_POLL + 1)
        if self.connected.is_set():
            info = self.client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # -- Home Assistant (the watcher thread) -----------------------------------------------
    def _announce(self, configs: dict) -> None:
        for topic, payload in configs.items():
            self._publish(topic, payload, retain=True)

    def _watch(self) -> None:
        """Keep the people's entities in step with the active model, and turn sensors off."""
        while not self.closing.wait(PEOPLE_POLL):
            if not self.connected.is_set():
                continue
            try:
                people = self.people()
                if self.discovery:
                    self._discovery_round(people)
                self._turn_off_unseen(people)
            except Exception as exc:  # keep watching: a failed round is retried
                log.warning("MQTT: Home Assistant discovery round failed: %s", exc)

    def _discovery_round(self, people: list[str] | None) -> None:
        """Announce what is new, remove the entities of people no longer in the active model."""
        if self.announce_all.is_set():
            self.announce_all.clear()
            self.people_announced.clear()
            with self.lock:
                cameras = sorted(self.cameras_announced)
            for camera in cameras:
                self._announce(self.discovery.camera_configs(camera))
        if people is not None:
            wanted = {}
            for name in people:
                wanted.update(self.discovery.person_configs(name))
                if name not in self.people_announced:
                    self._announce(self.discovery.person_configs(name))
                    self.people_announced.add(name)
                    log.info("MQTT: Home Assistant entities for %r announced", name)
            self.people_announced &= set(people)
            with self.lock:
                gone = {topic: payload for topic, payload in self.retained_people.items() if topic not in wanted}
            for topic, payload in gone.items():
                self._remove_person_config(topic, payload)

    def _turn_off_unseen(self, people: list[str] | None) -> None:
        """Publish OFF for people not seen for ``seen_minutes`` (their retained state stays true)."""
        now = time.monotonic()
        with self.lock:
            expired = [name for name, until in self.seen_until.items()
                       if until <= now or people is not None and name not in people]
            for name in expired:
                del self.seen_until[name]
        for name in expired:
            if people is None or name in people:  # a removed person's states were cleared, not turned off
                self._publish(self.topics.seen(name), "OFF", retain=True)

    def _remove_person_config(self, topic: str, payload: dict) -> None:
        """Empty a person's retained config (Home Assistant removes the entity) and the
        retained states it named (nothing about a forgotten person stays on the broker)."""
        for key in ("state_topic", "json_attributes_topic"):
            state = payload.get(key) if isinstance(payload, dict) else None
            if isinstance(state, str) and state.startswith(f"{self.topics.prefix}/people/"):
                self._publish(state, "", retain=True)
        self._publish(topic, "", retain=True)
        with self.lock:
            self.retained_people.pop(topic, None)
        log.info("MQTT: Home Assistant entity %s removed", topic.rsplit("/", 2)[-2])


def mqtt_sinks(config, people: Callable[[], list[str] | None] = lambda: None) -> list[MqttSink]:
    """Return the MQTT sink of ``config`` ([] when ``mqtt.url`` is not set). ``people``: the
    active model's people (``active_people(service.active)``), for Home Assistant's entities."""
    if not config.mqtt.url:
        return []
    return [MqttSink(config.mqtt, people)]
