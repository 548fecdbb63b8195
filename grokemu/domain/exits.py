"""Why a container ended, in words, from the engine's own facts (docs/faults.md): State.OOMKilled, the exit code
(a code above 128 is 128 + the signal that killed it), the engine's own message, the last log lines.

Docker says whether the kernel's OOM killer ended a container; a Swarm task whose container is gone says only its
exit code, so 137 there is "out of memory or SIGKILL".
"""
from __future__ import annotations

import signal
from dataclasses import dataclass

MB = 1024 * 1024
LOG_LINES_SHOWN = 5
LOG_LINE_CHARS = 300


@dataclass(frozen=True)
class ExitFacts:
    exit_code: int | None
    oom_killed: bool | None = None  # None: the engine does not say (a Swarm task whose container is gone)
    mem_limit: int | None = None  # bytes, as the engine applied it
    message: str = ""  # the engine's own words (Docker State.Error, a Swarm task's Err)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _limit(facts: ExitFacts, config_memory_mb: float | None) -> str:
    if facts.mem_limit:
        mb = facts.mem_limit / MB
    elif config_memory_mb:
        mb = float(config_memory_mb)
    else:
        return ""
    return f"{mb:g} MB"


def how_it_ended(facts: ExitFacts, config_memory_mb: float | None = None) -> str:
    """A verb phrase: "was killed for running out of memory: its limit is 64 MB (container.json `memory`)",
    "was killed by signal SIGKILL (9)", "exited with code 3"."""
    code = facts.exit_code
    limit = _limit(facts, config_memory_mb)
    if facts.oom_killed:
        return ("was killed for running out of memory" +
                (f": its limit is {limit} (container.json `memory`)" if limit else ""))
    if code is None:
        phrase = "exited (the engine gave no exit code)"
    elif code == 137 and facts.oom_killed is None:
        phrase = "was killed (code 137: out of memory or SIGKILL" + \
                 (f"; its memory limit is {limit}, container.json `memory`)" if limit else ")")
    elif code > 128:
        phrase = f"was killed by signal {signal_name(code - 128)} ({code - 128})"
    else:
        phrase = f"exited with code {code}"
    engine = facts.message.strip()
    if engine and engine not in phrase and "non-zero exit" not in engine:  # Swarm's Err repeats the code
        phrase += f" ({engine})"
    return phrase


def last_lines(logs: str, count: int = LOG_LINES_SHOWN) -> list[str]:
    lines = [line.rstrip() for line in logs.splitlines() if line.strip()]
    return [line if len(line) <= LOG_LINE_CHARS else line[:LOG_LINE_CHARS] + "…" for line in lines[-count:]]


def explain_exit(facts: ExitFacts, config_memory_mb: float | None = None, logs: str = "", when: str = "") -> str:
    """ "the container <how it ended>[ <when>]", then its last log lines, one per line."""
    text = f"the container {how_it_ended(facts, config_memory_mb)}"
    if when:
        text = _insert_when(text, when)
    tail = last_lines(logs)
    if tail:
        text += "\nlast log lines:\n" + "\n".join(f"  {line}" for line in tail)
    return text


def _insert_when(text: str, when: str) -> str:
    # "... out of memory before it was ready: its limit is ..." reads better than the clause after the limit
    head, sep, rest = text.partition(": its limit")
    return f"{head} {when}{sep}{rest}" if sep else f"{text} {when}"
