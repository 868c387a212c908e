"""One reference sample per repeat, on the case's placement: the tool's server on the
receiver's side, its client on the sender's, the same size, socket buffers and CPUs as ours.
iperf3 for socket paths; perftest for RDMA on the same device/port/GID index, queue depth,
inline threshold and moderation (bench/references/perftest.py builds its argv and parses it);
for request/response cases sockperf ping-pong and qperf's *_lat, one row each where the tool
can mirror the case (same sizes both ways, one transaction in flight, same CPUs).
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
from bench.references import iperf3, perftest, perftest_lat, qperf, sockperf

IPERF3_PORT = 5201       # iperf3's default; a node's namespace has it to itself
# request/response cases: each tool's row, this order (perftest's ib_*_lat for RDMA)
LATENCY_PEERS = (sockperf, qperf, perftest_lat)


PERFTEST_TWO_NODES = ("perftest across two nodes is not built yet: the agents pick their node's "
                      "first active port themselves, perftest needs -d/-x per node")


def tool_for(case) -> str:
    """The case's reference tool(s): its workload's (registry), else iperf3; for a
    request/response case the latency tools that can mirror it, joined with '+'."""
    if getattr(case, "rr", False):
        return "+".join(tools_for(case))
    from workloads import registry
    return registry.get(case.workload).reference or "iperf3"


def tools_for(case) -> tuple[str, ...]:
    """The tools whose rows a case gets: for request/response, every latency peer that fits."""
    if not getattr(case, "rr", False):
        return (tool_for(case),)
    return tuple(_tool_name(m, case) for m in _fitting_peers(case))


def _fitting_peers(case) -> tuple:
    """The latency tools (their modules) that can mirror this case, in LATENCY_PEERS order."""
    return tuple(m for m in _peers(case) if _latency_note(m, case) is None)


def latency_notes(case) -> dict[str, str]:
    """Why a latency tool has no row for this case (tool -> its reason); empty where all fit."""
    return {_tool_name(m, case): n for m in _peers(case)
            if (n := _latency_note(m, case)) is not None}


def _peers(case) -> tuple:
    """The latency tools of the case's kind of path: sockperf for sockets, perftest for
    verbs, qperf for both (tcp_lat/udp_lat; its rc tests say why they have no row yet)."""
    from workloads import registry
    rdma = registry.get(case.workload).transport == "rdma"
    return tuple(m for m in LATENCY_PEERS
                 if m is qperf or (m is perftest_lat) == rdma)


def _tool_name(module, case) -> str:
    """The tool a latency peer runs for this case: perftest's depends on the workload."""
    tool_for_workload = getattr(module, "tool_for", None)
    return (tool_for_workload(case.workload) if tool_for_workload else None) or module.TOOL


def _latency_note(module, case) -> str | None:
    if case.count is not None and not getattr(module, "COUNTS", False):
        return (f"{module.TOOL} runs for a time, not a count: a case bounded by --bytes has no "
                "latency peer (use --duration)")
    return module.peer_note(case.workload, case.size, case.response, case.in_flight)


