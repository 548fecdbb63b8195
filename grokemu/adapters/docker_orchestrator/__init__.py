"""The Orchestrator port on the host Docker daemon, through the docker SDK. The only module that imports `docker`.

Containers publish their one port on 127.0.0.1 with an ephemeral host port (docs/design.md decision 4) and carry
grokemu's labels so a restart can re-adopt them and nothing is orphaned. With a `network` (the `docker_network`
setting: grokemu in the compose stand, where 127.0.0.1 is grokemu's own container) they publish nothing: they run on
that Docker network and grokemu reaches them at their address on it (`RunningContainer.endpoint`).

The package, from the bottom up: daemon.py (the connection: two clients with bounded waits, and the one translation
of "the daemon is gone" into DockerUnavailable), probes.py (does an app accept connections), images.py and
networks.py (the image and network calls), containers.py (DockerOrchestrator: running, inspecting, stopping and
removing containers, and their logs, on top of the other two).
"""
from grokemu.adapters.docker_orchestrator.containers import (
    APP_PORT_LABEL,
    NETWORK_LABEL,
    DockerOrchestrator,
    EmptyLogStream,
)
from grokemu.adapters.docker_orchestrator.daemon import (
    CALL_TIMEOUT,
    PING_TIMEOUT,
    daemon_gone,
    translates_daemon_errors,
)
from grokemu.adapters.docker_orchestrator.probes import backend_accepts, http_answers, port_accepts

__all__ = ["APP_PORT_LABEL", "CALL_TIMEOUT", "NETWORK_LABEL", "PING_TIMEOUT", "DockerOrchestrator", "EmptyLogStream",
           "backend_accepts", "daemon_gone", "http_answers", "port_accepts", "translates_daemon_errors"]
