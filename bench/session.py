"""One way through `bench run` (and `bench nightly`): typed run options and a suite in, the
outcome out (the result file, the result, where it ran and why).

`cli.py` parses the command line into `RunOptions` and prints the outcome; nothing here
parses, prints reports or maps exit codes. The plan is expanded once, before anything
connects: a two-node target, which always runs across its link, expands it again for that
topology.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UsageError

if TYPE_CHECKING:
    from bench.results import RunResult


@dataclass(frozen=True)
class RunOptions:
    out: Path
    target: str | None = None          # None or "auto", "local", "lab", an inventory/hosts
    topology: str | None = None        # --topology; None: the suite's
    duration: float | None = None
    bytes: int | None = None
    sizes: tuple[int, ...] | None = None
    repeat: int | None = None
    workloads: tuple[str, ...] | None = None
    reference: bool | None = None      # False: --no-reference
    batch: int | None = None
    queue_depth: int | None = None
    response_size: int | None = None   # --response-size: request/response cases' R
    in_flight: int | None = None       # --in-flight: their transactions outstanding
    flows: int | None = None           # --flows: independent flows per case
    cpu_lists: object = None           # bench.cpulists.CpuLists of --cpus (ranges per side)
    copies: str = "auto"
    syscalls: str = "auto"
    cpus: tuple[int, ...] | None = None
    warmup: bool = True
    rdma_device: str | None = None
    sockbuf: int | None = None

    def overrides(self, topology: str | None = None):
        from bench import plan
        return plan.Overrides(duration=self.duration, bytes=self.bytes, sizes=self.sizes,
                              repeat=self.repeat, topology=topology or self.topology,
                              workloads=self.workloads, reference=self.reference,
                              batch=self.batch, queue_depth=self.queue_depth,
                              response_size=self.response_size, in_flight=self.in_flight,
                              flows=self.flows)

    def only(self, workloads, sizes) -> RunOptions:
        """The same run filtered to these workloads and sizes (a nightly re-run)."""
        return dataclasses.replace(self, workloads=tuple(sorted(set(workloads))),
                                   sizes=tuple(sorted(set(sizes))))


@dataclass
class RunOutcome:
    path: Path             # the result file
    result: RunResult
    target: dict           # metadata.target: requested, chosen, why


def run(suite, options: RunOptions, say: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
        reporter_for=None) -> RunOutcome:
    """Run `suite` where `options.target` says (auto: bench/autotarget.py decides and may boot
    the lab for this run). `say`: one line about the choice; `reporter_for(total samples)`:
    progress (default: bench/progress.py)."""
    from bench import plan
    the_plan = plan.expand(suite, options.overrides())
    if options.target not in (None, "auto"):
        return _run_on(suite, the_plan, options, options.target,
                       {"requested": options.target, "chosen": options.target}, reporter_for)
    from bench import autotarget
    choice = autotarget.decide(suite, the_plan, options.copies)
    say(f"target: {choice.target}: {choice.why}")
    if not choice.boot:
        return _run_on(suite, the_plan, options, choice.target, choice.to_json(), reporter_for)
    with autotarget.BootedLab():
        return _run_on(suite, the_plan, options, "lab", choice.to_json(booted=True),
                       reporter_for)


def placement_for(spec: str | None):
    """--target -> where the agents run. Remote targets are reachable (host keys checked) and,
    for the lab, run this tree's copybench before anything starts."""
    from bench.placement import LocalPlacement, for_target
    if spec in (None, "local"):
        return LocalPlacement()
    from bench.targets import open_target
    target = open_target(spec)
    try:
        target.check()
        target.prepare()
    except BaseException:
        target.close()
        raise
    return for_target(target)


def _run_on(suite, the_plan, options: RunOptions, spec: str, target_note: dict,
            reporter_for) -> RunOutcome:
    """One run on one place (`spec`); `target_note` says where and why, in the result."""
    placement = placement_for(spec)
    try:
        return _run_placed(suite, the_plan, options, placement, target_note, reporter_for)
    finally:
        placement.close()


def _run_placed(suite, the_plan, options: RunOptions, placement, target_note: dict,
                reporter_for) -> RunOutcome:
    from bench import plan
    from bench.results import new_path
    from bench.runner import Runner
    forced = placement.forced_topology
    if forced:
        if options.topology not in (None, forced):
            raise UsageError(f"--topology {options.topology}: a two-node target runs across "
                             "its link", "leave --topology out, or run on one node "
                             "(`bench lab up --nodes 1`)")
        if any(c.topology != forced for c in the_plan.cases):
            the_plan = plan.expand(suite, options.overrides(forced))
    # What the target's kernel lacks is a skip with doctor's reason, not an agent error.
    the_plan = plan.require(the_plan, placement.capabilities(plan.needed_capabilities(the_plan)))
    out = new_path(Path(options.out), the_plan.suite)
    runner = Runner(the_plan, out, placement=placement, copies_spec=options.copies,
                    cpus=options.cpus, cpu_lists=options.cpu_lists, warmup=options.warmup,
                    rdma_device=options.rdma_device,
                    syscalls_spec=options.syscalls, sockbuf=options.sockbuf)
    runner.result.metadata["placement"] = placement.describe()
    runner.result.metadata["target"] = target_note
    runner.check()
    if options.flows is None:    # a suite's list of flow counts stops at the machine's CPUs;
        # an explicit --flows N runs N, sharing CPUs round robin (the result says so)
        runner.plan = plan.cap_flows(runner.plan, placement.usable_cpus("tx"))
    if reporter_for is None:
        from bench.progress import make_reporter as reporter_for
    reporter = reporter_for(sum(c.repeat for c in the_plan.cases if not c.skip_reason))
    runner.reporter = reporter
    try:
        result = runner.run()
    finally:
        if hasattr(reporter, "close"):
            reporter.close()
    return RunOutcome(out, result, target_note)
