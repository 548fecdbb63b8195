"""Queue functions without Docker: publish registers DockerFuncs, the JS client's lookup finds them, and a call goes
through the dispatch (start, publish, accepted, result), the pipe relay, cancel and the deadlines, with the broker
and the worker played by tests/fake_broker.py. The real RabbitMQ, worker and JS client: tests/e2e/."""
from __future__ import annotations

import json
import urllib.parse

import pytest

from grokemu.app import create_app
from grokemu.config import Settings
from grokemu.domain.lifecycle import ContainerStatus
from grokemu.web.context import app_context
from tests.fake_broker import FakeBroker, ListChannel
from tests.helpers import package_zip

WORKER = '''#name: addNumbers
#input: int a
#input: int b = 2
#output: int sum
@app.task(name="add", base=DatagrokTask)
def add(a, b=2):
    return a + b

#name: table
#input: dataframe df
#output: dataframe out
@app.task(name="table", base=DatagrokTask)
def table(df):
    return df

#name: broken
#input: nonsense x
def broken(x):
    pass
'''


@pytest.fixture
def broker():
    return FakeBroker()


@pytest.fixture
def app(tmp_path, orchestrator, clock, broker):
    settings = Settings(data_dir=tmp_path / "data", port=8080, dev_keys={"admin": "admin"},
                        amqp_url="amqp://u:p@broker:5672", task_pickup_timeout=60, cancel_grace=10)
    return create_app(settings, orchestrator=orchestrator, clock=clock, background=False,
                      connect_broker=lambda url: broker)


