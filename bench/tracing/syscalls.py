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
