"""`grokemu dev`'s decisions (grokemu/dev_loop.py): which saves rebuild which image and which re-upload, when a burst
is over, what a delta carries, how the status lines read; and the session's wiring with a fake builder and client
(grokemu/dev_session.py): a failed build uploads nothing."""
from __future__ import annotations

import io
import json

import pytest

from grokemu.dev_loop import (Debouncer, Note, Plan, build_step, container_line, delta, docker_dir_of,
                              docker_dirs_on_disk, image_json_path, plan_changes, upload_after_builds, utc_string)
from grokemu.client import ClientError
from grokemu.dev_session import Board, DevSession
from grokemu.domain.ports import BuildResult

DIRS = ["squares", "worker"]


@pytest.mark.parametrize("changed, plan", [
    (["dockerfiles/squares/app.py"], Plan(rebuild=("squares",))),
    (["dockerfiles/squares/Dockerfile", "dockerfiles/worker/tasks.py"], Plan(rebuild=("squares", "worker"))),
    (["package.js"], Plan(upload=True)),
    (["dockerfiles/squares/app.py", "src/package.ts"], Plan(rebuild=("squares",), upload=True)),
    (["dockerfiles/notes/readme.md"], Plan(upload=True)),  # a folder under dockerfiles/ without a Dockerfile
    (["dockerfiles/README.md"], Plan(upload=True)),
    ([".npmignore"], Plan(upload=True)),  # changes what an upload carries
    (["dockerfiles/squares/__pycache__/app.cpython-312.pyc", ".git/index", "node_modules/x/y.js"], Plan()),
])
def test_which_saves_rebuild_and_which_reupload(changed, plan):
    assert plan_changes(changed, DIRS) == plan


def test_npmignore_patterns_change_nothing():
    assert plan_changes(["dist/bundle.js", "dockerfiles/squares/notes.tmp"], DIRS, ["dist/", "*.tmp"]) == Plan()
    assert not Plan()  # an empty plan is falsy: nothing to do


def test_a_root_dockerfile_builds_from_all_of_dockerfiles():
    assert docker_dir_of("dockerfiles/app.py", ["."]) == ["."]
    assert docker_dir_of("dockerfiles/sub/x.py", [".", "sub"]) == ["sub", "."]  # in both contexts
    assert plan_changes(["dockerfiles/sub/x.py"], [".", "sub"]) == Plan(rebuild=(".", "sub"))
    assert docker_dir_of("package.js", ["."]) == []
    assert image_json_path(".") == "dockerfiles/image.json"
    assert image_json_path("squares") == "dockerfiles/squares/image.json"


def test_a_failed_build_alone_uploads_nothing():
    plan = Plan(rebuild=("squares",))
    assert upload_after_builds(plan, {"squares": False}) is False  # the old container keeps serving
    assert upload_after_builds(plan, {"squares": True}) is True
    assert upload_after_builds(Plan(rebuild=("squares",), upload=True), {"squares": False}) is True
    assert upload_after_builds(Plan(rebuild=("a", "b")), {"a": False, "b": True}) is True


def test_a_burst_of_saves_is_one_batch():
    debouncer = Debouncer(quiet=0.1)
    for i in range(10):  # ten saves, 10 ms apart
        debouncer.add(["dockerfiles/squares/app.py"] if i % 2 else ["dockerfiles/squares/util.py"], i * 0.01)
        assert debouncer.take(i * 0.01) is None  # still coming
    assert debouncer.take(0.09 + 0.05) is None  # not quiet long enough after the last
    batch = debouncer.take(0.09 + 0.1)
    assert batch == {"dockerfiles/squares/app.py", "dockerfiles/squares/util.py"}
    assert plan_changes(batch, DIRS) == Plan(rebuild=("squares",))  # so one rebuild
    assert debouncer.take(5.0) is None and not debouncer.pending  # nothing more
    debouncer.add([], 6.0)  # a wake-up without saves starts nothing
    assert debouncer.take(7.0) is None


