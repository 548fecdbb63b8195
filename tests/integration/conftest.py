"""Fixtures shared by the integration suites (the Flask app, client and fakes come from tests/conftest.py)."""
from tests.fake_upstream import upstream  # noqa: F401  (a fixture: the container stand-in on loopback)
