"""A real MQTT broker for tests (Debian's mosquitto, on a free port, with a config and a user
of its own) and a subscriber that records what it receives (paho-mqtt, as users' clients)."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.support import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
USER, PASSWORD = "pyrecognizer", "broker-password-0123"


def require_mosquitto() -> None:
    """Skip without Debian's mosquitto (fail under CI, whose .ci/run installs it)."""
    if not Path(MOSQUITTO).exists() or not shutil.which("mosquitto_passwd"):
        message = "mosquitto is missing: apt-get install mosquitto (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


class Mosquitto:
    """A mosquitto process on 127.0.0.1: one user, no anonymous clients, retained messages
    kept on disk across a restart (as a broker that goes away and comes back)."""

    def __init__(self, folder: Path, *, tls: bool = False):
        require_mosquitto()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        passwords = self.folder / "passwords"
        passwords.touch()
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), USER, PASSWORD], check=True, capture_output=True)
        passwords.chmod(0o600)
        self.config = self.folder / "mosquitto.conf"
        # as root, mosquitto would switch to its own user, who cannot read pytest's private folders
        self.config.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
                               f"allow_anonymous false\npassword_file {passwords}\n"
                               f"persistence true\npersistence_location {self.folder}/\n"
                               f"log_dest file {self.folder / 'mosquitto.log'}\n")
        self.tls_port = None
        if tls:  # a second listener, mqtts://, with a self-signed certificate for 127.0.0.1
            from api.tls import write_self_signed

            self.certificate, key = self.folder / "cert.pem", self.folder / "key.pem"
            write_self_signed(self.certificate, key)
            self.tls_port = free_port()
            with self.config.open("a") as config:
                config.write(f"listener {self.tls_port} 127.0.0.1\ncertfile {self.certificate}\nkeyfile {key}\n")
        self.process = None

    def url(self, user: str = USER, password: str = PASSWORD) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> "Mosquitto":
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Subscriber:
    """A paho client subscribed to ``topics`` that keeps every message (topic, payload text, retained)."""

    def __init__(self, broker: Mosquitto, *topics: str):
        self.messages: list[tuple[str, str, bool]] = []
        self.changed = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{time.monotonic_ns()}")
        self.client.username_pw_set(USER, PASSWORD)
        subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in topics])
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._received
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test subscriber could not subscribe"

    def _received(self, client, userdata, message) -> None:
        with self.changed:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))
            self.changed.notify_all()

    def on(self, topic: str) -> list[str]:
        """The payloads received on ``topic``, in order."""
        with self.changed:
            return [payload for received, payload, _ in self.messages if received == topic]

    def wait_for(self, check, timeout: float = 20, what: str = "a message"):
        """Wait until ``check(messages)`` returns something true, and return it."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = check(list(self.messages))
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} in {timeout} s; received: {self.messages[-20:]}")
                self.changed.wait(left)

    def last(self, topic: str, timeout: float = 20) -> str:
        """Wait for a message on ``topic`` and return the latest one."""
        return self.wait_for(lambda messages: [p for t, p, _ in messages if t == topic][-1:], timeout,
                             f"message on {topic}")[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: Mosquitto, topic: str, wait: float = 1.0) -> str | None:
    """The retained message of ``topic`` now (None when there is none), as a new client sees it."""
    subscriber = Subscriber(broker, topic)
    try:
        found = subscriber.wait_for(lambda messages: [p for t, p, r in messages if t == topic and r], wait,
                                    f"retained message on {topic}")
        return found[-1]
    except AssertionError:
        return None
    finally:
        subscriber.close()
