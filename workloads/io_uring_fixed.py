"""io_uring with registered buffers on both sides: WRITE_FIXED from one registered buffer per
pattern phase, READ_FIXED into N registered receive buffers, N linked requests in flight.
See workloads/io_uring.py."""

from workloads import io_uring
from workloads.agent import AgentIO


def receiver(cfg: dict, io: AgentIO) -> dict:
    return io_uring.receiver(cfg, io, mode="fixed")


def sender(cfg: dict, io: AgentIO) -> dict:
    return io_uring.sender(cfg, io, mode="fixed")