def test_the_delta_carries_changed_contents_except_failing_folders():
    current = {"package.js": "h2", "package.json": "h1", "dockerfiles/squares/app.py": "h4",
               "dockerfiles/worker/tasks.py": "h5"}
    sent = {"package.js": "h0", "package.json": "h1", "dockerfiles/squares/app.py": "h3"}
    assert delta(current, sent, DIRS, failing=[]) == ["dockerfiles/squares/app.py", "dockerfiles/worker/tasks.py",
                                                      "package.js"]
    assert delta(current, sent, DIRS, failing=["squares"]) == ["dockerfiles/worker/tasks.py", "package.js"]
    assert delta(current, current, DIRS, failing=[]) == []  # a save that changed nothing sends nothing


def test_timestamps_as_the_grok_cli_writes_them():
    assert utc_string(0) == "Thu, 01 Jan 1970 00:00:00 GMT"  # JavaScript's toUTCString()


def test_docker_dirs_on_disk(tmp_path):
    (tmp_path / "dockerfiles" / "a").mkdir(parents=True)
    (tmp_path / "dockerfiles" / "a" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "dockerfiles" / "ref").mkdir()
    (tmp_path / "dockerfiles" / "ref" / "container.json").write_text('{"image": "x:1"}')  # nothing to build
    assert docker_dirs_on_disk(tmp_path) == ["a"]
    (tmp_path / "dockerfiles" / "Dockerfile").write_text("FROM scratch\n")
    assert docker_dirs_on_disk(tmp_path) == [".", "a"]
    assert docker_dirs_on_disk(tmp_path / "nothing") == []


def test_build_progress_steps():
    assert build_step("Step 3/5 : COPY app.py /app/app.py\n") == "Step 3/5"
    assert build_step(" ---> Using cache") is None


def test_status_lines():
    c = {"name": "sq-squares", "status": "started", "grokemu": {"requests": 3, "lastStatus": 200, "lastAt": 100.0}}
    url = "http://localhost:8080/api/docker/containers/proxy/abc/"
    assert container_line(c, url, None) == f"sq-squares  started  {url}  last request 200 (3 in all)"
    assert container_line(c, url, 145.0) == f"sq-squares  started  {url}  last request 200 45s ago (3 in all)"
    idle = {"name": "sq-squares", "status": "stopped by system", "grokemu": {}}
    assert container_line(idle, url, None).endswith("no request yet")
    failed = container_line(c, url, None, Note(failed="The command '/bin/sh -c exit 3' returned a non-zero code: 3"))
    assert "FAILED, the previous image serves: The command" in failed
    building = container_line(c, url, None, Note(building="Step 2/5, 0.4 s"))
    assert "building: Step 2/5, 0.4 s" in building
    worker = {"name": "q-worker", "status": "started", "taskQueue": "q-worker.1234", "grokemu": {}}
    assert "queue q-worker.1234" in container_line(worker, url, None) and url not in container_line(worker, url, None)
    broken = {"name": "x", "status": "error", "errorMessage": "exited with code 1\nTraceback", "grokemu": {}}
    assert container_line(broken, url, None).endswith("error: exited with code 1")


def test_the_board_appends_changed_lines_when_not_a_terminal():
    out = io.StringIO()
    board = Board(out, tty=False)
    board.show({"a": "a started"})
    board.show({"a": "a started"})  # unchanged: not printed again
    board.log("built x")
    board.show({"a": "a started  last request 200"})
    assert out.getvalue() == "a started\nbuilt x\na started  last request 200\n"


def test_the_board_rewrites_its_lines_on_a_terminal():
    out = io.StringIO()
    board = Board(out, tty=True)
    board.show({"a": "a started", "b": "b started"})
    board.log("built x")
    text = out.getvalue()
    assert text.startswith("a started\nb started\n")
    assert "\x1b[2F\x1b[J" + "built x\n" + "a started\nb started\n" in text  # up two lines, clear, log, redraw


