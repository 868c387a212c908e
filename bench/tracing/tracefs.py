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


def append(path: Path, text: str) -> None:
    """Append to a tracefs list file (kprobe_events). Never "w": O_TRUNC would delete every
    definition, other tools' included; and Python's "a" mode seeks, which tracefs refuses."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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


class Instance:
    """A private tracefs instance streaming its events: own buffer, pid filter, removal.

    Why an instance: the global buffer belongs to whoever else is tracing; ours is removed on
    detach and named so `cleanup_stale()` recognises it if a crash leaves it behind.
    """

    def __init__(self, root: Path, tag: str, buffer_kb: int = 4096):
        self.path = root / "instances" / instance_name(tag)
        self.buffer_kb = buffer_kb
        self.fd: int | None = None
        self.partial = b""
        self.lines: list[str] = []

    def create(self, pid: int | None = None, proc_root: Path = Path("/proc")) -> None:
        self.path.mkdir()
        write(self.path / "buffer_size_kb", str(self.buffer_kb))
        write(self.path / "options/hash-ptr", "0")    # real kernel addresses in samples
        write(self.path / "options/record-tgid", "1")
        if "mono" in (self.path / "trace_clock").read_text():
            write(self.path / "trace_clock", "mono")   # ordered across CPUs
        if pid is not None:
            write(self.path / "options/event-fork", "1")   # the pid's children count too
            write(self.path / "set_event_pid", " ".join(map(str, tids(pid, proc_root))))

    def enable(self, group: str, event: str, filt: str = "") -> None:
        d = self.path / "events" / group / event
        if filt:
            write(d / "filter", filt)
        write(d / "enable", "1")

    def open(self) -> None:
        self.fd = os.open(self.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def drain(self) -> None:
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            lines = (self.partial + chunk).split(b"\n")
            self.partial = lines.pop()
            self.lines.extend(x.decode(errors="replace") for x in lines)

    def stop(self) -> None:
        write(self.path / "tracing_on", "0")

    def lost(self) -> int:
        """Events the kernel overwrote or dropped (buffer full): counts are then a lower bound."""
        n = 0
        for stats in (self.path / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                key, _, val = line.partition(":")
                if key.strip() in ("overrun", "dropped events"):
                    n += int(val.strip() or 0)
        return n

    def remove(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.path.exists():
            try:
                write(self.path / "events/enable", "0")
            except OSError:
                pass
            rmdir_retry(self.path)


class Pump:
    """One thread draining several instances' trace_pipe while the workload runs."""

    def __init__(self, instances: list[Instance]):
        import threading
        self.instances = instances
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import select
        poller = select.poll()
        by_fd = {i.fd: i for i in self.instances if i.fd is not None}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll(100):
                by_fd[fd].drain()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for inst in self.instances:
            inst.drain()


# -- the per-side recording both streaming backends (tracepoints, kprobe_events) share --------
def start_pump(sides: dict[str, Instance]) -> Pump:
    """Start draining every side's instance; the backends call this at the end of attach()."""
    pump = Pump(list(sides.values()))
    pump.start()
    return pump


def stop_recording(sides: dict[str, Instance], pump: Pump | None) -> None:
    """Stop tracing, then drain what is buffered: read() starts with this."""
    for inst in sides.values():
        inst.stop()
    if pump:
        pump.stop()


def remove_all(sides: dict[str, Instance], pump: Pump | None) -> None:
    """Idempotent teardown: stop the pump, remove every instance we made."""
    if pump:
        pump.stop()
    for inst in sides.values():
        inst.remove()