def publish(client, token, on_demand=True):
    files = {
        "package.json": json.dumps({"name": "@acme/queue-probe", "friendlyName": "Queue Probe", "version": "1.0.0"}),
        "dockerfiles/worker/Dockerfile": "FROM scratch\nCOPY . /app\nEXPOSE 8000\n",
        "dockerfiles/worker/container.json": json.dumps({"on_demand": on_demand, "cpu": 1, "shutdown_timeout": 1}),
        "dockerfiles/worker/tasks_mod.py": WORKER,
    }
    resp = client.post("/api/packages/dev/@acme/queue-probe?debug=true", data=package_zip(files),
                       headers={"Authorization": "Dev admin"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def ready(ctx, broker):
    ctx.scheduler.run_once()  # validates the image
    container = next(c for c in ctx.store.list_containers() if c.package == "@acme/queue-probe")
    broker.queues[container.task_queue] = 1  # the worker consumes its queue
    return container


def test_publish_registers_the_functions_and_the_client_finds_them(client, token, broker):
    publish(client, token)
    ctx = app_context(client.application)
    image = next(i for i in ctx.store.list_images() if i.package == "@acme/queue-probe")
    assert image.warnings == ["dockerfiles/worker/tasks_mod.py:17: #input: unknown type 'nonsense' (Datagrok types: "
                              + image.warnings[0].split("(Datagrok types: ")[1]]
    # the JS client's lookup, encoded twice as datagrok-api 1.27.9 sends it
    text = urllib.parse.quote('shortName = "add" and namespace = "QueueProbe:"')
    resp = client.get(f"/api/entities?text={urllib.parse.quote(text)}", headers={"Authorization": token})
    assert resp.status_code == 200
    (func,) = resp.get_json()
    assert (func["#type"], func["name"], func["friendlyName"], func["namespace"]) == \
        ("DockerFunc", "add", "addNumbers", "QueueProbe:")
    assert [(p["name"], p["propertyType"], p["isInput"]) for p in func["params"]] == \
        [("a", "int", True), ("b", "int", True), ("sum", "int", False)]
    container = ctx.store.get_container(func["container"]["id"])
    assert container.task_queue == func["messageQueueName"] and container.celery_name == "queue-probe-worker".replace("-", "_")
    assert client.get(f"/api/entities?text={text}").status_code == 401  # a session, as every /api route
    # a republish keeps the function's id
    publish(client, token)
    again = client.get(f"/api/entities?text={urllib.parse.quote(text)}", headers={"Authorization": token}).get_json()
    assert again[0]["id"] == func["id"]


def caller(client, token, broker):
    """The package published, its worker consuming, and a client session with the frames it was sent."""
    publish(client, token)
    ctx = app_context(client.application)
    container = ready(ctx, broker)
    channel = ListChannel()
    return ctx, container, channel, ctx.calls.session(channel, "admin", token)


def call_frame(n, call_id, name="add", values=None):
    return f"{n} CALL " + json.dumps({"id": call_id, "func": {"name": name, "namespace": "QueueProbe:"},
                                      "parameterValues": values or {"a": 1, "b": 2}, "options": {}, "aux": {}})


def test_a_call_is_published_accepted_and_answered(client, token, broker, clock):
    ctx, container, channel, session = caller(client, token, broker)
    session.frame(call_frame(1, "call-1"))
    assert channel.frames == []
    assert ctx.store.get_container(container.id).status is ContainerStatus.STARTED  # on_demand: started for it
    (sent,) = broker.published
    assert (sent["queue"], sent["task"], sent["id"]) == (container.task_queue, "add", "call-1")
    assert sent["call"]["aux"]["USER_API_KEY"] == token and sent["call"]["aux"]["batchSize"] == 2_048_000
    broker.emit("call-1", "accepted", {})
    broker.emit("call-1", "progress", {"percent": 50, "description": "half"})
    broker.emit("call-1", "call", {"id": "call-1", "status": "Completed", "parameterValues": {"a": 1, "b": 2, "sum": 3}})
    assert channel.texts("PROGRESS") == ['1 PROGRESS {"percent": 50, "description": "half"}']
    (final,) = channel.texts("CALL")
    result = json.loads(final[len("1 CALL "):])
    assert result["status"] == "Completed" and result["parameterValues"]["sum"] == 3
    assert [p["name"] for p in result["func"]["params"]] == ["a", "b", "sum"]
    assert "USER_API_KEY" not in result["aux"]
    assert ctx.calls.recent(container.id)[0]["status"] == "Completed"


def test_the_container_environment_of_a_worker(client, token, broker):
    publish(client, token)
    ctx = app_context(client.application)
    container = ready(ctx, broker)
    spec, _ = ctx.spawner.run_specs.build(container, ctx.store.get_image(container.image_id))
    env = spec.env
    assert (env["DATAGROK_AMPQ_HOST"], env["DATAGROK_AMPQ_PORT"], env["DATAGROK_AMPQ_USER"],
            env["DATAGROK_AMPQ_PASSWORD"], env["DATAGROK_AMPQ_TLS"]) == ("broker", "5672", "u", "p", "false")
    assert (env["DATAGROK_PIPE_HOST"], env["DATAGROK_PIPE_PORT"]) == ("host.docker.internal", "8080")
    assert env["TASK_QUEUE_NAME"] == container.task_queue and env["DATAGROK_CELERY_NAME"] == "queue_probe_worker"
    assert env["WORKERS_PROCESSES"] == "2" and len(env["DATAGROK_PIPE_KEY"]) >= 32
    assert spec.network == ""  # an existing broker (amqp_url) is reached as configured, from the default bridge
    again, _ = ctx.spawner.run_specs.build(container, ctx.store.get_image(container.image_id))
    assert again.env["CELERY_HOSTNAME"] != env["CELERY_HOSTNAME"]  # unique per start
    assert again.env["DATAGROK_PIPE_KEY"] != env["DATAGROK_PIPE_KEY"]


def test_unknown_function_and_malformed_frames_get_clear_answers(client, token, broker):
    publish(client, token)
    ctx = app_context(client.application)
    ready(ctx, broker)
    channel = ListChannel()
    session = ctx.calls.session(channel, "admin", token)
    session.frame(call_frame(1, "c-unknown", name="nope"))
    session.frame("2 CALL {not json")
    session.frame("garbage")
    session.frame(b"\x00")
    errors = [json.loads(f.split(" CALL ", 1)[1]) for f in channel.texts("CALL")]
    assert [e["status"] for e in errors] == ["Error", "Error"]
    assert errors[0]["errorMessage"].startswith("Unknown function QueueProbe:nope")
    assert "no FuncCall JSON" in errors[1]["errorMessage"]
    assert [f for f in channel.frames if isinstance(f, str) and f.startswith("ERROR")] == [
        "ERROR expected '<n> <message>', got 'garbage'", "ERROR a binary frame shorter than its 4-byte call number"]
    assert broker.published == []


def test_cancel_before_and_during_a_run(client, token, broker, clock):
    publish(client, token)
    ctx = app_context(client.application)
    ready(ctx, broker)
    channel = ListChannel()
    session = ctx.calls.session(channel, "admin", token)
    session.frame(call_frame(1, "c1"))
    session.frame("1 CANCEL")  # queued, never accepted: grokemu answers Canceled itself
    assert broker.revoked == ["c1"]
    assert json.loads(channel.texts("CALL")[0][len("1 CALL "):])["status"] == "Canceled"
    session.frame(call_frame(2, "c2"))
    broker.emit("c2", "accepted", {})
    session.frame("2 CANCEL")
    assert broker.revoked == ["c1", "c2"] and len(channel.texts("CALL")) == 1  # waits for the worker's Canceled
    clock.advance(11)
    ctx.calls.tick()  # the worker said nothing within cancel_grace
    assert json.loads(channel.texts("CALL")[1][len("2 CALL "):])["status"] == "Canceled"


def test_pickup_timeout_and_a_container_that_stops_under_a_call(client, token, broker, clock):
    ctx, container, channel, session = caller(client, token, broker)
    session.frame(call_frame(1, "p1"))
    clock.advance(61)
    ctx.calls.tick()
    (final,) = channel.texts("CALL")
    assert "no worker picked the task up within 60 s" in json.loads(final[len("1 CALL "):])["errorMessage"]
    session.frame(call_frame(2, "p2"))
    broker.emit("p2", "accepted", {})
    ctx.spawner.stop(container.id)
    ctx.calls.tick()
    last = json.loads(channel.texts("CALL")[-1][len("2 CALL "):])
    assert last["status"] == "Error" and "its container is" in last["errorMessage"]


def test_idle_shutdown_waits_for_a_running_call(client, token, broker, clock):
    ctx, container, channel, session = caller(client, token, broker)
    session.frame(call_frame(1, "long"))
    broker.emit("long", "accepted", {})
    clock.advance(3600 * 5)
    ctx.spawner.tick()
    assert ctx.store.get_container(container.id).status is ContainerStatus.STARTED
    broker.emit("long", "call", {"id": "long", "status": "Completed", "parameterValues": {"sum": 3}})
    clock.advance(3600 * 5)
    ctx.spawner.tick()
    assert ctx.store.get_container(container.id).status is not ContainerStatus.STARTED


def test_the_pipe_relays_both_ways_and_only_to_its_container(client, token, broker):
    ctx, container, channel, session = caller(client, token, broker)
    session.frame(call_frame(4, "df1", name="table", values={"df": {"#type": "TableInfo", "id": "t1"}}))
    key = "the-key"
    fresh = ctx.store.get_container(container.id)
    fresh.pipe_key_hash = ctx.spawner.run_specs.pipe_key_hash(key)
    ctx.store.put_container(fresh)
    from grokemu.domain.errors import Forbidden, NotFound, Unauthorized

    for bad_key, error in (("", Unauthorized), ("wrong", Unauthorized)):
        with pytest.raises(error):
            ctx.calls.join_pipe("df1", bad_key)
    with pytest.raises(NotFound):
        ctx.calls.join_pipe("not-a-call", key)
    call = ctx.calls.join_pipe("df1", key)
    worker = ListChannel()
    ctx.calls.attach_pipe(call, worker)
    ctx.calls.pipe_frame(call, "PARAM df")
    session.frame('4 SENDING DATAFRAME 3 {".id": "t1"}')
    session.frame(b"\x00\x00\x00\x04abc")
    ctx.calls.pipe_frame(call, "PART_OK")
    session.frame("4 PARAM_SENT df")
    ctx.calls.pipe_frame(call, 'SENDING DATAFRAME 2 {".id": "o1", ".type": "csv"}')
    ctx.calls.pipe_frame(call, b"xy")
    session.frame("4 PART OK")
    ctx.calls.pipe_frame(call, 'CALL {"id": "df1", "status": "Completed", "parameterValues": {"out": {"id": "o1"}}}')
    assert worker.frames == ['SENDING DATAFRAME 3 {".id": "t1"}', b"abc", "PARAM_SENT df", "PART OK"]
    assert channel.frames[:4] == ["4 PARAM df", "4 PART OK", '4 SENDING DATAFRAME 2 {".id": "o1", ".type": "csv"}',
                                  b"\x00\x00\x00\x04xy"]
    assert json.loads(channel.frames[4][len("4 CALL "):])["parameterValues"]["out"] == {"id": "o1"}
    # another container's key may not join a call it was not sent to
    other = ctx.store.get_container(container.id)
    other.id, other.name, other.pipe_key_hash = "other", "other", ctx.spawner.run_specs.pipe_key_hash("k2")
    ctx.store.put_container(other)
    session.frame(call_frame(5, "df2", name="table", values={"df": {"id": "t2"}}))
    with pytest.raises(Forbidden):
        ctx.calls.join_pipe("df2", "k2")
    # the pipe key dies when the container stops
    ctx.spawner.stop(container.id)
    assert ctx.store.get_container(container.id).pipe_key_hash == ""


def test_reset_answers_running_calls(client, token, broker):
    publish(client, token)
    ctx = app_context(client.application)
    ready(ctx, broker)
    channel = ListChannel()
    ctx.calls.session(channel, "admin", token).frame(call_frame(1, "r1"))
    resp = client.post("/_grokemu/reset", headers={"Authorization": token})
    assert resp.status_code == 200
    assert "grokemu was reset" in channel.texts("CALL")[0]
    assert broker.closed


def test_the_dockers_page_lists_a_workers_functions_and_its_calls(client, token, broker):
    ctx, container, channel, session = caller(client, token, broker)
    session.frame(call_frame(1, "call-1"))
    session.frame(call_frame(2, "call-2", values={"a": 5}))

    def pane():
        snap = client.get("/_grokemu/dashboard/snapshot", headers={"Authorization": token}).get_json()
        return next(c for c in snap["containers"] if c["id"] == container.id)["grokemu"]

    g = pane()
    add = next(f for f in g["functions"] if f["nqName"] == "QueueProbe:add")
    assert (add["friendlyName"], add["params"], add["outputs"]) == ("addNumbers", ["int a", "int b"], ["int sum"])
    assert sorted((c["id"], c["status"], c["login"]) for c in g["calls"]) == \
        [("call-1", "queued", "admin"), ("call-2", "queued", "admin")]
    broker.emit("call-1", "accepted", {})
    broker.emit("call-1", "call", {"id": "call-1", "status": "Completed", "parameterValues": {"a": 1, "b": 2, "sum": 3}})
    session.frame("2 CANCEL")
    calls = pane()["calls"]
    assert [(c["id"], c["status"]) for c in calls] == [("call-2", "Canceled"), ("call-1", "Completed")]
    assert all(c["function"] == "QueueProbe:add" and c["durationMs"] >= 0 for c in calls)
    assert client.get("/_grokemu/dashboard/snapshot").status_code == 401  # the calls list needs a session too


def test_a_worker_that_never_consumes_its_queue_is_an_error_with_its_logs(client, token, broker, clock, orchestrator):
    publish(client, token)
    ctx = app_context(client.application)
    ctx.scheduler.run_once()  # validates the image
    container = next(c for c in ctx.store.list_containers() if c.package == "@acme/queue-probe")
    ctx.spawner.run(container.id, "admin")
    for _ in range(5):
        ctx.spawner.tick()
    checking = ctx.store.get_container(container.id)
    assert checking.status is ContainerStatus.CHECKING  # running, but nothing consumes its queue
    orchestrator.containers[checking.docker_id].log.append("ImportError: no module named celery\n")
    clock.advance(ctx.settings.container_status_timeout + 1)
    ctx.spawner.tick()
    failed = ctx.store.get_container(container.id)
    assert failed.status is ContainerStatus.ERROR
    assert f"did not consume its queue {container.task_queue}" in failed.error
    assert "no module named celery" in failed.last_logs
    assert orchestrator.list_labelled({"grokemu.container": container.id}) == []  # no orphan left running


def test_finished_calls_are_inspector_entries_with_the_tasks_error(client, token, broker):
    """Issue 20: a call the worker answers, and one its task fails (the error in the worker's own result), are
    entries of kind `call` on GET /_grokemu/requests, newest first, without the caller's key."""
    ctx, container, channel, session = caller(client, token, broker)
    session.frame(call_frame(1, "call-1"))
    session.frame(call_frame(2, "call-2", name="table", values={"df": "a\n1\n"}))
    broker.emit("call-1", "call", {"id": "call-1", "status": "Completed", "parameterValues": {"a": 1, "b": 2, "sum": 3}})
    broker.emit("call-2", "call", {"id": "call-2", "status": "Error", "errorMessage": "df is broken",
                                   "errorStackTrace": "Traceback ..."})
    resp = client.get(f"/_grokemu/requests?container={container.id}", headers={"Authorization": token})
    assert resp.status_code == 200
    entries = resp.get_json()
    assert [(e["kind"], e["method"], e["path"], e["status"]) for e in entries] == \
        [("call", "CALL", "QueueProbe:table", "Error"), ("call", "CALL", "QueueProbe:add", "Completed")]
    assert entries[0]["error"] == "df is broken" and entries[1]["error"] is None
    assert json.loads(entries[1]["responseBody"]) == {"a": 1, "b": 2, "sum": 3}
    assert token not in json.dumps(entries)
