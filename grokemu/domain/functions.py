"""Python functions of a plugin container (Celery tasks) as Datagrok registers them: `DockerFunc` entities.

At publish every `*.py` file of a docker folder is scanned for a Datagrok script header (`#name:`, `#input:`,
`#output:`, `#meta.*:` ... comment lines) directly above a task: `@app.task(name=...)` decorator lines and/or the
`def`. The callable name is the Celery task name (`Admetica:run_admetica`, not its `#name: runAdmetica`): that is
what callers use and what the worker registers (docs/queue-functions.md, "Naming"). A `tasks.yaml` (JSON inside, as
the grok CLI writes it for a `python/` folder) lists the tasks the entry module registers; when present, only the
functions it lists are registered. Bad headers are warnings naming file and line, never a failed publish.
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The tags of Datagrok's script header (datagrok-tools python-celery-gen.js, "ported from ScriptParser.headerTags")
HEADER_TAGS = ("name", "description", "help-url", "input", "output", "tags", "sample", "language", "endpoint",
               "requiresServer", "param-csrfmiddlewaretoken", "returns", "test", "sidebar", "condition", "top-menu",
               "environment", "require", "editor-for", "schedule", "schedule.runAs", "reference", "editor")
_HEADER = re.compile(r"^\s*#\s*(" + "|".join(re.escape(t) for t in HEADER_TAGS) + r"|meta\.[^:\s]*):\s?(.*)$")
_DEF = re.compile(r"^\s*(?:async\s+)?def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_DECORATOR = re.compile(r"^\s*@")
_TASK_NAME = re.compile(r"""\bname\s*=\s*(['"])([^'"]+)\1""")
_PARAM = re.compile(r"^(?P<type>[A-Za-z_][\w]*)\s+(?P<name>[A-Za-z_][\w]*)(?P<rest>.*)$")

# Datagrok's property types (the `propertyType` of a FuncParam); `num` and `list<...>` forms are normalized
PROPERTY_TYPES = frozenset({
    "int", "double", "num", "qnum", "bool", "string", "bigint", "datetime", "dataframe", "column", "column_list",
    "file", "blob", "graphics", "map", "list", "dynamic", "object", "funccall", "string_list", "view", "viewer"})
STREAMED_TYPES = frozenset({"dataframe", "blob", "file", "graphics"})  # values that travel over the pipe
MAX_PY_BYTES = 4 * 1024 * 1024  # a bigger .py file is not scanned (a warning says so)


def celery_name(image_name: str) -> str:
    """DATAGROK_CELERY_NAME: the image name with `-` → `_`, the entry module the grok CLI writes for a `python/`
    folder (`celery -A $DATAGROK_CELERY_NAME`)."""
    return image_name.replace("-", "_")


def friendly_name_to_name(s: str | None, first_upper: bool = True) -> str:
    """datagrok-tools utils.js `friendlyNameToName`: `CVM Tests` → `CVMTests`, `admetica` → `Admetica`. Datagrok
    names a package (its functions' namespace) this way from its friendlyName, or from its npm name."""
    out, cap, first_word_upper, start = "", True, False, True
    for ch in (s or "").strip():
        if not (ch.isascii() and ch.isalnum()):
            cap = True
            continue
        if start and ch.isdigit():
            continue
        first_word_upper = ch.isupper() if start else (first_word_upper and ch.isupper())
        if not first_upper and (start or (first_word_upper and not cap)):
            out += ch.lower()
        else:
            out += ch.upper() if cap else ch
        cap = start = False
    return out


def package_namespace(package_name: str, friendly: str | None) -> str:
    """`Admetica` for `@datagrok/admetica`; `CVMTests` for `@datagrok/cvm-tests` with friendlyName `CVM Tests`."""
    return friendly_name_to_name(friendly or package_name.rsplit("/", 1)[-1])


@dataclass
class FuncParam:
    name: str
    property_type: str
    is_input: bool = True
    default: Any = None
    options: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def nullable(self) -> bool:
        return str(self.options.get("optional", "")).lower() == "true" or self.default is not None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"#type": "FuncParam", "name": self.name, "propertyType": self.property_type,
                                "isInput": self.is_input, "nullable": self.nullable or not self.is_input,
                                "options": dict(self.options), "description": self.description}
        if self.default is not None:
            wire["defaultValue"] = self.default
        if self.options.get("semType"):
            wire["semType"] = self.options["semType"]
        return wire


