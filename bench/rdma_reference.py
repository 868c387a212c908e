"""The RDMA reference row: perftest's server on the receiver's side, its client on the sender's,
the same device/port/GID index, size, queue depth, inline threshold and moderation as ours
(bench/perftest.py builds the argv and parses the output)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from bench import perftest


def run_perftest(runner, case, ep) -> dict:
    """One reference sample; an error is recorded in the row, never raised (like iperf3's)."""
    tool = perftest.tool_for(case.workload)
    pl = runner.placement
    devs = runner._rdma_devices(ep)
    rx, tx = devs.get("rx"), devs.get("tx")
    if rx is None or tx is None:
        return {"tool": tool, "error": "perftest across two nodes is not built yet: the agents "
                "pick their node's first active port themselves, perftest needs -d/-x per node"}
    port = perftest.PORT
    if ep.kind == "loopback":
        from bench.runner import _free_port
        port = _free_port(ep.rx_addr)
    tmp = Path(tempfile.mkdtemp(prefix="cb-perftest-")) if not pl.remote else None
    files = {s: (str(tmp / f"{s}.json") if tmp else None) for s in ("server", "client")}
    common = dict(size=case.size, depth=case.rdma.depth, inline=case.rdma.inline,
                  signal_every=case.rdma.signal_every, duration=case.duration, count=case.count,
                  tcp_port=port)
    tx_cpu, rx_cpu = runner.cpus[:2] if runner.cpus else (None, None)
    server = runner._spawn("rx", ep.rx_netns, perftest.with_counters(perftest.pinned(
        perftest.argv(case.workload, rx.device, rx.port, rx.gid_index, json_file=files["server"],
                      **common), rx_cpu), rx.device, rx.port))
    try:
        try:
            pl.wait_listening("rx", server.pid, port, timeout=20, netns=ep.rx_netns)
        except Exception as exc:      # noqa: BLE001 - the row says why
            return {"tool": tool, "error": f"server did not listen: {exc}"}
        client = runner._spawn("tx", ep.tx_netns, perftest.with_counters(perftest.pinned(
            perftest.argv(case.workload, tx.device, tx.port, tx.gid_index, server=ep.rx_addr,
                          json_file=files["client"], **common), tx_cpu), tx.device, tx.port))
        limit = case.duration + 120
        try:
            c_out, c_err = client.communicate(timeout=limit)
            s_out, s_err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            return {"tool": tool, "error": f"timed out after {limit:.0f} s"}
        try:
            c = perftest.parse(c_out, _read(files["client"]), tool, duration_mode=not case.count)
        except ValueError as exc:
            return {"tool": tool, "error": f"client: {exc} {c_err.strip()[-200:]}",
                    "returncode": client.returncode}
        try:
            s = perftest.parse(s_out, _read(files["server"]), tool, duration_mode=not case.count)
        except ValueError:
            s = None          # ib_write_bw's server may print no table: the client's counts
        row = perftest.combine(c, s, case.workload)
        row["device"] = {"client": tx.device, "server": rx.device, "gid_index": tx.gid_index}
        row["method"] = {"cpus": {"client": tx_cpu, "server": rx_cpu} if runner.cpus else
                         "not pinned (as ours)", "polling": perftest.POLLING}
        row["rdma"] = {"sender": {"device_counters": perftest.counters_from(c_out, tx.device,
                                                                             tx.port)},
                       "receiver": {"device_counters": perftest.counters_from(s_out, rx.device,
                                                                               rx.port)}}
        return row
    finally:
        runner._stop_procs()
        if tmp is not None:
            for f in files.values():
                with contextlib.suppress(OSError):
                    os.unlink(f)
            with contextlib.suppress(OSError):
                tmp.rmdir()


def _read(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError:
        return None
