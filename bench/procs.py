"""Child processes, one way everywhere: how they stop, and the JSON-lines helpers that run on
nodes (`bench tracer`, `bench topology`) from both ends.

Runner end: `NodeProcess` starts a helper (over SSH, or locally in tests), sends its config
line, waits for events with a deadline, and `close()`s it: end of stdin first (the helper
cleans up and exits), then SIGTERM, then SIGKILL (`stop`). Node end: `install_handlers()`
turns SIGTERM/SIGINT/SIGHUP and the lifetime watchdog (SIGALRM) into `Stop`, and `held(fn)`
runs a clean-up that no second signal can cut short. A helper therefore cleans up on every
way the runner or SSH can go away: a command, end of input, a signal, or its own deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import tempfile
import time

from bench.errors import UsageError

EXIT_RUNNER_GONE = 3
EXIT_WATCHDOG = 4
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM)


def readline_by(stream, deadline: float) -> str | None:
    """One line from a child's pipe by `deadline` (time.monotonic()): None when none came in
    time, "" at end of file. Waits in slices so the caller's deadline is kept."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if sel.select(timeout=min(remaining, 0.5)):
                return stream.readline()
    finally:
        sel.close()


def stderr_tail(f, lines: int = 5) -> str:
    """': a | b | c' from the last lines a child wrote to its stderr file, for error messages."""
    try:
        f.seek(0)
        tail = f.read().strip().splitlines()[-lines:]
    except (OSError, ValueError):
        return ""
    return (": " + " | ".join(tail)) if tail else ""


def stop(proc: subprocess.Popen, eof_grace: float = 0.0, term_grace: float = 2.0,
         files=(), int_grace: float = 0.0) -> int | None:
    """Stop a child: close its stdin and give it `eof_grace` s to finish on its own (helpers
    clean up on end of input), then SIGINT and `int_grace` s where a tool prints or cleans up
    on it (bpftrace prints its maps), then SIGTERM, `term_grace` s, SIGKILL. Closes its pipes
    and `files`. Idempotent; returns the exit code."""
    if proc.poll() is None:
        if eof_grace > 0 and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=eof_grace)

        def gone(wait: float) -> bool:
            try:
                proc.wait(timeout=wait)
                return True
            except subprocess.TimeoutExpired:
                return False
        steps = [(signal.SIGINT, int_grace)] if int_grace > 0 else []
        if proc.poll() is None and not _ladder(
                steps + [(signal.SIGTERM, term_grace)],
                lambda sig: proc.terminate() if sig == signal.SIGTERM else proc.send_signal(sig),
                gone):
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr, *files):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            f.close()
    return proc.returncode


