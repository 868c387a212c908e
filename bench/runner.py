"""Runs a plan: per case, topology -> receiver + sender agents -> samples -> reference row.

One direction, no back and forth (DESIGN.md). The result file is rewritten atomically after
every sample, so Ctrl-C, a killed agent or a crash keeps every finished case.
"""

from __future__ import annotations

import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from bench import interrupts, metrics, reference, results
from bench.agents import Agent, AgentError
from bench.errors import UsageError
from bench.placement import LocalPlacement
from bench.plan import Case, Plan
from bench.procs import stop
from bench.results import CaseResult, RunResult
from bench.topology import Endpoints
from bench.tracing.base import Availability

AGENT_READY_TIMEOUT = 20.0
DRAIN_SECONDS = 0.05        # lets datagrams already on the veth reach the socket before "stop"


class Reporter:
    """Progress callbacks; the CLI supplies a rich or plain-text one."""

    def case_start(self, case: Case, index: int, total: int) -> None: ...
    def sample_done(self, case: Case, rep: int, sample: dict, ref: dict | None) -> None: ...
    def copies_done(self, case: Case, copies: dict) -> None: ...
    def case_done(self, case: CaseResult) -> None: ...


@dataclass
class Runner:
    plan: Plan
    out_path: Path
    reporter: Reporter = field(default_factory=Reporter)
    placement: object = None      # LocalPlacement (default), NodePlacement or LinkPlacement
    copies_spec: str = "off"      # "auto" | a backend name | "off": count the kernel's copies
    cpus: tuple[int, ...] | None = None   # --cpus SENDER,RECEIVER[,SOFTIRQ]: pin agents, iperf3
    warmup: bool = True           # one discarded sample pair per case (caches, ARP, slow start)
    rdma_device: str | None = None   # --rdma-device NAME[:PORT]; else bench.rxe.Devices chooses
    syscalls_spec: str = "off"    # "auto" | "off": count the agents' syscalls (--syscalls)
    sockbuf: int | None = None    # --sockbuf: bytes, reference.AUTO, None for the default

    def __post_init__(self):
        if self.placement is None:
            self.placement = LocalPlacement()
        # Where it was measured: this machine, or the node(s) the agents run on.
        self.result = RunResult(suite=self.plan.suite, metadata=self.placement.sysinfo())
        self._live_agents: list[Agent] = []
        self._live_procs: list[tuple[subprocess.Popen, object]] = []   # (tool, its lifeline)
        self._rdma = None        # bench.rxe.Devices, made by the first RDMA case
        # Node tracers kept from case to case ("copies", "syscalls"): see _reused.
        self._tracers: dict[str, object] = {}
        self._ws_bandwidth: dict[int, object] = {}   # working-set bytes -> memcpy bandwidth
        self.buffer = reference.choose_buffer(
            self.sockbuf, reference.node_buffer_limit(self.result.metadata))
        self.result.metadata["method"] = {
            **self.result.metadata.get("method", {}),
            "repeats": "one warm-up sample (ours and the reference) per case, kept in the file "
                       "with warmup=true and left out of every statistic" if self.warmup else
                       "no warm-up sample",
            "order": "ours and the reference alternate within a case: A B, B A, A B, ...",
            "statistics": "median of the repeats; spread as min-max and, from 6 repeats on, a "
                          "distribution-free 95% interval of the median (order statistics)",
            "socket_buffer": reference.buffer_method(self.buffer),
            "cpus": ({"sender": self.cpus[0], "receiver": self.cpus[1],
                      "softirq": self.cpus[2] if len(self.cpus) > 2 else
                      "not steered (RPS unchanged: on veth the receive softirq runs on the "
                      "sending CPU)"} if self.cpus else "not pinned"),
            "syscalls": SYSCALLS_METHOD if self.syscalls_spec != "off" else
                        "not counted (--syscalls off)",
        }

    # -- checks before anything is created ---------------------------------------------------
    def check(self) -> None:
        """Where the processes will run: the reference tools, root for veth, --cpus; then
        what can count copies there. UsageError (exit 2) before anything is created."""
        refs = [c for c in self.plan.cases if c.reference and c.skip_reason is None]
        tools = {_reference_tool(c) for c in refs}
        self.placement.check(tools, self.plan.topologies, self.cpus)
        try:
            self._check_tracers()
        except BaseException:
            self._drop_tracers()        # a node tracer the survey kept for the run
            raise

    def _check_tracers(self) -> None:
        self._copies_unavailable = self._check_copies()
        if self._copies_unavailable and self._copies_unavailable["status"] == "unavailable":
            # One note per run names the reason and the fix; cases only point at it.
            self.result.metadata["copies_note"] = self._copies_unavailable
            self._copies_unavailable = {"status": "unavailable", "reason": "see the run's "
                                        "copies_note", "run_note": True}
        self._syscalls_state = self._check_syscalls()

    def _check_syscalls(self) -> dict | None:
        """None when syscalls can be counted; else why not (once per run, as copies_note)."""
        if self.syscalls_spec == "off":
            return {"status": "off", "reason": "syscall counting not requested (--syscalls off)"}
        if self.syscalls_spec != "auto":
            raise UsageError(f"--syscalls {self.syscalls_spec!r}", "use --syscalls auto or off")
        try:
            av = self._surveyed("syscalls", self.placement.syscall_tracer(survey=True,
                                                                          reuse=True))
        except UsageError as exc:
            av = Availability(False, exc.message, exc.fix)
        if av.ok:
            return None
        return self._syscalls_unavailable(av.reason, av.fix)

    def _syscalls_unavailable(self, reason: str, fix: str) -> dict:
        """One note per run with the reason and the fix; cases only point at it."""
        self.result.metadata["syscalls_note"] = {"status": "unavailable", "reason": reason,
                                                 "fix": fix}
        self._syscalls_state = {"status": "unavailable", "reason": "see the run's syscalls_note",
                                "run_note": True}
        return self._syscalls_state

    def _check_copies(self) -> dict | None:
        """None when copies can be counted; else why not (explicit backends fail loudly)."""
        if self.copies_spec == "off":
            return {"status": "off", "reason": "copy counting not requested (--copies off)"}
        try:
            # An explicit backend that cannot work raises. Remote: each node's tracer says
            # what it would use there (bench/tracing/remote.py).
            tracer = self.placement.tracer(self.copies_spec, survey=True, reuse=True)
        except UsageError as exc:
            raise UsageError(f"--copies {self.copies_spec}: {exc.message}",
                             "use --copies auto (picks what works here), --copies off, or "
                             "--target lab for kprobes") from None
        av = self._surveyed("copies", tracer)
        if not av.ok:
            return {"status": "unavailable", "reason": av.reason, "fix": av.fix}
        self.result.metadata["copy_backends"] = [c.to_json() for c in tracer.choices]
        from bench.costmodel import measure_bandwidth
        # The seed's cost model needs this machine's memory bandwidth: measured once per run.
        self._bandwidth = getattr(tracer, "bandwidth", None) or measure_bandwidth()
        self.result.metadata["memory_bandwidth"] = self._bandwidth.to_json()
        return None

    def _surveyed(self, kind: str, tracer) -> Availability:
        """A node tracer that surveyed its node (seconds under TCG) and can count is kept as
        the run's first tracer of its kind (`_reused`); one that cannot is ended now."""
        av = tracer.available()
        if av.ok and getattr(tracer, "reuse", False):
            self._tracers[kind] = tracer
        elif hasattr(tracer, "close"):
            _try(tracer.close)
        return av

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.result.metadata["plan"] = [c.id for c in self.plan.cases]
        current: CaseResult | None = None
        done = 0
        try:
            for i, case in enumerate(self.plan.cases):
                current = self._new_case(case)
                self.reporter.case_start(case, i, len(self.plan.cases))
                if case.skip_reason is None:
                    self._isolated(case, current)
                self.reporter.case_done(current)
                self._save()
                done = i + 1
            from bench.crossover import breakeven
            be = breakeven(self.result)
            if be:
                self.result.analysis["breakeven"] = be
            failed = [c.id for c in self.result.cases if c.status == "failed"]
            self.result.status = "failed" if failed else "complete"
            if failed:
                self.result.reason = f"{len(failed)} of {len(self.result.cases)} cases failed: " \
                    + ", ".join(failed)
        except KeyboardInterrupt as exc:
            self.result.status = "interrupted"
            self.result.reason = interrupts.reason(exc)
            if current is not None and current.status == "running":
                current.status, current.reason = "interrupted", self.result.reason
                done += 1
            self._not_run(done)
            raise
        except BaseException as exc:      # a crash of the runner itself: the file says so
            self.result.status = "failed"
            self.result.reason = f"runner error: {type(exc).__name__}: {exc}"
            if current is not None and current.status == "running":
                current.status, current.reason = "failed", self.result.reason
                done += 1
            self._not_run(done)
            raise
        finally:
            self._stop_everything()
            self.result.finished = _now_iso()
            self._save()
        return self.result

    def _isolated(self, case: Case, cr: CaseResult) -> None:
        """One case; whatever fails in it fails only it: the suite goes on with the next."""
        try:
            self._run_case(case, cr)
        except AgentError as exc:
            cr.status, cr.reason = "failed", str(exc)
            cr.fix = "see the agent's message; re-run the case alone with --workload"
        except UsageError as exc:
            cr.status, cr.reason, cr.fix = "failed", exc.message, exc.fix
        except Exception as exc:    # anything else (a bug, a NetlinkError): this case only
            cr.status, cr.reason = "failed", f"{type(exc).__name__}: {exc}"
            cr.traceback = traceback.format_exc()
            cr.fix = "re-run the case alone with --workload; report it if it persists"
        if cr.status == "failed":
            for agent in list(self._live_agents):   # the next case starts from a clean slate
                self._retire(agent)
            self._stop_procs()

    def _not_run(self, start: int) -> None:
        """Cases after an interruption or a crash: listed, never silently dropped."""
        for case in self.plan.cases[start:]:
            cr = self._new_case(case)
            if cr.status == "running":
                cr.status, cr.reason = "not run", "the run ended before this case"

    def _new_case(self, case: Case) -> CaseResult:
        cr = CaseResult(id=case.id, workload=case.workload, size=case.size, topology=case.topology,
                        status="skipped" if case.skip_reason else "running",
                        reason=case.skip_reason, fix=case.skip_fix,
                        params={"duration_s": case.duration, "count": case.count,
                                "repeat": case.repeat,
                                "socket_buffer": self.buffer or "auto",
                                "batch": case.batch,
                                "reference": _reference_tool(case) if case.reference else None,
                                "reference_note": reference.peer_note(case.workload, case.batch),
                                **({"rdma": case.rdma.to_json()} if case.rdma else {}),
                                **({"queue_depth": case.queue_depth}
                                   if case.queue_depth is not None else {})})
        self.result.cases.append(cr)
        return cr

    def _run_case(self, case: Case, cr: CaseResult) -> None:
        ep = self._topology(case.topology)
        cr.network = self.placement.snapshot(case.topology)
        if case.rdma is not None:
            cr.network["rdma"] = {k: c.to_json() for k, c in self._rdma_devices(ep).items()}
        first = -1 if self.warmup else 0
        for rep in range(first, case.repeat):
            # A B, B A, A B ...: neither side always runs second (warmer caches, fuller logs).
            order = ("ours", "ref") if rep % 2 == 0 else ("ref", "ours")
            sample = ref = None
            for who in order:
                if who == "ours":
                    sample = self._run_sample(case, ep)
                elif case.reference:
                    ref = self._run_reference(case, ep)
            for rec in (sample, ref):
                if rec is not None:
                    rec["repeat"] = rep
                    rec["order"] = order.index("ours" if rec is sample else "ref")
                    if rep < 0:
                        rec["warmup"] = True
            cr.samples.append(sample)
            if ref is not None:
                cr.reference.append(ref)
            if rep >= 0:
                self.reporter.sample_done(case, rep, sample, ref)
            self._save()
        cr.copies = self._copies_unavailable or self._counted(case, ep, cr)
        if self._syscalls_state is not None:
            cr.syscalls = dict(self._syscalls_state)
        elif not cr.syscalls:       # not counted in the copy sample: a sample of its own
            cr.syscalls = self._syscall_sample(case, ep, cr)
        bad = [s for s in cr.samples if s.get("payload_errors")]
        traced = (cr.copies.get("traced_sample") or {}).get("payload_errors")
        if bad or traced:
            # the traced sample delivers bytes too: wrong ones fail the case like any sample
            cr.status = "failed"
            cr.reason = (f"payload verification failed in {len(bad)} of {len(cr.samples)} samples"
                         + (f" and in the traced sample ({traced} bad)" if traced else ""))
            cr.fix = "this path delivered wrong bytes: its throughput is not valid"
        else:
            cr.status = "ok"

    def _topology(self, kind: str) -> Endpoints:
        return self.placement.endpoints(kind)

    def _rdma_devices(self, ep: Endpoints) -> dict:
        """Device, port and GID per side (bench/rxe.py): a real NIC as it is, else a soft-RoCE
        link this run creates on its topology and removes at the end."""
        if self.placement.remote:     # the nodes' own devices, as they are
            if self._rdma is None:
                try:
                    self._rdma = self.placement.rdma_devices(self.rdma_device, ep)
                except UsageError as exc:
                    self._rdma = exc      # one attempt per run: later cases fail alike
            if isinstance(self._rdma, UsageError):
                raise self._rdma
            return self._rdma
        if self._rdma is None:
            from bench.rxe import Devices
            self._rdma = Devices(self.rdma_device)
        return self._rdma.for_endpoints(ep)

    def _rdma_config(self, case: Case, ep: Endpoints, side: str) -> dict:
        if case.rdma is None:
            return {}
        c = self._rdma_devices(ep).get(side)
        return {"rdma_depth": case.rdma.depth, "rdma_inline": case.rdma.inline,
                "rdma_signal_every": case.rdma.signal_every, **(c.agent_config() if c else {})}

    # -- one sample: two agents ------------------------------------------------------------
    def _agent(self, role: str, config: dict | None) -> Agent:
        agent = self.placement.start_agent(role, "tx" if role == "sender" else "rx", config)
        self._live_agents.append(agent)
        return agent

    def _counted(self, case: Case, ep: Endpoints, cr: CaseResult) -> dict:
        """The traced sample; a tracer that fails (dies mid-sample, cannot attach) costs the
        case its copy counts, recorded with the reason, never its untraced samples."""
        try:
            return self._copy_sample(case, ep, cr)
        except UsageError as exc:
            return {"status": "failed", "reason": f"copy counting failed: {exc.message}",
                    "fix": exc.fix}
        except AgentError:
            raise       # an agent failed: a sample failure like any other, not the tracer's
        except Exception as exc:    # the tracer (or its parsing) broke: only the counts go
            return {"status": "failed",
                    "reason": f"copy counting failed: {type(exc).__name__}: {exc}",
                    "fix": "re-run with --copies off to measure without counts; report it",
                    "traceback": traceback.format_exc()}

    def _copy_sample(self, case: Case, ep: Endpoints, cr: CaseResult) -> dict:
        """One more sample with the tracer attached to both agents: the copy accounting, and
        what counting costs (its throughput against the untraced samples of the same run)."""
        from bench.copycount import add_costs, summarize
        tracer = self._reused("copies", case,
                              lambda: self.placement.tracer(self.copies_spec, reuse=True))
        syscalls = self._syscall_counter(case)
        try:
            sample = self._run_sample(case, ep, tracer=tracer, syscalls=syscalls)
        except BaseException:
            self._drop_tracers()        # in an unknown state: the next case starts fresh ones
            raise
        if syscalls is not None:
            cr.syscalls = self._syscall_result(case, sample, cr, syscalls, "copies")
        counts = sample.pop("_copy_counts")
        untraced = cr.stat("gbps")
        sides = summarize(counts,
                          {"sender": sample["messages_sent"], "receiver": sample["messages"]},
                          {"sender": sample["messages_sent"] * case.size, "receiver": sample["bytes"]},
                          completions=sample.get("zerocopy"),
                          receive_report=sample.get("zerocopy_receive"),
                          rdma=self._rdma_summary(case, cr))
        add_costs(sides, sample["cpu"], self._bandwidth, self._working_set(case.size, case.batch))
        out = {
            "status": "ok",
            "choices": [c.to_json() for c in tracer.choices],
            "sides": sides,
            "points": [c.to_json() for c in counts],
            "traced_sample": {k: sample.get(k) for k in ("bytes", "messages", "messages_sent",
                                                         "gbps", "window_s", "payload_errors",
                                                         "zerocopy", "zerocopy_receive", "rdma")},
            "tracer_overhead_ratio": (round(sample["gbps"] / untraced["median"], 4)
                                      if untraced and sample.get("gbps") else None),
            "buffers": {"sender": sample["sender"].get("buffer_addr"),
                        "receiver": sample["receiver"].get("buffer_addr")},
        }
        self.reporter.copies_done(case, out)
        return out

    # -- syscalls per agent (bench/tracing/syscount.py) ----------------------------------------
    def _syscall_counter(self, case: Case):
        """A syscall counter for the next sample, or None (off, unavailable, or it cannot be
        made here: then the run's note says why)."""
        if self._syscalls_state is not None:
            return None
        try:
            return self._reused("syscalls", case,
                                lambda: self.placement.syscall_tracer(reuse=True))
        except UsageError as exc:
            self._syscalls_unavailable(exc.message, exc.fix)
            return None

    def _syscall_sample(self, case: Case, ep: Endpoints, cr: CaseResult) -> dict:
        """A sample with only the syscall counter attached (copies off or not counted)."""
        syscalls = self._syscall_counter(case)
        if syscalls is None:
            return dict(self._syscalls_state)
        try:
            sample = self._run_sample(case, ep, syscalls=syscalls)
        except BaseException:
            self._drop_tracers()
            raise
        return self._syscall_result(case, sample, cr, syscalls, "dedicated")

    def _reused(self, kind: str, case: Case, make):
        """The tracer of `kind` for this case's traced sample. On SSH nodes choosing the
        backends costs seconds under TCG (kallsyms, ftrace's list, BTF), so a node tracer
        serves one case after another (detached in between: nothing stays attached) until
        the run ends, it fails, or its nodes' lifetime watchdog would fire within the case."""
        t = self._tracers.get(kind)
        if t is not None and not t.usable_for(case.duration + AGENT_READY_TIMEOUT * 2 + 120):
            self._drop_tracers(kind)
            t = None
        if t is None:
            t = make()
            if getattr(t, "reuse", False):
                self._tracers[kind] = t
        return t

    def _drop_tracers(self, *kinds: str) -> None:
        for kind in kinds or list(self._tracers):
            t = self._tracers.pop(kind, None)
            if t is not None:
                _try(t.close)

    def _syscall_result(self, case: Case, sample: dict, cr: CaseResult, syscalls,
                        which: str) -> dict:
        """The case's `syscalls`: per side calls, per GB, top syscalls; or why not."""
        from bench.tracing import syscount
        counts = sample.pop("_syscall_counts", None)
        err = sample.pop("_syscall_error", None)
        if counts is None:
            reason, fix, attached = err or ("no counts", "", True)
            if not attached:      # it cannot attach here: say so once, do not retry per case
                self._syscalls_unavailable(f"the syscall counter could not attach: {reason}", fix)
            return {"status": "failed", "reason": f"syscall counting failed: {reason}",
                    "fix": fix}
        sent = sample["messages_sent"]
        sides = syscount.summarize(counts, {"sender": sent * case.size,
                                            "receiver": sample["bytes"]},
                                   {"sender": sent, "receiver": sample["messages"]})
        untraced = cr.stat("gbps")
        out = {
            "status": "ok",
            "sample": which,
            "counted_by": (syscalls.describe() if hasattr(syscalls, "describe") else {}),
            "quality": ("lossy" if any(d["quality"] == "lossy" for d in sides.values())
                        else "exact"),
            "sides": sides,
            "traced_sample": {**{k: sample.get(k) for k in ("bytes", "messages",
                                                            "messages_sent", "gbps", "window_s")},
                              "send_errors": sample["sender"].get("send_errors"),
                              "recv_calls": sample["receiver"].get("recv_calls")},
            "tracer_overhead_ratio": (round(sample["gbps"] / untraced["median"], 4)
                                      if untraced and sample.get("gbps") else None),
        }
        check = _recv_calls_check(sample, cr)
        if check:
            out["recv_calls_check"] = check
        return out

    def _rdma_summary(self, case: Case, cr: CaseResult) -> dict | None:
        """For RDMA rows: whether the device is soft-RoCE (its kernel copies the payload)."""
        if case.rdma is None:
            return None
        devs = (cr.network or {}).get("rdma") or {}
        return {"soft": any(d.get("soft") for d in devs.values()), "devices": devs}

    def _working_set(self, size: int, batch: int = 1):
        """memcpy bandwidth at the case's working set (cache-hot), measured once per size."""
        from bench.costmodel import measure_working_set, working_set_bytes
        if self.placement.remote:
            return None      # it would measure this machine, not the nodes that copied
        size = working_set_bytes(size, batch or 1)
        cache = self._ws_bandwidth
        if size not in cache:
            cache[size] = measure_working_set(size)
            self.result.metadata.setdefault("working_set_bandwidth", {})[str(size)] = \
                cache[size].to_json()
        return cache[size]

    def _run_sample(self, case: Case, ep: Endpoints, tracer=None, syscalls=None) -> dict:
        common = {"workload": case.workload, "size": case.size, "batch": case.batch,
                  "max_seconds": case.duration + AGENT_READY_TIMEOUT * 2 + 60,
                  "rcvbuf": self.buffer, "sndbuf": self.buffer,
                  **({"queue_depth": case.queue_depth} if case.queue_depth is not None else {})}
        tx_cpu, rx_cpu = self.cpus[:2] if self.cpus else (None, None)
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
                if tracer is not None:
                    tracer.attach(pids)
                sys_counts = sys_error = None
                try:
                    if syscalls is not None:
                        # Its failures cost the syscall counts, never the sample or the copies.
                        sys_error = _try(syscalls.attach, pids, attached=False)
                        if sys_error:
                            _try(lambda: _uninterrupted(syscalls.detach))
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
                        sys_error = _try(lambda: box.append(syscalls.read()))
                        sys_counts = box[0] if box else None
                    counts = tracer.read() if tracer is not None else None
                finally:
                    try:
                        if syscalls is not None:
                            sys_error = _try(lambda: _uninterrupted(syscalls.detach)) or sys_error
                    finally:
                        if tracer is not None:
                            _uninterrupted(tracer.detach)
            finally:
                self._retire(tx)
        finally:
            self._retire(rx)
        if not self.placement.remote:
            system = metrics.cpu_delta(cpu0, cpu1)
        elif self.placement.machines == 2:
            system = metrics.two_machines(tx_res["cpu"].get("machine"), rx_res["cpu"].get("machine"))
        else:   # one node: its window from the sender's start to the receiver's end
            system = metrics.one_machine(tx_res["cpu"], rx_res["cpu"])
        sample = metrics.derive(tx_res, rx_res, system, case.size,
                                same_clock=self.placement.machines == 1)
        # a stream that lost or repeated bytes at its end has no later message to fail
        sample["payload_errors"] = int(rx_res.get("bad", 0)) + int(bool(sample.get("stream_gap_bytes")))
        if tracer is not None:
            sample["_copy_counts"] = counts
        if sys_counts is not None:
            sample["_syscall_counts"] = sys_counts
        elif sys_error:
            sample["_syscall_error"] = sys_error
        if "zerocopy" in tx_res:
            sample["zerocopy"] = tx_res["zerocopy"]
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

    def _retire(self, agent: Agent) -> None:
        agent.stop()
        if agent in self._live_agents:
            self._live_agents.remove(agent)

    # -- reference tool --------------------------------------------------------------------
    def _spawn(self, side: str, netns: str | None, argv: list[str]):
        """A reference tool on `side` in `netns`, stopped with the sample (_stop_procs)."""
        p, lifeline = self.placement.start_tool(side, netns, argv)
        self._live_procs.append((p, lifeline))
        return p

    def _run_reference(self, case: Case, ep: Endpoints) -> dict:
        if case.rdma is not None:
            from bench.rdma_reference import run_perftest
            return run_perftest(self, case, ep)
        pl = self.placement
        port = _free_port(ep.rx_addr) if ep.kind == "loopback" and not pl.remote else 5201
        tx_cpu, rx_cpu = self.cpus[:2] if self.cpus else (None, None)
        server = self._spawn("rx", ep.rx_netns, reference.server_argv(ep.rx_addr, port)
                             + reference.server_cpu_argv(rx_cpu))
        try:
            try:
                pl.wait_listening("rx", server.pid, port, timeout=10, netns=ep.rx_netns)
            except UsageError as exc:        # the reference row says so; ours stand
                return {"tool": "iperf3", "error": f"{exc.message} (fix: {exc.fix})"}
            client = self._spawn("tx", ep.tx_netns, reference.client_argv(
                case.workload, ep.rx_addr, port, case.size, case.duration, case.count,
                buffer=self.buffer, cpu=tx_cpu))
            try:
                out, err = client.communicate(timeout=case.duration + 30)
            except subprocess.TimeoutExpired:
                return {"tool": "iperf3", "error": "timed out"}
            try:
                return reference.parse(out)
            except (ValueError, KeyError) as exc:
                return {"tool": "iperf3", "error": f"{exc} {err.strip()[:200]}"}
        finally:
            self._stop_procs()

    def _stop_procs(self) -> None:
        for p, lifeline in self._live_procs:
            stop(p, files=(lifeline,))
        self._live_procs.clear()

    # -- cleanup ---------------------------------------------------------------------------
    def _stop_everything(self) -> None:
        for agent in list(self._live_agents):
            self._retire(agent)
        self._drop_tracers()
        self._stop_procs()
        if hasattr(self._rdma, "release"):   # our soft-RoCE links, before their netdevs
            self._rdma.release()
        self.placement.teardown()

    def _save(self) -> None:
        results.save(self.result, self.out_path)


