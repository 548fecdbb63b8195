"""Container environment as Datagrok injects it (docs/datagrok-api.md §4.2-4.3).

Order: DATAGROK_API_URL, USER_API_KEY, then container.json `env`/`environmentVars` last, with entity expressions
rendered server-side: `#{x.Package:Entity}` or the same-package short form `#{x.entity}` become the JSON of the
named entity. Credentials are rendered only for entities of the container's own package ("credentials for the
connection are passed only within the same package", how-to); reading another package's credentials is an error.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from grokemu.domain.errors import BadRequest, Forbidden
from grokemu.domain.model import remove_scope
from grokemu.domain.ports import PackageFiles, Store

_EXPRESSION = re.compile(r"#\{x\.(?:([^:{}]+):)?([^{}]+)\}")


class EntityNotFound(BadRequest):
    pass


class CredentialsRefused(Forbidden):
    pass


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def package_matches(package_name: str, friendly_name: str | None, wanted: str) -> bool:
    w = _norm(wanted)
    return w in (_norm(remove_scope(package_name)), _norm(friendly_name or ""), _norm(package_name))


def render_value(value: str, own_package: str, find_package: Callable[[str], tuple[str, list[dict]] | None],
                 own_entities: list[dict]) -> str:
    def replace(m: re.Match) -> str:
        package_ref, entity_ref = m.group(1), m.group(2).strip()
        if package_ref:
            found = find_package(package_ref.strip())
            if found is None:
                raise EntityNotFound(f"Environment expression {m.group(0)}: package {package_ref} is not published")
            package_name, entities = found
        else:
            package_name, entities = own_package, own_entities
        entity = next((e for e in entities if _norm(e.get("name", "")) == _norm(entity_ref)
                       or _norm(e.get("#file", "")) == _norm(entity_ref)), None)
        if entity is None:
            known = ", ".join(sorted({e.get("name") or e.get("#file", "") for e in entities})) or "none"
            raise EntityNotFound(f"Environment expression {m.group(0)}: no connection or database named "
                                 f"{entity_ref} in package {package_name} (looked up its connections/*.json and "
                                 f"databases/<name>/ folders; it has: {known})")
        rendered = {k: v for k, v in entity.items() if k != "#file"}
        if package_name != own_package and rendered.get("credentials"):
            raise CredentialsRefused(
                f"Environment expression {m.group(0)}: {package_name}:{entity.get('name', entity_ref)} has "
                f"credentials, which are passed only to containers of package {package_name}, not {own_package}")
        return json.dumps(rendered)

    return _EXPRESSION.sub(replace, value)


def build_environment(*, api_url: str, user_token: str, env: Mapping[str, str], own_package: str,
                      find_package: Callable[[str], tuple[str, list[dict]] | None],
                      own_entities: list[dict], worker: Mapping[str, str] | None = None) -> dict[str, str]:
    """`worker`: a Celery worker's broker, pipe and queue variables, before container.json's own."""
    result = {"DATAGROK_API_URL": api_url, "USER_API_KEY": user_token, **(worker or {})}
    for name, value in env.items():
        result[name] = render_value(str(value), own_package, find_package, own_entities)
    return result


def entities_from_files(files: Mapping[str, Any]) -> list[dict]:
    """The package's entities an expression can name: connections/*.json (DataConnection)."""
    result = []
    for path, data in files.items():
        if path.startswith("connections/") and path.endswith(".json") and path.count("/") == 1:
            try:
                entity = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(entity, dict):
                entity.setdefault("#type", "DataConnection")
                entity["#file"] = path[len("connections/"):-len(".json")]
                result.append(entity)
    return result


def databases_from_paths(paths: Iterable[str], package_name: str) -> list[dict]:
    """A package's own databases (`databases/<name>/*.sql`): Datagrok creates a connection for each, which
    `#{x.<name>}` names (NodeJSDemo: `databases/todo/` and `#{x.todo}`; docs/real-plugins.md). grokemu runs no
    database server, so the connection carries what is known: its name, the package, the database name."""
    names = sorted({p.split("/")[1] for p in paths if p.startswith("databases/") and p.count("/") >= 2
                    and p.split("/")[1]})
    return [{"#type": "DataConnection", "name": name, "friendlyName": name, "dataSource": "Postgres",
             "namespace": package_name, "parameters": {"db": name}, "#file": name} for name in names]


def package_entities(files: PackageFiles, record: Mapping[str, Any] | None) -> list[dict]:
    """The entities of the package whose database row is `record` (none for no row): its connections, then
    connections for its own databases whose names no connection takes."""
    if not record:
        return []
    entities = entities_from_files(files.connection_files(record))
    taken = {_norm(e.get("name", "")) for e in entities} | {_norm(e.get("#file", "")) for e in entities}
    databases = databases_from_paths(files.current_files(record), str(record.get("name", "")))
    return entities + [d for d in databases if _norm(d["name"]) not in taken]


def find_published_package(store: Store, files: PackageFiles, ref: str) -> tuple[str, list[dict]] | None:
    """A published package by any of its names (`MolTrack`, `moltrack`, `@datagrok/moltrack`), with its entities."""
    for record in store.list_packages():
        friendly_name = record.get("friendlyName")
        if package_matches(record["name"], friendly_name if isinstance(friendly_name, str) else None, ref):
            return record["name"], package_entities(files, record)
    return None