# -- the session with fakes --------------------------------------------------------------------------------------
class FakeBuilder:
    def __init__(self):
        self.ok = True
        self.builds: list[str] = []
        self.removed: list[str] = []

    def build_image(self, context_dir, tag, labels, on_output=None):
        self.builds.append(tag)
        if on_output:
            on_output("Step 1/2 : FROM python:3.12-slim\n")
        if not self.ok:
            return BuildResult(ok=False, logs="Step 2/2 : RUN exit 3\nThe command returned a non-zero code: 3\n")
        return BuildResult(ok=True, logs="", image_id=f"sha256:{len(self.builds):064d}")

    def remove_image(self, ref, untagged_only=False):
        self.removed.append(ref)
        return True

    tagged: list[tuple[str, str]] = []

    def tag_image(self, source, target):
        self.tagged = [*self.tagged, (source, target)]


class FakeClient:
    url = "http://grokemu.test"

    def __init__(self, builder: FakeBuilder):
        self.builder = builder
        self.uploads: list[dict] = []
        self.running = ""

    def json(self, method, path, **_):
        assert (method, path) == ("GET", "users/current")
        return {"login": "admin"}

    def upload(self, name, files, release=False):
        self.uploads.append(files)
        if "dockerfiles/squares/image.json" in files:  # grokemu validates it: the tagged build runs
            self.running = f"sha256:{len(self.builder.builds):064d}"
        return {"name": name, "dockerImages": []}

    def snapshot(self):
        return {"now": 0, "containers": [{"id": "c1", "name": "devpkg-squares", "status": "started",
                                          "package": {"name": "@t/devpkg"},
                                          "grokemu": {"runningImageId": self.running}}]}

    def proxy_url(self, cid, path="/"):
        return f"{self.url}/api/docker/containers/proxy/{cid}/"

    def run(self, cid):
        raise AssertionError("a started container is not run again")

    replace_fails = False
    replaced: list[str] = []

    def replace(self, cid, image):
        self.replaced = [*self.replaced, image]
        if self.replace_fails:
            raise ClientError("POST ...: 500", 500, json.dumps({"#type": "ApiError", "message": "exited with 1"}))
        self.running = f"sha256:{len(self.builder.builds):064d}"
        return {"id": cid}


@pytest.fixture
def session(tmp_path):
    (tmp_path / "package.json").write_text(json.dumps({"name": "@t/devpkg", "version": "1.0.0"}))
    (tmp_path / "package.js").write_text("export function a() {}\n")
    (tmp_path / "dockerfiles" / "squares").mkdir(parents=True)
    (tmp_path / "dockerfiles" / "squares" / "Dockerfile").write_text("FROM python:3.12-slim\n")
    (tmp_path / "dockerfiles" / "squares" / "app.py").write_text("print(1)\n")
    builder = FakeBuilder()
    client = FakeClient(builder)
    out = io.StringIO()
    s = DevSession(client, tmp_path, builder, Board(out, tty=False))  # type: ignore[arg-type]
    s.start()
    return s, client, builder, out, tmp_path


def test_the_first_publish_builds_uploads_everything_and_names_the_build(session):
    s, client, builder, out, _ = session
    assert builder.builds == ["datagrok/devpkg-squares:admin"]  # the grok CLI's debug tag: the login
    [first] = client.uploads
    assert set(first) == {"package.json", "package.js", "dockerfiles/squares/Dockerfile", "dockerfiles/squares/app.py",
                          "dockerfiles/squares/image.json", "timestamps.json"}
    assert json.loads(first["dockerfiles/squares/image.json"]) == {"image": "datagrok/devpkg-squares:admin",
                                                                   "fallback": False}
    assert "devpkg-squares  started  http://grokemu.test/api/docker/containers/proxy/c1/" in out.getvalue()


