"""fetchProxy / webSocketProxy routes (placeholder until the proxy issue lands)."""
from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("proxy", __name__, url_prefix="/api/docker/containers")


def register_websockets(sock) -> None:
    pass
