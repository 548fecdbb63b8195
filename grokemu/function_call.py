"""Calling a queue function as plugin code does, for the test kit: `grokemu.call("Pkg:func", **params)`.

This is the client side of the call socket (docs/queue-functions.md "A call"), spoken the way datagrok-api's
`grok.functions.call` speaks it: find the function with `GET /api/entities` (its query encoded twice), open
`/api/log/funcs/call/stream` with the session, wait for `LISTENING`, send one numbered `CALL`, upload dataframe and
blob inputs when grokemu asks (`PARAM <name>` → `SENDING DATAFRAME <size> <tags>`, binary chunks each answered
`PART OK`, `PARAM_SENT <name>`), take dataframe and blob outputs (`SENDING DATAFRAME` + chunks, answered `PART OK`),
and return the value of the final `CALL`'s output.

Values as the worker library converts them: bigint travels as text, datetime as ISO text with milliseconds, a
dataframe as CSV (a pandas DataFrame is accepted, and returned when pandas is installed; else CSV text), a blob as
bytes. Needs `websocket-client`, like the kit's `.websocket()`.
"""
from __future__ import annotations

import io
import json
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from grokemu.domain.calls import FrameError, binary_frame, split_binary, split_text, text_frame

N = 1  # one call per socket: its frames are numbered 1, as the JS client's first call is
CHUNK = 1_024_000  # the JS client's dataFrameBatchSize


class FunctionCallError(Exception):
    """The call ended in Error or Canceled: `status`, the task's message and its stack."""

    def __init__(self, status: str, message: str, stack: str = ""):
        super().__init__(message)
        self.status = status
        self.stack = stack


@dataclass
class CallOutcome:
    """What a call went through besides its value: progress reports and log lines, in order."""

    value: Any = None
    status: str = ""
    progress: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)


def find_function(request: Callable[[str], Any], nq_name: str) -> dict[str, Any]:
    """The DockerFunc entity of `Pkg:func`, looked up as the JS client does (`request(path)` → parsed JSON)."""
    namespace, sep, name = nq_name.rpartition(":")
    if not sep or not namespace or not name:
        raise ValueError(f"{nq_name!r}: name the function as plugin code does, 'Package:function'")
    query = f'shortName = "{name}" and namespace = "{namespace}:"'
    found = request("entities?text=" + urllib.parse.quote(urllib.parse.quote(query)))
    funcs = [f for f in found or [] if str(f.get("#type", "")).lower() == "dockerfunc"]
    if not funcs:
        raise LookupError(f"no published container declares {nq_name}")
    return funcs[0]


def call_function(api: str, token: str, func: dict[str, Any], params: dict[str, Any], *,
                  timeout: float = 300) -> CallOutcome:
    """Run one call of `func` (its entity) with `params` over the call socket of the grokemu at `api`."""
    import websocket  # websocket-client

    inputs = {p["name"]: p for p in func.get("params") or [] if p.get("isInput", True)}
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise TypeError(f"{func.get('nqName')}: no input named {', '.join(unknown)} (inputs: {', '.join(inputs)})")
    values: dict[str, Any] = {}
    uploads: dict[str, tuple[bytes, dict[str, str]]] = {}
    for name, value in params.items():
        values[name], upload = _encode(inputs[name]["propertyType"], name, value)
        if upload is not None:
            uploads[name] = upload
    call = {"id": str(uuid.uuid1()), "func": {"name": func["name"], "namespace": func.get("namespace", ""),
                                            "params": func.get("params") or []},
            "parameterValues": values, "options": {"isParquet": False}, "aux": {}}

    url = api.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/log/funcs/call/stream"
    ws = websocket.create_connection(url, header=[f"Authorization: {token}"], timeout=timeout)
    try:
        first = ws.recv()
        if first != "LISTENING":
            raise FunctionCallError("Error", f"the call socket sent {str(first)[:200]!r} before LISTENING")
        ws.send(text_frame(N, "CALL " + json.dumps(call)))
        return _exchange(ws, func, uploads)
    finally:
        ws.close()


