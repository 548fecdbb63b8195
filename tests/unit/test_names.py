"""Which container a name means (domain/names.py): the tiers the test kit, `grokemu logs` and /_grokemu/logs share."""
from __future__ import annotations

import pytest

from grokemu.domain.errors import BadRequest, NotFound
from grokemu.domain.names import AmbiguousContainer, UnknownContainer, container_matches, resolve_container


def container(cid, name, package, image_id, friendly="", docker_image=""):
    return {"id": cid, "name": name, "friendlyName": friendly, "package": {"name": package},
            "dockerfile": {"id": image_id}, "dockerImage": docker_image or f"datagrok/{name}:1.0.0"}


def image(iid, name, package, version="1.0.0", friendly=""):
    return {"id": iid, "name": name, "package": {"name": package}, "friendlyName": friendly,
            "dockerFullName": f"datagrok/{name}:{version}"}


ROOT = container("c-root", "heldout-root", "HeldoutRoot", "i-root", friendly="Heldout root")
SQUARES = container("c-sq", "squares-squares", "squares", "i-sq")
MULTI_A = container("c-a", "multi-api", "@acme/multi", "i-a")
MULTI_B = container("c-b", "multi-worker", "@acme/multi", "i-b")
OTHER_API = container("c-o", "other-api", "Other", "i-o")
CONTAINERS = [ROOT, SQUARES, MULTI_A, MULTI_B, OTHER_API]
IMAGES = [image("i-root", "heldout-root", "HeldoutRoot", friendly="Root image"),
          image("i-sq", "squares-squares", "squares"), image("i-a", "multi-api", "@acme/multi"), image("i-b", "multi-worker", "@acme/multi"),
          image("i-o", "other-api", "Other")]


@pytest.mark.parametrize("name, expected", [
    ("c-root", ROOT),                      # id
    ("heldout-root", ROOT),                # container name
    ("Heldout root", ROOT),                # friendly name
    ("HeldoutRoot", ROOT),                 # the package of one container (issue 20's example)
    ("i-root", ROOT),                      # image id
    ("Root image", ROOT),                  # image friendly name
    ("datagrok/heldout-root:1.0.0", ROOT),  # image reference
    ("squares", SQUARES),                  # docker folder and package name: the same container
    ("worker", MULTI_B),                   # docker folder
    ("multi-api", MULTI_A),
])
def test_a_name_finds_its_one_container(name, expected):
    assert resolve_container(name, CONTAINERS, IMAGES) is expected


def test_a_package_with_several_containers_is_ambiguous_and_lists_them():
    with pytest.raises(AmbiguousContainer) as raised:
        resolve_container("@acme/multi", CONTAINERS, IMAGES)
    message = str(raised.value)
    assert "'@acme/multi' names 2 containers" in message
    assert "'multi-api' (package @acme/multi, id c-a)" in message and "'multi-worker'" in message
    assert "name or id" in message
    assert raised.value.candidates == [MULTI_A, MULTI_B]
    assert isinstance(raised.value, LookupError) and isinstance(raised.value, BadRequest)  # 400 on the wire


def test_a_docker_folder_in_two_packages_is_ambiguous():
    with pytest.raises(AmbiguousContainer, match="'api' names 2 containers: 'multi-api'.*'other-api'"):
        resolve_container("api", CONTAINERS, IMAGES)


def test_an_exact_name_wins_over_a_folder_or_package_that_also_matches():
    clash = container("c-x", "api", "Pkg", "i-x")
    assert resolve_container("api", CONTAINERS + [clash], IMAGES) is clash


def test_unknown_names_say_what_there_is():
    with pytest.raises(UnknownContainer) as raised:
        resolve_container("nope", CONTAINERS, IMAGES)
    assert str(raised.value).startswith("no container 'nope' among ['heldout-root', 'squares-squares'")
    assert isinstance(raised.value, LookupError) and isinstance(raised.value, NotFound)  # 404 on the wire
    with pytest.raises(UnknownContainer):
        resolve_container("", CONTAINERS, IMAGES)
    many = [container(f"c{i}", f"pkg{i}-x", f"pkg{i}", "i") for i in range(30)]
    with pytest.raises(UnknownContainer, match=r"\.\.\. 10 more"):
        resolve_container("nope", many)


def test_without_images_names_of_containers_still_resolve():
    assert container_matches("HeldoutRoot", CONTAINERS) == [ROOT]
    assert container_matches("i-root", CONTAINERS) == []
