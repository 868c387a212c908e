"""How ours and perftest wait for RDMA completions (rdma_wait = "events" | "poll"): the agent's
busy-poll mode against fake CQs (no RDMA here), perftest's argv and what each row records."""

from __future__ import annotations

import os
import socket
import time
import types

import pytest

from workloads import rdma_verbs as rv


@pytest.fixture(autouse=True)
def _wc_enums(monkeypatch):
    """IBV_WC_SUCCESS = 0 (verbs.h) where pyverbs is not installed (the host tier)."""
    try:
        import pyverbs.enums  # noqa: F401
    except ImportError:
        monkeypatch.setattr(rv, "_e", lambda: types.SimpleNamespace(IBV_WC_SUCCESS=0))


class _CQ:
    """Empty until `delay` seconds have passed, then one good completion; counts its polls
    and would count any arming (a busy-polling agent never arms)."""
    class WC:
        status, opcode, wr_id = 0, 0, 1

    def __init__(self, delay: float = 1e9):
        self.at, self.polls, self.armed = time.monotonic() + delay, 0, 0

    def poll(self, n):
        self.polls += 1
        return (1, [self.WC()]) if time.monotonic() >= self.at else (0, [])

    def req_notify(self):
        self.armed += 1


def _polling(cq, channel_fd=None):
    v = object.__new__(rv.Verbs)
    v.cq, v.counters, v.wait, v.channel_fd = cq, rv.new_counters(), "poll", channel_fd
    return v


@pytest.fixture
def no_sleeping(monkeypatch):
    """Busy-polling must never sleep: time.sleep fails the test, and every select() must
    have a zero timeout (it only looks at the control socket)."""
    real = rv.select.select
    timeouts = []

    def select(r, w, x, timeout=None):
        timeouts.append(timeout)
        assert timeout == 0, f"select() with timeout {timeout}: the agent slept"
        return real(r, w, x, timeout)

    def sleep(s):
        raise AssertionError(f"time.sleep({s}) while busy-polling")

    monkeypatch.setattr(rv.select, "select", select)
    monkeypatch.setattr(rv.time, "sleep", sleep)
    return timeouts


def test_busy_poll_takes_a_late_completion_without_sleeping_or_arming(no_sleeping):
    """A completion 50 ms away (25 x the events mode's spin): polled for all of it, no
    arming even with a channel there, no sleep; the whole wait is in spin_s."""
    cq = _CQ(delay=0.05)
    rfd, wfd = os.pipe()
    v = _polling(cq, channel_fd=rfd)
    a, b = socket.socketpair()
    try:
        with a, b:
            t0 = time.monotonic()
            assert len(v.poll(b, time.monotonic() + 30)) == 1
            took = time.monotonic() - t0
    finally:
        os.close(rfd)
        os.close(wfd)
    assert cq.armed == 0 and v.counters["sleeps"] == 0 and "cq_events" not in v.counters
    assert 0.04 < v.counters["spin_s"] <= took
    assert cq.polls > 1000                    # busy: thousands of polls, not one per nap
    # the control socket looked at about every CONTROL_CHECK_S, never waited on
    assert 1 <= v.counters["control_checks"] == len(no_sleeping) <= took / rv.CONTROL_CHECK_S + 1


def test_busy_poll_is_bounded_by_the_deadline(no_sleeping):
    v = _polling(_CQ())
    a, b = socket.socketpair()
    t0 = time.monotonic()
    with a, b, pytest.raises(rv.VerbsError, match="deadline"):
        v.poll(b, time.monotonic() + 0.1)
    assert 0.1 <= time.monotonic() - t0 < 2 and v.counters["sleeps"] == 0


def test_busy_poll_ends_when_the_peer_is_gone_and_at_once_when_it_failed(monkeypatch,
                                                                         no_sleeping):
    monkeypatch.setattr(rv, "PEER_GRACE_S", 0.2)
    v = _polling(_CQ())
    a, b = socket.socketpair()
    a.close()
    t0 = time.monotonic()
    with b, pytest.raises(rv.PeerGone, match="gone"):
        v.poll(b, time.monotonic() + 30)
    assert 0.2 <= time.monotonic() - t0 < 5     # after the grace, not at the deadline
    v = _polling(_CQ())
    a, b = socket.socketpair()
    with a, b:
        rv.send_error(a, "sender: VerbsError: bringing the QP to RTS failed")
        t0 = time.monotonic()
        with pytest.raises(rv.PeerGone, match="RTS failed"):
            v.poll(b, time.monotonic() + 30)
    assert time.monotonic() - t0 < 1


def test_busy_poll_raises_on_a_failed_completion():
    class Failed(_CQ):
        class WC:
            status, opcode, wr_id = 12, 0, 7       # IBV_WC_RETRY_EXC_ERR

        def poll(self, n):
            return 1, [self.WC()]
    a, b = socket.socketpair()
    with a, b, pytest.raises(rv.VerbsError, match="status 12"):
        _polling(Failed()).poll(b, time.monotonic() + 30)


def test_the_agent_reads_its_wait_and_refuses_an_unknown_one():
    assert rv.Params.from_cfg({"size": 8}).wait == "events"      # as before: spin, then sleep
    assert rv.Params.from_cfg({"size": 8, "rdma_wait": "poll"}).wait == "poll"
    with pytest.raises(ValueError, match="rdma_wait 'spin'.*events, poll"):
        rv.Params.from_cfg({"size": 8, "rdma_wait": "spin"})


def test_each_agent_records_how_it_waited():
    from workloads.rdma_flow import wait_record
    v = object.__new__(rv.Verbs)
    assert wait_record(v) == {"wait": "events", "spin_limit_s": rv.SPIN_S}
    v.wait = "poll"
    assert wait_record(v) == {"wait": "poll", "spin_limit_s": None}
