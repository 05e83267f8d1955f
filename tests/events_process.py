"""A process holding the event sinks of a configuration, as the camera supervisor does: it
reads events (JSON lines) on stdin and publishes them. tests/test_mqtt.py kills it to see the
broker announce its last will."""
from __future__ import annotations

import json
import sys

from conf.config import load_config
from utils.events import EventHub
from utils.mqtt import mqtt_sinks


def main() -> None:
    hub = EventHub(mqtt_sinks(load_config(sys.argv[1], environ={})))
    print("ready", flush=True)
    for line in sys.stdin:
        hub.publish(json.loads(line))
    hub.close()


if __name__ == "__main__":
    main()
