"""Issue 18 end to end: Python functions in a Celery worker, called by Datagrok's real JS client.

`grokemu up` runs the broker (rabbitmq:4.0.5-management, an offline stand-in here) itself; samples/queue's worker is
built from its Dockerfile on the real datagrok-celery-task 0.1.8 + celery, and datagrok-api 1.27.9 in Node
(tests/e2e/js/proxy-client.mjs) calls it with `grok.functions.call`, `funcs.get(...).prepare(...).call()` and
`cancel()`, exactly as plugin code does. Every value crosses the real call socket, the real broker and, for
dataframes and blobs, the real pipe.
"""
from __future__ import annotations

import json
import signal
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from grokemu.function_call import FunctionCallError
from grokemu.testing import Grokemu, GrokemuProcess
from tests.helpers import free_port, js_runner, publish_ready, remove_images, sample_copy, wait_until

pytestmark = pytest.mark.e2e


def queue_copy(**container):
    """samples/queue under a unique package name and friendlyName (so its namespace is its own), keeping only the
    hand-written worker (the python/ folder is the grok CLI's to turn into a worker: test_publish_grok_cli.py)."""
    suffix = uuid.uuid4().hex[:6]

    def edit(files):
        for path in [p for p in files if p.startswith("python/")]:
            del files[path]
        meta = json.loads(files["package.json"])
        meta["friendlyName"] = f"Queue Demo {suffix}"
        files["package.json"] = json.dumps(meta).encode()
        config = "dockerfiles/worker/container.json"
        files[config] = json.dumps({**json.loads(files[config]), **container}).encode()

    return sample_copy("queue", edit=edit)


