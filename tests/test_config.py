"""The typed configuration: conf/conf.json's defaults, a file, the environment, each checked."""
from __future__ import annotations

import json

import pytest

from conf.config import Config, ConfigError, as_dict, load_config


def loaded(tmp_path, content: dict | None = None, environ: dict | None = None) -> Config:
    path = None
    if content is not None:
        path = tmp_path / "conf.json"
        path.write_text(json.dumps(content))
    return load_config(path, environ=environ or {})


def test_the_defaults_load_as_typed_sections(tmp_path):
    config = loaded(tmp_path)
    assert config.server.port == 8081 and config.limits.max_ratio == 100.0 and config.faces.cache is True
    assert config.security.rate_limits.login == "10 per minute"
    assert config.tune.grid()["weights"] == ["uniform", "distance"]
    assert isinstance(config.limits.max_ratio, float)


def test_a_file_and_the_environment_override_the_defaults(tmp_path):
    config = loaded(tmp_path, {"server": {"workers": 3}, "limits": {"max_ratio": 50}},
                    {"PYRECOGNIZER_PORT": "9000", "PYRECOGNIZER_TLS": "yes", "PYRECOGNIZER_DASK_SCHEDULER": "tcp://x:1"})
    assert (config.server.workers, config.server.port, config.security.tls) == (3, 9000, True)
    assert config.limits.max_ratio == 50.0 and config.cluster.scheduler == "tcp://x:1"


@pytest.mark.parametrize("content, message", [
    ({"limits": {"max_ratoi": 5}}, "unknown setting limits.max_ratoi"),
    ({"surver": {}}, "unknown setting surver"),
    ({"server": {"port": "8081"}}, 'server.port: expected an integer, got "8081"'),
    ({"faces": {"cache": 1}}, "faces.cache: expected true or false, got 1"),
    ({"server": {"workers": True}}, "server.workers: expected an integer, got true"),
    ({"tune": {"n_neighbors": [1, "3"]}}, 'tune.n_neighbors[1]: expected an integer, got "3"'),
    ({"server": {"port": 70000}}, "server.port: 70000 is out of range (expected from 0 to 65535)"),
    ({"limits": {"max_image_pixels": 0}}, "limits.max_image_pixels: 0 is out of range (expected at least 1)"),
    ({"classifier": {"weights": "heavy"}}, 'classifier.weights: "heavy" is not one of uniform, distance'),
    ({"security": {"rate_limits": {"login": None}}}, "security.rate_limits.login: expected a string, got null"),
    ({"security": "open"}, 'security: expected an object, got "open"'),
])
def test_a_setting_that_cannot_run_is_refused_by_name(tmp_path, content, message):
    with pytest.raises(ConfigError) as refused:
        loaded(tmp_path, content)
    assert str(refused.value).startswith(message), str(refused.value)


def test_an_environment_variable_of_the_wrong_type_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="PYRECOGNIZER_PORT='http': expected int"):
        loaded(tmp_path, environ={"PYRECOGNIZER_PORT": "http"})
    with pytest.raises(ConfigError, match="PYRECOGNIZER_TLS='maybe'"):
        loaded(tmp_path, environ={"PYRECOGNIZER_TLS": "maybe"})


def test_the_configuration_is_frozen_and_round_trips(tmp_path):
    config = loaded(tmp_path)
    with pytest.raises(AttributeError):
        config.server.port = 1
    assert load_config(overrides=as_dict(config), environ={}) == config


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "conf.json"
    path.write_text("{server: 1}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(path, environ={})


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("TRUE", True), ("yes", True), ("on", True),
                                             ("", False), ("0", False), ("false", False)])
def test_the_fixtures_see_every_usual_spelling_of_ci(monkeypatch, value, expected):
    from tests.support import under_ci

    monkeypatch.setenv("CI", value)
    assert under_ci() is expected
