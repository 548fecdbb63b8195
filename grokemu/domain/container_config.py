"""container.json: parse, check types, apply the documented defaults.

Defaults are the how-to page's and the client model's (DockerContainerConfig): cpu 0.25, memory 512 MB, gpu 0,
on_demand false, shutdown_timeout null (minutes), storage 21 GB, shm_size 64 MB. Real packages spell the
environment `env` (docs) or `environmentVars` (client model, MolTrack): both are accepted and merged.
Keys Datagrok does not model (Bio's and Chem's `timeout_minutes`) are kept under `unknown_keys` and reported.
"""
from __future__ import annotations

import json
import numbers
from typing import Any

from grokemu.domain.errors import BadRequest

DEFAULTS: dict[str, Any] = {"cpu": 0.25, "memory": 512, "gpu": 0, "on_demand": False, "shutdown_timeout": None,
                            "storage": 21, "shm_size": 64, "env": {}, "image": None, "port": None}


def _number(key: str, value: Any, *, minimum: float, integer: bool = False, allow_equal: bool = True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadRequest(f"container.json: '{key}' must be a number, got {json.dumps(value)}")
    if integer and int(value) != value:
        raise BadRequest(f"container.json: '{key}' must be a whole number, got {json.dumps(value)}")
    if value < minimum or (not allow_equal and value == minimum):
        raise BadRequest(f"container.json: '{key}' must be {'≥' if allow_equal else '>'} {minimum}, got {value}")
    return int(value) if integer else value


def _env(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest(f"container.json: '{key}' must be an object of name → string, got {json.dumps(value)}")
    env = {}
    for name, v in value.items():
        if isinstance(v, (dict, list)) or v is None:
            raise BadRequest(f"container.json: '{key}.{name}' must be a string, got {json.dumps(v)}")
        env[str(name)] = v if isinstance(v, str) else json.dumps(v)
    return env


def parse_container_json(text: str | bytes | None, where: str = "container.json") -> dict[str, Any]:
    """Return the normalized config; raise BadRequest naming the key when a value has the wrong type."""
    if text is None:
        return {**DEFAULTS, "env": {}, "unknown_keys": []}
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"{where} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be a JSON object, got {type(raw).__name__}")

    cfg: dict[str, Any] = {**DEFAULTS, "env": {}}
    for key, value in raw.items():
        if key == "cpu":
            cfg[key] = _number(key, value, minimum=0, allow_equal=False)
        elif key in ("memory", "shm_size", "storage"):
            cfg[key] = _number(key, value, minimum=0, allow_equal=False)
        elif key == "gpu":
            cfg[key] = _number(key, value, minimum=0, integer=True)
        elif key == "on_demand":
            if not isinstance(value, bool):
                raise BadRequest(f"container.json: 'on_demand' must be true or false, got {json.dumps(value)}")
            cfg[key] = value
        elif key == "shutdown_timeout":
            cfg[key] = None if value is None else _number(key, value, minimum=0, allow_equal=False)
        elif key in ("env", "environmentVars"):
            cfg["env"].update(_env(key, value))
        elif key == "image":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadRequest(f"container.json: 'image' must be an image reference string, got {json.dumps(value)}")
            cfg[key] = value
        elif key == "port":
            if value is not None:
                cfg[key] = _number(key, value, minimum=1, integer=True)
                if cfg[key] > 65535:
                    raise BadRequest(f"container.json: 'port' must be ≤ 65535, got {value}")
    cfg["unknown_keys"] = sorted(k for k in raw if k not in DEFAULTS and k != "environmentVars")
    cfg["unknown"] = {k: raw[k] for k in cfg["unknown_keys"]}
    return cfg
