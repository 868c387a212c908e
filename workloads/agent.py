"""The agent process: runs one side (sender or receiver) of one workload for the runner.

    python -m workloads.agent          # reads its config as one JSON line on stdin

Protocol (JSON lines, see bench/agents.py for the runner's side):
  runner -> agent   {config}  then  {"cmd": "go"} / {"cmd": "stop"}
  agent  -> runner  {"event": "ready", "pid": P, ...}  {"event": "result", ...}
                    {"event": "error", "message": ...}
The process names itself `sender` or `receiver` (prctl PR_SET_NAME), as the seed's programs did,
so comm-filtered probes and `ps` see the roles; it dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
ROLES = ("sender", "receiver")


def _prctl(option: int, arg) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, arg, 0, 0, 0)


def set_process_name(name: str) -> None:
    _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


class AgentIO:
    """JSON lines to the runner on stdout; commands from it on stdin."""

    def __init__(self, rfile=None, wfile=None):
        self._r = rfile or sys.stdin
        self._w = wfile or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            self._w.write(line + "\n")
            self._w.flush()

    def wait_cmd(self, expected: str) -> None:
        """Block until the runner sends `expected`; EOF means the runner is gone."""
        for line in self._r:
            cmd = json.loads(line).get("cmd")
            if cmd == expected:
                return
            if cmd == "stop":
                raise SystemExit(0)
        raise SystemExit("runner closed stdin")

    def on_cmd(self, expected: str, callback) -> threading.Thread:
        """Call `callback` (in a thread) when `expected` arrives or stdin closes."""
        def watch():
            try:
                self.wait_cmd(expected)
            except SystemExit:
                pass
            callback()
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        return t


@dataclass
class CpuWindow:
    """User/system CPU of this process and wall time between start() and stop()."""

    user: float = 0.0
    sys: float = 0.0

    def start(self) -> CpuWindow:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._u0, self._s0 = ru.ru_utime, ru.ru_stime
        return self

    def stop(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.user, self.sys = ru.ru_utime - self._u0, ru.ru_stime - self._s0
        return {"user_s": round(self.user, 6), "sys_s": round(self.sys, 6)}


def enter_netns(name: str) -> None:
    from pyroute2 import netns  # netlink/netns handling is pyroute2's job
    netns.setns(name)


def buffer_address(buf) -> str:
    """User virtual address of a writable buffer (bytearray, mmap): the seed's 'buffer at 0x7ff…'."""
    return hex(ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)))


def now() -> float:
    return time.monotonic()  # CLOCK_MONOTONIC: comparable across the agents' processes


def main() -> int:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when we stop
    io = AgentIO()
    try:
        cfg = json.loads(sys.stdin.readline())
        role = cfg["role"]
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        set_process_name(role)
        if cfg.get("netns"):
            enter_netns(cfg["netns"])
        module = importlib.import_module(f"workloads.{cfg['workload']}")
        result = getattr(module, role)(cfg, io)
    except SystemExit:
        raise
    except BaseException as exc:  # report, don't traceback: the runner shows one message
        io.emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1
    io.emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
