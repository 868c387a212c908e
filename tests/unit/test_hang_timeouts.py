"""A hung make, insmod, rmmod or SSH session is a clear failure within its timeout, never a
wait without end (issue 20, part 7). Fake commands that sleep stand in for the hung ones."""

import subprocess
import time

import pytest

from bench.errors import UsageError
from bench.tracing import kmod


def _fake_bin(tmp_path, monkeypatch, *names: str, body: str = "sleep 30"):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in names:
        exe = bindir / name
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return bindir


def test_run_bounded_kills_a_hung_child():
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        kmod.run_bounded(["sleep", "30"], 0.3)
    assert time.monotonic() - t0 < 5


def test_run_bounded_returns_output_and_status():
    res = kmod.run_bounded(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")


def test_a_hung_make_is_a_usage_error(tmp_path, monkeypatch):
    _fake_bin(tmp_path, monkeypatch, "make", "gcc")
    monkeypatch.setattr(kmod, "MAKE_TIMEOUT", 0.3)
    kdir = tmp_path / "modules" / "9.9.9" / "build"
    kdir.mkdir(parents=True)
    (kdir / "Makefile").write_text("")
    t0 = time.monotonic()
    with pytest.raises(UsageError) as err:
        kmod.build("9.9.9", tmp_path / "modules", tmp_path / "cache")
    assert time.monotonic() - t0 < 5
    assert "did not finish" in err.value.message and "killed" in err.value.message
    assert "--backend" in err.value.fix
    assert not (tmp_path / "cache" / "9.9.9" / "copytrace.ko").exists()


def test_a_hung_rmmod_gives_up_at_once(tmp_path, monkeypatch):
    _fake_bin(tmp_path, monkeypatch, "rmmod")
    monkeypatch.setattr(kmod, "RMMOD_TIMEOUT", 0.3)
    (tmp_path / "module" / kmod.MODULE).mkdir(parents=True)   # "loaded", and stays so
    t0 = time.monotonic()
    assert kmod.unload(tmp_path) is False
    assert time.monotonic() - t0 < 5      # not 50 attempts of a hung rmmod


def test_a_hung_insmod_is_a_usage_error_and_is_unloaded(tmp_path, monkeypatch):
    _fake_bin(tmp_path, monkeypatch, "insmod")
    monkeypatch.setattr(kmod, "INSMOD_TIMEOUT", 0.3)
    ko = tmp_path / "copytrace.ko"
    ko.write_text("")
    monkeypatch.setattr(kmod, "build", lambda *a, **k: ko)
    unloaded = []
    monkeypatch.setattr(kmod, "unload", lambda sys_root: unloaded.append(sys_root) or True)
    (tmp_path / "proc").mkdir()
    t = kmod.KmodTracer(proc_root=tmp_path / "proc", sys_root=tmp_path / "sys")
    with pytest.raises(UsageError) as err:
        t.attach({"sender": 1, "receiver": 2})
    assert "did not return within 0 s" in err.value.message
    t.detach()               # what the runner's finally does: a half-loaded module goes too
    assert unloaded == [tmp_path / "sys"]


def test_a_hung_ssh_doctor_is_a_usage_error(monkeypatch):
    from bench.lab.inventory import Host
    from bench.targets.ssh import SshTarget
    target = SshTarget([Host("n1", "192.0.2.1")])
    monkeypatch.setattr(target, "ssh_argv", lambda node=0, tty=False: ["sh", "-c", "sleep 30"])
    t0 = time.monotonic()
    with pytest.raises(UsageError) as err:
        target.doctor(node=0, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert "did not finish in" in err.value.message and "doctor --json" in err.value.message
