"""Shared fixtures: real photos from ../shared/faces, apps and servers over temporary data folders.

Tests build the service from a test configuration over a temporary data directory. The HTTP
contract runs in this process through ``app`` and ``client``, as Flask's tutorial tests it
(fast); what only a real server shows runs against real server processes (marked ``e2e``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import TEST_CREDENTIALS, Server, faces_dir, make_config, zipped


@pytest.fixture(scope="session")
def faces() -> Path:
    return faces_dir()


@pytest.fixture(scope="session")
def celebrities_zip(faces, tmp_path_factory) -> Path:
    return zipped(faces / "celebrities" / "train", tmp_path_factory.mktemp("zips") / "celebrities.zip")


@pytest.fixture
def config(tmp_path):
    """A test configuration over a fresh data folder (dashboard off)."""
    return make_config(tmp_path / "data")


def app_over(data_dir: Path, **sections):
    """The Flask app over ``data_dir``, built in this process, with the test API token and password."""
    from api.app import create_app

    security = {**TEST_CREDENTIALS, **sections.pop("security", {})}
    app = create_app(make_config(data_dir, security=security, **sections))
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def app(tmp_path):
    """The service with no model yet, as a Flask app in this process (flaskr's ``app``)."""
    return app_over(tmp_path / "data")


@pytest.fixture
def client(app):
    """A test client of ``app``: requests without a server process."""
    return app.test_client()


@pytest.fixture(scope="session")
def trained(faces, tmp_path_factory):
    """A service trained on celebrities/train (one training for the whole session)."""
    from utils.service import build_service

    service = build_service(make_config(tmp_path_factory.mktemp("trained")), console_log=False)
    result = service.train(faces / "celebrities" / "train")
    return service, result


@pytest.fixture
def server_factory(tmp_path):
    """Start real server processes; every one is stopped at the end of the test."""
    started = []

    def start(data_dir: Path | None = None, **kwargs) -> Server:
        server = Server(data_dir or tmp_path / f"server{len(started)}", **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def hostile_models(tmp_path_factory, faces):
    """Two small models (see tests/hostile.py) for the attack tests, trained once."""
    from tests.hostile import trained_models

    return trained_models(tmp_path_factory, faces)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, for one test module (tests/browser.py launches it)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch, require_browser

    require_browser()
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A real MQTT broker (Debian's mosquitto, tests/mqtt_broker.py) for one test module;
    its tests use topic prefixes of their own."""
    from tests.mqtt_broker import Mosquitto

    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield mosquitto
    mosquitto.stop()
