from __future__ import annotations

import uuid

import pytest

from grokemu.adapters.memory_orchestrator import MemoryOrchestrator
from tests.contracts.orchestrator import OrchestratorContract


class TestMemoryOrchestrator(OrchestratorContract):
    @pytest.fixture
    def orch(self):
        return MemoryOrchestrator()

    @pytest.fixture
    def base_image(self, orch):
        orch.add_image("python:3.12-slim", [])
        return "python:3.12-slim"

    @pytest.fixture
    def labels(self):
        return {"grokemu.test": uuid.uuid4().hex}

    def emit_output(self, orch, running, marker):
        orch.emit(running.id, f"GET /{marker} 404\n")
