"""Shared fixtures: real photos from ../shared/faces, apps and servers over temporary data folders.

Tests build the service from a test configuration over a temporary data directory, as
Flask's tutorial does, and drive real server processes over HTTP where a user would.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Server, faces_dir, make_config, zipped


@pytest.fixture(scope="session")
def faces() -> Path:
    return faces_dir()


@pytest.fixture(scope="session")
def celebrities_zip(faces, tmp_path_factory) -> Path:
    return zipped(faces / "celebrities" / "train", tmp_path_factory.mktemp("zips") / "celebrities.zip")


@pytest.fixture
def config(tmp_path) -> dict:
    return make_config(tmp_path / "data")


@pytest.fixture(scope="session")
def trained(faces, tmp_path_factory):
    """A service trained on celebrities/train (one training for the whole session)."""
    from utils.service import build_service

    engine = build_service(make_config(tmp_path_factory.mktemp("trained")), console_log=False)
    result = engine.train(faces / "celebrities" / "train")
    return engine, result


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
