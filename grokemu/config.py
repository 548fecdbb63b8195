"""Settings: embedded defaults < YAML file < GROKEMU_* environment < command-line flags.

Every setting has one name used in all three places: `data_dir` is `data_dir:` in the YAML file,
`GROKEMU_DATA_DIR` in the environment and `--data-dir` on the command line.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A setting has a value grokemu cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path.home() / ".grokemu"
    # Dev key -> user login. Datagrok's local stands use the key `admin`.
    dev_keys: Mapping[str, str] = field(default_factory=lambda: {"admin": "admin"})
    # The address containers use to reach grokemu's API (DATAGROK_API_URL); derived from `port` when empty.
    container_api_url: str = ""
    container_status_timeout: float = 300.0  # seconds; Datagrok's containerStatusTimeoutMinutes = 5
    # seconds; Datagrok's proxyRequestTimeout: 300000 ms on the docker-containers page (under-the-hood), which grokemu
    # follows; configuration.md says 60000 ms (docs/datagrok-api.md §4.4)
    proxy_request_timeout: float = 300.0
    # seconds a running container without a HEALTHCHECK gets for its port to accept before it is reported `started`
    # anyway, with a warning (databases, queue workers: docs/real-plugins.md)
    listen_timeout: float = 30.0
    # on SIGTERM/Ctrl-C remove the plugin containers (and the broker) grokemu runs, and run again at the next start
    # those that were running: the compose stand sets it, so `docker compose down` leaves nothing (docs/design.md)
    remove_containers_on_exit: bool = False
    # seconds a container gets between SIGTERM and SIGKILL on every stop: by a user, idle shutdown, a replacement, a
    # reset (Docker's `stop -t`, a Swarm service's stop_grace_period); Docker's default 10 (docs/faults.md §2)
    stop_timeout: float = 10.0
    scheduler_interval: float = 0.2  # seconds between background passes
    ignore_gpu: bool = False  # run gpu containers without a GPU, as Datagrok's CI does by stripping `gpu`
    threads: int = 8  # waitress worker threads (HTTP only; WebSockets run on their own threads)
    max_request_body_size: int = 64 * 1024**3  # registry layers can be many GB; waitress spools them to disk
    log_level: str = "INFO"
    instance: str = "default"  # label value that tells this grokemu's containers from another's
    # A Docker network grokemu runs plugin containers on, publishing no port, reaching them at their address on it
    # (created when missing, joined when grokemu itself runs in a container: the compose stand). Empty: publish on
    # 127.0.0.1 (decision 4). Containers then reach grokemu at its address on that network (DATAGROK_API_URL).
    docker_network: str = ""
    # Where plugin containers run (docs/swarm.md): `docker` (this host's daemon) or `swarm` (one Swarm service per
    # container, on `swarm_network`: a swarm-scoped bridge when grokemu runs on a single node's host, an attachable
    # overlay when grokemu itself runs in the swarm, compose/grokemu-stack.yml)
    orchestrator: str = "docker"
    swarm_network: str = ""  # default: grokemu-swarm (grokemu-swarm-<instance> for another instance)
    swarm_network_driver: str = "bridge"  # bridge | overlay
    # `host:port` under which every swarm node reaches grokemu's registry: images pushed there (`grok publish` with
    # --registry) run as `<swarm_registry>/<repository>@<digest>`, so any node can pull them. Empty: the image the
    # manager's daemon holds (one node)
    swarm_registry: str = ""

    # -- queue functions: Celery workers through RabbitMQ (docs/queue-functions.md) -----------------------------------
    # an existing broker, `amqp://user:pass@host:5672`; empty: grokemu runs `broker_image` itself when first needed
    amqp_url: str = ""
    amqp_container_url: str = ""  # how plugin containers reach `amqp_url` when not under the same name
    broker_image: str = "rabbitmq:4.0.5-management"  # Datagrok's compose pins this one
    # DATAGROK_PIPE_HOST/PORT: where workers reach grokemu's pipe; empty: the host of DATAGROK_API_URL and its port
    pipe_host: str = ""
    pipe_port: int = 0
    task_pickup_timeout: float = 60.0  # seconds a worker has to accept a call (Datagrok's taskPickupTimeout)
    cancel_grace: float = 10.0  # seconds a canceled running task gets to report `Canceled` before grokemu does
    call_batch_size: int = 2_048_000  # aux.batchSize: the bytes of one dataframe chunk the worker sends
    max_call_frame_bytes: int = 16 * 1024**2  # one frame on the call socket or the pipe
    calls_kept: int = 50  # finished calls kept per container for the page
    # the request inspector (services/inspector/, docs/inspector.md): fetchProxy requests, WebSocket sessions and
    # queue calls kept per container, newest first; 0 switches recording off
    inspector_size: int = 200

    # -- who may drive grokemu (web/guard.py) ---------------------------------------------------------------------
    session_ttl: float = 12 * 3600.0  # seconds a session token (dev-key login, dashboard cookie) stays valid
    allowed_origins: tuple = ()  # extra browser origins allowed to call grokemu, e.g. `http://localhost:3000`
    allowed_hosts: tuple = ()  # extra names grokemu answers to in `Host` (DNS-rebinding guard)

    # -- input limits: a bad or huge request gets a 4xx, never a 500 or unbounded memory -------------------------
    max_package_bytes: int = 256 * 1024**2  # a package upload (the raw ZIP), checked before it is read
    max_package_unpacked_bytes: int = 1024**3  # all entries of a package ZIP, decompressed
    max_package_entries: int = 20_000  # entries in a package ZIP
    max_compression_ratio: float = 200.0  # uncompressed / compressed size of one ZIP entry (bigger than 1 MiB)
    max_api_body_bytes: int = 1024**2  # any other /api or /_grokemu body (JSON entities, logins)

    # -- server resources (server/) ---------------------------------------------------------------------------------
    connection_limit: int = 1000  # open HTTP connections waitress serves at once (poll(), no select() limit)
    channel_timeout: float = 120.0  # seconds an idle keep-alive connection is kept
    header_timeout: float = 30.0  # seconds a caller has to send a whole request head (slowloris)
    stream_timeout: float = 60.0  # seconds without progress before a handed-off upload or answer is cut
    websocket_idle_timeout: float = 3600.0  # seconds a WebSocket may carry nothing in either direction
    max_websockets: int = 256  # open WebSockets at once; more are refused with a clear error
    # handed-off proxied requests, uploads and big answers at once (more wait in waitress or get 503), and keep-alive
    # fetchProxy connections in the relay loop (more are closed when idle)
    max_streams: int = 64

    @property
    def api_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/api"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "grokemu.db"


def _url_host(host: str) -> str:
    # 127.0.0.1 / 0.0.0.0 are printed as localhost: Docker treats `localhost:PORT` as an insecure registry
    # and grok's config keys credentials by the exact host string, so one spelling everywhere matters.
    return "localhost" if host in ("127.0.0.1", "0.0.0.0", "localhost") else host


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if kind == "Path":
            return Path(os.path.expanduser(str(value)))
        if kind.startswith("Mapping"):
            return _parse_dev_keys(value)
        if kind == "tuple":
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"setting {name!r}: cannot use {value!r} ({e})") from None


def _parse_dev_keys(value: Any) -> dict[str, str]:
    """`admin` | `admin,key2=alice` | {key: login} | [key, ...]: a bare key logs in as `admin`."""
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        pairs = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            key, _, login = item.partition("=")
            pairs.append((key.strip(), (login or "admin").strip()))
    if not pairs or any(not k or not v for k, v in pairs):
        raise ValueError("need at least one dev key, each `key` or `key=login`")
    return dict(pairs)


def load_settings(
    config_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the sources in precedence order; later sources win, `None` means 'not given'."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    config_file = config_file or environ.get("GROKEMU_CONFIG")
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"config file {config_file}: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: expected a mapping of settings")
        unknown = set(loaded) - set(_FIELDS)
        if unknown:
            raise ConfigError(f"config file {config_file}: unknown settings {sorted(unknown)}")
        values.update(loaded)

    for name in _FIELDS:
        env_value = environ.get(f"GROKEMU_{name.upper()}")
        if env_value is not None:
            values[name] = env_value

    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = Settings(**{name: _coerce(name, value) for name, value in values.items()})
    for name, allowed in CHOICES.items():
        if getattr(settings, name) not in allowed:
            raise ConfigError(f"setting {name!r}: {getattr(settings, name)!r} is not one of {', '.join(allowed)}")
    return settings


CHOICES = {"orchestrator": ("docker", "swarm"), "swarm_network_driver": ("bridge", "overlay")}
