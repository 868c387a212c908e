"""Run tracer code inside the lab VM (`bench lab up`) over SSH, for @pytest.mark.lab tests.

The harness is copied into the VM as a tar stream (bench/ and tests/tracing/), so the VM
tests exactly the working tree. If this host has Debian headers for the VM's kernel, the
copytrace module is built here and placed in the VM's cache: building under TCG is slow.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REMOTE = "/root/copybench-tests"


class LabVM:
    def __init__(self, paths=None, argv: list[str] | None = None):
        self.paths, self._argv = paths, argv

    @property
    def argv(self) -> list[str]:
        """A fixed ssh argv if given, else read from the lab's state each time: a lab
        restarted after a test broke it has new ports (tests/lab_recovery.py)."""
        if self._argv is not None:
            return self._argv
        from bench.lab import manager
        from bench.lab.sshkeys import ssh_argv
        st = manager.status(self.paths)
        return ssh_argv("127.0.0.1", st["nodes"][0]["ssh_port"], "root", Path(st["key"]),
                        known_hosts=None)

    def run(self, args: list[str], data: bytes | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv + [shlex.join(args)], input=data, capture_output=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"in the lab VM: {shlex.join(args)} -> {proc.returncode}\n"
                                 f"{proc.stderr.decode(errors='replace')[-3000:]}")
        return proc

    def text(self, args: list[str], **kw) -> str:
        return self.run(args, **kw).stdout.decode()

    def push(self) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for top in ("bench", "tests/tracing"):
                tar.add(REPO / top, arcname=top,
                        filter=lambda ti: None if "__pycache__" in ti.name else ti)
        self.run(["rm", "-rf", REMOTE])
        self.run(["mkdir", "-p", REMOTE])
        self.run(["tar", "-C", REMOTE, "-xf", "-"], data=buf.getvalue())

    def seed_kmod(self, release: str, workdir: Path) -> bool:
        """Build copytrace.ko here when Debian's headers for `release` are installed."""
        headers = Path("/usr/src") / f"linux-headers-{release}"
        if not headers.exists():
            return False
        from bench.tracing import kmod
        mods = workdir / "modules" / release
        mods.mkdir(parents=True, exist_ok=True)
        if not (mods / "build").exists():
            (mods / "build").symlink_to(headers)
        kmod.build(release, modules_root=workdir / "modules", cache=workdir / "cache")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(workdir / "cache" / release, arcname=release)
        self.run(["mkdir", "-p", str(kmod.CACHE)])
        self.run(["tar", "-C", str(kmod.CACHE), "-xf", "-"], data=buf.getvalue())
        return True

    def python(self, script: str, *args: str, timeout: float = 600) -> dict:
        """Run tests/tracing/<script> in the VM; it prints one JSON document."""
        out = self.text(["python3", f"{REMOTE}/tests/tracing/{script}", *args], timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])


def lab_or_skip() -> LabVM:
    try:
        from bench.lab import manager
        from bench.lab.paths import lab_paths
    except ImportError as e:
        pytest.skip(f"lab code not importable ({e})")
    from bench.errors import UsageError
    from tests.lab_recovery import running_or_boot
    try:
        qemu_missing = None
        from bench.lab import qemu
        qemu.find_qemu()
    except UsageError as e:
        qemu_missing = f"{e.message} (fix: {e.fix})"
    paths = lab_paths()
    if qemu_missing and not manager.status(paths).get("running"):
        pytest.skip(f"no lab VM running and QEMU cannot run here: {qemu_missing}")
    running_or_boot(paths)        # a lab a test before took down (or broke) is booted again
    return LabVM(paths)