def functions_of(api: str, token: str, package: str) -> dict[str, dict]:
    r = requests.get(f"{api}/docker/functions", headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text
    return {f["name"]: f for f in r.json() if f["package"]["name"] == package}


def container(api: str, token: str, cid: str) -> dict:
    r = requests.get(f"{api}/docker/containers/{cid}", headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


class Worker:
    """A published copy of the queue sample: its namespace (`Pkg:`), container id and name."""

    def __init__(self, api: str, token: str, **container_json):
        self.package, files = queue_copy(**container_json)
        c = publish_ready(api, token, self.package, files, timeout=600)
        self.id, self.name = c["id"], c["name"]
        funcs = functions_of(api, token, self.package)
        assert "add" in funcs, sorted(funcs)
        self.namespace = funcs["add"]["namespace"]  # "QueueDemoAb12cd:"
        self.functions = funcs

    def nq(self, task: str) -> str:
        return f"{self.namespace}{task}"


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image):
    proc = GrokemuProcess(tmp_path_factory.mktemp("grokemu-queue"))
    proc.start()
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def token(server):
    return server.login()


@pytest.fixture(scope="module")
def js(server, token):
    return js_runner(server.api, token)


@pytest.fixture(scope="module")
def worker(server, token):
    w = Worker(server.api, token)
    yield w
    remove_images(w.name)


def test_the_registry_answers_what_the_client_resolves(worker):
    add = worker.functions["add"]
    assert add["#type"] == "DockerFunc" and add["nqName"] == worker.nq("add")
    assert [(p["name"], p["propertyType"], p["isInput"]) for p in add["params"]] == \
        [("a", "int", True), ("b", "int", True), ("sum", "int", False)]
    # the callable name is the Celery task name, the #name header the friendly one
    assert worker.functions["next_big"]["friendlyName"] == "nextBig"
    assert worker.functions["add"]["messageQueueName"] == worker.functions["fail"]["messageQueueName"]


def test_scalars_of_every_type_in_and_out(js, worker):
    got = js(f"""
      const f = grok.functions, ns = {json.dumps(worker.namespace)};
      const when = await f.call(ns + 'next_day', {{when: DG.dayjs('2024-05-06T07:08:09.010Z')}});
      return {{
        int: await f.call(ns + 'add', {{a: 40, b: 2}}),
        intDefault: await f.call(ns + 'add', {{a: 40}}),
        double: await f.call(ns + 'scale', {{x: 1.5, factor: 3}}),
        bool: await f.call(ns + 'negate', {{flag: true}}),
        string: await f.call(ns + 'shout', {{text: 'héllo "x" ✓'}}),
        bigint: String(await f.call(ns + 'next_big', {{n: '9007199254740993'}})),
        datetime: [DG.dayjs.isDayjs ? DG.dayjs.isDayjs(when) : typeof when, when.toISOString()],
      }};""")
    assert got == {"int": 42, "intDefault": 42, "double": 4.5, "bool": False, "string": 'HÉLLO "X" ✓!',
                   "bigint": "9007199254740994", "datetime": [True, "2024-05-07T07:08:09.010Z"]}


def test_a_dataframe_and_a_blob_in_and_out_through_the_pipe(js, worker):
    got = js(f"""
      const f = grok.functions, ns = {json.dumps(worker.namespace)};
      const df = DG.DataFrame.fromCsv('a,b,name\\n1,2,x\\n3,4.5,y\\n,6,z');
      const out = await f.call(ns + 'add_total', {{table: df}});
      const rows = await f.call(ns + 'row_count', {{table: df}});
      const bytes = new Uint8Array(300000).map((_, i) => i % 251);
      const size = await f.call(ns + 'byte_count', {{data: DG.FileInfo.fromBytes('x.bin', bytes)}});
      const rev = await f.call(ns + 'reverse_bytes', {{data: DG.FileInfo.fromBytes('y.bin', new Uint8Array([1, 2, 3, 250]))}});
      return {{
        isDataFrame: out instanceof DG.DataFrame, columns: out.columns.names(), total: out.col('total').toList(),
        rows, size, blob: [rev.constructor.name, Array.from(rev.data)],
      }};""")
    assert got == {"isDataFrame": True, "columns": ["a", "b", "name", "total"], "total": [3, 7.5, 6], "rows": 3,
                   "size": 300000, "blob": ["FileInfo", [250, 3, 2, 1]]}


def test_progress_and_the_tasks_output_reach_the_caller(js, worker):
    got = js(f"""
      const pi = DG.ProgressIndicator.create(), progress = [], logs = [];
      pi.onProgressUpdated.subscribe(() => progress.push([pi.percent, pi.description]));
      pi.onLogUpdated.subscribe((line) => logs.push(String(line)));
      const result = await grok.functions.call({json.dumps(worker.nq('countdown'))}, {{steps: 3, interval: 0.05}},
                                               false, pi);
      return {{result, progress, logs: logs.filter((l) => l.trim())}};""")
    assert got == {"result": "counted 3", "progress": [[0, "step 1 of 3"], [33, "step 2 of 3"], [66, "step 3 of 3"]],
                   "logs": ["countdown step 1", "countdown step 2", "countdown step 3"]}


def test_a_task_error_rejects_the_call_with_its_message(js, worker):
    got = js(f"""
      const call = (await grok.functions.get({json.dumps(worker.nq('fail'))})).prepare({{message: 'planned failure 7'}});
      try {{ await call.call(); return 'resolved'; }}
      catch (e) {{ return {{error: String(e?.message ?? e), status: call.status}}; }}""")
    assert got["error"].startswith("planned failure 7"), got
    assert got["status"] == "Error"


def test_the_task_runs_with_the_callers_identity(server, js, worker):
    me = requests.get(f"{server.api}/users/current", headers={"Authorization": server.login()}, timeout=30).json()
    assert js(f"return await grok.functions.call({json.dumps(worker.nq('whoami'))}, {{}});") == me["login"]


def test_twenty_concurrent_calls_each_get_their_own_answer(js, worker):
    got = js(f"""
      const ns = {json.dumps(worker.namespace)};
      return await Promise.all([...Array(20).keys()].map((i) => grok.functions.call(ns + 'add', {{a: i, b: 1000}})));""")
    assert got == [i + 1000 for i in range(20)]


def test_cancel_during_a_run(js, worker):
    got = js(f"""
      const call = (await grok.functions.get({json.dumps(worker.nq('countdown'))})).prepare({{steps: 600, interval: 0.1}});
      const pi = DG.ProgressIndicator.create(); let started;
      const running = new Promise((resolve) => {{ started = resolve; }});
      pi.onProgressUpdated.subscribe(() => started());
      const outcome = call.call(false, pi).then(() => 'resolved', (e) => 'rejected: ' + e);
      await running;                      // the task has reported progress: it runs in the worker
      await call.cancel();
      return [await outcome, call.status];""")
    assert got == ["resolved", "Canceled"]


def test_cancel_before_the_task_starts(js, worker, server):
    """Both worker processes (WORKERS_PROCESSES = 2 x cpu 1) are busy with long tasks, so a third call waits in the
    queue (the Dockers page lists it `queued`); canceled there, it never runs, and the caller still gets a Canceled
    call. The long ones are canceled too."""
    got = js(f"""
      const f = await grok.functions.get({json.dumps(worker.nq('countdown'))});
      const snapshot = async () => (await (await fetch({json.dumps(server.url)} + '/_grokemu/dashboard/snapshot',
        {{headers: {{Authorization: token}}}})).json()).containers.find((c) => c.id === {json.dumps(worker.id)});
      const until = async (what, check) => {{
        for (const deadline = Date.now() + 60000; Date.now() < deadline;) {{
          const value = check(await snapshot());
          if (value) return value;
          await new Promise((r) => setTimeout(r, 100));
        }}
        throw new Error('not in time: ' + what);
      }};
      const busy = [], outcomes = [];
      for (let i = 0; i < 2; i++) {{
        const call = f.prepare({{steps: 600, interval: 0.1}}), pi = DG.ProgressIndicator.create();
        const started = new Promise((resolve) => pi.onProgressUpdated.subscribe(() => resolve()));
        outcomes.push(call.call(false, pi).then(() => 'resolved', (e) => 'rejected: ' + e));
        busy.push([call, started]);
      }}
      for (const [, started] of busy) await started;
      const queued = f.prepare({{steps: 1, interval: 0}}), pi = DG.ProgressIndicator.create();
      let reported = false;
      pi.onProgressUpdated.subscribe(() => {{ reported = true; }});
      const waiting = queued.call(false, pi).then(() => 'resolved', (e) => 'rejected: ' + e);
      const states = await until('a queued call', (c) => {{
        // the live calls only: the list also holds the last finished calls of earlier tests
        const s = c.grokemu.calls.map((x) => x.status).filter((x) => x === 'queued' || x === 'running');
        return s.includes('queued') && s;
      }});
      await queued.cancel();
      const early = [await waiting, queued.status, reported];
      for (const [call] of busy) await call.cancel();
      const busyOutcomes = [await outcomes[0], await outcomes[1], busy[0][0].status, busy[1][0].status];
      const last = (await snapshot()).grokemu.calls.slice(0, 3).map((x) => [x.function, x.status, x.login]);
      return {{states: states.sort(), early, busy: busyOutcomes, last}};""")
    nq = worker.nq("countdown")
    assert got == {"states": ["queued", "running", "running"], "early": ["resolved", "Canceled", False],
                   "busy": ["resolved", "resolved", "Canceled", "Canceled"],
                   "last": [[nq, "Canceled", "admin"]] * 3}


def test_a_cold_call_starts_the_stopped_on_demand_worker(server, token, js, worker):
    r = requests.get(f"{server.api}/docker/containers/{worker.id}/stop?awaitStop=true",
                     headers={"Authorization": token}, timeout=120)
    assert r.status_code == 200, r.text
    assert container(server.api, token, worker.id)["status"] == "stopped by user"
    assert js(f"return await grok.functions.call({json.dumps(worker.nq('add'))}, {{a: 1, b: 1}});") == 2
    assert container(server.api, token, worker.id)["status"] == "started"


def test_a_call_after_idle_shutdown_starts_the_worker_again(server, token, js):
    idle = Worker(server.api, token, shutdown_timeout=0.05)  # 3 s of no calls
    try:
        assert js(f"return await grok.functions.call({json.dumps(idle.nq('add'))}, {{a: 2, b: 3}});") == 5
        wait_until(lambda: container(server.api, token, idle.id)["status"] == "stopped by system", 60,
                   "the idle worker stopped by the system")
        assert js(f"return await grok.functions.call({json.dumps(idle.nq('add'))}, {{a: 3, b: 4}});") == 7
    finally:
        remove_images(idle.name)


def test_a_call_after_grokemu_is_killed_and_restarted(tmp_path, base_image):
    """kill -9 leaves the broker and the worker running; the restarted grokemu re-adopts both (same credentials from
    its data directory) and the next call is answered."""
    data, port = tmp_path / "data", str(free_port())  # the same port after the restart: workers keep their API URL
    first = GrokemuProcess(data, "--port", port)
    first.start()
    second = None
    try:
        token = first.login()
        w = Worker(first.api, token)
        run = js_runner(first.api, token)
        assert run(f"return await grok.functions.call({json.dumps(w.nq('add'))}, {{a: 5, b: 5}});") == 10
        first.stop(signal.SIGKILL)
        second = GrokemuProcess(data, "--port", port, instance=first.instance)
        second.start()
        token = second.login()
        again = js_runner(second.api, token)
        assert again(f"return await grok.functions.call({json.dumps(w.nq('add'))}, {{a: 6, b: 6}});") == 12
        remove_images(w.name)
    finally:
        (second or first).close()
        if second is not None and first.proc is not None and first.proc.poll() is None:
            first.proc.kill()


def test_the_kit_calls_functions_as_plugin_code_does(server, worker):
    """grokemu.call (grokemu/function_call.py) against the same worker: every kind of value, progress, errors."""
    kit = Grokemu(server.url)
    assert kit.call(worker.nq("add"), a=40, b=2) == 42
    assert kit.call(worker.nq("add"), a=40) == 42  # the declared default
    assert kit.call(worker.nq("scale"), x=1.5, factor=3) == 4.5
    assert kit.call(worker.nq("negate"), flag=False) is True
    assert kit.call(worker.nq("shout"), text="ok ✓") == "OK ✓!"
    assert kit.call(worker.nq("next_big"), n=2**63 - 2) == 2**63 - 1
    when = datetime(2024, 5, 6, 7, 8, 9, 10000, tzinfo=timezone.utc)
    assert kit.call(worker.nq("next_day"), when=when) == when + timedelta(days=1)
    table = kit.call(worker.nq("add_total"), table="a,b\n1,2\n3,4.5\n")
    assert (table if isinstance(table, str) else table.to_csv(index=False)).splitlines() == \
        ["a,b,total", "1,2.0,3.0", "3,4.5,7.5"]
    big = bytes(range(256)) * 8000  # 2 MB: two chunks up, two down
    assert kit.call(worker.nq("byte_count"), data=big) == len(big)
    assert kit.call(worker.nq("reverse_bytes"), data=big) == big[::-1]
    outcome = kit.call_outcome(worker.nq("countdown"), steps=2, interval=0)
    assert outcome.value == "counted 2" and [p["description"] for p in outcome.progress] == ["step 1 of 2", "step 2 of 2"]
    with pytest.raises(FunctionCallError) as failed:
        kit.call(worker.nq("fail"), message="planned failure 9")
    assert failed.value.status == "Error" and str(failed.value).startswith("planned failure 9")
    assert "RuntimeError" in failed.value.stack
    with pytest.raises(LookupError):
        kit.call(f"{worker.namespace}no_such_task")
    with pytest.raises(TypeError):
        kit.call(worker.nq("add"), a=1, c=2)


def test_the_js_clients_calls_are_in_the_request_inspector_without_credentials(server, token, js, worker):
    """Issue 20: each queue-function call the real JS client makes is an inspector entry of kind `call` (method CALL,
    the function as path), with its inputs and answer previewed and no credential anywhere in it."""
    marker = f"inspect-{uuid.uuid4().hex[:8]}"
    got = js(f"""
      const f = grok.functions, ns = {json.dumps(worker.namespace)};
      const said = await f.call(ns + 'shout', {{text: {json.dumps(marker)}}});
      const call = (await f.get(ns + 'fail')).prepare({{message: 'inspected failure'}});
      try {{ await call.call(); }} catch (e) {{}}
      return said;""")
    assert got == f"{marker.upper()}!"
    r = requests.get(f"{server.url}/_grokemu/requests", params={"container": worker.id},
                     headers={"Authorization": token}, timeout=30)
    assert r.status_code == 200, r.text
    calls = [e for e in r.json() if e["kind"] == "call"]
    shout = next(e for e in calls if marker in (e["requestBody"] or ""))
    assert shout["method"] == "CALL" and shout["path"] == worker.nq("shout") and shout["container"] == worker.id
    assert f"{marker.upper()}!" in shout["responseBody"] and shout["durationMs"] >= 0
    failed = next(e for e in calls if e["path"] == worker.nq("fail") and "inspected failure" in (e["requestBody"] or ""))
    assert failed["status"] == "Error" and "inspected failure" in (failed["error"] or "")
    assert calls.index(failed) < calls.index(shout)  # newest first
    text = json.dumps(r.json())
    for secret in (token, server.login()):
        assert secret not in text, "a credential is in an inspector entry"
    # a cross-site page cannot read them
    r = requests.get(f"{server.url}/_grokemu/requests", params={"container": worker.id},
                     headers={"Authorization": token, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                     timeout=30)
    assert r.status_code == 403, r.text
