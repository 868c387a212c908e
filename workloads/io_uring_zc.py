"""io_uring send_zc_fixed from a registered buffer; see workloads/io_uring.py."""

from workloads import io_uring
from workloads.agent import AgentIO

receiver = io_uring.receiver


def sender(cfg: dict, io: AgentIO) -> dict:
    return io_uring.sender(cfg, io, zerocopy=True)
