"""One reference sample per repeat, on the case's placement: the tool's server on the
receiver's side, its client on the sender's, the same size, socket buffers and CPUs as ours.
iperf3 for socket paths; perftest for RDMA on the same device/port/GID index, queue depth,
inline threshold and moderation (bench/references/perftest.py builds its argv and parses it).
An error is recorded in the row, never raised: the case's own samples stand."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
from pathlib import Path

from bench.errors import UsageError
from bench.procs import stop
from bench.references import iperf3, perftest

IPERF3_PORT = 5201       # iperf3's default; a node's namespace has it to itself


def tool_for(case) -> str:
    """The case's reference tool: its workload's (registry), else iperf3."""
    from workloads import registry
    return registry.get(case.workload).reference or "iperf3"


def free_port(addr: str) -> int:
    """A TCP port nobody listens on at `addr` now (a loopback run shares this machine's ports)."""
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class ReferenceRows:
    """Reference rows on `placement`; `stop()` ends whatever a row left running."""

    def __init__(self, placement, cpus: tuple[int, ...] | None, buffer: int | None,
                 rdma_device: str | None = None):
        self.placement, self.cpus, self.buffer = placement, cpus, buffer
        self.rdma_device = rdma_device
        self._live: list[tuple[subprocess.Popen, object]] = []   # (tool, its lifeline)

    def row(self, case, ep) -> dict:
        try:
            return self._perftest(case, ep) if case.rdma is not None else self._iperf3(case, ep)
        finally:
            self.stop()

    def stop(self) -> None:
        for p, lifeline in self._live:
            stop(p, files=(lifeline,))
        self._live.clear()

    def _spawn(self, side: str, netns: str | None, argv: list[str]):
        p, lifeline = self.placement.start_tool(side, netns, argv)
        self._live.append((p, lifeline))
        return p

    def _cpus(self) -> tuple[int | None, int | None]:
        return self.cpus[:2] if self.cpus else (None, None)

    def _iperf3(self, case, ep) -> dict:
        pl = self.placement
        port = free_port(ep.rx_addr) if ep.kind == "loopback" and not pl.remote else IPERF3_PORT
        tx_cpu, rx_cpu = self._cpus()
        server = self._spawn("rx", ep.rx_netns, iperf3.server_argv(ep.rx_addr, port)
                             + iperf3.server_cpu_argv(rx_cpu))
        try:
            pl.wait_listening("rx", server.pid, port, timeout=10, netns=ep.rx_netns)
        except UsageError as exc:        # the reference row says so; ours stand
            return {"tool": "iperf3", "error": f"{exc.message} (fix: {exc.fix})"}
        client = self._spawn("tx", ep.tx_netns, iperf3.client_argv(
            case.workload, ep.rx_addr, port, case.size, case.duration, case.count,
            buffer=self.buffer, cpu=tx_cpu))
        try:
            out, err = client.communicate(timeout=case.duration + 30)
        except subprocess.TimeoutExpired:
            return {"tool": "iperf3", "error": "timed out"}
        try:
            return iperf3.parse(out)
        except (ValueError, KeyError) as exc:
            return {"tool": "iperf3", "error": f"{exc} {err.strip()[:200]}"}

    def _perftest(self, case, ep) -> dict:
        tool = perftest.tool_for(case.workload)
        pl = self.placement
        devs = pl.rdma_devices(self.rdma_device, ep)
        rx, tx = devs.get("rx"), devs.get("tx")
        if rx is None or tx is None:
            return {"tool": tool, "error": "perftest across two nodes is not built yet: the "
                    "agents pick their node's first active port themselves, perftest needs "
                    "-d/-x per node"}
        port = free_port(ep.rx_addr) if ep.kind == "loopback" else perftest.PORT
        tmp = Path(tempfile.mkdtemp(prefix="cb-perftest-")) if not pl.remote else None
        files = {s: (str(tmp / f"{s}.json") if tmp else None) for s in ("server", "client")}
        try:
            return self._perftest_pair(case, ep, tool, rx, tx, port, files)
        finally:
            self.stop()
            if tmp is not None:
                for f in files.values():
                    with contextlib.suppress(OSError):
                        os.unlink(f)
                with contextlib.suppress(OSError):
                    tmp.rmdir()

    def _perftest_pair(self, case, ep, tool, rx, tx, port, files) -> dict:
        common = dict(size=case.size, depth=case.rdma.depth, inline=case.rdma.inline,
                      signal_every=case.rdma.signal_every, duration=case.duration,
                      count=case.count, tcp_port=port, wait=case.rdma.wait)
        tx_cpu, rx_cpu = self._cpus()
        server = self._spawn("rx", ep.rx_netns, perftest.with_counters(perftest.pinned(
            perftest.argv(case.workload, rx.device, rx.port, rx.gid_index,
                          json_file=files["server"], **common), rx_cpu), rx.device, rx.port))
        try:
            self.placement.wait_listening("rx", server.pid, port, timeout=20, netns=ep.rx_netns)
        except Exception as exc:      # noqa: BLE001 - the row says why
            return {"tool": tool, "error": f"server did not listen: {exc}"}
        client = self._spawn("tx", ep.tx_netns, perftest.with_counters(perftest.pinned(
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
        row["method"] = {"cpus": {"client": tx_cpu, "server": rx_cpu} if self.cpus else
                         "not pinned (as ours)",
                         "wait": perftest.checked_wait(perftest.wait_method(
                             case.workload, case.rdma.wait, case.count), c_out, s_out)}
        row["rdma"] = {"sender": {"device_counters": perftest.counters_from(c_out, tx.device,
                                                                             tx.port)},
                       "receiver": {"device_counters": perftest.counters_from(s_out, rx.device,
                                                                               rx.port)}}
        return row


def _read(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError:
        return None
