"""`bench doctor` leaves the machine as found (issue 20, part 7): it judges what can count copies
from what it reads (kallsyms, available_filter_functions), never by defining a kprobe event or
mounting tracefs. Fixture trees stand in for /proc and /sys/kernel/tracing."""

import os
from pathlib import Path

import pytest

from bench import doctor
from bench.tracing.base import Availability
from bench.tracing.env import Environment
from bench.tracing.select import plan

SYMBOLS = ["_copy_from_iter", "_copy_to_iter", "skb_copy_ubufs", "tcp_zerocopy_receive",
           "register_kretprobe"]


def _tree(tmp_path: Path) -> Environment:
    tracing = tmp_path / "sys/kernel/tracing"
    (tracing / "events/sock/sock_send_length").mkdir(parents=True)
    (tracing / "events/sock/sock_send_length/format").write_text("format:\n")
    (tracing / "kprobe_events").write_text("")
    # _copy_to_iter missing: notrace here (as Debian 6.1's _copy_*_iter are)
    (tracing / "available_filter_functions").write_text(
        "_copy_from_iter\nskb_copy_ubufs\ntcp_zerocopy_receive\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "kallsyms").write_text("".join(f"ffffffff8100{i:04x} T {s}\n"
                                           for i, s in enumerate(SYMBOLS)))
    (proc / "modules").write_text("")
    return Environment(roots=(tracing,), proc_root=proc, sys_root=tmp_path / "sys",
                       modules_root=tmp_path / "lib/modules", cache=tmp_path / "cache",
                       which=lambda name: f"/usr/bin/{name}" if name == "bpftrace" else None,
                       btf=tmp_path / "no-btf")


def _snapshot(root: Path) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()} | {"dirs": sorted(str(p) for p in root.rglob("*") if p.is_dir())}


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)   # where the old probe wrote kprobe_events


def _recording_attach(calls: list):
    def attach(symbol: str, root: Path):      # what try_kprobe_event does: a write
        calls.append(symbol)
        with open(root / "kprobe_events", "a") as f:
            f.write(f"p:copybench_try/t {symbol}\n")
        return True, "attachable"
    return attach


def test_doctor_does_not_write(tmp_path, as_root):
    calls: list = []
    env = _tree(tmp_path)
    env.try_attach = _recording_attach(calls)
    env.bpftrace_ok = lambda: pytest.fail("the doctor must not run bpftrace's own check "
                                          "(it mounts tracefs)")
    before = _snapshot(tmp_path)
    check = doctor.check_copy_counting(env)
    assert calls == []
    assert _snapshot(tmp_path) == before
    assert (tmp_path / "sys/kernel/tracing/kprobe_events").read_text() == ""
    # and the verdict still comes from what it read: send via bpftrace (_copy_from_iter is in
    # available_filter_functions); recv's _copy_to_iter is not (notrace), this tree has no recv
    # tracepoint and kmod no headers to build with: not measurable.
    assert check.ok
    assert "send_copy=bpftrace (exact)" in check.detail
    assert "not measurable here: recv_copy" in check.detail
    assert "read from available_filter_functions" in check.detail


def test_the_probe_the_doctor_avoids_would_have_written(tmp_path, as_root):
    """The same tree through the run's planning (not the doctor's): the kernel is asked by a
    throw-away kprobe event. This is what the doctor test above guards against."""
    calls: list = []
    env = _tree(tmp_path)
    env.try_attach = _recording_attach(calls)
    env.bpftrace_ok = lambda: Availability(True, "bpftrace")
    plan("auto", env=env)
    assert calls and (tmp_path / "sys/kernel/tracing/kprobe_events").read_text() != ""


def test_readonly_environment_says_why_bpftrace_cannot(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    env = doctor.readonly_environment(_tree(tmp_path))
    assert env.try_attach is None
    assert env.bpftrace_ok() == Availability(False, "bpftrace needs root", "run as root")
    missing = doctor.readonly_environment(Environment(which=lambda name: None))
    assert missing.bpftrace_ok().reason == "bpftrace is not installed"
