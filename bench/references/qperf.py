"""qperf (Debian's qperf) as a latency reference: `tcp_lat`, `udp_lat` beside `rc_lat`
(sockets and RDMA verbs in one tool).

qperf prints one-way latency, each round trip halved (its help: "TCP one way latency"), and
its msg_rate counts the messages of both directions (about 1 / latency): `parse()` gives the
round trip (2 x latency) and round trips per second (msg_rate / 2) beside what it printed.
It reports a mean, no percentiles. Its loc/rem_cpus_used are the machine's CPU as qperf read it,
not qperf's own process (on one machine both are the same figure). A client whose server is
not there waits without end and prints nothing: run it under a timeout. Argument builders and
`parse()` are pure and tested on captured output (tests/data/qperf).
"""

from __future__ import annotations

import math
import re

from bench.references import installed

TOOL = "qperf"
TESTS = {"tcp_rr": "tcp_lat", "udp_rr": "udp_lat", "rdma_send_lat": "rc_lat",
         "rdma_write_lat": "rc_rdma_write_lat"}
RDMA_TESTS = ("rc_lat", "rc_rdma_write_lat")
PORT = 19765              # qperf's default listen port (its own exchange)
TIMEOUT_S = 5             # qperf's default for its exchanges, stated


def available() -> tuple[bool, str]:
    return installed.available(TOOL)


def check() -> None:
    installed.check(TOOL, "qperf")


# Why rc_lat / rc_rdma_write_lat have no row yet: run as our agents run (in the case's
# namespaces, at the agents' address) the CM fails, since soft-RoCE's device sits on the
# carrier veth, whose address is not the one the agents' control connection uses (seen in the
# lab: "unexpected event from RDMA CM: Address error"). Outside them (tests/data/qperf) it works.
RDMA_NOTE = ("qperf's rc_lat/rc_rdma_write_lat resolve the target through the RDMA CM, which "
             "fails at our agents' address (the soft-RoCE device is on the carrier veth: 'RDMA "
             "CM: Address error'); not built yet, ib_*_lat is the verbs peer")


def peer_note(workload: str, size: int, response: int | None = None,
              in_flight: int = 1) -> str | None:
    if workload not in TESTS:
        return "no like-for-like peer in qperf"
    if TESTS[workload] in RDMA_TESTS:
        return RDMA_NOTE
    if response not in (None, size):
        return "qperf's latency tests send the same size both ways: no peer for R != Q"
    if in_flight != 1:
        return "qperf's latency tests keep one message in flight"
    return None


def server_argv(port: int = PORT) -> list[str]:
    """The server runs until stopped (it serves one client after another)."""
    return [TOOL, "--listen_port", str(port)]


def client_argv(workload: str, target: str, size: int, duration: float, port: int = PORT,
                cpus: tuple[int, int] | None = None, timeout: int = TIMEOUT_S) -> list[str]:
    """One latency test of `size` bytes for `duration` (whole seconds, at least 1), verbose.
    `cpus`: the (local, remote) CPUs, numbered from 0 as --cpus numbers them, which qperf pins
    itself (-lca/-rca, numbered from 1). rc_lat goes through the RDMA connection manager
    (-cm1): qperf's own exchange carries LIDs and no GID, and RoCE (soft-RoCE too) needs the
    GID; the CM resolves the target address to the device that carries it, as our agents'
    GID of the carrier's address does."""
    note = peer_note(workload, size)
    if note and note != RDMA_NOTE:       # the rc tests' command line stands, ready for use
        raise ValueError(note)
    test = TESTS[workload]
    argv = [TOOL, target, "--listen_port", str(port), "-to", str(timeout), "-m", str(size),
            "-t", str(max(math.ceil(duration), 1)), "-v"]
    if test in RDMA_TESTS:
        argv.append("-cm1")
    if cpus is not None:
        # qperf 0.4.11 pins to CPU N-1 for -lca/-rca N, and leaves 0 unpinned, whatever its
        # man page says ("numbered from 0"): seen in /proc/PID/status Cpus_allowed_list
        # (-lca 1 -rca 2 put the client on CPU 0, the server's child on CPU 1).
        argv += ["-lca", str(cpus[0] + 1), "-rca", str(cpus[1] + 1)]
    return [*argv, test]


_TIME_NS = {"ns": 1, "us": 1e3, "ms": 1e6, "sec": 1e9, "s": 1e9}
_RATE = {"/sec": 1, "K/sec": 1e3, "M/sec": 1e6, "G/sec": 1e9}
_SIZE = {"bytes": 1, "KB": 1000, "KiB": 1024, "MB": 1e6, "MiB": 1 << 20, "GB": 1e9,
         "GiB": 1 << 30}


def _value(line: str) -> tuple[str, str, str] | None:
    m = re.match(r"\s+(\w+)\s*=\s*([\d.,]+)\s*(.*?)\s*$", line)
    return (m.group(1), m.group(2).replace(",", ""), m.group(3)) if m else None


def _size(num: str, unit: str) -> int | None:
    exact = re.search(r"\(([\d,]+)\)", unit)         # "4 KiB (4,096)"
    if exact:
        return int(exact.group(1).replace(",", ""))
    f = _SIZE.get(unit.split()[0] if unit else "bytes")
    return int(float(num) * f) if f else None


def parse(text: str) -> dict[str, dict]:
    """Per test (tcp_lat, udp_lat, rc_lat), its figures: `latency_ns` (one-way, as printed),
    `round_trip_ns`, `msg_rate`, `transactions_per_s`, `msg_size`, `time_s`,
    `loc_cpus_used_pct`, `rem_cpus_used_pct`. A ValueError names qperf's error when a test has
    no latency figure."""
    tests: dict[str, dict] = {}
    errors: list[str] = []
    current = None
    for line in text.splitlines():
        head = re.match(r"^(\w+):\s*$", line)
        if head:
            current = tests.setdefault(head.group(1), {"tool": TOOL, "test": head.group(1)})
            continue
        kv = _value(line) if current is not None else None
        if kv is None:
            if line.strip() and ("fail" in line.lower() or "error" in line.lower()):
                errors.append(line.strip())
            continue
        key, num, unit = kv
        if key == "latency" and unit in _TIME_NS:
            ns = float(num) * _TIME_NS[unit]
            current["latency_ns"] = round(ns, 1)
            current["round_trip_ns"] = round(2 * ns, 1)
        elif key == "msg_rate" and unit in _RATE:
            rate = float(num) * _RATE[unit]
            current["msg_rate"] = rate
            current["transactions_per_s"] = rate / 2
        elif key == "msg_size":
            current["msg_size"] = _size(num, unit)
        elif key == "time" and unit in _TIME_NS:
            current["time_s"] = float(num) * _TIME_NS[unit] / 1e9
        elif key in ("loc_cpus_used", "rem_cpus_used"):
            current[f"{key}_pct"] = float(num)
    done = {k: v for k, v in tests.items() if "latency_ns" in v}
    if not done:
        names = ", ".join(tests) or "no test"
        raise ValueError(f"qperf printed no latency ({names})"
                         + (f": {errors[0]}" if errors else ""))
    for name in tests.keys() - done.keys():
        done[name] = {"tool": TOOL, "test": name,
                      "error": errors[0] if errors else "no latency printed"}
    return done
