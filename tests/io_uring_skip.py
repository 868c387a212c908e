"""Why the io_uring tests cannot run on this machine, asked once per test process."""

from __future__ import annotations

import functools
import importlib.util


@functools.cache
def io_uring_unavailable() -> str | None:
    """The liburing binding missing, or bench doctor's io_uring probe failing (its detail);
    None where io_uring works here."""
    if importlib.util.find_spec("liburing") is None:
        return "liburing not installed: python3 -m bench.bootstrap --tests"
    from bench import doctor
    c = doctor.check_io_uring()
    return None if c.ok else f"io_uring unavailable here: {c.detail}"
