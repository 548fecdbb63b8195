from __future__ import annotations

import json

import pytest

from grokemu.services.environment import (CredentialsRefused, EntityNotFound, build_environment,
                                          entities_from_files)

CONN = {"name": "Moltrack", "dataSource": "Postgres", "parameters": {"server": "db", "db": "moltrack"},
        "credentials": {"parameters": {"login": "u", "password": "p"}}}
PUBLIC = {"name": "Open", "dataSource": "Files", "parameters": {"dir": "/x"}}
OWN = entities_from_files({"connections/moltrack.json": json.dumps(CONN), "connections/readme.txt": "x"})
OTHER = entities_from_files({"connections/open.json": json.dumps(PUBLIC), "connections/m.json": json.dumps(CONN)})


def find(ref):
    return ("@datagrok/other", OTHER) if ref.lower() == "other" else None


def env(values):
    return build_environment(api_url="http://h/api", user_token="tok", env=values, own_package="@datagrok/moltrack",
                             find_package=find, own_entities=OWN)


def test_order_and_injected_names():
    result = env({"B": "2", "A": "1"})
    assert list(result) == ["DATAGROK_API_URL", "USER_API_KEY", "B", "A"]
    assert result["DATAGROK_API_URL"] == "http://h/api" and result["USER_API_KEY"] == "tok"


def test_short_form_renders_own_entity_with_credentials():
    rendered = json.loads(env({"db": "#{x.moltrack}"})["db"])
    assert rendered["credentials"]["parameters"]["password"] == "p" and rendered["#type"] == "DataConnection"


def test_long_form_other_package_without_credentials_is_fine_and_embedded_text_kept():
    value = env({"cfg": "conn=#{x.Other:open};"})["cfg"]
    assert value.startswith("conn=") and json.loads(value[5:-1])["parameters"] == {"dir": "/x"}


def test_other_package_credentials_are_refused_naming_the_entity():
    with pytest.raises(CredentialsRefused, match="@datagrok/other:Moltrack"):
        env({"db": "#{x.Other:Moltrack}"})


def test_unknown_entity_or_package():
    with pytest.raises(EntityNotFound, match=r"no connection or database named nothing in package "
                                             r"@datagrok/moltrack .*it has: Moltrack"):
        env({"db": "#{x.nothing}"})
    with pytest.raises(EntityNotFound, match="not published"):
        env({"db": "#{x.Ghost:thing}"})


def test_short_form_names_the_packages_own_database():
    from grokemu.services.environment import databases_from_paths, render_value

    dbs = databases_from_paths(["databases/todo/000_init.sql", "databases/readme.md", "package.json"], "@x/demo")
    assert [d["name"] for d in dbs] == ["todo"]
    rendered = json.loads(render_value("#{x.todo}", "@x/demo", lambda ref: None, dbs))
    assert rendered == {"#type": "DataConnection", "name": "todo", "friendlyName": "todo", "dataSource": "Postgres",
                        "namespace": "@x/demo", "parameters": {"db": "todo"}}
