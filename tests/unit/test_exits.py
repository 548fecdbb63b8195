"""domain/exits.py: how a container ended, in words, from the engine's facts."""
from __future__ import annotations

from grokemu.domain.exits import ExitFacts, explain_exit, how_it_ended, last_lines, signal_name

MB = 1024 * 1024


def test_oom_names_the_limit_the_engine_applied():
    facts = ExitFacts(exit_code=137, oom_killed=True, mem_limit=64 * MB)
    assert how_it_ended(facts, config_memory_mb=512) == \
        "was killed for running out of memory: its limit is 64 MB (container.json `memory`)"


def test_oom_falls_back_to_container_json_memory():
    assert how_it_ended(ExitFacts(137, oom_killed=True), config_memory_mb=256) == \
        "was killed for running out of memory: its limit is 256 MB (container.json `memory`)"
    assert how_it_ended(ExitFacts(137, oom_killed=True)) == "was killed for running out of memory"


def test_signal_is_code_minus_128_when_not_oom():
    assert how_it_ended(ExitFacts(137, oom_killed=False, mem_limit=64 * MB)) == "was killed by signal SIGKILL (9)"
    assert how_it_ended(ExitFacts(143, oom_killed=False)) == "was killed by signal SIGTERM (15)"
    assert how_it_ended(ExitFacts(139, oom_killed=False)) == "was killed by signal SIGSEGV (11)"
    assert signal_name(200) == "signal 200"


def test_137_without_the_oom_fact_says_both():
    # a Swarm task whose container is gone: the daemon does not say whether it was the OOM killer
    assert how_it_ended(ExitFacts(137, oom_killed=None, mem_limit=64 * MB)) == \
        "was killed (code 137: out of memory or SIGKILL; its memory limit is 64 MB, container.json `memory`)"
    assert how_it_ended(ExitFacts(137, oom_killed=None)) == "was killed (code 137: out of memory or SIGKILL)"
    assert how_it_ended(ExitFacts(143, oom_killed=None)) == "was killed by signal SIGTERM (15)"


def test_plain_exit_codes_and_no_code():
    assert how_it_ended(ExitFacts(3, oom_killed=False)) == "exited with code 3"
    assert how_it_ended(ExitFacts(0, oom_killed=False)) == "exited with code 0"
    assert how_it_ended(ExitFacts(128, oom_killed=False)) == "exited with code 128"
    assert how_it_ended(ExitFacts(None)) == "exited (the engine gave no exit code)"


def test_engine_message_is_kept_unless_it_repeats_the_code():
    assert how_it_ended(ExitFacts(127, oom_killed=False, message="exec: \"app\": not found")) == \
        "exited with code 127 (exec: \"app\": not found)"
    assert how_it_ended(ExitFacts(1, message="task: non-zero exit (1)")) == "exited with code 1"


def test_explain_adds_when_and_the_last_log_lines():
    logs = "".join(f"line {i}\n" for i in range(20)) + "\n  \nMemoryError\n"
    text = explain_exit(ExitFacts(137, oom_killed=True, mem_limit=64 * MB), logs=logs, when="before it was ready")
    first, *rest = text.splitlines()
    assert first == ("the container was killed for running out of memory before it was ready: its limit is 64 MB "
                     "(container.json `memory`)")
    assert rest == ["last log lines:", "  line 16", "  line 17", "  line 18", "  line 19", "  MemoryError"]
    assert explain_exit(ExitFacts(3, oom_killed=False), when="before it was ready") == \
        "the container exited with code 3 before it was ready"


def test_long_log_lines_are_cut():
    [line] = last_lines("x" * 1000 + "\n")
    assert len(line) == 301 and line.endswith("…")
    assert last_lines("") == []
