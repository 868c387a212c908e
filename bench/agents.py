"""The runner's side of the agent protocol (see workloads/agent.py): spawn, talk, stop.

Children stop with SIGTERM then SIGKILL under a deadline; an agent that dies or errors becomes
an AgentError carrying its last stderr lines, never a hang. `Agent` is a child process here or
an SSH session running `bench agent`; bench/launched.py has the agents a node's launcher forks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

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

