"""The runner's end of a node's launcher (bench/launcher.py): agents and reference tools it
starts, each over one connection to its socket.

A connection starts with one request line (`request()`); what follows is the child's: an
agent's JSON lines (its stderr lines in between), or a tool's stdout. After the child has
exited the launcher ends the stream with a record: a newline, NUL, then
{"event": "exited", "code": N, "stderr": "..."} (the tool's stderr; an agent's went into the
stream) and a newline. The NUL keeps the record apart from anything the child wrote.
"""

from __future__ import annotations

import collections
import contextlib
import json
import select
import socket
import subprocess
import time
from collections.abc import Callable

from bench.agents import Agent, AgentError

# The protocol, shared with the launcher: the end-of-stream mark, and how long the launcher
# waits after a hang-up before SIGTERM (and as long again before SIGKILL).
RECORD = b"\n\x00"
HANGUP_GRACE_S = 2.0


def request(kind: str, argv: list[str] | None = None, netns: str | None = None) -> bytes:
    """The first line on a connection: what the launcher should start."""
    return (json.dumps({"launch": kind, "argv": argv or [], "netns": netns}) + "\n").encode()


def connect_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def split_record(data: bytes) -> tuple[bytes, dict | None]:
    """(what the child wrote, the launcher's record or None when the stream ended without
    one: the launcher or the connection went away)."""
    head, sep, tail = data.rpartition(RECORD)
    if not sep:
        return data, None
    try:
        rec = json.loads(tail.decode(errors="replace"))
    except ValueError:
        return data, None
    return head, rec if isinstance(rec, dict) else None


class LaunchedAgent(Agent):
    """An agent that a node's launcher started: `connect()` opens the connection to the
    launcher (a unix socket forwarded by the shared SSH connection), which becomes the agent's
    stdin, stdout and stderr. Its stderr lines are the non-JSON ones."""

    def __init__(self, role: str, config: dict | None, connect: Callable[[], socket.socket]):
        self.role = role
        self._lines: collections.deque[str] = collections.deque(maxlen=5)
        self._buf = b""
        try:
            self.sock: socket.socket | None = connect()
            self.sock.sendall(request("agent"))
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
        while True:
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
                    except OSError:       # reset: the launcher or the SSH connection is gone
                        chunk = b""
                    if not chunk:
                        rest, self._buf = self._buf, b""
                        return rest.decode(errors="replace")
                    self._buf += chunk
            line, _, self._buf = self._buf.partition(b"\n")
            if line:              # the launcher's record: its JSON after the NUL
                return line.lstrip(b"\x00").decode(errors="replace") + "\n"

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
        deadline = time.monotonic() + 0.2 + 2 * HANGUP_GRACE_S + grace
        with contextlib.suppress(OSError):
            while True:
                line = self._readline(deadline)
                if not line or line.startswith('{"event": "exited"'):
                    break
        with contextlib.suppress(OSError):
            self.sock.close()
        self.sock = None


class LaunchedProcess:
    """A reference tool that a node's launcher started in a namespace (`bench nsexec` there,
    in its child): what the runner uses of a subprocess.Popen (communicate, poll, wait,
    terminate, kill, returncode), so it stops like one (bench.procs.stop). End of our side of
    the stream stops the tool, as the lifeline pipe does for `bench nsexec --until-eof`."""

    stdin = stdout = stderr = None
    pid = None           # the node's; a remote wait_listening does not use it

    def __init__(self, connect: Callable[[], socket.socket], argv: list[str],
                 netns: str | None):
        self.args = argv
        self.returncode: int | None = None
        self._out = b""
        self._err = ""
        self.sock: socket.socket | None = connect()
        self.sock.sendall(request("tool", argv, netns))

    def _read_until(self, deadline: float | None) -> bool:
        """Read to the end of the stream; False when `deadline` came first."""
        while self.sock is not None:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                continue
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                self._out += chunk
                continue
            self._out, rec = split_record(self._out)
            if rec is None:
                self.returncode, self._err = -1, "the node's launcher went away"
            else:
                self.returncode, self._err = int(rec.get("code", -1)), rec.get("stderr", "")
            self.sock.close()
            self.sock = None
        return True

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._read_until(deadline):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._out.decode(errors="replace"), self._err

    def poll(self) -> int | None:
        if self.sock is not None:
            self._read_until(time.monotonic())      # what has come so far, without waiting
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self.communicate(timeout)
        return self.returncode

    def terminate(self) -> None:
        """End of input: the tool gets SIGTERM on the node."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def kill(self) -> None:
        """Hang up: the launcher sends SIGTERM, then SIGKILL, to a tool that is still there."""
        self.terminate()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
            self.returncode = -9
