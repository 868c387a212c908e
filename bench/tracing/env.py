"""Where the tracers look: tracefs, /proc, /sys, the module cache, and the kernel's verdict on
a kprobe. Every root is a parameter so tests can stand in fixture trees for the real ones;
selection (select.py), stale cleanup (stale.py) and doctor read the machine through it.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.tracing import btf as kernel_btf
from bench.tracing import tracefs
from bench.tracing.base import Availability

CACHE = Path("/var/cache/copybench/kmod")   # copytrace builds, per kernel release


def filter_functions(root: Path) -> set[str] | None:
    """Functions ftrace (and so trace_kprobe) may probe; None if the file is unreadable."""
    try:
        text = (root / "available_filter_functions").read_text()
    except OSError:
        return None
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def try_kprobe_event(symbol: str, root: Path) -> tuple[bool, str]:
    """Define and delete a kprobe event on `symbol`: the kernel's own verdict."""
    group = f"{tracefs.PREFIX}_{os.getpid()}_try"
    try:
        tracefs.append(root / "kprobe_events", f"p:{group}/t {symbol}\n")
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False, "symbol absent"
        return False, "kernel refused a kprobe event (notrace or kprobe blacklist)"
    try:
        tracefs.append(root / "kprobe_events", f"-:{group}/t\n")
    except OSError:
        pass
    return True, "attachable"


@dataclass
class Environment:
    """Where to look; every root a parameter so fixtures can stand in for /proc and /sys."""
    roots: tuple[Path, ...] = tracefs.CANDIDATES
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    modules_root: Path = Path("/lib/modules")
    cache: Path = CACHE
    try_attach: Callable[[str, Path], tuple[bool, str]] | None = try_kprobe_event
    bpftrace_ok: Callable[[], Availability] | None = None
    which: Callable[[str], str | None] = shutil.which
    btf: Path = kernel_btf.VMLINUX
