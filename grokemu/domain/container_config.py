"""container.json: parse, check types, apply the documented defaults.

Defaults are the how-to page's and the client model's (DockerContainerConfig): cpu 0.25, memory 512 MB, gpu 0,
on_demand false, shutdown_timeout null (minutes), storage 21 GB, shm_size 64 MB. Real packages spell the
environment `env` (docs) or `environmentVars` (client model, MolTrack): both are accepted and merged.
Keys Datagrok does not model (Bio's and Chem's `timeout_minutes`) are kept under `unknown_keys` and reported.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from grokemu.domain.errors import BadRequest

DEFAULTS: dict[str, Any] = {"cpu": 0.25, "memory": 512, "gpu": 0, "on_demand": False, "shutdown_timeout": None,
                            "storage": 21, "shm_size": 64, "env": {}, "image": None, "port": None}


# Upper bounds: beyond these a value is a mistake, and the spawner's arithmetic (NanoCpus, bytes) must stay finite.
MAXIMUM: dict[str, float] = {"cpu": 1024, "memory": 1024**3, "shm_size": 1024**3, "storage": 1024**2, "gpu": 64,
                             "shutdown_timeout": 10 * 365 * 24 * 60, "port": 65535}


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(text: str):
    raise ValueError(f"{text} is not a JSON value")


MAX_JSON_DEPTH = 64  # deeper documents are refused: they would only come back to bite when stored or rendered


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def load_json(data: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads for untrusted input: any failure (syntax, nesting deeper than `max_depth`, NaN/Infinity, a number
    out of range, an integer with too many digits) is a 400 naming `where`, never a 500."""
    try:
        value = json.loads(data, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"{where} is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError, OverflowError, TypeError) as e:
        raise BadRequest(f"{where} is not valid JSON: {str(e)[:300]}") from None
    if not _depth_ok(value, max_depth):
        raise BadRequest(f"{where} is nested more than {max_depth} levels deep")
    return value


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError, OverflowError):
        text = repr(type(value).__name__)
    return text if len(text) <= 100 else text[:100] + "…"


def _number(key: str, value: Any, *, minimum: float, integer: bool = False, allow_equal: bool = True):
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # what json.loads gives
        raise BadRequest(f"container.json: '{key}' must be a number, got {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"container.json: '{key}' must be a finite number, got {value}")
    maximum = MAXIMUM.get(key)
    if maximum is not None and value > maximum:
        raise BadRequest(f"container.json: '{key}' must be ≤ {maximum:g}, got {_shown(value)}")
    if integer and int(value) != value:
        raise BadRequest(f"container.json: '{key}' must be a whole number, got {_shown(value)}")
    if value < minimum or (not allow_equal and value == minimum):
        raise BadRequest(f"container.json: '{key}' must be {'≥' if allow_equal else '>'} {minimum}, "
                         f"got {_shown(value)}")
    return int(value) if integer else value


def _env(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest(f"container.json: '{key}' must be an object of name → string, got {_shown(value)}")
    env = {}
    for name, v in value.items():
        if isinstance(v, (dict, list)) or v is None:
            raise BadRequest(f"container.json: '{key}.{name[:100]}' must be a string, got {_shown(v)}")
        env[str(name)] = v if isinstance(v, str) else json.dumps(v)
    return env


def parse_container_json(text: str | bytes | None, where: str = "container.json") -> dict[str, Any]:
    """Return the normalized config; raise BadRequest naming the key when a value has the wrong type."""
    if text is None:
        return {**DEFAULTS, "env": {}, "unknown_keys": []}
    raw = load_json(text, where)
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
                raise BadRequest(f"container.json: 'on_demand' must be true or false, got {_shown(value)}")
            cfg[key] = value
        elif key == "shutdown_timeout":
            cfg[key] = None if value is None else _number(key, value, minimum=0, allow_equal=False)
        elif key in ("env", "environmentVars"):
            cfg["env"].update(_env(key, value))
        elif key == "image":
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadRequest(f"container.json: 'image' must be an image reference string, got {_shown(value)}")
            cfg[key] = value
        elif key == "port":
            if value is not None:
                cfg[key] = _number(key, value, minimum=1, integer=True)
                if cfg[key] > 65535:
                    raise BadRequest(f"container.json: 'port' must be ≤ 65535, got {value}")
    cfg["unknown_keys"] = sorted(k for k in raw if k not in DEFAULTS and k != "environmentVars")
    cfg["unknown"] = {k: raw[k] for k in cfg["unknown_keys"]}
    return cfg
