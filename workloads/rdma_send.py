"""RDMA SEND/RECV over an RC QP (pyverbs): the receiver posts receives into its registered slots,
verifies each message there and re-posts (workloads/rdma_flow.py).

Expected copies (DESIGN.md): as rdma_write; soft-RoCE copies via copy_data -> rxe_mr_copy."""

from __future__ import annotations

from workloads import rdma_flow


def receiver(cfg, io):
    return rdma_flow.receiver(cfg, io, "send")


def sender(cfg, io):
    return rdma_flow.sender(cfg, io, "send")
