from __future__ import annotations

import dataclasses

from pathlib import Path

import pytest

from grokemu.config import ConfigError, Settings, load_settings


def test_defaults():
    s = load_settings(environ={})
    assert (s.host, s.port, dict(s.dev_keys)) == ("127.0.0.1", 8080, {"admin": "admin"})
    assert s.api_url == "http://localhost:8080/api" and s.container_status_timeout == 300


def test_precedence_file_env_flags(tmp_path):
    cfg = tmp_path / "grokemu.yaml"
    cfg.write_text("port: 9000\ndata_dir: /from/file\nproxy_request_timeout: 5\ndev_keys: {k1: alice, k2: bob}\n")
    s = load_settings(cfg, environ={})
    assert s.port == 9000 and s.data_dir == Path("/from/file") and dict(s.dev_keys) == {"k1": "alice", "k2": "bob"}
    s = load_settings(cfg, environ={"GROKEMU_PORT": "9100", "GROKEMU_DEV_KEYS": "a,b=carol"})
    assert s.port == 9100 and s.proxy_request_timeout == 5 and dict(s.dev_keys) == {"a": "admin", "b": "carol"}
    s = load_settings(cfg, environ={"GROKEMU_PORT": "9100"}, overrides={"port": 9200, "data_dir": None})
    assert s.port == 9200 and s.data_dir == Path("/from/file")  # None means 'flag not given'


def test_config_file_from_env(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ignore_gpu: true\n")
    assert load_settings(environ={"GROKEMU_CONFIG": str(cfg)}).ignore_gpu is True


@pytest.mark.parametrize("environ, fragment", [
    ({"GROKEMU_PORT": "eighty"}, "'port'"),
    ({"GROKEMU_IGNORE_GPU": "maybe"}, "'ignore_gpu'"),
    ({"GROKEMU_DEV_KEYS": ","}, "'dev_keys'"),
])
def test_bad_values_name_the_setting(environ, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(environ=environ)


def test_unknown_file_keys_are_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prot: 1\n")
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings(cfg, environ={})


def test_settings_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_stop_timeout_from_file_env_and_flag(tmp_path):
    from grokemu.cli import _load, build_parser

    assert load_settings(environ={}).stop_timeout == 10.0  # Docker's default
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stop_timeout: 4\n")
    assert load_settings(cfg, environ={}).stop_timeout == 4.0
    assert load_settings(cfg, environ={"GROKEMU_STOP_TIMEOUT": "2.5"}).stop_timeout == 2.5
    args = build_parser().parse_args(["up", "--stop-timeout", "1"])
    assert _load(args).stop_timeout == 1.0