def free_port(addr: str, kind: int = socket.SOCK_STREAM) -> int:
    """A TCP (or UDP) port nobody holds at `addr` now (a loopback run shares this machine's
    ports)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class ReferenceRows:
    """Reference rows on `placement`; `stop()` ends whatever a row left running."""

    def __init__(self, placement, cpus: tuple[int, ...] | None, buffer: int | None,
                 rdma_device: str | None = None):
        self.placement, self.cpus, self.buffer = placement, cpus, buffer
        self.rdma_device = rdma_device
        self._live: list[tuple[subprocess.Popen, object]] = []   # (tool, its lifeline)
        self._iterations: dict[str, int] = {}      # case id -> ours' transactions (note_sample)

    def row(self, case, ep) -> dict:
        try:
            return self._perftest(case, ep) if case.rdma is not None else self._iperf3(case, ep)
        finally:
            self.stop()

    def rows(self, case, ep) -> list[dict]:
        """The case's reference rows of one repeat: one per tool (tools_for)."""
        if not getattr(case, "rr", False):
            return [self.row(case, ep)]
        out = []
        run = {sockperf: self._sockperf, qperf: self._qperf, perftest_lat: self._perftest_lat}
        for peer in _fitting_peers(case):
            try:
                out.append(run[peer](case, ep))
            finally:
                self.stop()
        return out

    def note_sample(self, case, record: dict) -> None:
        """Ours' transactions in a sample of this case: perftest's latency tests then run as
        many (-n, iteration mode: its percentiles), not a time (-D: a mean only)."""
        n = (record.get("latency") or {}).get("transactions")
        if n:
            self._iterations[case.id] = int(n)

    def stop(self) -> None:
        for p, lifeline in self._live:
            stop(p, files=(lifeline,))
        self._live.clear()

    def _spawn(self, side: str, netns: str | None, argv: list[str]):
        p, lifeline = self.placement.start_tool(side, netns, argv)
        self._live.append((p, lifeline))
        return p

    def _cpu_method(self, tx_cpu, rx_cpu) -> dict | str:
        """Where a reference row's client and server ran: ours' CPUs, or unpinned as ours."""
        return {"client": tx_cpu, "server": rx_cpu} if self.cpus else "not pinned (as ours)"

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
            buffer=self.buffer, cpu=tx_cpu, parallel=case.flows))
        try:
            out, err = client.communicate(timeout=case.duration + 30)
        except subprocess.TimeoutExpired:
            return {"tool": "iperf3", "error": "timed out"}
        try:
            row = iperf3.parse(out)
        except (ValueError, KeyError) as exc:
            return {"tool": "iperf3", "error": f"{exc} {err.strip()[:200]}"}
        if case.flows > 1:
            row["parallel"] = {"streams": case.flows, "note": (
                "iperf3 -P: its streams share one process (and, before iperf3 3.16, one "
                "thread) on each side, pinned with -A to one CPU where ours are pinned; ours "
                "are one process per flow and side")}
        return row

    def _port(self, ep, default: int, proto: str = "tcp") -> int:
        """The tool's own port in our namespaces; on this machine's loopback a free one."""
        if ep.kind == "loopback" and not self.placement.remote:
            return free_port(ep.rx_addr, socket.SOCK_STREAM if proto == "tcp"
                             else socket.SOCK_DGRAM)
        return default

    def _sockperf(self, case, ep) -> dict:
        """sockperf ping-pong: its server where our responder runs, its client where our
        requester runs, on the same CPUs, the same size, round trips on CLOCK_MONOTONIC."""
        pl, proto = self.placement, sockperf.PROTOCOLS[case.workload]
        port = self._port(ep, sockperf.PORT, proto)
        tx_cpu, rx_cpu = self._cpus()
        server = self._spawn("rx", ep.rx_netns, sockperf.pinned(
            sockperf.server_argv(case.workload, ep.rx_addr, port), rx_cpu))
        try:
            pl.wait_listening("rx", server.pid, port, timeout=10, netns=ep.rx_netns, proto=proto)
        except UsageError as exc:
            return {"tool": sockperf.TOOL, "error": f"{exc.message} (fix: {exc.fix})"}
        client = self._spawn("tx", ep.tx_netns, sockperf.pinned(sockperf.client_argv(
            case.workload, ep.rx_addr, port, case.size, case.duration), tx_cpu))
        row = self._finish(sockperf.TOOL, client, case.duration + 30, sockperf.parse)
        row["method"] = {"cpus": self._cpu_method(tx_cpu, rx_cpu),
                         "clock": "CLOCK_MONOTONIC (--no-rdtsc), full round trips "
                                  "(--full-rtt), replies checked (--data-integrity)"}
        return row

    def _qperf(self, case, ep) -> dict:
        """qperf's tcp_lat/udp_lat: its server where our responder runs, the client pinning
        both ends itself (-lca/-rca) to our CPUs; a mean round trip, no percentiles."""
        pl = self.placement
        port = self._port(ep, qperf.PORT)
        tx_cpu, rx_cpu = self._cpus()
        server = self._spawn("rx", ep.rx_netns, qperf.server_argv(port))
        try:
            pl.wait_listening("rx", server.pid, port, timeout=10, netns=ep.rx_netns)
        except UsageError as exc:
            return {"tool": qperf.TOOL, "error": f"{exc.message} (fix: {exc.fix})"}
        client = self._spawn("tx", ep.tx_netns, qperf.client_argv(
            case.workload, ep.rx_addr, case.size, case.duration, port=port,
            cpus=(tx_cpu, rx_cpu) if self.cpus else None))

        def parse(text: str) -> dict:
            test = qperf.TESTS[case.workload]
            row = qperf.parse(text).get(test) or {"tool": qperf.TOOL, "test": test,
                                                  "error": f"qperf printed no {test}"}
            if "error" in row:
                raise ValueError(row["error"])
            # its one figure: the mean round trip (2 x its one-way latency)
            return {**row, "mean_ns": row.get("round_trip_ns")}

        row = self._finish(qperf.TOOL, client, case.duration + 30, parse)
        row["method"] = {"cpus": self._cpu_method(tx_cpu, rx_cpu),
                         "measure": "mean round trip = 2 x qperf's one-way latency; "
                                    "round trips/s = its msg_rate / 2"}
        return row

    def _finish(self, tool: str, client, limit: float, parse) -> dict:
        """The client's output parsed into its row, or the row's error (never raised)."""
        try:
            out, err = client.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            return {"tool": tool, "error": f"timed out after {limit:.0f} s"}
        text = out + (err or "")
        try:
            return parse(text)
        except (ValueError, KeyError) as exc:
            return {"tool": tool, "error": str(exc), "returncode": client.returncode}

    def _perftest_lat(self, case, ep) -> dict:
        """ib_send_lat / ib_write_lat: its server where our responder runs, its client where
        our requester runs, on the same devices, GID index, CPUs, size and inline threshold;
        as many transactions as ours' last sample (iteration mode: its percentiles), or ours'
        duration before ours ran (-D: a mean only)."""
        tool = perftest_lat.tool_for(case.workload)
        rx, tx = self._perftest_devices(ep)
        if rx is None or tx is None:
            return {"tool": tool, "error": PERFTEST_TWO_NODES}
        port = self._port(ep, perftest_lat.PORT)
        iterations = case.count or self._iterations.get(case.id)
        common = dict(size=case.size, inline=case.rdma.inline, iterations=iterations,
                      duration=case.duration, tcp_port=port, wait=case.rdma.wait)
        tx_cpu, rx_cpu = self._cpus()
        ran = self._perftest_ends(
            ep, tool, rx, tx, port, case.duration * 3 + 120,   # ours' count takes about ours' time
            lambda dev, **side: perftest_lat.argv(case.workload, dev.device, dev.port,
                                                  dev.gid_index, **side, **common))
        if "error" in ran:
            return ran
        c_out, c_err, s_out, client = ran["client"], ran["client_err"], ran["server"], \
            ran["proc"]
        try:
            row = perftest_lat.parse(c_out, tool)
        except ValueError as exc:
            return {"tool": tool, "error": f"client: {exc} {c_err.strip()[-200:]}",
                    "returncode": client.returncode}
        used = perftest_lat.wait_used(case.workload, case.rdma.wait, iterations)
        why = perftest_lat.unlike(case.workload, case.rdma.wait, iterations)
        row["device"] = {"client": tx.device, "server": rx.device, "gid_index": tx.gid_index}
        row["method"] = {"cpus": self._cpu_method(tx_cpu, rx_cpu),
                         "iterations_from": "the case's --bytes" if case.count else
                         "ours' last sample" if iterations else "none yet: -D, ours' duration",
                         "wait": {"ours": case.rdma.wait, "reference": used,
                                  "seen": {"client": perftest.waited(c_out),
                                           "server": perftest.waited(s_out)},
                                  "like_for_like": why is None,
                                  **({"unlike": why} if why else {})}}
        row["rdma"] = ran["counters"]
        return row

    def _perftest_devices(self, ep) -> tuple:
        """(receiver's, sender's) RDMA device for perftest's ends; None where one is not known
        (two nodes: PERFTEST_TWO_NODES)."""
        devs = self.placement.rdma_devices(self.rdma_device, ep)
        return devs.get("rx"), devs.get("tx")

    def _perftest_ends(self, ep, tool, rx, tx, port, limit, argv_for) -> dict:
        """A perftest server where our receiver runs, then its client where our sender runs,
        each pinned as ours and wrapped to print its port's counters; `argv_for(device,
        server=addr|None)` builds one end. Both ends' output, or the row's error."""
        tx_cpu, rx_cpu = self._cpus()
        server = self._spawn("rx", ep.rx_netns, perftest.with_counters(perftest.pinned(
            argv_for(rx), rx_cpu), rx.device, rx.port))
        try:
            self.placement.wait_listening("rx", server.pid, port, timeout=20, netns=ep.rx_netns)
        except Exception as exc:      # noqa: BLE001 - the row says why
            return {"tool": tool, "error": f"server did not listen: {exc}"}
        client = self._spawn("tx", ep.tx_netns, perftest.with_counters(perftest.pinned(
            argv_for(tx, server=ep.rx_addr), tx_cpu), tx.device, tx.port))
        try:
            c_out, c_err = client.communicate(timeout=limit)
            s_out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            return {"tool": tool, "error": f"timed out after {limit:.0f} s"}
        s_out = s_out or ""
        return {"client": c_out, "client_err": c_err, "server": s_out, "proc": client,
                "counters": {"sender": {"device_counters": perftest.counters_from(
                                 c_out, tx.device, tx.port)},
                             "receiver": {"device_counters": perftest.counters_from(
                                 s_out, rx.device, rx.port)}}}

    def _perftest(self, case, ep) -> dict:
        tool = perftest.tool_for(case.workload)
        pl = self.placement
        rx, tx = self._perftest_devices(ep)
        if rx is None or tx is None:
            return {"tool": tool, "error": PERFTEST_TWO_NODES}
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
                      count=case.count, tcp_port=port, wait=case.rdma.wait, qps=case.flows)
        tx_cpu, rx_cpu = self._cpus()
        ran = self._perftest_ends(
            ep, tool, rx, tx, port, case.duration + 120,
            lambda dev, server=None: perftest.argv(
                case.workload, dev.device, dev.port, dev.gid_index, server=server,
                json_file=files["client" if server else "server"], **common))
        if "error" in ran:
            return ran
        c_out, c_err, s_out, client = ran["client"], ran["client_err"], ran["server"], \
            ran["proc"]
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
        row["method"] = {"cpus": self._cpu_method(tx_cpu, rx_cpu),
                         "wait": perftest.checked_wait(perftest.wait_method(
                             case.workload, case.rdma.wait, case.count), c_out, s_out)}
        row["rdma"] = ran["counters"]
        if case.flows > 1:
            row["parallel"] = {"qps": case.flows, "note": (
                f"{tool} -q {case.flows}: its QPs share one process and thread on each side, "
                "pinned like ours' first flow where ours are pinned; ours are one process "
                "(and QP) per flow and side")}
        return row


def _read(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError:
        return None