SYSCALLS_METHOD = (
    "system calls of each agent, counted in the kernel on raw_syscalls:sys_enter (a tracefs "
    "hist trigger on the agents' threads where the kernel has them, else a bpftrace BPF map "
    "over their pid trees; per side and syscall id) from attach (both agents ready) to read "
    "(both results in): in the copy-counting sample when copies are counted, else in a sample "
    "of its own; per GB: sender per byte sent, receiver per byte received; exact unless the "
    "kernel reports a loss (BPF recursion misses, a full map or hist table, a task started "
    "while counting: lossy, a lower bound)")


def _try(fn, *args, attached: bool = True) -> tuple[str, str, bool] | None:
    """Run a syscall-counter step; its UsageError becomes (reason, fix, attached)."""
    try:
        fn(*args)
    except UsageError as exc:
        return exc.message, exc.fix, attached
    return None


def _recv_calls_check(sample: dict, cr: CaseResult) -> dict | None:
    """The receiver's own recv call count per GB in the counted sample against the untraced
    samples': a receiver that lags gets more bytes per call, so a tracer that slows one side
    can change how many calls a stream takes (DESIGN.md, "Syscalls")."""
    def per_gb(s: dict) -> float | None:
        calls = (s.get("receiver") or {}).get("recv_calls")
        return calls / (s["bytes"] / 1e9) if calls is not None and s.get("bytes") else None

    traced = per_gb(sample)
    untraced = [v for v in (per_gb(s) for s in cr.measured()) if v is not None]
    if traced is None or not untraced:
        return None
    import statistics
    med = statistics.median(untraced)
    return {"traced_per_gb": round(traced, 3), "untraced_median_per_gb": round(med, 3),
            "ratio": round(traced / med, 4) if med else None}


def _uninterrupted(fn) -> None:
    """Run a cleanup with SIGINT/SIGTERM/SIGHUP held back: a second Ctrl-C must not leave a
    loaded module or a kprobe_event behind. A held signal is delivered right after."""
    held = set(interrupts.SIGNALS)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        fn()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _reference_tool(case: Case) -> str:
    from workloads import registry
    return registry.get(case.workload).reference or "iperf3"


def _free_port(addr: str) -> int:
    import socket
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _now_iso() -> str:
    from datetime import datetime
    return datetime.now(UTC).isoformat()
