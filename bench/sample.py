"""One sample of ours: a receiver and a sender agent where the placement puts them, an optional
copy tracer and syscall counter attached to both between "ready" and "go", the system CPU
window around the data, and the record the result stores (DESIGN.md, "Sample (ours)").

The tracers' readings travel beside the record in a `Sample`, never inside it: the record is
what the result file holds."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import flows, metrics
from bench.agents import Agent
from bench.errors import attempt
from bench.procs import held

AGENT_READY_TIMEOUT = 20.0
DRAIN_SECONDS = 0.05        # lets datagrams already on the veth reach the socket before "stop"


@dataclass
class Sample:
    record: dict                              # the sample as the result stores it
    copy_counts: list | None = None           # the copy tracer's PointCounts, if one was attached
    syscall_counts: dict | None = None        # the syscall counter's reading, if it read
    syscall_error: tuple[str, str, bool] | None = None   # (reason, fix, attached) else


def agent_deadline(case) -> float:
    """How long an agent of this case may live: its sample, two ready waits, a margin."""
    return case.duration + AGENT_READY_TIMEOUT * 2 + 60


class Sampler:
    """Runs samples on `placement`; `stop()` ends any agent a failed sample left behind."""

    def __init__(self, placement, cpus: tuple[int, ...] | None, buffer: int | None,
                 rdma_device: str | None = None, cpu_lists=None):
        self.placement, self.cpus, self.buffer = placement, cpus, buffer
        self.rdma_device = rdma_device
        self.cpu_lists = cpu_lists          # bench.cpulists.CpuLists: a CPU per flow and side
        self._live: list[Agent] = []

    def stop(self) -> None:
        for agent in list(self._live):
            self._retire(agent)

    def run(self, case, ep, tracer=None, syscalls=None) -> Sample:
        """One sample of the case's flows (one, or --flows N: each its own receiver and
        sender agent, flow i on the i-th CPU of each --cpus list)."""
        common = {"workload": case.workload, "size": case.size, "batch": case.batch,
                  "max_seconds": agent_deadline(case),
                  "rcvbuf": self.buffer, "sndbuf": self.buffer,
                  **({"queue_depth": case.queue_depth} if case.queue_depth is not None else {}),
                  # the mapped receiver's chunk and SO_RCVLOWAT (the sender ignores them)
                  **({"zc_chunk": case.zc_chunk, "zc_rcvlowat": case.zc_rcvlowat}
                     if case.zc_chunk is not None else {}),
                  # request/response: R bytes and transactions in flight (workloads/rr.py)
                  **({"response_size": case.response, "in_flight": case.in_flight}
                     if case.rr else {}),
                  **({"sendfile_dir": case.sendfile_dir} if case.sendfile_dir else {})}
        n = case.flows
        cpus = [self.flow_cpus(i) for i in range(n)]
        out = Sample({})
        rxs: list[Agent] = []
        txs: list[Agent] = []
        try:
            for i in range(n):
                rxs.append(self._agent("receiver", {**common, "netns": ep.rx_netns,
                                                    "bind": ep.rx_addr, "cpu": cpus[i][1],
                                                    **self._rdma_config(case, ep, "rx")}))
            # Started now, configured once the receiver listens: its start-up (an interpreter,
            # over SSH a session) overlaps the receiver's instead of following it.
            txs = [self._agent("sender", None) for _ in range(n)]
            rx_ready = [rx.expect("ready", AGENT_READY_TIMEOUT) for rx in rxs]
            for i, tx in enumerate(txs):
                tx.configure({**common, "netns": ep.tx_netns,
                              "target": [ep.rx_addr, rx_ready[i]["port"]],
                              "duration": case.duration, "count": case.count,
                              "cpu": cpus[i][0], **self._rdma_config(case, ep, "tx")})
            tx_ready = [tx.expect("ready", AGENT_READY_TIMEOUT) for tx in txs]
            # The agents' own pids (over SSH, tx.pid is the local ssh client's), one tracer
            # side per flow's process (bench/flows.py names them)
            pids = {}
            for i in range(n):
                pids[flows.flow_side("sender", i)] = tx_ready[i]["pid"]
                pids[flows.flow_side("receiver", i)] = rx_ready[i]["pid"]
            tx_res, rx_res, cpu0, cpu1 = self._measure(case, txs, rxs, pids, tracer, syscalls,
                                                      out)
        finally:
            for agent in txs + rxs:
                self._retire(agent)
        if n == 1:
            out.record = self._record(case, tx_res[0], rx_res[0], cpu0, cpu1, tx_ready[0],
                                      rx_ready[0])
        else:
            out.record = self._record_flows(case, tx_res, rx_res, cpu0, cpu1, tx_ready,
                                            rx_ready, cpus)
        return out

    def flow_cpus(self, i: int) -> tuple[int | None, int | None]:
        """(sender, receiver) CPU of flow i: round robin over the --cpus lists."""
        if self.cpu_lists is not None:
            return self.cpu_lists.for_flow(i)
        return tuple(self.cpus[:2]) if self.cpus else (None, None)

    def _measure(self, case, txs, rxs, pids, tracer, syscalls, out: Sample):
        """go ... results of every flow, with the tracers attached around it; their readings
        into `out`. The senders start one after another (a message each, microseconds)."""
        if tracer is not None:
            tracer.attach(pids)
        try:
            if syscalls is not None:
                # Its failures cost the syscall counts, never the sample or the copies.
                out.syscall_error = attempt(syscalls.attach, pids, attached=False)
                if out.syscall_error:
                    attempt(lambda: held(syscalls.detach))
                    syscalls = None
            cpu0 = metrics.read_cpu_times()
            for tx in txs:
                tx.send({"cmd": "go"})
            tx_res = [tx.expect("result", case.duration + 30) for tx in txs]
            time.sleep(DRAIN_SECONDS)
            for rx in rxs:
                rx.send({"cmd": "stop"}, required=False)
            rx_res = [rx.expect("result", 30) for rx in rxs]
            cpu1 = metrics.read_cpu_times()
            if syscalls is not None:    # first: the copy tracer's read takes a while
                box: list = []
                out.syscall_error = attempt(lambda: box.append(syscalls.read()))
                out.syscall_counts = box[0] if box else None
            if tracer is not None:
                out.copy_counts = tracer.read()
        finally:
            try:
                if syscalls is not None:
                    out.syscall_error = attempt(lambda: held(syscalls.detach)) or out.syscall_error
            finally:
                if tracer is not None:
                    held(tracer.detach)
        if out.syscall_counts is not None:
            out.syscall_error = None
        return tx_res, rx_res, cpu0, cpu1

    def _system(self, tx_res: dict, rx_res: dict, cpu0, cpu1) -> dict:
        pl = self.placement
        if not pl.remote:
            return metrics.cpu_delta(cpu0, cpu1)
        if pl.machines == 2:
            return metrics.two_machines(tx_res["cpu"].get("machine"),
                                        rx_res["cpu"].get("machine"))
        # one node: its window from the sender's start to the receiver's end
        return metrics.one_machine(tx_res["cpu"], rx_res["cpu"])

    def _record_flows(self, case, tx_res, rx_res, cpu0, cpu1, tx_ready, rx_ready,
                      cpus) -> dict:
        """N flows: the aggregate and each flow's figures (bench/flows.py). On a node the
        system CPU is flow 0's window of the machine(s), which spans the others' (they ran
        at the same time)."""
        sample = flows.aggregate(tx_res, rx_res, self._system(tx_res[0], rx_res[-1], cpu0,
                                                              cpu1),
                                 case.size, cpus, same_clock=self.placement.machines == 1)
        for i, f in enumerate(sample["flows"]):
            f["sender_pid"], f["receiver_pid"] = tx_ready[i]["pid"], rx_ready[i]["pid"]
        zc = flows.summed([t.get("zerocopy") for t in tx_res])
        if zc is not None:
            sample["zerocopy"] = zc
        if any("io_uring" in r for r in (*tx_res, *rx_res)):
            sample["io_uring"] = {"sender": tx_res[0].get("io_uring"),
                                  "receiver": rx_res[0].get("io_uring"), "of": "flow 0"}
        for key in ("sendfile", "splice"):
            if key in tx_res[0]:
                sample[key] = tx_res[0][key]
        if "rdma" in tx_res[0] or "rdma" in rx_res[0]:
            # flow 0's agents: their device counters are the port's, every QP on it, over a
            # window that spans the other flows'; each flow's own QP counts are in its entry
            sample["rdma"] = {"sender": tx_res[0].get("rdma"), "receiver": rx_res[0].get("rdma"),
                              "of": "flow 0 (device counters: the whole port)",
                              "device": {"sender": tx_res[0].get("rdma_device"),
                                         "receiver": rx_res[0].get("rdma_device")},
                              "gid_index": {"sender": tx_res[0].get("gid_index"),
                                            "receiver": rx_res[0].get("gid_index")}}
        if self.cpu_lists is not None:
            shared = self.cpu_lists.shared(case.flows)
            if shared:
                sample["cpu_placement_note"] = shared
        sample["sender"] = {"pid": tx_ready[0]["pid"], "buffer_addr": tx_res[0].get("buffer_addr"),
                            "send_errors": sum(t.get("send_errors", 0) for t in tx_res),
                            "sndbuf": tx_ready[0].get("sndbuf"), "processes": len(tx_res)}
        sample["receiver"] = {"pid": rx_ready[0]["pid"],
                              "buffer_addr": rx_res[0].get("buffer_addr"),
                              "rcvbuf": rx_ready[0].get("rcvbuf"),
                              "recv_calls": sum(r.get("recv_calls") or 0 for r in rx_res),
                              "processes": len(rx_res)}
        return sample

    def _record(self, case, tx_res, rx_res, cpu0, cpu1, tx_ready, rx_ready) -> dict:
        system = self._system(tx_res, rx_res, cpu0, cpu1)
        sample = metrics.derive(tx_res, rx_res, system, case.size,
                                same_clock=self.placement.machines == 1)
        # a stream that lost or repeated bytes at its end has no later message to fail
        sample["payload_errors"] = int(rx_res.get("bad", 0)) + int(bool(sample.get("stream_gap_bytes")))
        if "rr" in tx_res:
            # a round trip: the requester's clock times it, both ends verify their half
            sample["latency"] = tx_res["latency"]
            sample["rr"] = {"requester": tx_res["rr"], "responder": rx_res.get("rr")}
            sample["payload_errors"] += int(tx_res["rr"].get("bad_responses", 0))
        if "zerocopy" in tx_res:
            sample["zerocopy"] = tx_res["zerocopy"]
        for key in ("sendfile", "splice"):      # where the sender's pages came from
            if key in tx_res:
                sample[key] = tx_res[key]
        if "zerocopy_receive" in rx_res:
            sample["zerocopy_receive"] = rx_res["zerocopy_receive"]
        if "io_uring" in tx_res or "io_uring" in rx_res:
            # setup flags, queue depth, enter calls, short/cancelled requests, buffer group
            sample["io_uring"] = {"sender": tx_res.get("io_uring"),
                                  "receiver": rx_res.get("io_uring")}
        if "rdma" in tx_res or "rdma" in rx_res:
            sample["rdma"] = {"sender": tx_res.get("rdma"), "receiver": rx_res.get("rdma"),
                              "device": {"sender": tx_res.get("rdma_device"),
                                         "receiver": rx_res.get("rdma_device")},
                              "gid_index": {"sender": tx_res.get("gid_index"),
                                            "receiver": rx_res.get("gid_index")}}
        sample["sender"] = {"pid": tx_ready["pid"], "buffer_addr": tx_res.get("buffer_addr"),
                            "send_errors": tx_res.get("send_errors", 0),
                            "sndbuf": tx_ready.get("sndbuf")}
        sample["receiver"] = {"pid": rx_ready["pid"], "buffer_addr": rx_res.get("buffer_addr"),
                              "rcvbuf": rx_ready.get("rcvbuf"),
                              "recv_calls": rx_res.get("recv_calls")}
        return sample

    def _rdma_config(self, case, ep, side: str) -> dict:
        if case.rdma is None:
            return {}
        c = self.placement.rdma_devices(self.rdma_device, ep).get(side)
        return {"rdma_depth": case.rdma.depth, "rdma_inline": case.rdma.inline,
                "rdma_signal_every": case.rdma.signal_every, "rdma_wait": case.rdma.wait,
                **(c.agent_config() if c else {})}

    def _agent(self, role: str, config: dict | None) -> Agent:
        agent = self.placement.start_agent(role, "tx" if role == "sender" else "rx", config)
        self._live.append(agent)
        return agent

    def _retire(self, agent: Agent) -> None:
        agent.stop()
        if agent in self._live:
            self._live.remove(agent)
