"""RDMA WRITE over an RC QP (pyverbs): WRITE_WITH_IMM closes each window so the receiver learns
what arrived, verifies it in its registered memory and returns the slots (workloads/rdma_flow.py).

Expected copies (DESIGN.md): no _copy_from_iter/_copy_to_iter on the data path; on soft-RoCE
the kernel copies each payload byte between MRs and packets (rxe_mr_copy), on a NIC DMA does."""

from __future__ import annotations

from workloads import rdma_flow


def receiver(cfg, io):
    return rdma_flow.receiver(cfg, io, "write")


def sender(cfg, io):
    return rdma_flow.sender(cfg, io, "write")
