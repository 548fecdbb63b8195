"""`docker.getAvailableServices()` and `docker.getServiceLogs(name, limit)`: Datagrok lists the services of its
deployment and shows their logs (docs/datagrok-api.md §0). grokemu plays three of them in one process
(docs/design.md "What grokemu is"), so it names those three and keeps the last log records of each, by logger.
"""
from __future__ import annotations

import logging
import threading
from collections import deque

from grokemu.domain.errors import NotFound

# service name -> the loggers whose records are that service's logs (prefix match; "grokemu" catches the rest)
SERVICES = {
    "grok_spawner": ("grokemu.services.spawner", "grokemu.services.images", "grokemu.services.run_specs",
                     "grokemu.adapters.docker_orchestrator"),
    "grok_registry_proxy": ("grokemu.services.registry", "grokemu.web.registry", "grokemu.services.tokens"),
    "datlas": ("grokemu",),
}
KEPT = 2000  # records kept per service


class ServiceLogs(logging.Handler):
    def __init__(self, kept: int = KEPT):
        super().__init__(logging.INFO)
        self._lines: dict[str, deque[str]] = {name: deque(maxlen=kept) for name in SERVICES}
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a log record that cannot be formatted is not worth failing over
            return
        service = next((name for name, prefixes in SERVICES.items()
                        if any(record.name == p or record.name.startswith(p + ".") for p in prefixes)), None)
        if service is not None:
            with self._guard:
                self._lines[service].append(line)

    def services(self) -> list[str]:
        return list(SERVICES)

    def logs(self, service: str, limit: int) -> str:
        if service not in self._lines:
            raise NotFound(f"No service {service}; grokemu runs {', '.join(SERVICES)}")
        with self._guard:
            lines = list(self._lines[service])
        return "\n".join(lines[-limit:] if limit > 0 else lines)


_installed: ServiceLogs | None = None
_install_guard = threading.Lock()


def service_logs() -> ServiceLogs:
    """The one handler, attached to the `grokemu` logger on first use."""
    global _installed
    with _install_guard:
        if _installed is None:
            _installed = ServiceLogs()
        root = logging.getLogger("grokemu")
        if _installed not in root.handlers:  # attached again after a logging reconfiguration dropped it
            root.addHandler(_installed)
        return _installed
