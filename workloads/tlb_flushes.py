"""TLB flushes of one process, counted on the kernel's `tlb:tlb_flush` tracepoint.

A TCP_ZEROCOPY_RECEIVE receiver maps pages and unmaps them again (madvise MADV_DONTNEED, or the
kernel's zap inside the next getsockopt), and every unmap must flush the TLB entries it drops:
on a VM a flush that reaches another CPU is an IPI, hence exits. The counter lives in a tracefs
instance of its own (`copybench-<pid>-tlb`, which `bench doctor --cleanup` removes should the
agent die), filtered to the process's threads (`set_event_pid`), and is read without streaming:
per CPU, the ring buffer's `entries + overrun + read events` is every event written (exact); the
events still in the buffer give the split by reason, complete unless one was overwritten.
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path

ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
BUFFER_KB = 2048          # per CPU: ~60,000 events before one is overwritten
REASON_RE = re.compile(r"reason:(.+?) \(\d+\)\s*$")
STAT_RE = re.compile(r"^(entries|overrun|read events):\s*(\d+)", re.M)


def _root() -> Path | None:
    for r in ROOTS:
        if (r / "events" / "tlb" / "tlb_flush").is_dir():
            return r
    return None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class TlbFlushCounter:
    """start() / stop() around a window; stop() returns the counts or why there are none.
    Never raises: a missing tracepoint costs this figure, not the sample."""

    def __init__(self, pid: int | None = None):
        self.pid = pid or os.getpid()
        self.inst: Path | None = None
        self.note: str | None = None

    def start(self) -> TlbFlushCounter:
        root = _root()
        if root is None:
            self.note = "no tlb:tlb_flush tracepoint here (or tracefs not mounted)"
            return self
        if os.geteuid() != 0:
            self.note = "not counted: tracefs needs root"
            return self
        inst = root / "instances" / f"copybench-{self.pid}-tlb"
        try:
            inst.mkdir()
            self.inst = inst
            _write(inst / "buffer_size_kb", str(BUFFER_KB))
            tids = " ".join(os.listdir(f"/proc/{self.pid}/task"))
            _write(inst / "set_event_pid", tids)
            _write(inst / "events" / "tlb" / "tlb_flush" / "enable", "1")
        except OSError as exc:
            self.note = f"not counted: {exc}"
            self._remove()
        return self

    def stop(self, nbytes: int) -> dict:
        if self.inst is None:
            return {"flushes": None, "note": self.note}
        try:
            _write(self.inst / "tracing_on", "0")
            total = overrun = 0
            for cpu in sorted((self.inst / "per_cpu").iterdir()):
                stats = dict(STAT_RE.findall((cpu / "stats").read_text()))
                total += sum(int(stats.get(k, 0)) for k in ("entries", "overrun", "read events"))
                overrun += int(stats.get("overrun", 0))
            reasons: dict[str, int] = {}
            for line in (self.inst / "trace").read_text().splitlines():
                m = REASON_RE.search(line)
                if m and not line.startswith("#"):
                    reasons[m.group(1)] = reasons.get(m.group(1), 0) + 1
            return {"flushes": total,
                    "per_mb": round(total / (nbytes / (1 << 20)), 3) if nbytes else None,
                    "by_reason": reasons, "by_reason_complete": overrun == 0,
                    "method": "tlb:tlb_flush, this process's threads, ring-buffer stats"}
        except OSError as exc:
            return {"flushes": None, "note": f"reading the count failed: {exc}"}
        finally:
            self._remove()

    def _remove(self) -> None:
        if self.inst is None:
            return
        try:
            _write(self.inst / "events" / "tlb" / "tlb_flush" / "enable", "0")
        except OSError:
            pass
        for _ in range(50):          # an instance stays busy a moment after its files close
            try:
                self.inst.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.02)
        self.inst = None
