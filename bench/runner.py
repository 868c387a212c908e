"""Runs a plan: the case loop. Per case: topology -> warm-up pair -> repeats of ours and the
reference, alternated -> one traced sample -> the case's status; a failure fails that case only.

One direction, no back and forth (DESIGN.md): one sample is run by bench/sample.py, the
reference rows by bench/references/rows.py, the counting by bench/counting.py; none of them
calls back here. The result file is rewritten atomically after every sample, so Ctrl-C, a
killed agent or a crash keeps every finished case.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import interrupts, results
from bench.agents import AgentError
from bench.counting import Instruments, failed_copies
from bench.errors import UsageError
from bench.latency import round_trips
from bench.placement import LocalPlacement
from bench.plan import Case, Plan
from bench.references import iperf3
from bench.references.rows import ReferenceRows, latency_notes, tool_for, tools_for
from bench.results import CaseResult, RunResult
from bench.sample import Sample, Sampler
from bench.topology import Endpoints


class Reporter:
    """Progress callbacks; the CLI supplies a rich or plain-text one."""

    def case_start(self, case: Case, index: int, total: int) -> None: ...
    def sample_done(self, case: Case, rep: int, sample: dict, refs: list[dict]) -> None: ...
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
    cpu_lists: object = None      # bench.cpulists.CpuLists: --cpus with a CPU list per side
    warmup: bool = True           # one discarded sample pair per case (caches, ARP, slow start)
    rdma_device: str | None = None   # --rdma-device NAME[:PORT]; else bench.rxe.Devices chooses
    syscalls_spec: str = "off"    # "auto" | "off": count the agents' syscalls (--syscalls)
    sockbuf: int | None = None    # --sockbuf: bytes, iperf3.AUTO, None for the default

    def __post_init__(self):
        if self.placement is None:
            self.placement = LocalPlacement()
        # Where it was measured: this machine, or the node(s) the agents run on.
        self.result = RunResult(suite=self.plan.suite, metadata=self.placement.sysinfo())
        self.buffer = iperf3.choose_buffer(
            self.sockbuf, iperf3.node_buffer_limit(self.result.metadata))
        if self.cpu_lists is not None and self.cpus is None:
            self.cpus = self.cpu_lists.first
        self.sampler = Sampler(self.placement, self.cpus, self.buffer, self.rdma_device,
                               cpu_lists=self.cpu_lists)
        self.references = ReferenceRows(self.placement, self.cpus, self.buffer, self.rdma_device)
        self.counting = Instruments(self.placement, self.copies_spec, self.syscalls_spec,
                                    self.result.metadata)
        self.result.metadata["method"] = {
            **self.result.metadata.get("method", {}),
            "repeats": "one warm-up sample (ours and the reference) per case, kept in the file "
                       "with warmup=true and left out of every statistic" if self.warmup else
                       "no warm-up sample",
            "order": "ours and the reference alternate within a case: A B, B A, A B, ...",
            "statistics": "median of the repeats; spread as min-max and, from 6 repeats on, a "
                          "distribution-free 95% interval of the median (order statistics)",
            "socket_buffer": iperf3.buffer_method(self.buffer),
            "cpus": ({"sender": self.cpus[0], "receiver": self.cpus[1],
                      "softirq": self.cpus[2] if len(self.cpus) > 2 else
                      "not steered (RPS unchanged: on veth the receive softirq runs on the "
                      "sending CPU)",
                      **({"flows": "flow i: the i-th CPU of each side's list, round robin",
                          "sender_cpus": list(self.cpu_lists.sender),
                          "receiver_cpus": list(self.cpu_lists.receiver)}
                         if self.cpu_lists is not None and (len(self.cpu_lists.sender) > 1
                                                            or len(self.cpu_lists.receiver) > 1)
                         else {})}
                     if self.cpus else "not pinned"),
            "syscalls": self.counting.method(),
        }

    def check(self) -> None:
        """Where the processes will run: the reference tools, root for veth, --cpus; then
        what can count copies there. UsageError (exit 2) before anything is created."""
        refs = [c for c in self.plan.cases if c.reference and c.skip_reason is None]
        self.placement.check({t for c in refs for t in tools_for(c)}, self.plan.topologies,
                             self.cpu_lists.sides() if self.cpu_lists is not None else self.cpus)
        self.counting.check()
        if not self.placement.remote:     # on a node the agent says it, failing its case
            from workloads import registry
            from workloads.sendfile import probe
            for where in sorted({c.sendfile_dir or "" for c in self.plan.cases
                                 if c.skip_reason is None
                                 and registry.get(c.workload).file_source}):
                why = probe(where or None)
                if why:
                    raise UsageError(why, "set sendfile_dir in the suite to a directory on "
                                     "ext4, xfs or tmpfs (default: the temporary directory)")

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
            self.result.finished = datetime.now(UTC).isoformat()
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
        if cr.status == "failed":      # the next case starts from a clean slate
            self.sampler.stop()
            self.references.stop()

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
                                "reference": tool_for(case) if case.reference else None,
                                "reference_note": (
                                    "; ".join(f"{t}: {n}" for t, n in latency_notes(case).items())
                                    or None if case.rr else
                                    iperf3.peer_note(case.workload, case.batch)),
                                **({"response_size": case.response,
                                    "in_flight": case.in_flight} if case.rr else {}),
                                **({"sendfile_dir": case.sendfile_dir}
                                   if case.sendfile_dir else {}),
                                **({"flows": case.flows} if case.flows > 1 else {}),
                                **({"rdma": case.rdma.to_json()} if case.rdma else {}),
                                **({"queue_depth": case.queue_depth}
                                   if case.queue_depth is not None else {}),
                                **({"zc_chunk": case.zc_chunk, "zc_rcvlowat": case.zc_rcvlowat}
                                   if case.zc_chunk is not None else {})})
        self.result.cases.append(cr)
        return cr

    def _run_case(self, case: Case, cr: CaseResult) -> None:
        ep = self.placement.endpoints(case.topology)
        cr.network = self.placement.snapshot(case.topology)
        if case.rdma is not None:
            devices = self.placement.rdma_devices(self.rdma_device, ep)
            cr.network["rdma"] = {k: c.to_json() for k, c in devices.items()}
        first = -1 if self.warmup else 0
        for rep in range(first, case.repeat):
            # A B, B A, A B ...: neither side always runs second (warmer caches, fuller logs).
            order = ("ours", "ref") if rep % 2 == 0 else ("ref", "ours")
            sample, refs = None, []
            for who in order:
                if who == "ours":
                    sample = self._run_sample(case, ep).record
                    if case.rr:     # perftest's ib_*_lat then runs as many transactions
                        self.references.note_sample(case, sample)
                elif case.reference:
                    refs = self.references.rows(case, ep)
            for rec in (sample, *refs):
                rec["repeat"] = rep
                rec["order"] = order.index("ours" if rec is sample else "ref")
                if rep < 0:
                    rec["warmup"] = True
            cr.samples.append(sample)
            cr.reference.extend(refs)
            if rep >= 0:
                self.reporter.sample_done(case, rep, sample, refs)
            self._save()
        cr.copies = self.counting.copies_state or self._counted(case, ep, cr)
        if self.counting.syscalls_state is not None:
            cr.syscalls = dict(self.counting.syscalls_state)
        elif not cr.syscalls:       # not counted in the copy sample: a sample of its own
            cr.syscalls = self._syscall_sample(case, ep, cr)
        if case.rr:
            cr.latency = round_trips(cr)
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

    def _run_sample(self, case: Case, ep: Endpoints, tracer=None, syscalls=None) -> Sample:
        return self.sampler.run(case, ep, tracer=tracer, syscalls=syscalls)

    # -- the traced samples ----------------------------------------------------------------
    def _counted(self, case: Case, ep: Endpoints, cr: CaseResult) -> dict:
        """The traced sample; a tracer that fails (dies mid-sample, cannot attach) costs the
        case its copy counts, recorded with the reason, never its untraced samples."""
        try:
            return self._copy_sample(case, ep, cr)
        except AgentError:
            raise       # an agent failed: a sample failure like any other, not the tracer's
        except Exception as exc:    # the tracer (or its parsing) broke: only the counts go
            return failed_copies(exc)

    def _copy_sample(self, case: Case, ep: Endpoints, cr: CaseResult) -> dict:
        """One more sample with the tracers attached to both agents."""
        tracer, syscalls = self.counting.tracers_for(case)
        sample = self._traced(case, ep, tracer, syscalls)
        if syscalls is not None:
            cr.syscalls = self.counting.syscalls(case, cr, sample, syscalls, "copies")
        out = self.counting.copies(case, cr, sample, tracer)
        self.reporter.copies_done(case, out)
        return out

    def _syscall_sample(self, case: Case, ep: Endpoints, cr: CaseResult) -> dict:
        """A sample with only the syscall counter attached (copies off or not counted)."""
        syscalls = self.counting.syscall_counter(case)
        if syscalls is None:
            return dict(self.counting.syscalls_state)
        sample = self._traced(case, ep, None, syscalls)
        return self.counting.syscalls(case, cr, sample, syscalls, "dedicated")

    def _traced(self, case: Case, ep: Endpoints, tracer, syscalls) -> Sample:
        try:
            return self._run_sample(case, ep, tracer=tracer, syscalls=syscalls)
        except BaseException:
            self.counting.close()     # in an unknown state: the next case starts fresh ones
            raise

    # -- cleanup ---------------------------------------------------------------------------
    def _stop_everything(self) -> None:
        self.sampler.stop()
        self.counting.close()
        self.references.stop()
        self.placement.teardown()     # its soft-RoCE links, then its topologies

    def _save(self) -> None:
        results.save(self.result, self.out_path)
