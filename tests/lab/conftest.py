"""The lab VM for @pytest.mark.lab tests: reuse a running lab, else boot one and
power it off when the session ends. Skips only when QEMU cannot run here."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.errors import UsageError


@dataclass
class Lab:
    paths: object
    started_here: bool
    timings: dict[str, float] = field(default_factory=dict)
    bundle: Path | None = None


def _cannot_run_qemu() -> str | None:
    from bench.lab import qemu
    try:
        qemu.find_qemu()
    except UsageError as e:
        return f"{e.message} (fix: {e.fix})"
    if os.geteuid() != 0 and not shutil.which("mmdebstrap"):
        return "building the lab image needs root and mmdebstrap"
    return None


@pytest.fixture(scope="session")
def lab():
    from bench.lab import manager
    from bench.lab.paths import lab_paths

    why = _cannot_run_qemu()
    if why:
        pytest.skip(f"QEMU cannot run here: {why}")
    paths = lab_paths()
    st = manager.status(paths)
    started = False
    t0 = time.monotonic()
    if not (st["running"] and len(st["nodes"]) == 1):
        if st["running"]:
            manager.down(paths)
        manager.up(paths, nodes=1, provision=False)
        started = True
    handle = Lab(paths, started, {"up_s": time.monotonic() - t0})
    yield handle
    print("\nlab timings: " + ", ".join(f"{k}={v:.0f}s" for k, v in handle.timings.items()))
    if handle.started_here:
        manager.down(paths)
