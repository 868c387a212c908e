"""sockperf ping-pong (Debian's sockperf) as the latency reference of tcp_rr and udp_rr.

One message in flight, the same size both ways, round trips (`--full-rtt`; without it sockperf
prints half of each) timed with CLOCK_MONOTONIC (`--no-rdtsc`), as our requester times them,
and each reply's bytes checked (`--data-integrity`), as ours are. sockperf's messages carry
its 14-byte header: smaller sizes have no sockperf peer. Argument builders and `parse()` are
pure and tested on captured output (tests/data/sockperf). sockperf exits 0 on its own errors
(a refused size, a refused connection): `parse()` raises with its ERROR line instead.
"""

from __future__ import annotations

import math
import re

from bench.references import installed

TOOL = "sockperf"
PROTOCOLS = {"tcp_rr": "tcp", "udp_rr": "udp"}
MIN_SIZE = 14                 # sockperf: "Invalid message size: 1 (min: 14)"
PORT = 11111                  # its default
# sockperf keeps only the middle of a run: its valid window was the run less 1.17 s on this
# host (-t 2: 0.83 s, -t 3: 1.83 s; -t 1: "No valid observations found"). -t is whole seconds.
OUTSIDE_WINDOW_S = 1.2


def available() -> tuple[bool, str]:
    return installed.available(TOOL)


def check() -> None:
    installed.check(TOOL, "sockperf")


def peer_note(workload: str, size: int, response: int | None = None,
              in_flight: int = 1) -> str | None:
    """Why a latency row has no sockperf peer, or None when sockperf can mirror it."""
    if workload not in PROTOCOLS:
        return "no like-for-like peer in sockperf"
    if size < MIN_SIZE:
        return f"{size} B: sockperf's messages are at least {MIN_SIZE} B (its header)"
    if response not in (None, size):
        return "sockperf answers with the request's size: no peer for R != Q"
    if in_flight != 1:
        return "sockperf ping-pong keeps one message in flight"
    return None


def server_argv(workload: str, bind: str, port: int) -> list[str]:
    argv = [TOOL, "server", "-i", bind, "-p", str(port)]
    return argv + (["--tcp"] if PROTOCOLS[workload] == "tcp" else [])


def client_argv(workload: str, target: str, port: int, size: int, duration: float) -> list[str]:
    """sockperf doing what our requester does, its valid window at least `duration`: `-t`
    the duration plus what sockperf leaves out (OUTSIDE_WINDOW_S), in whole seconds."""
    note = peer_note(workload, size)
    if note:
        raise ValueError(note)
    argv = [TOOL, "ping-pong", "-i", target, "-p", str(port), "-m", str(size),
            "-t", str(math.ceil(duration + OUTSIDE_WINDOW_S)), "--full-rtt", "--no-rdtsc",
            "--data-integrity"]
    return argv + (["--tcp"] if PROTOCOLS[workload] == "tcp" else [])


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """On the CPU our agent of that side has (--cpus), like for like; unpinned when ours are."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NUM = r"([-+]?\d+(?:\.\d+)?)"
_PCT_KEYS = {"25.000": "p25_ns", "50.000": "p50_ns", "75.000": "p75_ns", "90.000": "p90_ns",
             "99.000": "p99_ns", "99.900": "p99_9_ns", "99.990": "p99_99_ns",
             "99.999": "p99_999_ns"}


def _ns(usec: str, factor: float) -> int:
    return int(round(float(usec) * 1000 * factor))


def parse(text: str) -> dict:
    """The client's summary as a latency row: round trips in ns (doubled where sockperf
    printed one-way figures), the valid window's transactions and rate, its percentiles, and
    its counts of dropped, duplicated and out-of-order messages."""
    text = _ANSI.sub("", text)
    out: dict = {"tool": TOOL}
    m = re.search(r"version #?([\d.]+)", text)
    out["version"] = m.group(1).rstrip(".") if m else None
    summary = re.search(r"Summary: (Round trip|Latency) is " + _NUM + " usec", text)
    if not summary:
        err = next((ln.strip() for ln in text.splitlines()
                    if "ERROR" in ln or "Invalid" in ln), None)
        raise ValueError(f"sockperf printed no results{': ' + err if err else ''}")
    full = summary.group(1) == "Round trip"
    factor = 1.0 if full else 2.0
    out["measure"] = ("round trip (--full-rtt)" if full
                      else "round trip = 2 x sockperf's one-way latency (no --full-rtt)")
    out["mean_ns"] = _ns(summary.group(2), factor)
    m = re.search(r"avg-(?:rtt|lat(?:ency)?)=" + _NUM + r" \(std-dev=" + _NUM + r"\)", text)
    out["stddev_ns"] = _ns(m.group(2), factor) if m else None
    m = re.search(r"\[Valid Duration\] RunTime=" + _NUM + r" sec; SentMessages=(\d+); "
                  r"ReceivedMessages=(\d+)", text)
    if m:
        window, received = float(m.group(1)), int(m.group(3))
        out.update(window_s=window, transactions=received, sent=int(m.group(2)),
                   transactions_per_s=round(received / window, 3) if window else None)
    m = re.search(r"\[Total Run\] RunTime=" + _NUM + r" sec; Warm up time=(\d+) msec; "
                  r"SentMessages=(\d+); ReceivedMessages=(\d+)", text)
    if m:
        out["total_run"] = {"run_s": float(m.group(1)), "warmup_ms": int(m.group(2)),
                            "sent": int(m.group(3)), "received": int(m.group(4))}
    m = re.search(r"# dropped messages = (\d+); # duplicated messages = (\d+); "
                  r"# out-of-order messages = (\d+)", text)
    if m:
        out.update(dropped=int(m.group(1)), duplicated=int(m.group(2)),
                   out_of_order=int(m.group(3)))
    for pct, val in re.findall(r"---> percentile ([\d.]+) =\s*" + _NUM, text):
        key = _PCT_KEYS.get(pct)
        if key:
            out[key] = _ns(val, factor)
    for which, val in re.findall(r"---> <(MAX|MIN)> observation =\s*" + _NUM, text):
        out[f"{which.lower()}_ns"] = _ns(val, factor)
    return out
