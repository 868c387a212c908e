"""The field's standard tool on the same path, as a reference row: iperf3 for TCP and UDP.

Argument builders and `parse()` are pure and tested on captured output (tests/data)."""

from __future__ import annotations

import json
import shutil

from bench.errors import UsageError

SOCKET_BUFFER = 4 << 20  # the same buffer size our agents ask for, so conditions match


def available() -> tuple[bool, str]:
    if shutil.which("iperf3"):
        return True, ""
    return False, "iperf3 is not installed"


def check() -> None:
    ok, why = available()
    if not ok:
        raise UsageError(f"missing reference tool: {why}",
                         "apt-get install iperf3, or run with --no-reference")


def server_argv(bind: str, port: int) -> list[str]:
    return ["iperf3", "-s", "-1", "-B", bind, "-p", str(port), "-J"]


def client_argv(workload: str, target: str, port: int, size: int, duration: float,
                count: int | None = None) -> list[str]:
    argv = ["iperf3", "-c", target, "-p", str(port), "-l", str(size), "-w", str(SOCKET_BUFFER), "-J"]
    if count:
        argv += ["-n", str(count * size)]
    else:
        argv += ["-t", f"{max(duration, 1.0):g}"]  # iperf3 counts whole seconds
    if workload == "udp":
        argv += ["-u", "-b", "0"]  # unlimited rate, like our sender
    if workload == "msg_zerocopy":
        argv += ["-Z"]  # iperf3's zerocopy send (sendfile), the nearest standard-tool analogue
    return argv


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
    out = {
        "tool": "iperf3",
        "version": doc.get("start", {}).get("version"),
        "bytes": int(rx["bytes"]),
        "window_s": rx["seconds"],
        "gbps": rx["bits_per_second"] / 1e9,
        "sent_gbps": tx["bits_per_second"] / 1e9,
        "cpu_pct": end.get("cpu_utilization_percent", {}),
    }
    if "packets" in end.get("sum", {}):
        s = end["sum"]
        out["messages_sent"] = s["packets"]
        out["loss_pct"] = s["lost_percent"]
    return out
