"""Network calls of the Docker orchestrator (adapters/docker_orchestrator/): the bridge's gateway, the shared
`docker_network` grokemu joins in the compose stand, a RunSpec's own network, and removing labelled ones."""
from __future__ import annotations

import ipaddress
import socket

from docker.errors import APIError, DockerException, NotFound

from grokemu.adapters.docker_orchestrator.daemon import DaemonConnection, log, translates_daemon_errors
from grokemu.domain.errors import DockerUnavailable


@translates_daemon_errors
class NetworkCalls(DaemonConnection):
    def bridge_gateway(self) -> str | None:
        """The host's address on Docker's default bridge: where `host.docker.internal` (host-gateway) points."""
        try:
            config = self.client.networks.get("bridge").attrs["IPAM"]["Config"] or []
        except (DockerException, KeyError, DockerUnavailable):
            return None
        for entry in config:
            if entry.get("Gateway"):
                return entry["Gateway"]
            if entry.get("Subnet") and ":" not in entry["Subnet"]:
                # Engines that leave Gateway out use the subnet's first address (docker0 is 172.17.0.1/16).
                return str(next(ipaddress.ip_network(entry["Subnet"], strict=False).hosts()))
        return None

    # the shared network (docker_network) --------------------------------------------------------------------------
    def ensure_network(self, labels: dict[str, str]) -> dict:
        """Create `self.network` (a bridge network carrying `labels`) unless it exists; its attributes."""
        name = self._shared_network()
        try:
            return self.client.networks.get(name).attrs
        except NotFound:
            pass
        try:
            return self.client.networks.create(name, driver="bridge", labels=labels, check_duplicate=True).attrs
        except APIError as e:
            if e.status_code == 409:  # created meanwhile (another grokemu, compose)
                return self.client.networks.get(name).attrs
            raise

    def _shared_network(self) -> str:
        if self.network is None:
            raise ValueError("no shared network: the docker_network setting is empty")
        return self.network

    @staticmethod
    def network_gateway(attrs: dict) -> str | None:
        for entry in (attrs.get("IPAM") or {}).get("Config") or []:
            if entry.get("Gateway"):
                return entry["Gateway"].split("/")[0]
            if entry.get("Subnet") and ":" not in entry["Subnet"]:
                return str(next(ipaddress.ip_network(entry["Subnet"], strict=False).hosts()))
        return None

    def own_container(self):
        """grokemu's own container when it runs in one on this daemon (the compose stand), else None."""
        import os

        if not os.path.exists("/.dockerenv"):
            return None
        try:
            return self.client.containers.get(socket.gethostname())
        except (DockerException, DockerUnavailable):
            return None

    def join_network(self, container) -> tuple[str | None, list[str]]:
        """Connect grokemu's own container to `self.network` (unless it is on it already). Its address there, and
        the gateways of every network it is on (the host's side: where the published port's traffic comes from)."""
        container.reload()
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        if self.network not in networks:
            self.client.networks.get(self._shared_network()).connect(container)
            container.reload()
            networks = container.attrs["NetworkSettings"]["Networks"]
        gateways = [n.get("Gateway") for n in networks.values() if n.get("Gateway")]
        return (networks.get(self.network) or {}).get("IPAddress") or None, gateways

    # a RunSpec's own network, and removing them ---------------------------------------------------------------
    def _ensure_own_network(self, name: str, labels: dict[str, str]) -> None:
        """RunSpec.network: a bridge network carrying grokemu's labels (so reset removes it), created once."""
        with self._network_lock:  # Docker may accept two networks of one name: create it once
            if self.client.networks.list(names=[name]):
                return
            own = {k: v for k, v in labels.items() if k in ("grokemu.managed", "grokemu.instance")}
            self.client.networks.create(name, driver="bridge", labels=own)

    def remove_networks(self, labels: dict[str, str]) -> int:
        removed = 0
        for network in self.client.networks.list(filters={"label": [f"{k}={v}" for k, v in labels.items()]}):
            if network.name == self.network:
                continue  # the stand's shared network is the stand's own to remove
            try:
                network.remove()
                removed += 1
            except (APIError, NotFound) as e:
                log.info("network %s not removed: %s", network.name, e)
        return removed
