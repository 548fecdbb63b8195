"""`grokemu up` (serve; `--demo` publishes the samples), `grokemu publish DIR`, `grokemu registry gc`.
Settings precedence: defaults < YAML file < GROKEMU_* env < flags."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from grokemu import __version__
from grokemu.config import ConfigError, load_settings

EPILOG = """settings precedence (later wins): embedded defaults < YAML file (--config or GROKEMU_CONFIG)
< GROKEMU_<NAME> environment variables < command-line flags. Example: --data-dir, GROKEMU_DATA_DIR, data_dir:."""


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (same names as the flags, with underscores)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for the API, registry and dashboard (default 8080; 0 = any free)")
    p.add_argument("--data-dir", help="where state, packages, registry blobs and keys live (default ~/.grokemu)")
    p.add_argument("--dev-key", dest="dev_keys", action="append",
                   help="dev key, or KEY=LOGIN; repeat for several users (default: admin)")
    p.add_argument("--ignore-gpu", action="store_true", default=None,
                   help="run containers that ask for a GPU without one (as Datagrok's CI strips `gpu`)")
    p.add_argument("--container-status-timeout", type=float,
                   help="seconds a container may stay in a transient status before it becomes error (default 300)")
    p.add_argument("--proxy-request-timeout", type=float,
                   help="seconds a proxied request waits for its container to start (default 60)")
    p.add_argument("--instance", help="label value that tells this grokemu's containers from another's")
    p.add_argument("--docker-network", help="run plugin containers on this Docker network (created or joined), "
                                            "publishing no port; grokemu reaches them at their address on it")
    p.add_argument("--orchestrator", choices=("docker", "swarm"),
                   help="run plugin containers on this host's Docker daemon (default) or as Docker Swarm services")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")


def _load(args):
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir", "dev_keys", "ignore_gpu",
                                                      "container_status_timeout", "proxy_request_timeout",
                                                      "instance", "log_level", "docker_network", "orchestrator")}
    return load_settings(args.config, overrides=overrides)


def _orchestrator(settings):
    """The Orchestrator adapter the settings name (docs/swarm.md for `swarm`)."""
    if settings.orchestrator == "swarm":
        from grokemu.adapters.swarm_orchestrator import SwarmOrchestrator

        default = "grokemu-swarm" if settings.instance == "default" else f"grokemu-swarm-{settings.instance}"
        return SwarmOrchestrator(network=settings.swarm_network or default,
                                 network_driver=settings.swarm_network_driver,
                                 in_swarm=settings.swarm_network_driver == "overlay")
    from grokemu.adapters.docker_orchestrator import DockerOrchestrator

    return DockerOrchestrator(network=settings.docker_network or None)


def cmd_up(args) -> int:
    from grokemu.app import create_app
    from grokemu.server import bind, create_server, run_forever
    from grokemu.web.context import app_context
    from grokemu.web import proxy

    settings = _load(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    orchestrator = _orchestrator(settings)
    docker_ok = orchestrator.ping()
    if docker_ok and settings.orchestrator == "swarm":
        problem = orchestrator.swarm_problem()
        if problem:  # e.g. "run `docker swarm init`": nothing could ever start, so say it now
            print(f"grokemu: {problem}", file=sys.stderr)
            return 2
    host_peers = None  # grokemu in a container on the docker_network: the peers that are the host (guard rules)
    guard_names: list[str] = []
    derived_api_host = None
    if docker_ok and settings.docker_network:
        try:
            network = orchestrator.ensure_network({"grokemu.instance": settings.instance})
            me = orchestrator.own_container()
            if me is not None:
                # One socket for the host (the published port arrives from a network's gateway) and the containers
                # (any other peer on the network): the server tells them apart by peer (server/listener.py).
                own_ip, host_peers = orchestrator.join_network(me)
                derived_api_host = own_ip
                guard_names.append(own_ip or "")
                extra = []
            else:
                # grokemu on the host: containers reach it at the host's address on that network, a bridge listener.
                gateway = orchestrator.network_gateway(network)
                extra = [gateway] if gateway and gateway != settings.host else []
                derived_api_host = gateway
        except Exception as e:  # noqa: BLE001 - say what went wrong and stop: containers could not reach grokemu
            print(f"grokemu: cannot use Docker network {settings.docker_network!r}: {e}", file=sys.stderr)
            return 1
    else:
        # Containers reach the API at host.docker.internal, i.e. the Docker bridge gateway: listen there too
        # (reachable from containers and this host only; never 0.0.0.0).
        gateway = orchestrator.bridge_gateway() if docker_ok and not settings.container_api_url else None
        extra = [gateway] if gateway and gateway != settings.host else []
    try:
        sockets = bind(settings.host, settings.port, extra)
    except OSError as e:
        print(f"grokemu: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 1
    port = sockets[0].getsockname()[1]
    from dataclasses import replace

    if port != settings.port:  # --port 0: the URLs printed and handed to containers use the real port
        settings = replace(settings, port=port)
    if derived_api_host and not settings.container_api_url:
        settings = replace(settings, container_api_url=f"http://{derived_api_host}:{port}/api")
    app = create_app(settings, orchestrator=orchestrator, bridge_addresses=tuple(extra + [n for n in guard_names if n]))
    server = create_server(app, sockets, settings, bridge_addresses=extra, streamed_prefixes=(proxy.HTTP_PREFIX,),
                           preflight=app_context(app).guard.preflight, host_peers=host_peers)
    context = app_context(app)
    context.scheduler.start()

    base = settings.api_url[: -len("/api")]
    print(f"grokemu {__version__} serving {base} (data in {settings.data_dir})")
    print(f"  API {settings.api_url}   registry {base.split('//', 1)[1]}   dashboard {base}/")
    if docker_ok:
        reach = f", containers reach the API at {context.spawner.run_specs.container_api_url()}" if len(sockets) > 1 or \
            settings.container_api_url else ""
        print(f"  Docker daemon: reachable{reach}")
    else:
        print("  Docker daemon: UNREACHABLE. Publishing and the API work; images stay 'pending validation' and "
              "containers cannot start until Docker is back.")
    key = next(iter(settings.dev_keys))
    print("  Point the grok CLI here:")
    print(f"    grok config add --alias grokemu --server {settings.api_url} --key {key} --default", flush=True)

    if getattr(args, "demo", False):
        import threading

        threading.Thread(target=_demo, args=(settings, key, docker_ok), name="grokemu-demo", daemon=True).start()
    run_forever(server, on_stop=context.scheduler.stop)
    return 0


def _samples_dir() -> Path | None:
    """samples/ of a source checkout (the demo publishes every package in it)."""
    for candidate in (Path.cwd() / "samples", Path(__file__).resolve().parents[1] / "samples"):
        if candidate.is_dir():
            return candidate
    return None


def _demo(settings, key: str, docker_ok: bool) -> None:
    """`grokemu up --demo`: publish the samples, start their containers, print what to open."""
    from grokemu.client import Client, GrokemuError

    samples = _samples_dir()
    if samples is None or not docker_ok:
        print("demo: " + ("no samples/ folder here" if samples is None else "Docker is unreachable") +
              ": nothing published", flush=True)
        return
    base = settings.api_url[: -len("/api")]
    client = Client(f"http://127.0.0.1:{settings.port}", key)
    for _ in range(100):
        if client.healthy():
            break
        time.sleep(0.1)
    lines = []
    for folder in sorted(p for p in samples.iterdir() if (p / "package.json").is_file()):
        try:
            package, _ = client.publish(folder, progress=lambda m: print(f"demo: {m}", flush=True))
            for c in client.containers(package):
                c = client.run(c["id"])
                lines.append(f"  {c['name']}: {c['status']}   {base}/api/docker/containers/proxy/{c['id']}/")
        except GrokemuError as e:
            print(f"demo: {folder.name} failed: {e}\n{getattr(e, 'logs', '')}", flush=True)
    print("demo ready. Open the dashboard and sign in with the dev key "
          f"'{key}': {base}/", flush=True)
    print("  proxied URLs (send the session token from POST /api/users/login/dev in Authorization):", flush=True)
    for line in lines:
        print(line, flush=True)


def cmd_publish(args) -> int:
    """`grokemu publish DIR`: the upload of `grok publish` without Node, with progress; non-zero with the build log
    when an image fails."""
    from grokemu.client import Client, GrokemuError, PublishFailed

    url = args.url or os.environ.get("GROKEMU_URL") or "http://localhost:8080"
    client = Client(url, args.key or os.environ.get("GROKEMU_KEY") or "admin")
    try:
        package, images = client.publish(args.dir, release=args.release, timeout=args.timeout,
                                         progress=lambda m: print(m, flush=True))
    except PublishFailed as e:
        print(f"grokemu publish: {e}", file=sys.stderr)
        print(e.logs, file=sys.stderr)
        return 1
    except GrokemuError as e:
        print(f"grokemu publish: {e}", file=sys.stderr)
        return 1
    for image in images:
        print(f"ready: {image['name']} ({image['dockerFullName']})")
    for c in client.containers(package):
        print(f"container {c['name']} ({c['id']}): {c['status']}; "
              f"proxy {client.api}/docker/containers/proxy/{c['id']}/")
    return 0


def cmd_registry_gc(args) -> int:
    from grokemu.adapters.fs_blobs import FsBlobStore
    from grokemu.domain.clock import SystemClock
    from grokemu.services.registry import RegistryService

    settings = _load(args)
    started = time.time()
    result = RegistryService(FsBlobStore(settings.data_dir / "registry"), SystemClock()).gc(
        delete_untagged=args.delete_untagged, dry_run=args.dry_run)
    print(f"registry gc: {result} ({time.time() - started:.2f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokemu", description="Local emulator of Datagrok's plugin containers.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"grokemu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="serve the API, registry and dashboard on one port", epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _settings_args(up)
    up.add_argument("--demo", action="store_true", help="publish the samples, start their containers and print "
                                                        "what to open (workshops)")
    up.set_defaults(func=cmd_up)
    publish = sub.add_parser("publish", help="upload a package folder as `grok publish` does (no Node needed) and "
                                             "wait until its images are ready")
    publish.add_argument("dir", help="the package folder (with package.json and dockerfiles/)")
    publish.add_argument("--url", help="grokemu's URL (default $GROKEMU_URL or http://localhost:8080)")
    publish.add_argument("--key", help="dev key (default $GROKEMU_KEY or admin)")
    publish.add_argument("--release", action="store_true", help="a release upload (default: debug)")
    publish.add_argument("--timeout", type=float, default=600, help="seconds to wait for the images (default 600)")
    publish.set_defaults(func=cmd_publish)
    registry = sub.add_parser("registry", help="registry maintenance")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    gc = registry_sub.add_parser("gc", help="remove blobs no manifest references")
    _settings_args(gc)
    gc.add_argument("--delete-untagged", action="store_true", help="also remove manifests no tag points at")
    gc.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    gc.set_defaults(func=cmd_registry_gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"grokemu: {e}", file=sys.stderr)
        return 2
