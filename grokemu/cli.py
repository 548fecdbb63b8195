"""`grokemu up` (serve), `grokemu registry gc`. Settings precedence: defaults < YAML file < GROKEMU_* env < flags."""
from __future__ import annotations

import argparse
import logging
import sys
import time

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
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")


def _load(args):
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir", "dev_keys", "ignore_gpu",
                                                      "container_status_timeout", "proxy_request_timeout",
                                                      "instance", "log_level")}
    return load_settings(args.config, overrides=overrides)


def cmd_up(args) -> int:
    from grokemu.adapters.docker_orchestrator import DockerOrchestrator
    from grokemu.app import create_app
    from grokemu.server import bind, create_server, run_forever
    from grokemu.web.context import app_context
    from grokemu.web import proxy

    settings = _load(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    orchestrator = DockerOrchestrator()
    docker_ok = orchestrator.ping()
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
    if port != settings.port:  # --port 0: the URLs printed and handed to containers use the real port
        from dataclasses import replace

        settings = replace(settings, port=port)
    app = create_app(settings, orchestrator=orchestrator, bridge_addresses=tuple(extra))
    server = create_server(app, sockets, settings, bridge_addresses=extra, streamed_prefixes=(proxy.HTTP_PREFIX,),
                           preflight=app_context(app).guard.preflight)
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

    run_forever(server, on_stop=context.scheduler.stop)
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
    up.set_defaults(func=cmd_up)
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
