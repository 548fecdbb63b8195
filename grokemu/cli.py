"""`grokemu up` (serve; `--demo` publishes the samples), `grokemu publish DIR`, `grokemu dev DIR`, `grokemu status`,
`grokemu logs NAME`, `grokemu registry gc`.
Settings precedence: defaults < YAML file < GROKEMU_* env < flags."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from grokemu import __version__
from grokemu.config import ConfigError, Settings, load_settings
from grokemu.domain.ports import Orchestrator

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
    p.add_argument("--stop-timeout", type=float,
                   help="seconds a container gets between SIGTERM and SIGKILL when stopped (default 10, as Docker)")
    p.add_argument("--instance", help="label value that tells this grokemu's containers from another's")
    p.add_argument("--docker-network", help="run plugin containers on this Docker network (created or joined), "
                                            "publishing no port; grokemu reaches them at their address on it")
    p.add_argument("--orchestrator", choices=("docker", "swarm"),
                   help="run plugin containers on this host's Docker daemon (default) or as Docker Swarm services")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")


def _load(args):
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "data_dir", "dev_keys", "ignore_gpu",
                                                      "container_status_timeout", "proxy_request_timeout",
                                                      "stop_timeout",
                                                      "instance", "log_level", "docker_network", "orchestrator")}
    return load_settings(args.config, overrides=overrides)


def orchestrator_for(settings: Settings) -> Orchestrator:
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
    from grokemu.bootstrap import ServeError, prepare

    settings = _load(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serving = prepare(settings, orchestrator_for(settings))
    except ServeError as e:
        print(f"grokemu: {e}", file=sys.stderr)
        return e.code
    settings, docker_ok, context = serving.settings, serving.docker_ok, serving.context
    context.scheduler.start()

    base = settings.api_url[: -len("/api")]
    print(f"grokemu {__version__} serving {base} (data in {settings.data_dir})")
    print(f"  API {settings.api_url}   registry {base.split('//', 1)[1]}   dashboard {base}/")
    if docker_ok:
        reach = f", containers reach the API at {context.spawner.run_specs.container_api_url()}" \
            if len(serving.sockets) > 1 or settings.container_api_url else ""
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
    serving.run_forever()
    return 0


def _samples_dir() -> Path | None:
    """samples/ of a source checkout (the demo publishes every package in it)."""
    for candidate in (Path.cwd() / "samples", Path(__file__).resolve().parents[1] / "samples"):
        if candidate.is_dir():
            return candidate
    return None


def _demo(settings, key: str, docker_ok: bool) -> None:
    """`grokemu up --demo`: publish the samples, start their containers, print what to open."""
    from grokemu.client import Client, ClientError

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
                if c.get("taskQueue"):  # a Celery worker: its functions, not a URL, are what callers use
                    names = sorted(f["nqName"] for f in client.json("GET", "docker/functions")
                                   if (f.get("container") or {}).get("id") == c["id"])
                    lines.append(f"  {c['name']}: {c['status']}   functions: {', '.join(names)}")
                else:
                    lines.append(f"  {c['name']}: {c['status']}   {base}/api/docker/containers/proxy/{c['id']}/")
        except ClientError as e:
            print(f"demo: {folder.name} failed: {e}\n{getattr(e, 'logs', '')}", flush=True)
    print("demo ready. Open the dashboard and sign in with the dev key "
          f"'{key}': {base}/", flush=True)
    print("  proxied URLs (send the session token from POST /api/users/login/dev in Authorization) and queue "
          "functions (grok.functions.call, or grokemu.testing.Grokemu(url).call):", flush=True)
    for line in lines:
        print(line, flush=True)


def _client(args):
    """The running grokemu a client command talks to: `--url` / `--key`, else $GROKEMU_URL / $GROKEMU_KEY, else
    http://localhost:8080 with the dev key admin (`grokemu up`'s defaults)."""
    from grokemu.client import Client

    url = args.url or os.environ.get("GROKEMU_URL") or "http://localhost:8080"
    return Client(url, args.key or os.environ.get("GROKEMU_KEY") or "admin")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="grokemu's URL (default $GROKEMU_URL or http://localhost:8080)")
    p.add_argument("--key", help="dev key (default $GROKEMU_KEY or admin)")


