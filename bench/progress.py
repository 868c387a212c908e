"""Progress for long runs: a live bar on a terminal, plain timestamped lines in CI/pipes."""

from __future__ import annotations

import sys
import time

from bench.plan import Case
from bench.results import CaseResult, rdma_retransmits
from bench.runner import Reporter


def _fmt(x, unit="", nd=2):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def _us(ns) -> str:
    return "–" if ns is None else f"{ns / 1000:.1f} µs"


def _ref_text(ref: dict) -> str:
    """A reference row in one phrase: its throughput, or its round trip, or why it failed."""
    tool = ref.get("tool") or "iperf3"
    if "error" in ref:
        return f"{tool} failed: {ref.get('error')}"
    if "gbps" in ref:
        text = f"{tool} {_fmt(ref.get('gbps'), ' Gbit/s')}"
        rtx = rdma_retransmits(ref)
        if rtx and any(rtx):
            text += f", RDMA retransmits {rtx[0]} (duplicates {rtx[1]})"
        return text
    if ref.get("p50_ns") is not None:
        return f"{tool} p50 {_us(ref['p50_ns'])}"
    return f"{tool} mean {_us(ref.get('mean_ns'))}"


class LineReporter(Reporter):
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def _say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=self.stream, flush=True)

    def case_start(self, case: Case, index: int, total: int) -> None:
        what = "skip" if case.skip_reason else f"{case.repeat}× {case.duration:g}s"
        self._say(f"case {index + 1}/{total} {case.id} ({what})")

    def sample_done(self, case: Case, rep: int, sample: dict, refs: list[dict]) -> None:
        lat = sample.get("latency")
        if lat:
            line = (f"  #{rep + 1}: p50 {_us(lat.get('p50_ns'))}, p99 {_us(lat.get('p99_ns'))}, "
                    f"{_fmt(lat.get('transactions_per_s'), ' transactions/s', 0)}, "
                    f"payload errors {sample.get('payload_errors')}")
        else:
            line = (f"  #{rep + 1}: {_fmt(sample.get('gbps'), ' Gbit/s')}, "
                    f"{sample.get('messages')} msgs, loss {_fmt(sample.get('loss_pct'), '%', 1)}, "
                    f"payload errors {sample.get('payload_errors')}")
        rtx = rdma_retransmits(sample)
        if rtx and any(rtx):
            line += f", RDMA retransmits {rtx[0]} (duplicates {rtx[1]})"
        for ref in refs or ():
            line += " | " + _ref_text(ref)
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

    def sample_done(self, case, rep, sample, refs):
        self.progress.advance(self.task)
        super().sample_done(case, rep, sample, refs)

    def close(self):
        self.progress.stop()


def make_reporter(total_samples: int) -> LineReporter:
    if sys.stderr.isatty():
        return RichReporter(total_samples)
    return LineReporter()
