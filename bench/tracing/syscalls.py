"""Socket syscall numbers per architecture.

Why: the copy functions also serve pipes and files, so backends count a task's copies only
while it is inside a socket operation: one of the catalog's socket entry functions
(catalog.SOCKET_GATES) or one of these socket-only syscalls (copytrace.c uses the same __NR_*
at build time). They stay beside the functions because sendmmsg and recvmmsg reach the
protocol through an inline helper that skips sock_sendmsg/sock_recvmsg.
"""

from __future__ import annotations

SOCKET_SYSCALLS = {
    # sendto, recvfrom, sendmsg, recvmsg, getsockopt, recvmmsg, sendmmsg: socket-only calls.
    # Not io_uring_enter (it also reads files): io_uring's socket I/O passes the gates.
    "x86_64": (44, 45, 46, 47, 55, 299, 307),
    "aarch64": (206, 207, 211, 212, 209, 243, 269),
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


# write and writev: on a socket they send without flags, so never MSG_ZEROCOPY (the
# tracepoint backend counts their bytes as copied, like a plain send).
PLAIN_WRITES = {"x86_64": (1, 20), "aarch64": (64, 66)}


# sendfile and splice: a send inside them hands pages over by reference (MSG_SPLICE_PAGES,
# >= 6.5), which the tracepoint backend counts apart from copying sends (x86_64
# asm/unistd_64.h: sendfile 40, splice 275; aarch64 asm-generic/unistd.h: 71, 76).
SPLICE_SENDS = {"x86_64": (40, 275), "aarch64": (71, 76)}


def splice_sends(arch: str) -> tuple[int, ...]:
    try:
        return SPLICE_SENDS[arch]
    except KeyError:
        raise ValueError(f"no splice syscall table for {arch}") from None


def plain_writes(arch: str) -> tuple[int, ...]:
    try:
        return PLAIN_WRITES[arch]
    except KeyError:
        raise ValueError(f"no write syscall table for {arch}") from None


def send_flags_args(arch: str) -> dict[int, int]:
    try:
        return SEND_FLAGS_ARG[arch]
    except KeyError:
        raise ValueError(f"no send syscall table for {arch}") from None


# Names for the syscall counter (bench/tracing/syscount.py): the socket, io_uring, poll/epoll
# and wait calls a workload makes, and the usual interpreter and runtime ones. Others are
# reported by number ("syscall 123"). From the kernel's unistd headers (x86_64: asm/unistd_64.h;
# aarch64: asm-generic/unistd.h).
_NAMED = ("read write close poll ppoll select pselect6 epoll_wait epoll_pwait epoll_pwait2 "
          "epoll_ctl epoll_create1 sendto recvfrom sendmsg recvmsg sendmmsg recvmmsg "
          "io_uring_enter io_uring_setup io_uring_register getsockopt setsockopt socket connect "
          "accept accept4 bind listen shutdown getsockname getpeername sendfile splice readv "
          "writev ioctl fcntl getrusage clock_gettime clock_nanosleep nanosleep futex "
          "sched_yield mmap munmap mprotect madvise brk rt_sigaction rt_sigprocmask "
          "rt_sigreturn fstat newfstatat lseek openat pipe2 dup3 getpid gettid "
          "sched_setaffinity sched_getaffinity wait4 clone clone3 execve exit exit_group "
          "prlimit64 set_robust_list rseq getrandom statx getdents64 fork vfork vmsplice").split()
_X86_64 = (0, 1, 3, 7, 271, 23, 270, 232, 281, 441, 233, 291, 44, 45, 46, 47, 307, 299, 426, 425,
           427, 55, 54, 41, 42, 43, 288, 49, 50, 48, 51, 52, 40, 275, 19, 20, 16, 72, 98, 228, 230,
           35, 202, 24, 9, 11, 10, 28, 12, 13, 14, 15, 5, 262, 8, 257, 293, 292, 39, 186, 203,
           204, 61, 56, 435, 59, 60, 231, 302, 273, 334, 318, 332, 217, 57, 58, 278)
# asm-generic has no poll, select, epoll_wait (ppoll, pselect6, epoll_pwait instead), fork or
# vfork (clone): None.
_AARCH64 = (63, 64, 57, None, 73, None, 72, None, 22, 441, 21, 20, 206, 207, 211, 212, 269, 243,
            426, 425, 427, 209, 208, 198, 203, 202, 242, 200, 201, 210, 204, 205, 71, 76, 65, 66,
            29, 25, 165, 113, 115, 101, 98, 124, 222, 215, 226, 233, 214, 134, 135, 139, 80, 79,
            62, 56, 59, 24, 172, 178, 122, 123, 260, 220, 435, 221, 93, 94, 261, 99, 293, 278,
            291, 61, None, None, 75)
SYSCALL_NAMES = {
    "x86_64": {nr: n for n, nr in zip(_NAMED, _X86_64, strict=True)},
    "aarch64": {nr: n for n, nr in zip(_NAMED, _AARCH64, strict=True) if nr is not None},
}


def syscall_name(arch: str, nr: int) -> str:
    """The syscall's name on `arch`, or "syscall NR" where the table has none."""
    return SYSCALL_NAMES.get(arch, {}).get(nr) or f"syscall {nr}"
