"""The field's standard tool on the same path, as a reference row: iperf3 for TCP and UDP.

Argument builders and `parse()` are pure and tested on captured output (tests/data)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import UsageError
from bench.references import installed

SOCKET_BUFFER = 4 << 20  # what both sides ask for at most; the kernel caps it (rmem_max)
SYSCTL = Path("/proc/sys/net/core")


def socket_buffer(sysctl: Path = SYSCTL) -> int:
    """The buffer size both our agents and iperf3 request: 4 MiB, or the largest this kernel
    grants an unprivileged setsockopt (net.core.rmem_max / wmem_max; Debian's default is
    212992). iperf3 aborts (IESETBUF2) if it gets less than it asked for, and our agents never
    force past the limit either, so both run with the same buffers."""
    limits = []
    for name in ("rmem_max", "wmem_max"):
        try:
            limits.append(int((sysctl / name).read_text()))
        except (OSError, ValueError):
            pass
    return min([SOCKET_BUFFER, *limits])


def node_buffer_limit(metadata: dict) -> int | None:
    """The smallest net.core.{r,w}mem_max of the machine(s) the agents run on, from the run's
    metadata (`bench sysinfo` there): a node's limits, not the runner's, cap what its sockets
    get. None when the metadata has no sysctls."""
    tables = [metadata.get("sysctls") or {}]
    tables += [n.get("sysctls") or {} for n in (metadata.get("nodes") or {}).values()]
    limits = []
    for t in tables:
        for key in ("net.core.rmem_max", "net.core.wmem_max"):    # as bench.sysinfo names them
            try:
                limits.append(int(t[key]))
            except (KeyError, TypeError, ValueError):
                pass
    return min(limits) if limits else None


AUTO = 0   # --sockbuf auto: neither ours nor iperf3 sets SO_SNDBUF/SO_RCVBUF


def parse_sockbuf(text: str) -> int:
    """--sockbuf auto|BYTES (K/M suffixes of 1024): AUTO or the bytes both sides request."""
    t = text.strip().lower()
    if t == "auto":
        return AUTO
    mult = {"k": 1 << 10, "m": 1 << 20}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if mult > 1 else t, 0) * mult
    except ValueError:
        n = -1
    if n < 4096:
        raise UsageError(f"--sockbuf {text}: not a socket buffer size",
                         "use --sockbuf auto (kernel autotuning) or a size of at least 4096 "
                         "bytes, e.g. 4M")
    return n


def choose_buffer(requested: int | None, limit: int | None) -> int:
    """The socket buffer of the run: today's default (4 MiB or the node's limit, whichever is
    smaller), AUTO, or a requested size that the node's limit must grant (never forced past it:
    iperf3 would abort on less than it asked for)."""
    if requested is None:
        return min([SOCKET_BUFFER, *([limit] if limit else [])])
    if requested != AUTO and limit is not None and requested > limit:
        raise UsageError(f"--sockbuf {requested}: more than net.core.rmem_max/wmem_max "
                         f"({limit}) where the agents run grant",
                         f"pass --sockbuf {limit} or less, --sockbuf auto, or raise the limits "
                         f"there (sysctl -w net.core.rmem_max={requested} "
                         f"net.core.wmem_max={requested})")
    return requested


def buffer_method(buffer: int) -> str:
    """What the result's method says about socket buffers."""
    if buffer == AUTO:
        return ("kernel autotuning for ours and iperf3 alike (--sockbuf auto: neither sets "
                "SO_SNDBUF/SO_RCVBUF); actual sizes recorded per sample")
    return (f"{buffer} B requested by both ours and iperf3 (SO_SNDBUF/SO_RCVBUF, capped by the "
            "measuring machine's net.core.{r,w}mem_max, never forced); a fixed size switches "
            "TCP's buffer autotuning off on both sides (--sockbuf auto keeps it); actual sizes "
            "recorded per sample")


def available() -> tuple[bool, str]:
    return installed.available("iperf3")


def check() -> None:
    installed.check("iperf3", "iperf3")


def server_argv(bind: str, port: int) -> list[str]:
    return ["iperf3", "-s", "-1", "-B", bind, "-p", str(port), "-J"]


