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
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
EXIT_RUNNER_GONE = 3
EXIT_WATCHDOG = 4
ROLES = ("sender", "receiver")


def _prctl(option: int, arg) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, arg, 0, 0, 0)


def set_process_name(name: str) -> None:
    _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


class AgentIO:
    """JSON lines to the runner on stdout; commands from it on stdin, read by one thread.

    End of stdin means the runner is gone (over SSH, PR_SET_PDEATHSIG cannot tell us): the
    agent exits at once rather than hold a port or a CPU on a lab machine."""

    def __init__(self, rfile=None, wfile=None, on_eof=None):
        self._r = rfile or sys.stdin
        self._w = wfile or sys.stdout
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._stopped = threading.Event()
        self._stop_callbacks: list = []
        self._on_eof = on_eof or (lambda: os._exit(EXIT_RUNNER_GONE))

    def emit(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            self._w.write(line + "\n")
            self._w.flush()

    def start_reader(self) -> threading.Thread:
        def read():
            for line in self._r:
                try:
                    cmd = json.loads(line).get("cmd")
                except ValueError:
                    continue
                if cmd == "go":
                    self._go.set()
                elif cmd == "stop":
                    self._stopped.set()
                    self._go.set()  # a stop before go releases a waiting sender too
                    for cb in self._stop_callbacks:
                        cb()
            self._on_eof()
        t = threading.Thread(target=read, daemon=True, name="runner-commands")
        t.start()
        return t

    def wait_cmd(self, expected: str) -> None:
        """Block until "go" arrives; a "stop" instead ends the agent quietly."""
        if expected != "go":
            raise ValueError(f"only 'go' is waited for, not {expected!r}")
        self._go.wait()
        if self._stopped.is_set():
            raise SystemExit(0)

    def on_cmd(self, expected: str, callback) -> None:
        """Call `callback` (on the reader thread) when "stop" arrives."""
        if expected != "stop":
            raise ValueError(f"only 'stop' has callbacks, not {expected!r}")
        self._stop_callbacks.append(callback)
        if self._stopped.is_set():
            callback()


def start_watchdog(seconds: float) -> None:
    """Every agent dies by itself after `seconds`, whatever happens to the runner or network."""
    def expire():
        time.sleep(seconds)
        os._exit(EXIT_WATCHDOG)
    threading.Thread(target=expire, daemon=True, name="watchdog").start()


@dataclass
class CpuWindow:
    """User/system CPU of this process and wall time between start() and stop()."""

    user: float = 0.0
    sys: float = 0.0

    def start(self) -> CpuWindow:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._u0, self._s0 = ru.ru_utime, ru.ru_stime
        self._m0 = _machine_cpu()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - self._t0
        self.user, self.sys = ru.ru_utime - self._u0, ru.ru_stime - self._s0
        m1 = _machine_cpu()
        # This machine's softirq/busy seconds over our window: on two-node runs each side's
        # kernel work happens on its own machine, where only the agent can see it.
        machine = {k: round(m1[k] - self._m0[k], 6) for k in m1} if m1 and self._m0 else None
        # wall_s: how busy the agent itself was (bench.metrics.agent_busy), so a row can say
        # when our loop, not the path, was the limit.
        # machine_at: the raw readings, so a runner whose two agents share one machine can take
        # that machine's window from the sender's start to the receiver's end (one clock).
        return {"user_s": round(self.user, 6), "sys_s": round(self.sys, 6),
                "wall_s": round(wall, 6), "machine": machine,
                "machine_at": {"start": self._m0, "end": m1} if m1 and self._m0 else None}


def _machine_cpu() -> dict | None:
    """This machine's CPU seconds per /proc/stat state, plus `busy` (bench.metrics' parser)."""
    from bench.metrics import BUSY_FIELDS, read_cpu_times
    try:
        t = read_cpu_times()
    except (OSError, ValueError):
        return None
    return {"softirq": t["softirq"], "steal": t["steal"],
            "busy": sum(t[k] for k in BUSY_FIELDS)}


def enter_netns(name: str) -> None:
    # setns(2) alone: importing pyroute2 for it takes seconds under TCG (bench/setns.py)
    from bench.setns import enter
    enter(name)


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
        # setns() moves only the calling thread: enter the namespace before any thread exists,
        # so every thread (and every socket one might open) lives inside it.
        if cfg.get("netns"):
            enter_netns(cfg["netns"])
        if cfg.get("cpu") is not None:   # --cpus: this agent on one CPU, recorded by the runner
            os.sched_setaffinity(0, {int(cfg["cpu"])})
        start_watchdog(float(cfg.get("max_seconds", 600)))
        io.start_reader()
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
