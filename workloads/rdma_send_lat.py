"""RDMA SEND/RECV ping-pong (ib_send_lat's) on an RC QP
(pyverbs): request/response transactions, workloads/rdma_rr.py.

Expected copies: no _copy_from_iter/_copy_to_iter on the data path; soft-RoCE copies each
payload byte between MRs and packets (rxe_mr_copy), counted apart; on a NIC DMA does."""

from __future__ import annotations

from workloads import rdma_rr


def receiver(cfg, io):
    return rdma_rr.receiver(cfg, io, "send")


def sender(cfg, io):
    return rdma_rr.sender(cfg, io, "send")