def stop_pid(pid: int, alive, int_grace: float = 0.0, term_grace: float = 2.0,
             kill_grace: float = 5.0) -> bool:
    """`stop` for a process that is not our child (a stale bpftrace, a daemonized QEMU): the
    same SIGINT (if `int_grace`), SIGTERM, SIGKILL steps, `alive()` polled in between (it must
    also say False for a pid reused by another program). True once it is gone."""
    def gone(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive():
            time.sleep(0.1)
        return not alive()

    def send(sig: int) -> None:
        os.kill(pid, sig)
    steps = [(signal.SIGINT, int_grace)] if int_grace > 0 else []
    try:
        return _ladder(steps + [(signal.SIGTERM, term_grace), (signal.SIGKILL, kill_grace)],
                       send, gone) if alive() else False
    except ProcessLookupError:
        return True


def _ladder(steps, send, gone) -> bool:
    """Each (signal, wait) in turn until `gone(wait)`; True when one was enough."""
    for sig, wait in steps:
        send(sig)
        if gone(wait):
            return True
    return False


def spawn_with_lifeline(argv: list[str]) -> tuple[subprocess.Popen, object]:
    """A tool whose stdin is a pipe only we hold (not Popen.stdin, which communicate() closes):
    a remote tool (`bench nsexec --until-eof`) ends when it closes, also when we die. Returns
    the process and that pipe's write end, to close when stopping it."""
    r, w = os.pipe()
    try:
        p = subprocess.Popen(argv, stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    return p, os.fdopen(w, "wb", buffering=0)


# == node end =================================================================================
class Stop(BaseException):
    """Raised by the signal handlers: leave the command loop, clean up, exit with `code`."""

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code, self.why = code, why


def install_handlers() -> None:
    def handler(signum, frame):
        # The first signal wins; later ones must not cut the clean-up short.
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGALRM:
            raise Stop(EXIT_WATCHDOG, "lifetime watchdog expired")
        raise Stop(128 + signum, f"signal {signal.Signals(signum).name}")
    for s in SIGNALS:
        signal.signal(s, handler)


def held(fn) -> None:
    """Run fn with SIGINT/SIGTERM/SIGHUP/SIGALRM held back; a held signal arrives right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    try:
        fn()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def emitter(wfile):
    """emit(event, **fields): one JSON line to the runner; a runner that is gone is ignored
    (cleaning up is all that is left to do then)."""
    def emit(event: str, **kw) -> None:
        try:
            wfile.write(json.dumps({"event": event, **kw}) + "\n")
            wfile.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
    return emit


def config_line(rfile, emit, example: str) -> dict | int:
    """A node helper's first line, its JSON config object; instead the exit code when the
    runner is gone before sending it (EXIT_RUNNER_GONE) or the line is no JSON object (2, after
    an error event naming `example`)."""
    line = rfile.readline()
    if not line:
        return EXIT_RUNNER_GONE
    try:
        cfg = json.loads(line)
    except ValueError:
        cfg = None
    if not isinstance(cfg, dict):
        emit("error", message=f"bad config line {line[:80]!r}", fix=example)
        return 2
    return cfg


# == runner end ===============================================================================
PROVISION_FIX = ("install this copybench on the node(s): `--target lab` does it before every "
                 "run (or `bench lab up --nodes 2` re-provisions); real hosts: "
                 "ansible-playbook -i INVENTORY site.yml")


class NodeProcess:
    """The runner's end of one helper process on a node (`what`: "copy tracer", ...).

    `command` is the hidden `bench` sub-command it runs: an older copybench on the node that
    lacks it is reported as such, with the fix. Own session: a Ctrl-C at the terminal reaches
    the runner only, which then tells the helper to clean up and waits for it to confirm."""

    def __init__(self, node: str, what: str, command: str, argv: list[str], config: dict):
        self.node, self.what, self.command = node, what, command
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1,
                                     start_new_session=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.send({**config, "node": node})

    def send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._gone("it exited") from None

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            line = readline_by(self.proc.stdout, deadline)
            if line is None:
                raise UsageError(f"the {self.what} on {self.node} sent no {event!r} within "
                                 f"{timeout:.0f} s{self._tail()}",
                                 "check the node's load (`bench lab status`), then retry")
            if line == "":
                raise self._gone(f"it exited (code {self._wait(5)}) before {event!r}")
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "error":
                fix = msg.get("fix")
                raise UsageError(f"on {self.node}: {msg.get('message')}"
                                 + (f" (fix there: {fix})" if fix else ""),
                                 fix or "see the message from the node")
            if msg.get("event") == event:
                return msg

    def _wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _gone(self, what: str) -> UsageError:
        tail = self._tail()
        if f"invalid choice: '{self.command}'" in tail or "No module named" in tail:
            return UsageError(f"the copybench on {self.node} has no {self.what} (older than "
                              "this one)", PROVISION_FIX)
        return UsageError(f"the {self.what} on {self.node} failed: {what}{tail}",
                          "see the node's message; `bench doctor --target ...` checks the node")

    def _tail(self, lines: int = 5) -> str:
        return stderr_tail(self._stderr, lines)

    def close(self, grace: float = 30.0) -> None:
        """End of stdin makes the helper clean up and exit; SIGTERM only if it does not (over
        SSH that ends the session, and the helper sees end of input all the same)."""
        stop(self.proc, eof_grace=grace, term_grace=5.0, files=(self._stderr,))
