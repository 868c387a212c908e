"""io_uring send_zc_fixed from a registered buffer, N linked sends in flight; the receiver takes
provided buffers with one multishot recv. See workloads/io_uring.py."""

from workloads import io_uring
from workloads.agent import AgentIO


def receiver(cfg: dict, io: AgentIO) -> dict:
    return io_uring.receiver(cfg, io, mode="multishot")


def sender(cfg: dict, io: AgentIO) -> dict:
    return io_uring.sender(cfg, io, mode="zc")
