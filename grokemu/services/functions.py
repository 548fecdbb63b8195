"""The function registry: the DockerFunc entities publish found (kept in each package's row, services/packages.py),
looked up the way Datagrok's JS client looks them up.

The client resolves `grok.functions.call('Pkg:func')` with `GET /api/entities?text=shortName = "func" and namespace
= "Pkg:"` (the `text` parameter arrives URL-encoded twice) and builds the call from the DockerFunc it gets back.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

from grokemu.domain.errors import BadRequest
from grokemu.domain.functions import DockerFunc
from grokemu.domain.ports import Store

# `key = "value"` (or `key == 'value'`), joined by `and`: the entity queries the client sends for functions
_CLAUSE = re.compile(r"""^\s*([A-Za-z_][\w.]*)\s*==?\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+))\s*$""")
QUERY_KEYS = {"shortname": "name", "name": "name", "namespace": "namespace", "nqname": "nq_name", "id": "id",
              "#type": "type", "type": "type"}
MAX_QUERY = 2000


def parse_entity_query(text: str) -> dict[str, str]:
    """`shortName = "run_admetica" and namespace = "Admetica:"` → {"name": ..., "namespace": ...}. Decoded once more
    when it still holds %-escapes (the client encodes it twice; Flask undid one)."""
    if len(text) > MAX_QUERY:
        raise BadRequest(f"The entity query is longer than {MAX_QUERY} characters")
    if "%" in text:
        text = unquote(text)
    conditions: dict[str, str] = {}
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        if not clause.strip():
            continue
        m = _CLAUSE.match(clause)
        if not m or m.group(1).lower() not in QUERY_KEYS:
            raise BadRequest(f"Unsupported entity query: {clause.strip()[:100]!r} (grokemu answers "
                             f"shortName/name/namespace/nqName/id = \"...\" joined by 'and')")
        value = next(v for v in m.group(2, 3, 4) if v is not None)
        conditions[QUERY_KEYS[m.group(1).lower()]] = value.replace('\\"', '"')
    return conditions


class FunctionRegistry:
    def __init__(self, store: Store):
        self._store = store

    def all(self) -> Iterator[DockerFunc]:
        for record in self._store.list_packages():
            for func in record.get("dockerFuncs") or []:
                yield DockerFunc.from_record(func)

    def for_container(self, container_id: str) -> list[DockerFunc]:
        return [f for f in self.all() if f.container_id == container_id]

    def by_id(self, func_id: str) -> DockerFunc | None:
        return next((f for f in self.all() if f.id == func_id), None)

    def find(self, namespace: str, name: str) -> DockerFunc | None:
        """`Admetica:` / `Admetica` and `run_admetica`; the namespace is matched without case, as Datagrok does."""
        ns = namespace.rstrip(":").lower()
        return next((f for f in self.all() if f.name == name and f.namespace.lower() == ns), None) or \
            next((f for f in self.all() if f.name.lower() == name.lower() and f.namespace.lower() == ns), None)

    def query(self, text: str) -> list[DockerFunc]:
        conditions = parse_entity_query(text)
        if conditions.get("type") and conditions["type"].lower() not in ("dockerfunc", "func"):
            return []
        result = []
        for f in self.all():
            if "id" in conditions and f.id != conditions["id"]:
                continue
            if "name" in conditions and f.name.lower() != conditions["name"].lower():
                continue
            if "namespace" in conditions and f.namespace.lower() != conditions["namespace"].rstrip(":").lower():
                continue
            if "nq_name" in conditions and f.nq_name.lower() != conditions["nq_name"].lower():
                continue
            result.append(f)
        return result

    def resolve(self, func: object) -> DockerFunc | None:
        """The function a client's FuncCall names: by id, then by namespace and name (or an `nqName`)."""
        if isinstance(func, str):
            namespace, _, name = func.rpartition(":")
            return self.find(namespace, name) if namespace else None
        if not isinstance(func, dict):
            return None
        if isinstance(func.get("id"), str):
            found = self.by_id(func["id"])
            if found:
                return found
        func_name, func_namespace = func.get("name"), func.get("namespace")
        if isinstance(func_name, str) and isinstance(func_namespace, str):
            return self.find(func_namespace, func_name)
        if isinstance(func.get("nqName"), str):
            return self.resolve(func["nqName"])
        return None
