"""`--target auto`: run a suite where all of it can run, one place per run.

A suite declares what it needs (`needs = ["exact-copies", "rdma"]`, bench/suite.py). Only the
needs the plan uses count: exact copies when copies are counted, RDMA when an RDMA case is
planned. If this machine has them all, the run is local. Otherwise the lab VM, where kprobes,
modules and soft-RoCE exist: the running lab as it is, or one this run boots (and shuts down
after). With no lab possible either, the run stays local, each case skipping or counting what
it can, and the result says why. Every row of one run comes from one place, so rows compare.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from workloads import registry


@dataclass(frozen=True)
class Choice:
    target: str                       # "local" | "lab"
    why: str
    unmet_here: dict[str, str] = field(default_factory=dict)   # need -> why not on this machine
    boot: bool = False                # the lab is not running: this run boots it

    def to_json(self, booted: bool = False) -> dict:
        return {"requested": "auto", "chosen": self.target, "why": self.why,
                "unmet_here": self.unmet_here, "booted_by_this_run": booted}


def used_needs(suite, the_plan, copies_spec: str) -> list[str]:
    """The suite's needs that this plan really uses."""
    out = []
    if "exact-copies" in suite.needs and copies_spec != "off":
        out.append("exact-copies")
    if "rdma" in suite.needs and any(registry.get(c.workload).transport == "rdma"
                                     for c in the_plan.cases if c.skip_reason is None):
        out.append("rdma")
    return out


def unmet_here(needs: list[str]) -> dict[str, str]:
    """need -> why this machine lacks it (doctor's words)."""
    from bench import doctor
    out = {}
    if "exact-copies" in needs:
        c = doctor.check_copy_counting()
        if not c.ok or c.fix:       # a fix means "not exact per copy here"
            out["exact-copies"] = c.detail
    if "rdma" in needs:
        missing = [c for c in (doctor.check_rdma(doctor.Roots()), doctor.check_pyverbs())
                   if not c.ok]
        if missing:
            out["rdma"] = "; ".join(c.detail for c in missing)
    return out


def lab_state() -> tuple[bool, str | None]:
    """(running, why it cannot be booted here or None)."""
    from bench.lab import manager
    from bench.lab.paths import lab_paths
    if manager.status(lab_paths())["running"]:
        return True, None
    missing = [t for t in ("qemu-system-x86_64", "mmdebstrap", "ssh") if not shutil.which(t)]
    if missing:
        return False, (f"the lab VM cannot start here: {', '.join(missing)} missing "
                       "(fix: python3 -m bench.bootstrap installs them)")
    return False, None


def choose(needs: list[str], unmet: dict[str, str], lab: tuple[bool, str | None]) -> Choice:
    """Pure: where the run goes, and the sentence that says why."""
    if not unmet:
        if not needs:
            return Choice("local", "the suite needs nothing special")
        return Choice("local", f"this machine has what the suite needs ({' and '.join(needs)})")
    lacks = "; ".join(f"{n}: {why}" for n, why in unmet.items())
    running, cannot = lab
    if running:
        return Choice("lab", f"this machine lacks {', '.join(unmet)} ({lacks}); the running lab "
                      "VM has them", unmet)
    if cannot:
        return Choice("local", f"this machine lacks {', '.join(unmet)} ({lacks}) and {cannot}: "
                      "those rows skip or count what they can here", unmet)
    return Choice("lab", f"this machine lacks {', '.join(unmet)} ({lacks}); the lab VM has them: "
                  "booting it for this run", unmet, boot=True)


def decide(suite, the_plan, copies_spec: str) -> Choice:
    needs = used_needs(suite, the_plan, copies_spec)
    unmet = unmet_here(needs)
    return choose(needs, unmet, lab_state() if unmet else (False, None))


class BootedLab:
    """The lab this run booted: up on enter, down on exit (also on Ctrl-C and errors)."""

    def __init__(self, progress=None):
        from bench.lab.paths import lab_paths
        from bench.lab.progress import Progress
        self.paths = lab_paths()
        self.progress = progress or Progress()

    def __enter__(self) -> BootedLab:
        from bench.lab import manager
        try:
            manager.up(self.paths, nodes=1, progress=self.progress)
        except BaseException:
            manager.down(self.paths, progress=self.progress)
            raise
        return self

    def __exit__(self, *exc) -> None:
        from bench.lab import manager
        self.progress.line("this run booted the lab VM: shutting it down "
                           "(`bench lab up` first keeps one running between runs)")
        manager.down(self.paths, progress=self.progress)