@dataclass
class DockerFunc:
    """One callable task of a container. `name` is what callers use (`Pkg:name`), `task` what Celery registers."""

    name: str
    task: str
    package: str
    namespace: str  # the package's Datagrok name, `Admetica`
    container_id: str
    file: str  # path inside the package, for the page and for warnings
    line: int
    friendly_name: str = ""
    description: str = ""
    params: list[FuncParam] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    task_queue: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def nq_name(self) -> str:
        return f"{self.namespace}:{self.name}"

    @property
    def outputs(self) -> list[FuncParam]:
        return [p for p in self.params if not p.is_input]

    @property
    def requires_pipe(self) -> bool:
        return any(p.property_type in STREAMED_TYPES for p in self.params)

    def to_wire(self) -> dict[str, Any]:
        return {
            "#type": "DockerFunc", "id": self.id, "name": self.name, "friendlyName": self.friendly_name or self.name,
            "nqName": self.nq_name, "namespace": f"{self.namespace}:", "description": self.description,
            "source": "docker", "language": "python", "tags": list(self.tags),
            "options": {"language": "python", **{f"meta.{k}": v for k, v in self.meta.items()}},
            "params": [p.to_wire() for p in self.params], "messageQueueName": self.task_queue,
            "controlQueue": "celery.pidbox", "isCancelable": True, "needsValidation": False,
            "container": {"#type": "DockerContainer", "id": self.container_id},
            "package": {"name": self.package}, "file": self.file, "line": self.line, "task": self.task,
        }

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "package": self.package, "namespace": self.namespace,
                "container_id": self.container_id, "file": self.file, "line": self.line,
                "friendly_name": self.friendly_name, "description": self.description, "meta": self.meta,
                "tags": self.tags, "task_queue": self.task_queue, "id": self.id,
                "params": [{"name": p.name, "property_type": p.property_type, "is_input": p.is_input,
                            "default": p.default, "options": p.options, "description": p.description}
                           for p in self.params]}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DockerFunc:
        values = dict(record)
        values["params"] = [FuncParam(**p) for p in values.get("params") or []]
        return cls(**values)


@dataclass
class ScannedFunc:
    """A task found in a source file, before it is bound to a package and a container."""

    name: str
    task: str
    file: str
    line: int
    header: dict[str, list[str]]
    params: list[FuncParam]
    module: str


def _split_options(text: str) -> tuple[dict[str, str], str]:
    """`{optional: true; semType: Molecule} rest` → options and the rest (the description)."""
    text = text.strip()
    if not text.startswith("{"):
        return {}, text
    end = text.find("}")
    if end < 0:
        raise ValueError("unclosed '{' in the options")
    options: dict[str, str] = {}
    for item in re.split(r"[;,]", text[1:end]):
        if not item.strip():
            continue
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"option '{item.strip()[:60]}' is not 'key: value'")
        options[key.strip()] = value.strip()
    return options, text[end + 1:].strip()


