"""io_uring modes over loopback, in-process (no root): every byte verified, N in flight.

The agents' two sides run in two threads with a stub AgentIO; each has its own ring."""

from __future__ import annotations

import importlib
import multiprocessing

import pytest

liburing = pytest.importorskip("liburing")

from bench import doctor  # noqa: E402
from workloads import io_uring  # noqa: E402

if not doctor.check_io_uring().ok:
    pytest.skip("io_uring unavailable here", allow_module_level=True)


class StubIO:
    def __init__(self, conn=None):
        self.conn = conn

    def emit(self, event, **fields):
        if self.conn is not None:
            self.conn.send((event, fields))

    def wait_cmd(self, expected):
        pass


def transfer(workload: str, size: int, count: int, depth: int = 8, **extra) -> tuple[dict, dict]:
    """The receiver in a forked process (as the agents are: the binding keeps the GIL while it
    waits in io_uring_enter), the sender here."""
    mod = importlib.import_module(f"workloads.{workload}")
    cfg = {"size": size, "bind": "127.0.0.1", "queue_depth": depth, "max_seconds": 30, **extra}
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()

    def rx():
        try:
            child.send(("result", mod.receiver(cfg, StubIO(child))))
        except BaseException as exc:   # noqa: BLE001 - reported by the test
            child.send(("error", f"{type(exc).__name__}: {exc}"))

    p = ctx.Process(target=rx)
    p.start()
    try:
        assert parent.poll(20)
        event, fields = parent.recv()
        assert event == "ready", fields
        tx = mod.sender({**cfg, "target": ["127.0.0.1", fields["port"]], "duration": 30,
                         "count": count}, StubIO())
        assert parent.poll(30)
        event, rx_res = parent.recv()
        assert event == "result", rx_res
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
    return tx, rx_res


@pytest.mark.parametrize("workload", ["io_uring", "io_uring_fixed", "io_uring_zc"])
@pytest.mark.parametrize("size", [1000, 65536])
def test_exact_bytes_with_n_in_flight(workload, size):
    count = 3000 if size < 4096 else 300
    tx, rx = transfer(workload, size, count, depth=16)
    assert tx["messages"] == count
    assert rx["bad"] == 0
    assert rx["bytes"] == rx["bytes_seen"] == count * size
    assert tx["io_uring"]["queue_depth"] == 16
    assert tx["io_uring"]["setup"] in ("SINGLE_ISSUER|DEFER_TASKRUN", "COOP_TASKRUN", "none")
    # N per submission: far fewer io_uring_enter calls than requests
    assert tx["io_uring"]["enter_calls"] <= tx["io_uring"]["requests"] / 4
