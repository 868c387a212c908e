"""DESIGN.md's result schema names every field the code writes: the doc cannot drift."""

import dataclasses
import re
from pathlib import Path

from bench import metrics, results
from bench.copycount import summarize
from bench.tracing.base import PointCounts

DOC = (Path(__file__).resolve().parents[2] / "DESIGN.md").read_text()
SCHEMA = DOC[DOC.index("## Result schema"):]
NAMED = set(re.findall(r"`([a-z_0-9]+)`", SCHEMA))


def _missing(keys) -> list[str]:
    return sorted(k for k in keys if k not in NAMED)


def test_run_and_case_fields_are_documented():
    assert _missing(f.name for f in dataclasses.fields(results.RunResult)) == []
    assert _missing(f.name for f in dataclasses.fields(results.CaseResult)) == []
    assert f"`schema_version` {results.SCHEMA_VERSION}" in SCHEMA


def test_sample_fields_are_documented():
    tx = {"messages": 10, "bytes": 10_000, "t_start": 1.0, "cpu": {"user_s": 0, "sys_s": 0}}
    rx = {"messages": 10, "bytes": 10_000, "t_first": 1.5, "t_last": 2.0, "first_bytes": 1000,
          "cpu": {"user_s": 0, "sys_s": 0}}
    sample = metrics.derive(tx, rx, {"softirq": 0.1, "busy": 0.2}, 1000)
    assert _missing(sample) == []
    assert _missing(sample["cpu_s_per_gb"]) == []


def test_copy_fields_are_documented():
    pc = PointCounts("send_copy", "sender", "_copy_from_iter", "kmod", True, calls=1, bytes=1)
    assert _missing(pc.to_json()) == []
    sides = summarize([pc], {"sender": 1}, {"sender": 1},
                      completions={"completed": 1, "copied": 1, "copied_bytes": 1,
                                   "all_completed": True})
    assert _missing(sides["sender"]) == []


def test_syscall_fields_are_documented():
    from bench.counting import _recv_calls_check
    from bench.tracing import syscount
    c = syscount.SyscallCount("sender", 44, "sendto", 3)
    sides = syscount.summarize([c], {"sender": 1000, "receiver": 1000}, {"sender": 3})
    assert _missing(sides["sender"]) == [] and _missing(sides["sender"]["top"][0]) == []
    assert _missing(syscount.SyscallTracer().describe()) == []
    cr = results.CaseResult("c", "tcp", 1, "veth",
                            samples=[{"bytes": 10, "receiver": {"recv_calls": 2}}])
    assert _missing(_recv_calls_check({"bytes": 10, "receiver": {"recv_calls": 1}}, cr)) == []