def _default_value(text: str, kind: str) -> tuple[Any, str]:
    """The `= value` after a parameter name: JSON-ish scalars, quoted strings; the rest is options/description."""
    text = text.strip()
    m = re.match(r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s{]+)\s*(.*)$""", text)
    if not m:
        raise ValueError("'=' with no default value")
    raw, rest = m.group(1), m.group(2)
    if raw[:1] in ("'", '"'):
        return raw[1:-1], rest
    if kind in ("int", "bigint"):
        try:
            return int(raw), rest
        except ValueError:
            raise ValueError(f"default {raw[:40]!r} is not an {kind}") from None
    if kind in ("double", "num", "qnum"):
        try:
            return float(raw), rest
        except ValueError:
            raise ValueError(f"default {raw[:40]!r} is not a number") from None
    if kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"default {raw[:40]!r} is not true or false")
        return raw.lower() == "true", rest
    return raw, rest


def parse_param(text: str, is_input: bool) -> FuncParam:
    """`dataframe df {optional: true} the table` / `int n = 5 {min: 0}` → a FuncParam; ValueError on bad input."""
    m = _PARAM.match(text.strip())
    if not m:
        raise ValueError(f"expected '<type> <name>', got '{text.strip()[:80]}'")
    kind = m.group("type")
    if kind.startswith("list") and kind != "list":
        kind = "list"
    if kind not in PROPERTY_TYPES:
        raise ValueError(f"unknown type '{kind[:40]}' (Datagrok types: {', '.join(sorted(PROPERTY_TYPES))})")
    rest = m.group("rest").strip()
    default = None
    if rest.startswith("="):
        if not is_input:
            raise ValueError("an output has no default value")
        default, rest = _default_value(rest[1:], kind)
    options, description = _split_options(rest)
    return FuncParam(name=m.group("name"), property_type=kind, is_input=is_input, default=default, options=options,
                     description=description)


def _module_name(path: str) -> str:
    return path[:-3].replace("/", ".") if path.endswith(".py") else path.replace("/", ".")


def scan_source(path: str, text: str) -> tuple[list[ScannedFunc], list[str]]:
    """Tasks in one Python file (`path` relative to the docker folder), and the warnings (`file:line: reason`)."""
    found: list[ScannedFunc] = []
    warnings: list[str] = []
    header: list[tuple[int, str, str]] = []  # (line number, tag, value)
    task_name: str | None = None
    lines = text.splitlines()

    def finish(at: int, def_name: str | None) -> None:
        nonlocal header, task_name
        first = header[0][0]
        if def_name is None:
            warnings.append(f"{path}:{first}: a function header with no task after it (expected @app.task(...) or "
                            f"def directly below)")
        else:
            tags: dict[str, list[str]] = {}
            params: list[FuncParam] = []
            ok = True
            for number, tag, value in header:
                tags.setdefault(tag, []).append(value.strip())
                if tag in ("input", "output"):
                    try:
                        params.append(parse_param(value, tag == "input"))
                    except ValueError as e:
                        warnings.append(f"{path}:{number}: #{tag}: {e}")
                        ok = False
            if ok:
                name = task_name or def_name
                found.append(ScannedFunc(name=name, task=name, file=path, line=at, header=tags, params=params,
                                         module=_module_name(path)))
        header, task_name = [], None

    in_decorators = False
    for number, line in enumerate(lines, start=1):
        m = _HEADER.match(line)
        if m and not in_decorators:
            header.append((number, m.group(1), m.group(2)))
            continue
        if not header:
            continue
        if _DECORATOR.match(line):
            in_decorators = True
            name = _TASK_NAME.search(line)
            if name and ".task" in line:
                task_name = name.group(2)
            continue
        if in_decorators and not _DEF.match(line) and line.strip() and not line.lstrip().startswith("#"):
            # a decorator's arguments over several lines: `name=` may sit on one of them
            name = _TASK_NAME.search(line)
            if name and task_name is None:
                task_name = name.group(2)
            continue
        d = _DEF.match(line)
        in_decorators = False
        finish(number, d.group(1) if d else None)
    if header:
        finish(len(lines), None)
    return found, warnings


def parse_tasks_yaml(text: str) -> list[dict[str, str]]:
    """`tasks.yaml` as the grok CLI writes it (JSON, which YAML reads too): `{"tasks": [{"name", "module"}]}`."""
    try:
        data = json.loads(text)
    except ValueError:
        import yaml  # a hand-written tasks.yaml may be real YAML

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"tasks.yaml is neither JSON nor YAML: {str(e)[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise ValueError("tasks.yaml must hold a 'tasks' list")
    tasks = []
    for item in data["tasks"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError("every entry of tasks.yaml 'tasks' needs a 'name'")
        tasks.append({"name": item["name"], "module": str(item.get("module") or "")})
    return tasks


def scan_folder(sources: Iterable[tuple[str, str]], tasks_yaml: str | None) -> tuple[list[ScannedFunc], list[str]]:
    """Every task of one docker folder: `sources` are (path relative to the folder, text) of its .py files."""
    found: list[ScannedFunc] = []
    warnings: list[str] = []
    for path, text in sources:
        funcs, w = scan_source(path, text)
        found += funcs
        warnings += w
    if tasks_yaml is not None:
        try:
            listed = parse_tasks_yaml(tasks_yaml)
        except ValueError as e:
            return found, warnings + [f"tasks.yaml: {e}"]
        names = {t["name"] for t in listed}
        for f in found:
            if f.name not in names:
                warnings.append(f"{f.file}:{f.line}: {f.name} is not listed in tasks.yaml: the worker does not "
                                f"register it, so it is not registered as a function")
        have = {f.name for f in found}
        for t in listed:
            if t["name"] not in have:
                warnings.append(f"tasks.yaml: task {t['name']} ({t['module'] or '?'}) has no function header in "
                                f"the folder's .py files: not registered")
        found = [f for f in found if f.name in names]
    seen: dict[str, ScannedFunc] = {}
    unique = []
    for f in found:
        if f.name in seen:
            warnings.append(f"{f.file}:{f.line}: a second function named {f.name} (first at {seen[f.name].file}:"
                            f"{seen[f.name].line}): ignored")
            continue
        seen[f.name] = f
        unique.append(f)
    return unique, warnings


def bind(scanned: ScannedFunc, *, package: str, namespace: str, container_id: str, prefix: str, task_queue: str,
         previous_id: str | None = None) -> DockerFunc:
    header = scanned.header
    meta = {tag[len("meta."):]: values[-1] for tag, values in header.items() if tag.startswith("meta.")}
    tags = [t.strip() for v in header.get("tags", []) for t in v.split(",") if t.strip()]
    return DockerFunc(
        name=scanned.name, task=scanned.task, package=package, namespace=namespace, container_id=container_id,
        file=prefix + scanned.file, line=scanned.line, friendly_name=(header.get("name") or [""])[0],
        description=" ".join(header.get("description", [])), params=scanned.params, meta=meta, tags=tags,
        task_queue=task_queue, id=previous_id or str(uuid.uuid4()))
