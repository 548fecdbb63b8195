from __future__ import annotations

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from grokemu.app import create_app
from grokemu.config import Settings
from grokemu.domain.clock import ManualClock
from grokemu.web.context import app_context


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def orchestrator():
    return MemoryOrchestrator()


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data", port=8080, dev_keys={"admin": "admin", "k2": "alice"},
                    container_status_timeout=300)


@pytest.fixture
def app(settings, orchestrator, clock):
    return create_app(settings, orchestrator=orchestrator, clock=clock, background=False)


@pytest.fixture
def ctx(app):
    return app_context(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(client):
    resp = client.post("/api/users/login/dev", headers={"Authorization": "Dev admin"})
    assert resp.status_code == 200
    return resp.get_json()["token"]


from tests.helpers import swarm  # noqa: E402,F401  (a session fixture: a single-node swarm, docs/swarm.md)
