"""The layer rules of docs/design.md as a check: import-linter reads the contracts in pyproject.toml (domain without
frameworks or transport, services without adapters or the web layer, adapters without services, no cycles) and
this test fails, naming the offending import chain, when a change breaks one."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_layer_contracts_hold(capsys, monkeypatch):
    lint = pytest.importorskip("importlinter.cli", reason="import-linter is a test dependency (pip install -e '.[test]')")
    monkeypatch.chdir(ROOT)
    code = lint.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "BROKEN" not in report and "KEPT" in report
