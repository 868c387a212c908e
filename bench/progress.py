"""Progress for long runs: a live bar on a terminal, plain timestamped lines in CI/pipes."""

from __future__ import annotations

import sys
import time

from bench.plan import Case
from bench.results import CaseResult, rdma_retransmits
from bench.runner import Reporter


def _fmt(x, unit="", nd=2):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


class LineReporter(Reporter):
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def _say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def case_start(self, case: Case, index: int, total: int) -> None:
        what = "skip" if case.skip_reason else f"{case.repeat}× {case.duration:g}s"
        self._say(f"case {index + 1}/{total} {case.id} ({what})")

    def sample_done(self, case: Case, rep: int, sample: dict, ref: dict | None) -> None:
        line = (f"  #{rep + 1}: {_fmt(sample.get('gbps'), ' Gbit/s')}, "
                f"{sample.get('messages')} msgs, loss {_fmt(sample.get('loss_pct'), '%', 1)}, "
                f"payload errors {sample.get('payload_errors')}")
        rtx = rdma_retransmits(sample)
        if rtx and any(rtx):
            line += f", RDMA retransmits {rtx[0]} (duplicates {rtx[1]})"
        if ref:
            tool = ref.get("tool") or "iperf3"
            line += f" | {tool} {_fmt(ref.get('gbps'), ' Gbit/s')}" if "gbps" in ref else \
                f" | {tool} failed: {ref.get('error')}"
            rtx = rdma_retransmits(ref)
            if rtx and any(rtx):
                line += f", RDMA retransmits {rtx[0]} (duplicates {rtx[1]})"
        self._say(line)

    def copies_done(self, case: Case, copies: dict) -> None:
        parts = []
        for side in ("sender", "receiver"):
            d = copies["sides"].get(side)
            if d:
                total = d.get("total_copied_per_payload_byte")
                parts.append(f"{side} {d['calls']} copies/{d['bytes']} B "
                             f"({d['copies_per_message']}/msg, {'+'.join(d['backends'])} "
                             f"{d.get('quality')}" + (f", total {total} B/B" if total is not None
                                                      else "") + ")")
        ratio = copies.get("tracer_overhead_ratio")
        self._say("  copies: " + "; ".join(parts) + (f"; traced/untraced {ratio}" if ratio else ""))

    def case_done(self, case: CaseResult) -> None:
        if case.status != "ok":
            self._say(f"  {case.status}: {case.reason or ''}" + (f" (fix: {case.fix})" if case.fix else ""))


class RichReporter(LineReporter):
    """Same lines, plus a bar over all samples, when stderr is a terminal."""

    def __init__(self, total_samples: int):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = self.progress.add_task("running", total=total_samples)
        self.progress.start()

    def _say(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def case_start(self, case, index, total):
        self.progress.update(self.task, description=case.id)
        super().case_start(case, index, total)

    def sample_done(self, case, rep, sample, ref):
        self.progress.advance(self.task)
        super().sample_done(case, rep, sample, ref)

    def close(self):
        self.progress.stop()


def make_reporter(total_samples: int) -> LineReporter:
    if sys.stderr.isatty():
        return RichReporter(total_samples)
    return LineReporter()
