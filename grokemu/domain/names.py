"""Which container a name means, the same way everywhere a person types one: the test kit's `grokemu.container(...)`
(grokemu/testing/), `grokemu logs NAME` and `GET /_grokemu/logs?container=NAME` (web/admin.py).

It works on the wire shapes of the entities (`DockerContainer.to_wire()` / `DockerImage.to_wire()`, as
`GET /api/docker/containers` and `/images` return them), so a client with only the HTTP API and the server with
its store resolve alike. Standard library only: the kit imports it.

A name is tried in tiers, most specific first; the first tier that matches anything decides:

1. exactly one entity: the container's id, name (`squares-squares`) or friendly name; the image's id, name,
   `dockerFullName` or friendly name (its containers), or the image reference a container runs;
2. the docker folder: a container name that ends in `-<name>` (`squares` for `dockerfiles/squares/`);
3. the package name (`HeldoutRoot`, `@acme/pkg`): its containers.

Within the deciding tier, more than one container is ambiguous: the error lists them all.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from grokemu.domain.errors import BadRequest, NotFound

MAX_LISTED = 20  # names listed in an "unknown container" message


class UnknownContainer(NotFound, LookupError):
    """No container is known by this name (404 on the wire; a LookupError to the test kit)."""


class AmbiguousContainer(BadRequest, LookupError):
    """The name matches several containers (400 on the wire); `candidates` are their wire shapes."""

    def __init__(self, message: str, candidates: list[Mapping]):
        super().__init__(message)
        self.candidates = candidates


def _package(entity: Mapping) -> str:
    return (entity.get("package") or {}).get("name") or entity.get("namespace") or ""


def _image_names(image: Mapping) -> set[str]:
    return {v for v in (image.get("id"), image.get("name"), image.get("dockerFullName"), image.get("friendlyName"))
            if v}


def container_matches(name: str, containers: Iterable[Mapping], images: Iterable[Mapping] = ()) -> list[Mapping]:
    """The containers `name` means, from the first tier (see the module docstring) that matches any; [] if none."""
    if not name:
        return []
    containers = list(containers)
    named_images = {i.get("id") for i in images if name in _image_names(i)}
    tiers = (
        lambda c: name in (c.get("id"), c.get("name"), c.get("friendlyName"), c.get("dockerImage"))
        or (c.get("dockerfile") or {}).get("id") in named_images,
        lambda c: str(c.get("name") or "").endswith(f"-{name}"),
        lambda c: _package(c) == name,
    )
    for matches in tiers:
        found: dict[Any, Mapping] = {}  # by id, as the wire gives it
        for c in containers:
            if matches(c):
                found.setdefault(c.get("id"), c)
        if found:
            return list(found.values())
    return []


def describe(container: Mapping) -> str:
    return f"{container.get('name')!r} (package {_package(container)}, id {container.get('id')})"


def resolve_container(name: str, containers: Iterable[Mapping], images: Iterable[Mapping] = ()) -> Mapping:
    """The one container `name` means: UnknownContainer when none, AmbiguousContainer (listing them) when several."""
    containers = list(containers)
    found = container_matches(name, containers, images)
    if len(found) == 1:
        return found[0]
    if not found:
        names = [c.get("name") for c in containers]
        listed = names[:MAX_LISTED] + ([f"... {len(names) - MAX_LISTED} more"] if len(names) > MAX_LISTED else [])
        raise UnknownContainer(f"no container {name!r} among {listed} (a container id, container name, "
                               f"docker folder, package or image name)")
    raise AmbiguousContainer(f"{name!r} names {len(found)} containers: " + ", ".join(map(describe, found))
                             + "; use the container's name or id", found)
