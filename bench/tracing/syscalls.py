"""Socket syscall numbers per architecture.

Why: the copy functions also serve pipes and files, so backends count a task's copies only
while it is inside one of these syscalls (copytrace.c does the same with __NR_* at build time).
"""

from __future__ import annotations

SOCKET_SYSCALLS = {
    # sendto, recvfrom, sendmsg, recvmsg, getsockopt, recvmmsg, sendmmsg, io_uring_enter
    "x86_64": (44, 45, 46, 47, 55, 299, 307, 426),
    "aarch64": (206, 207, 211, 212, 209, 243, 269, 426),
}


def socket_syscalls(arch: str) -> tuple[int, ...]:
    try:
        return SOCKET_SYSCALLS[arch]
    except KeyError:
        raise ValueError(f"no socket syscall table for {arch}") from None


# Which argument holds the flags of the send syscalls (sendto, sendmsg, sendmmsg): lets the
# tracepoint backend tell MSG_ZEROCOPY sends (pages pinned, nothing copied yet) from copies.
SEND_FLAGS_ARG = {
    "x86_64": {44: 3, 46: 2, 307: 3},
    "aarch64": {206: 3, 211: 2, 269: 3},
}


def send_flags_args(arch: str) -> dict[int, int]:
    try:
        return SEND_FLAGS_ARG[arch]
    except KeyError:
        raise ValueError(f"no send syscall table for {arch}") from None