def test_a_save_in_a_docker_folder_rebuilds_replaces_live_then_uploads_the_delta(session):
    s, client, builder, out, root = session
    (root / "dockerfiles" / "squares" / "app.py").write_text("print(2)\n")
    s.handle(["dockerfiles/squares/app.py"])
    assert len(builder.builds) == 2
    assert client.replaced == ["datagrok/devpkg-squares:admin"]  # the started container, replaced live
    assert "replaced live (container id c1, unchanged)" in out.getvalue()
    delta_upload = client.uploads[-1]
    assert set(delta_upload) == {"dockerfiles/squares/app.py", "dockerfiles/squares/image.json", "timestamps.json"}
    assert f"runs sha256:{2:064d}"[:24] in out.getvalue()
    assert builder.removed == [f"sha256:{1:064d}"]  # the replaced build: removed once nothing runs it


def test_a_failed_build_uploads_nothing_and_says_the_old_container_serves(session):
    s, client, builder, out, root = session
    builder.ok = False
    (root / "dockerfiles" / "squares" / "Dockerfile").write_text("FROM python:3.12-slim\nRUN exit 3\n")
    s.handle(["dockerfiles/squares/Dockerfile"])
    assert len(client.uploads) == 1  # only the first publish
    text = out.getvalue()
    assert "FAILED" in text and "returned a non-zero code: 3" in text and "nothing uploaded" in text
    assert "FAILED, the previous image serves: the build failed: The command returned a non-zero code: 3" in text
    # another file changes meanwhile: it goes up, the broken folder's files stay back
    (root / "package.js").write_text("export function b() {}\n")
    s.handle(["package.js"])
    upload = client.uploads[-1]
    assert "package.js" in upload and "dockerfiles/squares/Dockerfile" not in upload
    assert "dockerfiles/squares/Dockerfile" not in json.loads(upload["timestamps.json"])
    builder.ok = True  # fixed: built, and the folder's files go up with it
    s.handle(["dockerfiles/squares/Dockerfile"])
    assert "dockerfiles/squares/Dockerfile" in client.uploads[-1]


def test_a_new_container_that_fails_leaves_the_old_one_serving_and_its_files_back(session):
    s, client, builder, out, root = session
    client.replace_fails = True
    (root / "dockerfiles" / "squares" / "app.py").write_text("syntax error(\n")
    s.handle(["dockerfiles/squares/app.py"])
    assert "the previous container keeps serving: exited with 1" in out.getvalue()
    assert len(client.uploads) == 1  # nothing else changed: no upload, so no validation picks the broken build
    serving, broken = f"sha256:{1:064d}", f"sha256:{2:064d}"
    assert builder.tagged == [(serving, "datagrok/devpkg-squares:admin")]  # the tag back on what serves
    assert builder.removed == [broken]
    *_, status, last = out.getvalue().splitlines()
    assert "FAILED, the previous image serves: its new container failed: exited with 1" in status
    assert last.startswith("up to date, ") and "nothing uploaded" in last
    (root / "package.js").write_text("export function d() {}\n")  # another change: it goes up without the folder
    s.handle(["package.js"])
    upload = client.uploads[-1]  # nothing of the folder whose new container failed, nor its image.json
    assert "package.js" in upload
    assert "dockerfiles/squares/app.py" not in upload and "dockerfiles/squares/image.json" not in upload


def test_a_save_outside_dockerfiles_reuploads_without_a_build(session):
    s, client, builder, _, root = session
    (root / "package.js").write_text("export function c() {}\n")
    s.handle(["package.js"])
    assert len(builder.builds) == 1
    assert set(client.uploads[-1]) == {"package.js", "dockerfiles/squares/image.json", "timestamps.json"}


def test_quiet_ms_takes_milliseconds_and_refuses_anything_else():
    import subprocess
    import sys

    for bad in ("soon", "-1", "1e9", "nan"):
        run = subprocess.run([sys.executable, "-m", "grokemu", "dev", ".", "--quiet-ms", bad], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2 and "between 0 and 60000" in run.stderr, (bad, run.stderr)
