"""The runner's side of the agent protocol (see workloads/agent.py): spawn, talk, stop.

Children stop with SIGTERM then SIGKILL under a deadline; an agent that dies or errors becomes
an AgentError carrying its last stderr lines, never a hang. `Agent` is a child process here or
an SSH session running `bench agent`; `LaunchedAgent` is one a node's launcher forked
(bench/launcher.py), reached over one connection to it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from bench.procs import readline_by, stderr_tail, stop


class AgentError(RuntimeError):
    """An agent died, reported an error, or did not answer in time."""


class Agent:
    def __init__(self, role: str, config: dict | None, argv: list[str] | None = None):
        """Starts the agent; with config None it waits for `configure` (its interpreter and,
        over SSH, its session start meanwhile: seconds under emulation)."""
        self.role = role
        self._stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "workloads.agent"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1, env=env,
        )
        if config is not None:
            self.configure(config)

    def configure(self, config: dict) -> None:
        """The agent's one config line (the first it reads)."""
        self.send({**config, "role": self.role})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: dict, required: bool = True) -> None:
        """`required=False` for hints such as "stop" to an agent that may already be done."""
        try:
            self._write(json.dumps(msg) + "\n")
        except (BrokenPipeError, OSError, ValueError):
            if not required:
                return
            raise AgentError(f"{self.role} agent is gone{self._tail()}") from None

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            if line is None:
                raise AgentError(f"{self.role} agent sent no {event!r} within {timeout:.0f} s"
                                 f"{self._tail()}")
            if line == "":
                raise AgentError(f"{self.role} agent exited (code {self._exit_code()}) before "
                                 f"{event!r}{self._tail()}")
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                self._other(line)
                continue  # stray output from a library; the protocol lines are JSON
            if msg.get("event") == "error":
                raise AgentError(f"{self.role} agent failed: {msg.get('message')}")
            if msg.get("event") == "exited":       # said by a node's launcher
                raise AgentError(f"{self.role} agent exited (code {msg.get('code')}) before "
                                 f"{event!r}{self._tail()}")
            if msg.get("event") == event:
                return msg

    def _write(self, text: str) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def _readline(self, deadline: float) -> str | None:
        """The next line by `deadline`: None when none came, "" at the end of the stream."""
        return readline_by(self.proc.stdout, deadline)

    def _exit_code(self) -> int | None:
        return self.proc.wait(timeout=5)

    def _other(self, line: str) -> None:
        """A line that is not the protocol's: its stderr goes elsewhere here."""

    def _tail(self, lines: int = 5) -> str:
        return stderr_tail(self._stderr, lines)

    def stop(self, grace: float = 2.0) -> None:
        """Idempotent: close stdin, then SIGTERM, then SIGKILL."""
        stop(self.proc, eof_grace=0.2, term_grace=grace, files=(self._stderr,))


class LaunchedAgent(Agent):
    """An agent that a node's launcher forked (bench/launcher.py): `connect()` opens the
    connection to the launcher (a unix socket forwarded by the shared SSH connection), which
    becomes the agent's stdin, stdout and stderr. Its stderr lines are the non-JSON ones."""

    def __init__(self, role: str, config: dict | None, connect: Callable[[], socket.socket]):
        self.role = role
        self._lines: collections.deque[str] = collections.deque(maxlen=5)
        self._buf = b""
        try:
            self.sock: socket.socket | None = connect()
        except OSError as exc:
            raise AgentError(f"{role} agent: no connection to the node's agent launcher: "
                             f"{exc}") from None
        if config is not None:
            self.configure(config)

    @property
    def pid(self) -> int:
        raise AttributeError("a launched agent's pid is the one in its ready event")

    def _write(self, text: str) -> None:
        if self.sock is None:
            raise OSError("stopped")
        self.sock.sendall(text.encode())

    def _readline(self, deadline: float) -> str | None:
        # Our own buffer, not a file object's: one recv may hold several lines, and a select()
        # on the socket cannot see lines already buffered.
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self.sock is None:
                return ""
            ready, _, _ = select.select([self.sock], [], [], min(remaining, 0.5))
            if ready:
                try:
                    chunk = self.sock.recv(65536)
                except OSError:           # reset: the launcher or the SSH connection is gone
                    chunk = b""
                if not chunk:
                    rest, self._buf = self._buf, b""
                    return rest.decode(errors="replace")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace") + "\n"

    def _exit_code(self) -> int | None:
        return None          # the stream ended without the launcher's word: it is gone

    def _other(self, line: str) -> None:
        self._lines.append(line.rstrip("\n"))

    def _tail(self, lines: int = 5) -> str:
        tail = list(self._lines)[-lines:]
        return (": " + " | ".join(tail)) if tail else ""

    def stop(self, grace: float = 2.0) -> None:
        """Idempotent: end of input (the agent exits on it; the launcher sends SIGTERM, then
        SIGKILL, if it does not), then wait for the launcher's word that it has exited."""
        if self.sock is None:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        from bench.launcher import HANGUP_GRACE_S
        deadline = time.monotonic() + 0.2 + 2 * HANGUP_GRACE_S + grace
        with contextlib.suppress(OSError):
            while True:
                line = self._readline(deadline)
                if not line or line.startswith('{"event": "exited"'):
                    break
        with contextlib.suppress(OSError):
            self.sock.close()
        self.sock = None
