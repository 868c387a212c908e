"""Progress for long lab steps: plain timestamped lines, so CI logs stay readable.

On a terminal the same lines appear; long waits add a heartbeat so a silent
minute never looks like a hang.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, heartbeat_s: float = 30.0):
        self.stream = stream or sys.stderr
        self.heartbeat_s = heartbeat_s
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def line(self, msg: str) -> None:
        with self._lock:
            print(f"[lab {time.monotonic() - self.t0:6.1f}s] {msg}", file=self.stream, flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Announce `what`, print a heartbeat while it runs, then its duration."""
        start = time.monotonic()
        self.line(f"{what} ...")
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                self.line(f"  still {what.lower()} ({time.monotonic() - start:.0f}s)")

        t = threading.Thread(target=beat, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
        self.line(f"{what}: done in {time.monotonic() - start:.1f}s")


class Quiet(Progress):
    """For tests and library use: no output."""

    def line(self, msg: str) -> None:
        pass
