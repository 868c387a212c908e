"""QEMUs of the lab that its state file does not list are found from /proc and stopped by
`down` and `doctor --cleanup`, and `up` refuses to boot beside one.

A stand-in QEMU: Python started under the name qemu-system-x86_64 with a real QEMU command
line after `-c` (it sleeps; its /proc cmdline is what the lab matches on). No VM is booted,
and a temporary lab directory keeps the machine's real lab out of reach."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.lab import manager, qemu
from bench.lab.paths import LabPaths


class Said:
    def __init__(self):
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def step(self, text):        # manager.up may open a step before refusing
        from contextlib import nullcontext
        return nullcontext()


def _fake_qemu(tmp: Path, state: Path, name: str) -> subprocess.Popen:
    exe = tmp / "bin" / "qemu-system-x86_64"
    exe.parent.mkdir(exist_ok=True)
    if not exe.exists():
        exe.symlink_to(sys.executable)
    p = subprocess.Popen([str(exe), "-c", "import time; time.sleep(120)", "-name", name,
                          "-drive", f"file={state}/{name[-4:]}.qcow2,if=virtio,format=qcow2",
                          "-serial", f"file:{state}/{name[-4:]}.console.log",
                          "-pidfile", f"{state}/{name[-4:]}.pid"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if name.encode() in Path(f"/proc/{p.pid}/cmdline").read_bytes():
            return p
        time.sleep(0.02)
    raise AssertionError("the stand-in QEMU did not start")


@pytest.fixture
def lab_dir(tmp_path):
    paths = LabPaths(tmp_path / "cache")
    paths.state.mkdir(parents=True)
    procs: list[subprocess.Popen] = []
    yield paths, procs
    for p in procs:
        p.kill()
        p.wait()


def test_found_by_command_line_and_only_for_this_lab(lab_dir, tmp_path):
    paths, procs = lab_dir
    procs.append(_fake_qemu(tmp_path, paths.state, "copybench-lab0"))
    other = tmp_path / "other-lab"
    other.mkdir()
    procs.append(_fake_qemu(tmp_path, other, "copybench-lab1"))
    found = qemu.ours_running(paths.state)
    assert [(r.pid, r.name) for r in found] == [(procs[0].pid, "copybench-lab0")]
    assert f"{paths.state}/lab0.qcow2" in found[0].files


def test_down_stops_a_qemu_the_state_does_not_list(lab_dir, tmp_path):
    paths, procs = lab_dir
    p = _fake_qemu(tmp_path, paths.state, "copybench-lab0")
    procs.append(p)
    said = Said()
    assert manager.down(paths, said) == 1          # no state file at all
    assert p.wait(timeout=10) is not None
    assert any(f"pid {p.pid}" in ln and "did not list" in ln for ln in said.lines), said.lines
    assert qemu.ours_running(paths.state) == []


def test_cleanup_leaves_a_listed_node_and_stops_the_rest(lab_dir, tmp_path):
    paths, procs = lab_dir
    listed = _fake_qemu(tmp_path, paths.state, "copybench-lab0")
    stray = _fake_qemu(tmp_path, paths.state, "copybench-lab1")
    procs += [listed, stray]
    (paths.state / "lab0.pid").write_text(f"{listed.pid}\n")
    paths.state_file.write_text(json.dumps({"nodes": [
        {"index": 0, "name": "lab0", "ssh_port": 1, "pidfile": str(paths.state / "lab0.pid"),
         "overlay": str(paths.state / "lab0.qcow2"), "console": "c", "memory_mib": 768}]}))
    stopped = manager.stop_unlisted(paths, Said())
    assert [r.pid for r in stopped] == [stray.pid]
    assert stray.wait(timeout=10) is not None and listed.poll() is None


def test_doctor_cleanup_stops_unlisted_lab_qemus(lab_dir, tmp_path, monkeypatch):
    paths, procs = lab_dir
    p = _fake_qemu(tmp_path, paths.state, "copybench-lab0")
    procs.append(p)
    monkeypatch.setenv("COPYBENCH_CACHE", str(paths.cache))
    from bench.cleanup import cleanup_all
    lines = cleanup_all()
    assert any(f"pid {p.pid}" in ln for ln in lines), lines
    assert p.wait(timeout=10) is not None


def test_up_refuses_beside_an_unlisted_qemu(lab_dir, tmp_path):
    paths, procs = lab_dir
    p = _fake_qemu(tmp_path, paths.state, "copybench-lab0")
    procs.append(p)
    with pytest.raises(UsageError) as e:
        manager.up(paths, nodes=1, provision=False, progress=Said())
    assert f"pid {p.pid}" in e.value.message and "bench lab down" in e.value.fix
    assert p.poll() is None                       # refused, not killed
    assert not os.path.exists(paths.state / "lab0.qcow2")