def cmd_publish(args) -> int:
    """`grokemu publish DIR`: the upload of `grok publish` without Node, with progress; non-zero with the build log
    when an image fails."""
    from grokemu.client import ClientError, PublishFailed

    client = _client(args)
    try:
        package, images = client.publish(args.dir, release=args.release, timeout=args.timeout,
                                         progress=lambda m: print(m, flush=True))
    except PublishFailed as e:
        print(f"grokemu publish: {e}", file=sys.stderr)
        print(e.logs, file=sys.stderr)
        return 1
    except ClientError as e:
        print(f"grokemu publish: {e}", file=sys.stderr)
        return 1
    for image in images:
        print(f"ready: {image['name']} ({image['dockerFullName']})")
    for c in client.containers(package):
        print(f"container {c['name']} ({c['id']}): {c['status']}; proxy {client.proxy_url(c['id'])}")
    return 0


def _quiet_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds between 0 and 60000")
    return value


def cmd_dev(args) -> int:
    """`grokemu dev DIR`: publish (debug), start the containers, then rebuild, replace and re-upload on every save
    until Ctrl-C (exit 130; `--clean` first removes what it published). grokemu/dev_session.py does the work."""
    try:
        import watchfiles  # noqa: F401  (a dependency; say so plainly when an install left it out)
    except ImportError:
        print("grokemu dev: the watchfiles package is missing: pip install watchfiles", file=sys.stderr)
        return 1
    from grokemu.adapters.docker_orchestrator import DockerOrchestrator
    from grokemu.client import ClientError
    from grokemu.dev_session import Board, DevSession

    docker = DockerOrchestrator()
    if not docker.ping():
        print("grokemu dev: the Docker daemon is not reachable (dev builds the images with it, as `grok publish` "
              "does)", file=sys.stderr)
        return 1
    board = Board(sys.stdout)
    try:
        session = DevSession(_client(args), args.dir, docker, board, quiet=args.quiet_ms / 1000)
    except ClientError as e:
        print(f"grokemu dev: {e}", file=sys.stderr)
        return 1
    try:
        session.start()
        session.watch()
    except ClientError as e:
        print(f"grokemu dev: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.clean:
            try:
                session.clean()
            except KeyboardInterrupt:
                pass
        else:
            board.log("stopped watching; what dev published stays (--clean removes it)")
        return 130
    return 0


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Rows under their headers, each column as wide as its widest cell, two spaces apart."""
    cells = [headers] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def ago(seconds: float) -> str:
    """An age as `grokemu status` shows it: the largest whole unit (`45s ago`, `12m ago`, `3h ago`, `2d ago`)."""
    seconds = max(0, int(seconds))  # a server clock a little ahead of the record is "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def status_report(client) -> dict:
    """What `grokemu status` shows: the server, then every container (with its fetchProxy URL) and image, each with
    when it entered its status (ISO 8601, and its age by the server's clock)."""
    from grokemu.domain.clock import iso

    health = client.health()
    snapshot = client.snapshot()
    now = snapshot["now"]

    def since(entity: dict) -> dict:
        at = (entity.get("grokemu") or {}).get("statusSince") or 0
        return {"statusSince": iso(at) if at else None, "statusAge": ago(now - at) if at else ""}

    containers = [{"id": c["id"], "name": c["name"], "package": (c.get("package") or {}).get("name") or "",
                   "status": c["status"], **since(c), "url": client.proxy_url(c["id"]), "error": c.get("errorMessage")}
                  for c in sorted(snapshot["containers"], key=lambda c: (c["name"], c["id"]))]
    images = [{"id": i["id"], "name": i["name"], "package": (i.get("package") or {}).get("name") or "",
               "tag": i.get("version") or "", "status": i["status"], **since(i),
               "reference": i.get("dockerFullName") or ""}
              for i in sorted(snapshot["images"], key=lambda i: (i["name"], i.get("version") or "", i["id"]))]
    return {"url": client.url, "version": health.get("version"),
            "docker": (health.get("docker") or {}).get("reachable"), "containers": containers, "images": images}


def cmd_status(args) -> int:
    """`grokemu status`: a running grokemu's containers and images, with their status and URLs."""
    import json

    from grokemu.client import ClientError

    client = _client(args)
    try:
        report = status_report(client)
    except ClientError as e:
        print(f"grokemu status: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    docker = {True: "reachable", False: "UNREACHABLE"}.get(report["docker"], "unknown")
    print(f"grokemu {report['version']} at {report['url']} (Docker daemon {docker})")
    print()
    if report["containers"]:
        print(table(["CONTAINER", "PACKAGE", "STATUS", "SINCE", "URL"],
                    [[c["name"], c["package"], c["status"], c["statusAge"], c["url"]] for c in report["containers"]]))
        for c in report["containers"]:
            if c["status"] == "error" and c["error"]:
                print(f"  {c['name']}: {c['error']}")
    else:
        print("no containers")
    print()
    if report["images"]:
        print(table(["IMAGE", "PACKAGE", "TAG", "STATUS", "SINCE", "REFERENCE"],
                    [[i["name"], i["package"], i["tag"], i["status"], i["statusAge"], i["reference"]]
                     for i in report["images"]]))
    else:
        print("no images")
    return 0


def cmd_logs(args) -> int:
    """`grokemu logs NAME [-f] [--tail N]`: a container's logs, by id, container, package or image name; with -f
    new output as it comes, until Ctrl-C or the container stops. Exit 2 when NAME means no container or several."""
    from grokemu.client import ClientError

    client = _client(args)
    out = sys.stdout.buffer
    try:
        container = client.find_container(args.name)  # domain/names.py, as the test kit resolves names
        for chunk in client.container_logs(container["id"], tail=args.tail, follow=args.follow):
            out.write(chunk)
            out.flush()
    except LookupError as e:
        print(f"grokemu logs: {e}", file=sys.stderr)
        return 2
    except ClientError as e:
        print(f"grokemu logs: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `grokemu logs x | head`
        return 0
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


def _lines(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a number of lines or 'all', not {text!r}")
    return int(text)


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
    _client_args(publish)
    publish.add_argument("--release", action="store_true", help="a release upload (default: debug)")
    publish.add_argument("--timeout", type=float, default=600, help="seconds to wait for the images (default 600)")
    publish.set_defaults(func=cmd_publish)
    dev = sub.add_parser("dev", help="publish a package folder, start its containers, then rebuild and replace "
                                     "them (or re-upload) on every save until Ctrl-C")
    dev.add_argument("dir", help="the package folder (with package.json and dockerfiles/)")
    _client_args(dev)
    dev.add_argument("--clean", action="store_true", help="on Ctrl-C, delete what dev published (the package's "
                                                          "images and containers, and the images it built)")
    dev.add_argument("--quiet-ms", type=_quiet_ms, default=50, metavar="MS",
                     help="how long the folder must stay unchanged after a save before dev acts (default 50): "
                          "saves closer together than this make one rebuild")
    dev.set_defaults(func=cmd_dev)
    status = sub.add_parser("status", help="a running grokemu's containers and images: status and URLs")
    _client_args(status)
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(func=cmd_status)
    logs = sub.add_parser("logs", help="a container's logs (-f: follow them until Ctrl-C or the container stops)")
    logs.add_argument("name", help="the container: its id or name, its docker folder, its package or image name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output as it comes")
    logs.add_argument("--tail", type=_lines, default=None, metavar="N",
                      help="only the last N lines (default: all)")
    _client_args(logs)
    logs.set_defaults(func=cmd_logs)
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
    except KeyboardInterrupt:  # Ctrl-C in any command: the shell's code for SIGINT, no traceback
        return 130
