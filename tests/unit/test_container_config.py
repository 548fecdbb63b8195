from __future__ import annotations

import pytest

from grokemu.domain.container_config import parse_container_json
from grokemu.domain.errors import BadRequest


def test_documented_defaults():
    cfg = parse_container_json(None)
    assert {k: cfg[k] for k in ("cpu", "memory", "gpu", "on_demand", "shutdown_timeout", "storage", "shm_size")} == {
        "cpu": 0.25, "memory": 512, "gpu": 0, "on_demand": False, "shutdown_timeout": None, "storage": 21,
        "shm_size": 64}
    assert parse_container_json("{}")["env"] == {}


def test_both_env_spellings_and_unknown_keys():
    cfg = parse_container_json('{"env": {"A": "1"}, "environmentVars": {"db": "#{x.moltrack}"}, '
                               '"timeout_minutes": 30, "image": "datagrok/bio:1", "port": 8000}')
    assert cfg["env"] == {"A": "1", "db": "#{x.moltrack}"}
    assert cfg["unknown_keys"] == ["timeout_minutes"] and cfg["unknown"] == {"timeout_minutes": 30}
    assert cfg["image"] == "datagrok/bio:1" and cfg["port"] == 8000


@pytest.mark.parametrize("text, fragment", [
    ("nope", "not valid JSON"), ('"x"', "JSON object"), ('{"cpu": 0}', "'cpu' must be >"),
    ('{"cpu": true}', "'cpu' must be a number"), ('{"port": 70000}', "'port' must be ≤"),
    ('{"shutdown_timeout": "1"}', "'shutdown_timeout'"), ('{"env": {"A": {"b": 1}}}', "'env.A'"),
    ('{"image": 5}', "'image'"), ('{"storage": -1}', "'storage'"),
])
def test_wrong_types_name_the_key(text, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_container_json(text)


@pytest.mark.parametrize("text, fragment", [
    ('{"port": 1e400}', "out of range"), ('{"gpu": NaN}', "NaN"), ('{"cpu": Infinity}', "Infinity"),
    ('{"cpu": 1e300}', "'cpu' must be ≤"), ('{"memory": 1e300}', "'memory' must be ≤"), ('{"port": 1e20}', "'port'"),
    ('{"port": ' + "9" * 5000 + "}", "not valid JSON"), ('{"gpu": 1e18}', "'gpu' must be ≤"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"), ('{"x": ' + "[" * 100 + "]" * 100 + "}", "nested more than"),
    ('{"shutdown_timeout": 1e308}', "'shutdown_timeout' must be ≤"),
])
def test_numbers_and_nesting_that_used_to_crash_are_400(text, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_container_json(text)


def test_tiny_positive_values_are_accepted_and_kept():
    cfg = parse_container_json('{"cpu": 1e-12, "memory": 1e-9}')
    assert cfg["cpu"] == 1e-12 and cfg["memory"] == 1e-9  # the spawner raises them to Docker's minimum
