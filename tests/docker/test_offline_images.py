"""The offline stand-in base images scripts/ensure-base-image.sh builds (docs/offline-images.md).

On a machine that cannot reach a registry (CI) the tags hold stand-ins and everything here runs with no network at
all (`--network none`): the wheelhouse, not PyPI, is what pip and uv install from. Where a tag holds the real image (a
laptop) the same checks run with the network. The tags are the script's: its GROKEMU_*_IMAGE overrides apply here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from kombu import Connection

from tests.helpers import REQUIRE_DOCKER, require, wait_until

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("GROKEMU_TOOLS", ROOT / ".tools"))
DEFAULTS = {"python": "python:3.12-slim", "bookworm": "python:3.11-slim-bookworm",
            "uv": "ghcr.io/astral-sh/uv:latest", "rabbitmq": "rabbitmq:4.0.5-management"}
TAGS = {"python": os.environ.get("GROKEMU_BASE_IMAGE") or DEFAULTS["python"],
        "bookworm": os.environ.get("GROKEMU_BOOKWORM_IMAGE") or DEFAULTS["bookworm"],
        "uv": os.environ.get("GROKEMU_UV_IMAGE") or DEFAULTS["uv"],
        "rabbitmq": os.environ.get("GROKEMU_BROKER_IMAGE") or DEFAULTS["rabbitmq"]}
TEST_LABEL = "grokemu.test=offline-images"  # what this module creates, so cleanup removes only that


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def standin_label(tag: str) -> str | None:
    """The image's grokemu.base label ("" for a real image), None when the tag is absent."""
    done = docker("image", "inspect", "-f", '{{index .Config.Labels "grokemu.base"}}', tag, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def image(kind: str) -> tuple[str, list[str]]:
    """The tag for `kind` and the network flags for using it: none for a stand-in, the default one for a real
    image (it installs from PyPI)."""
    tag = TAGS[kind]
    label = standin_label(tag)
    require(label is not None, f"the image {tag} (run scripts/ensure-base-image.sh)")
    if REQUIRE_DOCKER:  # CI cannot pull: a tag without our label there means the script did not run as meant
        assert label.startswith("offline-standin"), f"{tag} is not a grokemu stand-in (label {label!r})"
    return tag, ["--network", "none"] if label else []


def build(context: Path, network: list[str], tag: str | None = None) -> str:
    tag = tag or f"grokemu-test/offline-images:{uuid.uuid4().hex[:10]}"
    docker("build", *network, "--label", TEST_LABEL, "-t", tag, str(context))
    return tag


@pytest.fixture
def built():
    """Tags a test builds, removed afterwards (with their intermediate layers)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        docker("image", "rm", "-f", tag, check=False)


def test_python_standin_labels_and_both_tags():
    tag, _ = image("python")
    bookworm, _ = image("bookworm")
    if standin_label(tag) and standin_label(bookworm):  # both stand-ins: one build under two tags
        ids = {docker("image", "inspect", "-f", "{{.Id}}", t).stdout.strip() for t in (tag, bookworm)}
        assert len(ids) == 1, "python:3.12-slim and python:3.11-slim-bookworm are one stand-in"
        assert standin_label(tag) == "offline-standin-3"


def test_pip_installs_the_worker_stack_with_no_network():
    tag, network = image("python")
    done = docker("run", "--rm", *network, "--label", TEST_LABEL, tag, "sh", "-c",
                  "pip install celery datagrok-celery-task pandas pyarrow "
                  "&& python -c 'import celery, datagrok_celery_task, pandas, pyarrow; print(\"versions\", "
                  "celery.__version__, pandas.__version__)'")
    assert "versions 5." in done.stdout, done.stdout[-2000:]
    # pip installs into the system Python as root, as the official image allows: no PEP 668 refusal.
    assert "externally-managed" not in done.stdout + done.stderr


def test_pip_has_no_index_to_fall_back_to():
    """A package the wheelhouse lacks fails at once with pip's own message (no index is tried, nothing hangs)."""
    tag, network = image("python")
    if not network:
        pytest.skip("a real image installs from PyPI")
    done = docker("run", "--rm", *network, "--label", TEST_LABEL, tag, "pip", "install", "grokemu-no-such-package",
                  check=False)
    assert done.returncode != 0
    assert "No matching distribution found for grokemu-no-such-package" in done.stderr


def test_uv_from_its_image_installs_with_no_network(tmp_path, built):
    """`COPY --from=<uv image> /uv ...` then `uv pip install --system`, as Dockerfiles do; uv finds the wheelhouse
    through /etc/uv/uv.toml alone (no UV_* variable is set)."""
    tag, network = image("python")
    uv, _ = image("uv")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {tag}\n"
        f"COPY --from={uv} /uv /uvx /usr/local/bin/\n"
        "RUN env | grep '^UV_' && exit 1 || true\n"
        "RUN uv pip install --system celery datagrok-celery-task pyyaml\n"
        "RUN uvx --version\n")
    image_tag = build(tmp_path, network)
    built.append(image_tag)
    done = docker("run", "--rm", *network, "--label", TEST_LABEL, image_tag, "python", "-c",
                  "import celery, datagrok_celery_task, yaml; print('celery', celery.__version__)")
    assert done.stdout.startswith("celery 5."), done.stdout


