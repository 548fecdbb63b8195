"""Function headers → DockerFunc (domain/functions.py), the call frames and FuncCall shapes (domain/calls.py), the
entity query the JS client sends (services/functions.py)."""
import pytest

from grokemu.domain.calls import (CallState, FrameError, binary_frame, client_result, split_binary, split_text,
                                  text_frame, worker_request)
from grokemu.domain.errors import BadRequest
from grokemu.domain.functions import (bind, celery_name, friendly_name_to_name, package_namespace, parse_param,
                                      scan_folder, scan_source)
from grokemu.services.functions import parse_entity_query

ADMETICA = '''from celery import Celery
app = Celery("admetica")

#name: runAdmetica
#description: Runs the models
#input: string csv
#input: string models = "a,b" {optional: true}
#input: bool raiseException = false
#output: dataframe result
#meta.cache: all
@app.task(name="run_admetica", base=DatagrokTask)
def run_admetica(csv, models, raiseException=False):
    return csv
'''


def test_a_decorated_task_is_named_by_its_celery_name_not_its_header_name():
    found, warnings = scan_source("Admetica.py", ADMETICA)
    assert warnings == []
    assert [(f.name, f.task, f.line) for f in found] == [("run_admetica", "run_admetica", 12)]
    params = found[0].params
    assert [(p.name, p.property_type, p.is_input, p.default) for p in params] == [
        ("csv", "string", True, None), ("models", "string", True, "a,b"),
        ("raiseException", "bool", True, False), ("result", "dataframe", False, None)]
    assert params[1].options == {"optional": "true"}
    func = bind(found[0], package="@datagrok/admetica", namespace="Admetica", container_id="c1",
                prefix="dockerfiles/", task_queue="q")
    wire = func.to_wire()
    assert (wire["name"], wire["friendlyName"], wire["namespace"], wire["nqName"]) == \
        ("run_admetica", "runAdmetica", "Admetica:", "Admetica:run_admetica")
    assert wire["messageQueueName"] == "q" and wire["options"]["meta.cache"] == "all"
    assert func.file == "dockerfiles/Admetica.py" and func.requires_pipe


def test_a_multiline_decorator_and_a_plain_def():
    text = "#name: a\n#output: int n\n@app.task(\n    base=DatagrokTask,\n    name='alpha')\ndef a():\n    pass\n" \
           "\n#name: b\n#input: double x\ndef b(x):\n    pass\n"
    found, warnings = scan_source("m/tasks.py", text)
    assert warnings == []
    assert [(f.name, f.module) for f in found] == [("alpha", "m.tasks"), ("b", "m.tasks")]


def test_bad_headers_are_warnings_naming_file_and_line():
    text = "#name: bad\n#input: weird x\ndef bad(x):\n    pass\n\n#name: orphan\nx = 1\n#name: last\n"
    found, warnings = scan_source("w.py", text)
    assert found == []
    assert warnings[0].startswith("w.py:2: #input: unknown type 'weird'")
    assert warnings[1] == "w.py:6: a function header with no task after it (expected @app.task(...) or def directly below)"
    assert warnings[2].startswith("w.py:8: a function header with no task")


@pytest.mark.parametrize("text, message", [
    ("int", "expected '<type> <name>'"), ("int n = x", "is not an int"), ("bool b = maybe", "not true or false"),
    ("string s {optional true}", "is not 'key: value'"), ("string s {a: b", "unclosed"),
])
def test_bad_parameters_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_param(text, True)
    with pytest.raises(ValueError, match="no default"):
        parse_param("int n = 3", False)


def test_two_outputs_are_registered_as_declared():
    found, _ = scan_source("two.py", "#name: two\n#output: int a\n#output: int b\ndef two():\n    pass\n")
    assert [p.name for p in found[0].params if not p.is_input] == ["a", "b"]


def test_tasks_yaml_lists_what_the_worker_registers():
    sources = [("a.py", "#name: one\ndef one():\n    pass\n#name: two\ndef two():\n    pass\n")]
    found, warnings = scan_folder(sources, '{"tasks": [{"name": "one", "module": "a"}, {"name": "ghost", "module": "g"}]}')
    assert [f.name for f in found] == ["one"]
    assert any("two is not listed in tasks.yaml" in w for w in warnings)
    assert any("task ghost (g) has no function header" in w for w in warnings)
    found, warnings = scan_folder(sources, "tasks: [")
    assert [f.name for f in found] == ["one", "two"] and warnings[0].startswith("tasks.yaml: ")