def server_cpu_argv(cpu: int | None) -> list[str]:
    return ["-A", str(cpu)] if cpu is not None else []


def client_argv(workload: str, target: str, port: int, size: int, duration: float,
                count: int | None = None, buffer: int | None = None,
                cpu: int | None = None, parallel: int = 1) -> list[str]:
    """iperf3 doing what our agent does: same message size, same socket buffers, one message
    per call (UDP rows compare at batch 1 only). -Z (sendfile from a file) only for our
    sendfile path: it is not MSG_ZEROCOPY."""
    if workload not in PEERS:
        raise ValueError(f"iperf3 has no peer for workload {workload}")
    argv = ["iperf3", "-c", target, "-p", str(port), "-l", str(size)]
    if buffer != AUTO:
        argv += ["-w", str(buffer if buffer is not None else socket_buffer())]
    argv += ["-J"]
    if count:
        argv += ["-n", str(count * size * parallel)]
    else:
        argv += ["-t", f"{max(duration, 1.0):g}"]  # iperf3 counts whole seconds
    if workload == "udp":
        argv += ["-u", "-b", "0"]  # unlimited rate, like our sender
    if workload == "sendfile":
        argv += ["-Z"]
    if parallel > 1:
        # N streams against our N flows; -n counts all streams' bytes together
        argv += ["-P", str(parallel)]
    if cpu is not None:
        argv += ["-A", str(cpu)]
    return argv


# Workloads iperf3 can mirror like for like (same syscalls per message): plain TCP, and UDP at
# one datagram per call. MSG_ZEROCOPY, TCP_ZEROCOPY_RECEIVE, io_uring and batched UDP have no
# standard-tool peer: their rows say so instead of comparing with something else.
PEERS = ("tcp", "udp", "sendfile")     # sendfile: iperf3 -Z (its "zero copy" is sendfile)


def peer_note(workload: str, batch: int) -> str | None:
    """Why a row has no reference, or None when iperf3 (or perftest, for RDMA) is its peer."""
    from bench.references.perftest import TOOLS
    if workload in TOOLS:
        return None           # ib_write_bw / ib_send_bw on the same device (bench/references/perftest.py)
    if workload == "udp" and batch > 1:
        return f"batched ({batch} datagrams per call), no peer: iperf3 sends one per call"
    if workload not in PEERS:
        return "no like-for-like peer in iperf3"
    return None


def parse(text: str) -> dict:
    """Receiver-side throughput (what arrived), sender throughput, loss and CPU from `-J`."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"iperf3 did not print JSON: {text[:200]!r}") from exc
    if "error" in doc:
        raise ValueError(f"iperf3: {doc['error']}")
    end = doc["end"]
    rx, tx = end["sum_received"], end["sum_sent"]
    start = doc.get("start", {})
    cpu = end.get("cpu_utilization_percent", {})
    out = {
        "tool": "iperf3",
        "version": start.get("version"),
        "bytes": int(rx["bytes"]),
        "window_s": rx["seconds"],
        "gbps": rx["bits_per_second"] / 1e9,
        "sent_gbps": tx["bits_per_second"] / 1e9,
        "cpu_pct": cpu,
        # What the kernel gave the client socket (iperf3 records it), beside what we asked.
        "buffers": {"requested": start.get("sock_bufsize"), "sndbuf": start.get("sndbuf_actual"),
                    "rcvbuf": start.get("rcvbuf_actual")},
        # iperf3's own CPU (process user+sys as % of the test's wall time): client = sender,
        # server = receiver, per byte each handled, as our agents' figures.
        "cpu_s_per_gb": {
            "sender": _per_gb(cpu.get("host_total"), tx.get("seconds"), tx.get("bytes")),
            "receiver": _per_gb(cpu.get("remote_total"), rx.get("seconds"), rx.get("bytes")),
        },
    }
    if "packets" in end.get("sum", {}):
        s = end["sum"]
        out["messages_sent"] = s["packets"]
        out["loss_pct"] = s["lost_percent"]
    return out


def _per_gb(pct: float | None, seconds: float | None, nbytes: int | None) -> float | None:
    if pct is None or not seconds or not nbytes:
        return None
    return round(pct / 100 * seconds / (nbytes / 1e9), 6)