def generate_worker(tmp_path: Path) -> Path:
    """samples/queue's python/ folder turned into dockerfiles/celery/ by the real grok CLI's generator (datagrok-tools
    6.7.5, bin/utils/python-celery-gen.js: what `grok publish` runs before zipping)."""
    gen = TOOLS / "node_modules" / "datagrok-tools" / "bin" / "utils" / "python-celery-gen.js"
    require(gen.exists() and shutil.which("node") is not None,
            "the grok CLI in .tools (run scripts/ensure-clients.sh to install datagrok-tools 6.7.5)")
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "samples" / "queue", pkg, ignore=shutil.ignore_patterns("dockerfiles"))
    script = "console.log(JSON.stringify(require(process.argv[1]).generateCeleryArtifacts(process.argv[2])))"
    done = subprocess.run(["node", "-e", script, str(gen), str(pkg)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["celery"]
    return pkg / "dockerfiles" / "celery"


def test_grok_cli_generated_worker_dockerfile_builds_with_no_network(tmp_path, built):
    bookworm, network = image("bookworm")
    uv, _ = image("uv")
    worker = generate_worker(tmp_path)
    dockerfile = (worker / "Dockerfile").read_text()
    # The generator's own image references: the ones the stand-ins are made for.
    assert f"FROM {DEFAULTS['bookworm']}" in dockerfile
    assert f"COPY --from={DEFAULTS['uv']} /uv" in dockerfile
    assert "apt-get install" in dockerfile and "uv pip install --system celery datagrok-celery-task" in dockerfile
    # Unchanged under the default tags (CI); only a run under throwaway tags maps the two references to them.
    edited = dockerfile.replace(DEFAULTS["bookworm"], bookworm).replace(DEFAULTS["uv"], uv)
    (worker / "Dockerfile").write_text(edited)
    image_tag = build(worker, network)
    built.append(image_tag)
    # Every task the generator listed imports in the built image, as the worker's user.
    check = ("import importlib, json; tasks = json.load(open('tasks.yaml'))['tasks']; "
             "[getattr(importlib.import_module(t['module']), t['name']) for t in tasks]; "
             "import celery, datagrok_celery_task; print(sorted(t['name'] for t in tasks))")
    done = docker("run", "--rm", *network, "--label", TEST_LABEL, image_tag, "python", "-c", check)
    assert "'histogram'" in done.stdout and "'mean'" in done.stdout, done.stdout
    assert docker("run", "--rm", *network, image_tag, "id", "-un").stdout.strip() == "datagrok"


@pytest.fixture
def rabbitmq():
    """The broker image run as grokemu runs it (credentials in RABBITMQ_DEFAULT_*), AMQP published on 127.0.0.1."""
    tag, _ = image("rabbitmq")
    name = f"grokemu-test-rabbitmq-{uuid.uuid4().hex[:8]}"
    user, password = "grokemu", f"pw-{uuid.uuid4().hex}"
    docker("run", "-d", "--name", name, "--label", TEST_LABEL, "-p", "127.0.0.1::5672", "-p", "127.0.0.1::15672",
           "-e", f"RABBITMQ_DEFAULT_USER={user}", "-e", f"RABBITMQ_DEFAULT_PASS={password}", tag)
    try:
        port = int(docker("port", name, "5672/tcp").stdout.split(":")[-1])
        management = int(docker("port", name, "15672/tcp").stdout.split(":")[-1])
        yield name, port, user, password, management
    finally:
        docker("rm", "-f", "-v", name, check=False)


def login(port: int, user: str, password: str) -> str:
    conn = Connection(hostname="127.0.0.1", port=port, userid=user, password=password, virtual_host="/",
                      connect_timeout=5)
    try:
        conn.ensure_connection(max_retries=1)
        with conn.channel() as channel:
            channel.queue_declare("grokemu.test", auto_delete=True)
        return "ok"
    except Exception as e:  # noqa: BLE001  (the refusal's kind is what the test reads)
        return f"{type(e).__name__}: {e}"
    finally:
        conn.release()


def test_rabbitmq_takes_the_default_user_and_refuses_guest(rabbitmq):
    name, port, user, password, management = rabbitmq
    # The healthcheck Datagrok's compose uses, run by root through docker exec (the node's cookie is found).
    wait_until(lambda: docker("exec", name, "rabbitmq-diagnostics", "-q", "ping", check=False).returncode == 0,
               120, "rabbitmq-diagnostics -q ping", interval=0.5)
    wait_until(lambda: login(port, user, password) == "ok", 120, "an AMQP login with RABBITMQ_DEFAULT_USER/PASS",
               interval=0.5)
    refused = login(port, "guest", "guest")
    assert "ACCESS_REFUSED" in refused, refused
    assert "ACCESS_REFUSED" in login(port, user, password + "x")
    users = docker("exec", name, "rabbitmqctl", "-q", "list_users").stdout
    assert user in users and "administrator" in users and "guest" not in users
    # The management plugin (the image's "-management" tag) answers the same user, and nobody else.
    overview = f"http://127.0.0.1:{management}/api/overview"
    wait_until(lambda: requests.get(overview, auth=(user, password), timeout=5).status_code == 200, 60,
               "the management API", interval=0.5)
    assert requests.get(overview, auth=("guest", "guest"), timeout=5).status_code == 401


def test_rabbitmq_stops_cleanly_on_sigterm(rabbitmq):
    """PID 1 handles `docker stop`'s SIGTERM: the node shuts down and exits 0, not killed after the grace period."""
    name, port, user, password, _ = rabbitmq
    wait_until(lambda: login(port, user, password) == "ok", 120, "an AMQP login", interval=0.5)
    docker("stop", "-t", "120", name, timeout=180)
    state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
    assert state["ExitCode"] == 0, state


def test_rabbitmq_image_exposes_amqp_and_management():
    tag, _ = image("rabbitmq")
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", tag).stdout)
    assert {"5672/tcp", "15672/tcp"} <= set(config["ExposedPorts"])
