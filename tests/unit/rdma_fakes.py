"""What the RDMA wait tests share: a Verbs object around a fake CQ (no RDMA here), the one
verbs enum poll() needs, and one poll() with a completion channel's pipe."""

from __future__ import annotations

import os
import socket
import threading
import time
import types

from workloads import rdma_verbs as rv


def wc_success(monkeypatch) -> None:
    """IBV_WC_SUCCESS = 0 (ibv_wc_status in verbs.h) where pyverbs is not installed (the host
    tier): the tests run against that value instead of skipping."""
    try:
        import pyverbs.enums  # noqa: F401
    except ImportError:
        monkeypatch.setattr(rv, "_e", lambda: types.SimpleNamespace(IBV_WC_SUCCESS=0))


def fake_verbs(cq, wait: str = "events", channel_fd=None) -> rv.Verbs:
    """A Verbs with only the CQ, fresh counters and the wait mode: what poll() reads."""
    v = object.__new__(rv.Verbs)
    v.cq, v.counters, v.wait, v.channel_fd = cq, rv.new_counters(), wait, channel_fd
    return v


def poll_with_channel(v: rv.Verbs, channel=None, fire_after: float | None = None):
    """One v.poll() (30 s deadline, a live control socket) with a pipe as the completion
    channel's fd (v.channel = channel(fd) where given), written to after `fire_after` seconds
    where given: (the completions, the call's seconds)."""
    rfd, wfd = os.pipe()
    v.channel_fd = rfd
    if channel is not None:
        v.channel = channel(rfd)
    timer = None
    if fire_after is not None:
        timer = threading.Timer(fire_after, os.write, (wfd, b"e"))
        timer.start()
    a, b = socket.socketpair()
    try:
        with a, b:
            t0 = time.monotonic()
            wcs = v.poll(b, time.monotonic() + 30)
            took = time.monotonic() - t0
    finally:
        if timer is not None:
            timer.cancel()
        os.close(rfd)
        os.close(wfd)
    return wcs, took
