"""io_uring_rr's Chain reads completions as the kernel posts them for a linked send+recv whose
send carries IOSQE_CQE_SKIP_SUCCESS; a fake ring replays those completions, no kernel needed."""

import errno

import pytest

from workloads.io_uring_rr import RECV, SEND, Chain


class _Lib:
    def __getattr__(self, name):            # io_uring_prep_*, io_uring_sqe_set_*: no-ops here
        return lambda *args: None


class _FakeRing:
    L = _Lib()
    K = {"IOSQE_IO_LINK": 4, "IOSQE_CQE_SKIP_SUCCESS": 64}

    def __init__(self, *batches):
        self.batches = list(batches)
        self.inflight = 0
        self.deadline = 0.0

    def sqe(self):
        return object()

    def submit_wait(self, _n):
        return self.batches.pop(0)


def _chain(ring, size=64):
    c = Chain(ring, fd=3, buf=bytearray(size), timeout=1.0)
    c.queue(memoryview(bytearray(100)))
    return c


def test_a_full_send_posts_nothing_and_the_recv_count_is_returned():
    ring = _FakeRing([(RECV, 64, 0)])
    assert _chain(ring).wait() == 64
    assert ring.inflight == 0


def test_a_short_send_fails_with_the_bytes_sent_not_as_end_of_stream():
    # the kernel posts the short send's byte count and cancels the linked recv
    ring = _FakeRing([(SEND, 40, 0), (RECV, -errno.ECANCELED, 0)])
    with pytest.raises(OSError, match="40 of 100 bytes sent") as e:
        _chain(ring).wait()
    assert e.value.errno == errno.EIO


def test_a_failed_send_names_its_error():
    ring = _FakeRing([(SEND, -errno.EPIPE, 0), (RECV, -errno.ECANCELED, 0)])
    with pytest.raises(OSError, match="Broken pipe"):
        _chain(ring).wait()


def test_a_short_recv_is_completed_before_it_is_returned():
    ring = _FakeRing([(RECV, 24, 0)], [(RECV, 40, 0)])
    c = _chain(ring)
    assert c.wait() == 64
    assert c.short == 1