def test_names_as_datagrok_and_the_grok_cli_derive_them():
    assert friendly_name_to_name("CVM Tests") == "CVMTests"
    assert package_namespace("@datagrok/cvm-tests", "CVM Tests") == "CVMTests"
    assert package_namespace("@datagrok/admetica", None) == "Admetica"
    assert package_namespace("@datagrok/retrosynthesis", "Retrosynthesis") == "Retrosynthesis"
    assert celery_name("cvmtests-celery") == "cvmtests_celery"


def test_the_entity_query_the_client_sends_decoded_once_more():
    once = "shortName%20%3D%20%22run_admetica%22%20and%20namespace%20%3D%20%22Admetica%3A%22"
    assert parse_entity_query(once) == {"name": "run_admetica", "namespace": "Admetica:"}
    with pytest.raises(BadRequest, match="Unsupported entity query"):
        parse_entity_query('author = "me"')
    with pytest.raises(BadRequest, match="longer than"):
        parse_entity_query("x" * 5000)


def test_call_frames():
    assert split_text("12 CALL {}") == (12, "CALL {}")
    assert text_frame(3, "PART OK") == "3 PART OK"
    n, payload = split_binary(binary_frame(7, b"abc"))
    assert (n, bytes(payload)) == (7, b"abc")
    for bad in ("CALL", "x CALL", "1234567890 CALL"):
        with pytest.raises(FrameError):
            split_text(bad)
    with pytest.raises(FrameError):
        split_binary(b"\x00\x01")


def test_what_the_worker_gets_and_what_the_client_gets_back():
    found, _ = scan_source("Admetica.py", ADMETICA)
    func = bind(found[0], package="@datagrok/admetica", namespace="Admetica", container_id="c1", prefix="",
                task_queue="q")
    call = {"id": "call-1", "func": {"name": "run_admetica", "namespace": "Admetica:"}, "parameterValues": {"csv": "x"},
            "options": {"isParquet": False}, "aux": {"serializeParentCall": False}}
    request = worker_request(call, func, token="tok", batch_size=1000)
    assert request["aux"] == {"serializeParentCall": False, "USER_API_KEY": "tok", "batchSize": 1000}
    assert [p["name"] for p in request["func"]["params"]] == ["csv", "models", "raiseException", "result"]
    assert request["func"]["params"][-1]["isInput"] is False
    worker = {"id": "call-1", "status": "Completed", "parameterValues": {"csv": "x", "result": {"id": "df1"}},
              "aux": request["aux"], "func": {"name": "run_admetica"}}
    out = client_result(request, worker, now=0.0)
    assert out["status"] == "Completed" and out["parameterValues"]["result"] == {"id": "df1"}
    assert "USER_API_KEY" not in out["aux"] and out["func"]["params"]  # params kept: the client needs them
    canceled = client_result(request, None, status="Canceled", now=0.0)
    assert canceled["status"] == "Canceled" and canceled["id"] == "call-1"
    assert CallState.FINISHED.value == "finished"


def test_inputs_sent_as_null_take_their_declared_default():
    source = "#name: add\n#input: int a\n#input: int b = 2\n#input: string s\n#output: int sum\n" \
             "@app.task(name='add', base=DatagrokTask)\ndef add(a, b=2, s=None):\n    return a + b\n"
    found, warnings = scan_source("tasks.py", source)
    assert warnings == []
    func = bind(found[0], package="@acme/q", namespace="Q", container_id="c1", prefix="", task_queue="q")
    for values, want in (({"a": 1, "b": None, "s": None}, {"a": 1, "b": 2, "s": None}),
                         ({"a": 1}, {"a": 1, "b": 2}),
                         ({"a": 1, "b": 0}, {"a": 1, "b": 0})):  # a value the caller sent, even falsy, is kept
        request = worker_request({"id": "c", "parameterValues": values}, func, token="t", batch_size=1)
        assert request["parameterValues"] == want
