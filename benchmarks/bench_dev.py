"""`grokemu dev` turnaround (issue 20 item 1): from a saved change of app.py to the new answer through fetchProxy,
minus the image build itself, in one run.

    python benchmarks/bench_dev.py [--runs 5]          # make bench-dev

Starts `grokemu up` (a subprocess on a free port, its own data dir and instance label) and `grokemu dev` on a copy of
samples/squares (its own package name), waits until dev watches, then `--runs` times: changes what `/square`
answers in app.py (one write, the time taken just before it), asks `/square?number=4` through fetchProxy every 10 ms
until the new answer comes, and reads from dev's output how long that change's build took (`built ... in X s`, timed
around the Docker build call). It prints each run's turnaround, build and the rest (dev noticing the save, the
upload, grokemu validating the image, the old container stopped and the new one started and answering), then the
median of the rest against the target:

  saved change -> new answer through fetchProxy, minus the build     target: median <= 1.5 s

next to a baseline measured in the same run: `docker run` of the same image to its first answer on a published port
(what Docker and the app's start cost with no grokemu and no dev), median of as many runs; the ratio says how much
of the rest is that floor.

The fetchProxy requests sent during a replacement wait for the new container (they are not errors): the first new
answer is the end. Loopback only; `grokemu dev --clean` and grokemu's reset remove what it created.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import ROOT, median, verdict  # noqa: I001  (puts the checkout on sys.path first)

import requests

from grokemu.testing import GrokemuProcess

TARGET_S = 1.5
BUILT = re.compile(r"^built \S+ in ([0-9.]+) s")
IDLE = re.compile(r"^up to date, ")


class DevOutput:
    """grokemu dev's stdout, gathered by a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, regex: re.Pattern, after: int, timeout: float = 300) -> re.Match:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[after:]:
                    found = regex.search(line)
                    if found:
                        return found
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {regex.pattern!r} in dev's output:\n" + "\n".join(self.lines[-40:]))
                self.changed.wait(1.0)


def docker_run_to_answer(image: str) -> float:
    """Seconds from `docker run` (detached, the port published on 127.0.0.1) to the app's first HTTP answer."""
    import docker

    client = docker.from_env()
    began = time.perf_counter()
    container = client.containers.run(image, detach=True, ports={"5353/tcp": ("127.0.0.1", None)},
                                      labels={"grokemu.bench": "dev"})
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["5353/tcp"][0]["HostPort"]
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - began
            except requests.RequestException:
                pass
            time.sleep(0.01)
    finally:
        container.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="grokemu-bench-dev-"))
    short = f"benchdev{uuid.uuid4().hex[:6]}"
    folder = work / short
    shutil.copytree(ROOT / "samples" / "squares", folder, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    meta = json.loads((folder / "package.json").read_text())
    meta["name"] = f"@grokemu/{short}"
    (folder / "package.json").write_text(json.dumps(meta))
    app = folder / "dockerfiles" / "squares" / "app.py"
    original = app.read_text()
    route = '{"result": number * number}'
    assert route in original, "samples/squares/app.py no longer has the /square answer this benchmark edits"

    server = GrokemuProcess(work / "data").start()
    dev = subprocess.Popen([sys.executable, "-m", "grokemu", "dev", str(folder), "--url", server.url, "--clean"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = DevOutput(dev)
    try:
        out.wait_for(re.compile("^watching "), 0)
        session = requests.Session()
        session.headers["Authorization"] = server.login()
        [c] = session.get(f"{server.api}/docker/containers", params={"text": short}, timeout=30).json()
        url = f"{server.api}/docker/containers/proxy/{c['id']}/square?number=4"
        assert session.get(url, timeout=60).json() == {"result": 16.0}
        print(f"grokemu dev on {meta['name']} (container {c['id']}); {args.runs} changes of app.py\n")
        print(f"{'run':>3}  {'turnaround':>10}  {'build':>7}  {'the rest':>8}")
        rest = []
        for run in range(1, args.runs + 1):
            mark = len(out.lines)
            wanted = {"result": 16.0 + run}
            changed = original.replace(route, f'{{"result": number * number + {run}}}')
            began = time.perf_counter()
            app.write_text(changed)
            while True:
                try:
                    if session.get(url, timeout=120).json() == wanted:
                        break
                except (requests.RequestException, ValueError):
                    pass  # an answer cut by the replacement: ask again
                time.sleep(0.01)
            turnaround = time.perf_counter() - began
            build = float(out.wait_for(BUILT, mark).group(1))
            out.wait_for(IDLE, mark)  # the next save finds dev watching, as a person's next save would
            rest.append(turnaround - build)
            print(f"{run:>3}  {turnaround:>9.2f}s  {build:>6.2f}s  {rest[-1]:>7.2f}s", flush=True)
        floor = [docker_run_to_answer(f"datagrok/{short}-squares:admin") for _ in range(args.runs)]
        print(f"\nbaseline, `docker run` of the same image to its first answer: median {median(floor):.2f} s "
              f"(min {min(floor):.2f}, max {max(floor):.2f}); the rest is {median(rest) / median(floor):.2f}x that")
        same = [x["id"] for x in session.get(f"{server.api}/docker/containers", params={"text": short},
                                             timeout=30).json()]
        print(f"\ncontainer id after {args.runs} replacements: {'the same' if same == [c['id']] else same}")
        m = median(rest)
        print(f"saved change -> new answer through fetchProxy, minus the build: median {m:.2f} s "
              f"(min {min(rest):.2f}, max {max(rest):.2f}) vs target <= {TARGET_S} s: {m / TARGET_S:.2f} of the "
              f"target, {verdict(m <= TARGET_S)}")
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=120)
            except subprocess.TimeoutExpired:
                dev.kill()
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
