"""One sample of ours: a receiver and a sender agent where the placement puts them, an optional
copy tracer and syscall counter attached to both between "ready" and "go", the system CPU
window around the data, and the record the result stores (DESIGN.md, "Sample (ours)").

The tracers' readings travel beside the record in a `Sample`, never inside it: the record is
what the result file holds."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import metrics
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
                 rdma_device: str | None = None):
        self.placement, self.cpus, self.buffer = placement, cpus, buffer
        self.rdma_device = rdma_device
        self._live: list[Agent] = []

    def stop(self) -> None:
        for agent in list(self._live):
            self._retire(agent)

    def run(self, case, ep, tracer=None, syscalls=None) -> Sample:
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
        tx_cpu, rx_cpu = self.cpus[:2] if self.cpus else (None, None)
        out = Sample({})
        rx = self._agent("receiver", {**common, "netns": ep.rx_netns, "bind": ep.rx_addr,
                                      "cpu": rx_cpu, **self._rdma_config(case, ep, "rx")})
        try:
            # Started now, configured once the receiver listens: its start-up (an interpreter,
            # over SSH a session) overlaps the receiver's instead of following it.
            tx = self._agent("sender", None)
            try:
                rx_ready = rx.expect("ready", AGENT_READY_TIMEOUT)
                tx.configure({**common, "netns": ep.tx_netns,
                              "target": [ep.rx_addr, rx_ready["port"]],
                              "duration": case.duration, "count": case.count,
                              "cpu": tx_cpu, **self._rdma_config(case, ep, "tx")})
                tx_ready = tx.expect("ready", AGENT_READY_TIMEOUT)
                # The agents' own pids: over SSH, tx.pid is the local ssh client's.
                pids = {"sender": tx_ready["pid"], "receiver": rx_ready["pid"]}
                tx_res, rx_res, cpu0, cpu1 = self._measure(case, tx, rx, pids, tracer, syscalls,
                                                          out)
            finally:
                self._retire(tx)
        finally:
            self._retire(rx)
        out.record = self._record(case, tx_res, rx_res, cpu0, cpu1, tx_ready, rx_ready)
        return out

    def _measure(self, case, tx, rx, pids, tracer, syscalls, out: Sample):
        """go ... results, with the tracers attached around it; their readings into `out`."""
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
            tx.send({"cmd": "go"})
            tx_res = tx.expect("result", case.duration + 30)
            time.sleep(DRAIN_SECONDS)
            rx.send({"cmd": "stop"}, required=False)
            rx_res = rx.expect("result", 30)
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

    def _record(self, case, tx_res, rx_res, cpu0, cpu1, tx_ready, rx_ready) -> dict:
        pl = self.placement
        if not pl.remote:
            system = metrics.cpu_delta(cpu0, cpu1)
        elif pl.machines == 2:
            system = metrics.two_machines(tx_res["cpu"].get("machine"), rx_res["cpu"].get("machine"))
        else:   # one node: its window from the sender's start to the receiver's end
            system = metrics.one_machine(tx_res["cpu"], rx_res["cpu"])
        sample = metrics.derive(tx_res, rx_res, system, case.size, same_clock=pl.machines == 1)
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
