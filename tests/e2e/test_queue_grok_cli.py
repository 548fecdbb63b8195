"""Issue 18: the real `grok publish` (datagrok-tools 6.7.5) turns samples/queue's `python/` folder into a Celery worker
(`dockerfiles/celery/`: its Dockerfile FROM python:3.11-slim-bookworm with uv from ghcr.io/astral-sh/uv:latest, its
tasks.yaml and entry module), builds it unchanged (offline here: the stand-ins of scripts/ensure-base-image.sh), and
the functions of both workers, the generated one and the hand-written one, answer Datagrok's real JS client."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from grokemu.testing import GrokemuProcess
from tests.helpers import js_runner, remove_images, require, wait_until

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "queue"
GENERATED_BASES = ("python:3.11-slim-bookworm", "ghcr.io/astral-sh/uv:latest")


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    for image in GENERATED_BASES:
        found = subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
        require(found, f"the {image} image (run scripts/ensure-base-image.sh)")
    proc = GrokemuProcess(tmp_path_factory.mktemp("grokemu-queue-cli"))
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def package(tmp_path):
    """samples/queue under a unique package name and friendlyName (its namespace), as a folder the CLI publishes."""
    suffix = uuid.uuid4().hex[:6]
    folder = tmp_path / "pkg"
    shutil.copytree(SAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".npmignore").touch()
    meta = json.loads((folder / "package.json").read_text())
    meta["name"], meta["friendlyName"] = f"@grokemu/queuecli{suffix}", f"Queue Cli {suffix}"
    (folder / "package.json").write_text(json.dumps(meta))
    yield folder, f"queuecli{suffix}"
    remove_images(f"queuecli{suffix}")


def test_grok_publish_turns_the_python_folder_into_a_worker_whose_functions_answer(server, grok, package):
    folder, short = package
    added = grok("config", "add", "--alias", "emu", "--server", server.api, "--key", "admin", "--default")
    assert added.returncode == 0, added.stderr
    done = grok("publish", "emu", cwd=folder, timeout=900)
    assert done.returncode == 0 and "Published" in done.stdout, done.stdout[-4000:] + done.stderr[-4000:]
    generated = folder / "dockerfiles" / "celery"
    dockerfile = (generated / "Dockerfile").read_text()
    assert "FROM python:3.11-slim-bookworm" in dockerfile and "ghcr.io/astral-sh/uv" in dockerfile, dockerfile
    token = server.login()

    def settled():
        found = requests.get(f"{server.api}/docker/images", params={"text": short},
                             headers={"Authorization": token}, timeout=30).json()
        return found if len(found) == 2 and all(i["status"] in ("ready", "error") for i in found) else None

    images = wait_until(settled, 900, f"both images of {short} validated", interval=0.5)
    assert all(i["status"] == "ready" for i in images), [(i["name"], i.get("logs", "")[-2000:]) for i in images]

    funcs = requests.get(f"{server.api}/docker/functions", headers={"Authorization": token}, timeout=30).json()
    ours = {f["name"]: f for f in funcs if f["package"]["name"] == f"@grokemu/{short}"}
    assert {"mean", "histogram", "add"} <= set(ours), sorted(ours)
    assert ours["mean"]["container"]["id"] != ours["add"]["container"]["id"]  # two workers
    ns = ours["mean"]["namespace"]
    # friendlyNameToName capitalises each word: "Queue Cli aac674" is QueueCliAac674, "Queue Cli 0ac674" QueueCli0ac674
    assert ns == ours["add"]["namespace"] == f"QueueCli{short[len('queuecli'):].capitalize()}:"

    js = js_runner(server.api, token)
    got = js(f"""
      const mean = await grok.functions.call({json.dumps(ns + 'mean')}, {{numbers: '1, 2, 3, 10'}});
      const words = DG.DataFrame.fromColumns([DG.Column.fromStrings('word', ['a', 'b', 'a', 'c', 'a', 'b'])]);
      const counts = await grok.functions.call({json.dumps(ns + 'histogram')}, {{words: words, column: 'word'}});
      const table = {{}};
      for (let i = 0; i < counts.rowCount; i++) table[counts.get('word', i)] = counts.get('count', i);
      const added = await grok.functions.call({json.dumps(ns + 'add')}, {{a: 40, b: 2}});
      return {{mean, table, added}};""", timeout=600)
    assert got == {"mean": 4.0, "table": {"a": 3, "b": 2, "c": 1}, "added": 42}
