"""Backend selection on fixture /proc, /sys and tracefs trees (no root, no kernel features)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.tracing import select, stale, tracefs
from bench.tracing.base import Availability
from bench.tracing.env import Environment

COPY = ["_copy_from_iter", "_copy_from_iter_nocache", "csum_and_copy_from_iter_full",
        "copy_page_from_iter", "_copy_to_iter", "csum_and_copy_to_iter", "copy_page_to_iter",
        "skb_copy_ubufs", "tcp_zerocopy_receive"]


def make_env(tmp: Path, *, kprobes=True, traceable=(), bpftrace=True, headers=True,
             tracepoints=()):
    proc, sys_, trace = tmp / "proc", tmp / "sys", tmp / "tracing"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/osrelease").write_text("6.1.0-test\n")
    syms = COPY + (["register_kretprobe"] if kprobes else [])
    (proc / "kallsyms").write_text("".join(f"ffffffff81000000 T {s}\n" for s in syms))
    if kprobes:
        (proc / "modules").write_text("")
    (trace / "events").mkdir(parents=True)
    (trace / "instances").mkdir()
    for tp in tracepoints:
        group, event = tp.split(":")
        (trace / "events" / group / event).mkdir(parents=True)
        (trace / "events" / group / event / "format").write_text("name: x\n")
    if kprobes:
        (trace / "kprobe_events").write_text("")
        (trace / "available_filter_functions").write_text(
            "".join(f"{s}\n" for s in traceable))
    sys_.mkdir()
    mods = tmp / "modules"
    if headers:
        (mods / "6.1.0-test/build").mkdir(parents=True)
    return Environment(
        roots=(trace,), proc_root=proc, sys_root=sys_, modules_root=mods, cache=tmp / "cache",
        try_attach=None, which=lambda tool: f"/usr/bin/{tool}",
        bpftrace_ok=lambda: Availability(bpftrace, "" if bpftrace else "bpftrace not installed"))


def by_point(choices):
    return {c.point: c for c in choices}


def test_debian_61_notrace_copy_functions_go_to_kmod(tmp_path):
    env = make_env(tmp_path, traceable=["skb_copy_ubufs", "tcp_zerocopy_receive"])
    c = by_point(select.plan("auto", env=env))
    assert c["send_copy"].backend == "kmod" and c["recv_copy"].backend == "kmod"
    assert "notrace" in c["send_copy"].rejected["bpftrace"]
    assert "_copy_from_iter" in c["send_copy"].symbols
    assert "copy_page_from_iter" not in c["send_copy"].symbols      # a wrapper: off by default
    assert c["zc_fallback"].backend == "kmod"                       # one backend covers all
    assert c["rxe_copy"].backend is None and "rdma_rxe" in str(c["rxe_copy"].rejected)


def test_all_traceable_prefers_bpftrace_then_kprobe_events(tmp_path):
    env = make_env(tmp_path / "a", traceable=COPY)
    assert {c.backend for c in select.plan("auto", ["send_copy", "recv_copy"], env)} == {"bpftrace"}
    env = make_env(tmp_path / "b", traceable=COPY, bpftrace=False, headers=False)
    assert {c.backend for c in select.plan("auto", ["send_copy"], env)} == {"kprobe_events"}


def test_no_kprobes_falls_back_to_tracepoint_estimates(tmp_path):
    env = make_env(tmp_path, kprobes=False, tracepoints=["sock:sock_send_length",
                                                          "sock:sock_recv_length"])
    c = by_point(select.plan("auto", env=env))
    assert (c["send_copy"].backend, c["send_copy"].exact) == ("tracepoints", False)
    assert c["recv_copy"].symbols == ["sock:sock_recv_length"]
    assert "kprobes" in c["send_copy"].rejected["kmod"] or "modules" in c["send_copy"].rejected["kmod"]
    assert c["zc_fallback"].backend is None


def test_explicit_backend_measures_what_it_can_or_says_why(tmp_path):
    env = make_env(tmp_path, traceable=["skb_copy_ubufs", "tcp_zerocopy_receive"])
    tracer = select.select_tracer("bpftrace", env=env)
    (bt,) = tracer.tracers
    assert [p.symbol for p in bt.probes] == ["skb_copy_ubufs", "tcp_zerocopy_receive"]
    assert by_point(tracer.choices)["send_copy"].backend is None
    with pytest.raises(UsageError) as e:
        select.select_tracer("kprobe_events", points=["send_copy"], env=env)
    assert "notrace" in str(e.value) and e.value.fix


def test_bad_spec_and_point(tmp_path):
    with pytest.raises(UsageError):
        select.plan("perf", env=make_env(tmp_path / "a"))
    with pytest.raises(UsageError):
        select.plan("auto", ["copy9"], env=make_env(tmp_path / "b"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_cleanup_removes_only_dead_owners_leftovers(tmp_path, monkeypatch):
    env = make_env(tmp_path, traceable=COPY)
    trace = env.roots[0]
    dead, alive = _dead_pid(), os.getppid()
    for name in (f"copybench-{dead}-sender", f"copybench-{alive}-sender", "other-tool"):
        (trace / "instances" / name).mkdir()
    # a fake /proc entry for an orphan bpftrace running our (dead owner's) script
    for pid in (alive,):
        (env.proc_root / str(pid)).mkdir()
    orphan = env.proc_root / "4242"
    orphan.mkdir()
    script = tmp_path / f"copybench-{dead}-x.bt"
    script.write_text("")
    (orphan / "cmdline").write_bytes(b"/usr/bin/bpftrace\0-f\0json\0" + str(script).encode() + b"\0")
    killed = []

    def fake_kill(pid, sig):
        killed.append((pid, sig))
        orphan.rename(tmp_path / "gone")   # the process exits on the first signal

    monkeypatch.setattr(stale.os, "kill", fake_kill)
    monkeypatch.setattr(tracefs, "write", lambda path, text: None)
    done = stale.cleanup_stale(env)
    left = sorted(p.name for p in (trace / "instances").iterdir())
    assert left == [f"copybench-{alive}-sender", "other-tool"]
    assert killed and killed[0][0] == 4242 and not script.exists()
    assert any("orphan bpftrace 4242" in d for d in done)


def test_cleanup_spares_a_live_runs_module(tmp_path, monkeypatch):
    env = make_env(tmp_path)
    params = env.sys_root / "module/copytrace/parameters"
    params.mkdir(parents=True)
    (params / "owner").write_text(f"{os.getppid()}\n")
    (env.proc_root / str(os.getppid())).mkdir()
    unloaded = []
    monkeypatch.setattr(stale.kmod, "unload", lambda sys_root: unloaded.append(1) or True)
    done = stale.cleanup_stale(env)
    assert not unloaded and any("left alone" in d for d in done)
    (params / "owner").write_text(f"{_dead_pid()}\n")
    done = stale.cleanup_stale(env)
    assert unloaded and "unloaded the copytrace module" in done


def test_kprobe_events_without_btf_refuses_skb_copy_ubufs_at_planning(tmp_path):
    """Never 0 bytes for a point it cannot measure: without BTF kprobe_events cannot read
    skb->data_len, so the plan says why and leaves the point to a backend that can."""
    env = make_env(tmp_path, traceable=COPY, bpftrace=False, headers=False)
    env.btf = tmp_path / "no-btf"
    c = by_point(select.plan("kprobe_events", ["zc_fallback", "send_copy"], env))
    assert c["send_copy"].backend == "kprobe_events"
    assert c["zc_fallback"].backend is None
    assert "BTF" in c["zc_fallback"].rejected["kprobe_events"]
