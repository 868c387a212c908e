"""tracefs helpers shared by the tracepoints and kprobe_events backends and by cleanup.

Everything we create in tracefs carries the prefix `copybench` and our pid, so a later
`bench doctor --cleanup` can tell our leftovers from other tools' state.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

from bench.errors import UsageError

CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PREFIX = "copybench"


def find(roots: tuple[Path, ...] = CANDIDATES) -> Path | None:
    """The mounted tracefs, or None."""
    for root in roots:
        if (root / "events").is_dir():
            return root
    return None


def ensure(roots: tuple[Path, ...] = CANDIDATES) -> Path:
    """Mounted tracefs; mounts it at /sys/kernel/tracing when it is merely unmounted (boot
    without systemd's sys-kernel-tracing.mount, as on our Firecracker machines)."""
    found = find(roots)
    if found:
        return found
    target = roots[0]
    if os.geteuid() == 0 and target.is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)],
                       capture_output=True, check=False)
        found = find(roots)
        if found:
            return found
    raise UsageError("tracefs is not mounted",
                     fix=f"run as root: mount -t tracefs nodev {target}")


def write(path: Path, text: str) -> None:
    """Write a tracefs control file; the kernel's error_log line makes the message useful."""
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise OSError(e.errno, f"writing {text.strip()!r} to {path}: {e.strerror}") from None


def rmdir_retry(path: Path, tries: int = 50) -> None:
    """Instances stay busy for a moment after their files are closed."""
    for _ in range(tries):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    path.rmdir()


def instance_name(tag: str, pid: int | None = None) -> str:
    return f"{PREFIX}-{pid if pid is not None else os.getpid()}-{tag}"


def owner_pid(name: str) -> int | None:
    """Pid embedded in one of our names (copybench-<pid>-..., copybench_<pid>), else None."""
    rest = name[len(PREFIX):].lstrip("-_")
    digits = rest.split("-", 1)[0].split("_", 1)[0]
    return int(digits) if digits.isdigit() else None


def pid_alive(pid: int, proc_root: Path = Path("/proc")) -> bool:
    return (proc_root / str(pid)).exists()


def tids(pid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """All threads of a process: set_event_pid matches threads, not processes."""
    try:
        return sorted(int(t) for t in os.listdir(proc_root / str(pid) / "task"))
    except OSError:
        return [pid]
