"""How the runner's process takes SIGINT, SIGTERM and SIGHUP: each one ends the run the same
way Ctrl-C does (finished cases kept, status "interrupted", exit 128 + the signal).

The handlers are installed whatever dispositions `bench` inherited. A non-interactive shell
starts a background job with SIGINT ignored, and Python then installs no KeyboardInterrupt
handler of its own: without this, `bench run ... &` followed by `kill -INT` ran on to the end.
"""

from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt that knows which signal raised it (every `except KeyboardInterrupt`
    clean-up path takes it unchanged)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal; 130 for a plain KeyboardInterrupt (Ctrl-C under Python's handler)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def reason(exc: BaseException) -> str:
    """What the result file says stopped the run."""
    signum = getattr(exc, "signum", signal.SIGINT)
    if signum == signal.SIGINT:
        return "stopped by Ctrl-C (SIGINT)"
    return f"stopped by {signal.Signals(signum).name}"


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP to Interrupted in this process."""
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:
            os._exit(128 + signum)   # a forked child (a library's helper) must not run our cleanup
        raise Interrupted(signum)

    for s in SIGNALS:
        signal.signal(s, handler)
