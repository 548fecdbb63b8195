"""Does the app in a container accept connections (adapters/docker_orchestrator/): plain socket probes, no SDK."""
from __future__ import annotations

import socket


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool | None:
    """True when a TCP connection to host:port is accepted, False when it is refused, None when the address cannot
    be reached at all (no route to a container network, as on Docker Desktop)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None


def backend_accepts(host: str, port: int, timeout: float = 0.3) -> bool:
    """Through the published port when the container's own address is unreachable. Docker's userland proxy accepts
    at once, then closes the connection when the app inside refuses it; when the app accepted, the connection stays
    open. So: bytes or silence within `timeout` = the app accepted (a database or an HTTP server waiting for a
    request); an immediate close = nothing listens. Without a userland proxy, a refusal is a refusal."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            try:
                return bool(sock.recv(1))
            except TimeoutError:
                return True
    except OSError:
        return False


def http_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something on host:port answers an HTTP request with any status.

    A TCP connect is not enough: Docker's userland proxy accepts on the published port before the app inside
    listens, then closes the connection. So send `HEAD /` and wait for the first bytes of a reply."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: grokemu-probe\r\n\r\n")
            return bool(sock.recv(1))
    except OSError:
        return False