def _exchange(ws, func: dict[str, Any], uploads: dict[str, tuple[bytes, dict[str, str]]]) -> CallOutcome:
    outcome = CallOutcome()
    received: dict[str, tuple[dict[str, str], bytes]] = {}
    incoming: tuple[dict[str, str], int, bytearray] | None = None
    while True:
        data = ws.recv()
        if isinstance(data, bytes):
            if incoming is None:
                raise FunctionCallError("Error", "grokemu sent binary data before SENDING DATAFRAME")
            _, payload = split_binary(data)
            incoming[2].extend(payload)
            ws.send(text_frame(N, "PART OK"))
            if len(incoming[2]) >= incoming[1]:
                received[str(incoming[0].get(".id") or incoming[0].get(".name"))] = (incoming[0], bytes(incoming[2]))
                incoming = None
            continue
        try:
            _, message = split_text(data)
        except FrameError:
            raise FunctionCallError("Error", f"grokemu sent {data[:200]!r}") from None
        verb = message.split(" ", 1)[0]
        if verb == "PARAM":
            _upload(ws, message[len("PARAM "):].strip(), uploads, outcome)
        elif message.startswith("SENDING DATAFRAME "):
            size, tags = _sending(message)
            incoming = (tags, size, bytearray())
            if size == 0:
                received[str(tags.get(".id") or tags.get(".name"))] = (tags, b"")
                incoming = None
        elif verb == "PROGRESS":
            outcome.progress.append(json.loads(message[len("PROGRESS "):]))
        elif verb == "LOG":
            entry = json.loads(message[len("LOG "):])
            outcome.logs.append(str(entry.get("message", entry)) if isinstance(entry, dict) else str(entry))
        elif verb == "CALL":
            result = json.loads(message[len("CALL "):])
            ws.send(text_frame(N, "DONE"))
            return _finish(result, func, received, outcome)
        elif verb == "PART" and message.strip() == "PART ERROR":
            raise FunctionCallError("Error", "grokemu refused a part of a parameter (PART ERROR)")


def _upload(ws, name: str, uploads: dict[str, tuple[bytes, dict[str, str]]], outcome: CallOutcome) -> None:
    """`PARAM <name>`: send that input's bytes in chunks, each acknowledged with `PART OK`."""
    if name not in uploads:
        raise FunctionCallError("Error", f"grokemu asked for parameter {name!r}, which is no dataframe or blob input")
    data, tags = uploads[name]
    ws.send(text_frame(N, f"SENDING DATAFRAME {len(data)} {json.dumps(tags)}"))
    for start in range(0, len(data), CHUNK):
        ws.send_binary(binary_frame(N, data[start:start + CHUNK]))
        while True:
            reply = ws.recv()
            if isinstance(reply, str) and split_text(reply)[1].strip() in ("PART OK", "PART_OK"):
                break
            if isinstance(reply, str) and split_text(reply)[1].startswith("PROGRESS "):
                outcome.progress.append(json.loads(split_text(reply)[1][len("PROGRESS "):]))
                continue
            raise FunctionCallError("Error", f"uploading {name}: grokemu answered {str(reply)[:200]!r}")
    ws.send(text_frame(N, f"PARAM_SENT {name}"))


def _sending(message: str) -> tuple[int, dict[str, str]]:
    parts = message.split(" ", 3)  # SENDING DATAFRAME <size> <tags>
    try:
        return int(parts[2]), (json.loads(parts[3]) if len(parts) > 3 else {})
    except (IndexError, ValueError):
        raise FunctionCallError("Error", f"malformed {message[:200]!r}") from None


def _finish(result: dict[str, Any], func: dict[str, Any], received: dict[str, tuple[dict[str, str], bytes]],
            outcome: CallOutcome) -> CallOutcome:
    outcome.status = str(result.get("status") or "")
    if outcome.status != "Completed":
        raise FunctionCallError(outcome.status or "Error", str(result.get("errorMessage") or outcome.status),
                                str(result.get("errorStackTrace") or ""))
    outputs = [p for p in func.get("params") or [] if not p.get("isInput", True)]
    if outputs:
        out = outputs[0]
        value = (result.get("parameterValues") or {}).get(out["name"])
        outcome.value = _decode(out["propertyType"], out["name"], value, received)
    return outcome


# -- values ------------------------------------------------------------------------------------------------------
def _encode(kind: str, name: str, value: Any) -> tuple[Any, tuple[bytes, dict[str, str]] | None]:
    """(the JSON value of the input, the bytes to upload and their tags when it travels over the pipe)."""
    if value is None:
        return None, None
    if kind == "dataframe":
        text = value.to_csv(index=False) if hasattr(value, "to_csv") else str(value)
        table_id = str(uuid.uuid4())
        return {"#type": "TableInfo", "id": table_id, "metaParams": {}}, \
            (text.encode(), {".id": table_id, ".type": "csv"})
    if kind in ("blob", "file"):
        data = value if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()
        return json.dumps({"#type": "FileInfo", "fileName": name}), (bytes(data), {".id": name, ".type": "blob"})
    if kind == "bigint":
        return str(int(value)), None
    if kind == "datetime" and isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", None
    return value, None


def _decode(kind: str, name: str, value: Any, received: dict[str, tuple[dict[str, str], bytes]]) -> Any:
    if value is None:
        return None
    if kind == "dataframe":
        key = value.get("id") if isinstance(value, dict) else value
        if str(key) not in received:
            raise FunctionCallError("Error", f"output {name}: its table {key} never arrived")
        _, data = received[str(key)]
        text = data.decode()
        try:
            import pandas  # optional: the kit returns CSV text without it
        except ImportError:
            return text
        return pandas.read_csv(io.StringIO(text))
    if kind in ("blob", "file"):
        key = str(value)
        if key not in received:
            raise FunctionCallError("Error", f"output {name}: its bytes never arrived")
        return received[key][1]
    if kind == "bigint":
        return int(value)
    if kind == "datetime" and isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value
