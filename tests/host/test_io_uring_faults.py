"""io_uring faults that need root to set up: RLIMIT_MEMLOCK too low for registered buffers.

Root has CAP_IPC_LOCK and is never charged for pinned pages, so the check runs in a forked
child that becomes `nobody` with a 64 KiB RLIMIT_MEMLOCK."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.root


def test_memlock_too_low_for_registered_buffers_is_a_clear_error_and_releases_the_ring(root_only):
    pytest.importorskip("liburing")
    from bench import doctor
    if not doctor.check_io_uring().ok:
        pytest.skip("io_uring unavailable here")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:     # child: no pytest machinery from here on, only os._exit
        code = 1
        try:
            import resource

            from workloads.io_uring import Ring
            from workloads.pattern import PERIOD
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
            os.setgid(65534)
            os.setuid(65534)
            fds0 = len(os.listdir("/proc/self/fd"))
            ring = Ring(8, deadline=1e18)
            try:
                ring.register([bytearray(65536) for _ in range(PERIOD)])
                msg = "registered: no error"
            except OSError as exc:
                msg = str(exc)
            finally:
                ring.close()
            leaked = len(os.listdir("/proc/self/fd")) - fds0
            os.write(w, f"{leaked}|{msg}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    got = os.read(r, 4096).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, got
    leaked, msg = got.split("|", 1)
    assert "io_uring_register_buffers" in msg and "RLIMIT_MEMLOCK" in msg, msg
    assert leaked == "0", f"ring fd left open: {msg}"
