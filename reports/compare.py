"""`bench compare`: the CI gate between runs; the first result is the baseline, each later one
is compared with it case by case (same id). Exit 1 on any regression of these kinds:

1. status: a case ok in the baseline and failed, skipped, not run or missing now;
2. copies and syscalls (reports/gate_exact.py): bytes copied per payload byte and copies per
   message on each side, syscalls per GB where counted; exact against exact, any increase
   beyond rounding is a regression (no test needed: the kernel counted every call). A figure
   labelled estimate/lossy on both sides, or a receive-side call count (timing-dependent), is
   compared with a 10% tolerance and says so; different labels are shown, never compared;
3. throughput and per-side CPU (cases of several flows also their fairness; request/response
   cases: p50 and p99 round trip, transactions/s, the requester's CPU per transaction): an
   exact Mann-Whitney U test on the measured repeats (a shift of the medians the reports show),
   its p values adjusted across every case x metric of the comparison (Benjamini-Hochberg by
   default, or Holm); a regression is an adjusted p below ALPHA, for the worse, beyond the
   threshold. With 5 vs 5 repeats the smallest p is 1/126, so a change in one metric alone can
   pass the adjustment only in a family of at most 6 tests; more repeats buy power (C(16, 8):
   2/12870 at 8 vs 8).

Runs of different suites or machines (host under a VM included), or with different run
parameters that change the figures, are refused (exit 2) unless --force."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from html import escape

from bench.errors import UsageError
from bench.results import CaseResult, RunResult
from reports import gate_exact, gatestats
from reports.gate_exact import Finding
from reports.markdown import md_table

# (per-sample key, label, +1: higher is better / -1: lower is better)
METRICS = (
    ("gbps", "Gbit/s", +1),
    ("cpu_s_per_gb.sender", "sender CPU s/GB", -1),
    ("cpu_s_per_gb.receiver", "receiver CPU s/GB", -1),
    # cases of several flows only (one flow has no fairness): Jain's index over the flows
    ("fairness.jain", "fairness (Jain)", +1),
)
# Request/response cases: their samples' round trips (the requester's HDR histogram) and rate,
# tested like throughput; their request bytes per second would say nothing.
LATENCY_METRICS = (
    ("latency.p50_ns", "p50 round trip ns", -1),
    ("latency.p99_ns", "p99 round trip ns", -1),
    ("latency.transactions_per_s", "transactions/s", +1),
    ("latency.cpu_us_per_transaction", "requester CPU µs/transaction", -1),
)


def metrics_for(case: CaseResult) -> tuple:
    """The per-sample metrics a case is judged on: round trips for request/response cases."""
    return LATENCY_METRICS if case.is_latency else METRICS


DEFAULT_THRESHOLD_PCT = 5.0
ALPHA = 0.05
DEFAULT_ADJUST = "bh"
ADJUST_NAMES = {"bh": "Benjamini-Hochberg (false discovery rate)", "holm": "Holm (family-wise)"}


@dataclass(frozen=True)
class Delta:
    case: str
    metric: str
    base: float
    new: float
    n_base: int
    n_new: int
    change_pct: float           # (new - base) / base of the medians, signed as measured
    p: float | None             # Mann-Whitney U, unadjusted; None: cannot be tested
    q: float | None             # adjusted across the comparison
    better: bool                # the direction is an improvement
    regression: bool

    @property
    def significant(self) -> bool | None:
        return None if self.q is None else self.q < ALPHA

    @property
    def verdict(self) -> str:
        if self.significant is None:
            return "n too small to test"
        if not self.significant:
            return f"not significant (p {self.p:.3g}, adjusted {self.q:.3g})"
        return ("better" if self.better else "worse") + f" (adjusted p {self.q:.3g})" + \
            (" — REGRESSION" if self.regression else "")


def _values(cr: CaseResult, key: str) -> list[float]:
    from bench.results import dig
    return [v for v in (dig(s, key) for s in cr.measured()) if isinstance(v, (int, float))]


machine = gate_exact.machine


def check_comparable(results: list[RunResult], names: list[str], force: bool) -> list[str]:
    """Raises UsageError for runs of different suites, machines or figure-changing parameters
    unless forced; returns the differences that were forced past (shown in the report)."""
    notes = []
    base, base_name = results[0], names[0]
    for r, name in zip(results[1:], names[1:], strict=True):
        if r.suite != base.suite:
            msg = f"{name} is suite {r.suite!r}, {base_name} is {base.suite!r}"
            if not force:
                raise UsageError(f"different suites: {msg}",
                                 "compare runs of one suite, or pass --force to compare the "
                                 "cases they share")
            notes.append(msg)
        diff = gate_exact.machine_differences(base, r)
        if diff:
            said = ", ".join(diff)
            if not force:
                raise UsageError(f"{name} may have run on a different machine than {base_name} "
                                 f"({said})", "compare runs from one machine, or pass --force")
            notes.append(f"{name}: different machine ({said})")
        params = gate_exact.param_differences(base, r)
        if params:
            said = "; ".join(params[:6]) + (f"; and {len(params) - 6} more" if len(params) > 6
                                             else "")
            if not force:
                raise UsageError(f"{name} ran with other parameters than {base_name} ({said})",
                                 "compare runs made with the same options, or pass --force")
            notes.append(f"{name}: different parameters ({said})")
        kb, kr = (base.metadata or {}).get("kernel"), (r.metadata or {}).get("kernel")
        if kb != kr:
            notes.append(f"{name}: kernel {kr} (baseline {kb})")
    return notes


def compare(base: RunResult, new: RunResult, threshold_pct: float = DEFAULT_THRESHOLD_PCT,
            adjust: str = DEFAULT_ADJUST) -> list[Delta]:
    """Throughput and CPU deltas of the cases ok in both, tested and adjusted as one family."""
    by_id = {c.id: c for c in base.cases if c.status == "ok"}
    raw = []
    for c in new.cases:
        b = by_id.get(c.id)
        if b is None or c.status != "ok":
            continue
        for key, label, sign in metrics_for(c):
            va, vb = _values(b, key), _values(c, key)
            if not va or not vb:
                continue
            ma, mb = statistics.median(va), statistics.median(vb)
            if not ma:
                continue
            raw.append((c.id, label, sign, ma, mb, va, vb, gatestats.mann_whitney_p(va, vb)))
    qs = gatestats.ADJUST[adjust]([r[-1] for r in raw])
    out = []
    for (case, label, sign, ma, mb, va, vb, p), q in zip(raw, qs, strict=True):
        change = 100 * (mb - ma) / ma
        better = change * sign > 0
        regression = q is not None and q < ALPHA and not better and abs(change) > threshold_pct
        out.append(Delta(case, label, ma, mb, len(va), len(vb), change, p, q, better, regression))
    return out


def exact_findings(base: RunResult, new: RunResult) -> list[Finding]:
    found = gate_exact.status_findings(base, new)
    by_id = {c.id: c for c in base.cases if c.status == "ok"}
    for c in new.cases:
        if c.status == "ok" and c.id in by_id:
            found += gate_exact.copy_findings(by_id[c.id], c)
    return found


@dataclass
class Comparison:
    names: list[str]
    results: list[RunResult]
    threshold_pct: float
    notes: list[str]
    deltas: list[list[Delta]]     # per later result, against the first
    findings: list[list[Finding]] = field(default_factory=list)
    adjust: str = DEFAULT_ADJUST

    @property
    def regressions(self) -> list[Delta | Finding]:
        return [f for fs in self.findings for f in fs if f.regression] + \
            [d for ds in self.deltas for d in ds if d.regression]


def run(results: list[RunResult], names: list[str], threshold_pct: float = DEFAULT_THRESHOLD_PCT,
        force: bool = False, adjust: str = DEFAULT_ADJUST) -> Comparison:
    if len(results) < 2:
        raise UsageError("compare needs two result files or more", "bench compare BASE.json NEW.json")
    notes = check_comparable(results, names, force)
    deltas = [compare(results[0], r, threshold_pct, adjust) for r in results[1:]]
    findings = [exact_findings(results[0], r) for r in results[1:]]
    return Comparison(names, results, threshold_pct, notes, deltas, findings, adjust)


def describe(reg: Delta | Finding) -> str:
    """One line per regression: which case, what, how much."""
    if isinstance(reg, Finding):
        return f"{reg.kind}: {reg.text}"
    return f"{reg.case} {reg.metric} {reg.change_pct:+.1f}% (adjusted p {reg.q:.3g})"


def method_line(cmp: Comparison) -> str:
    return (f"Status changes and copy/syscall counts compared exactly (estimates with a "
            f"{gate_exact.ESTIMATE_TOLERANCE:.0%} tolerance); throughput and CPU: exact "
            f"Mann-Whitney U on the measured repeats, p adjusted across every case x metric "
            f"({ADJUST_NAMES[cmp.adjust]}) at {ALPHA:g}; a regression is significant, for the "
            f"worse and beyond {cmp.threshold_pct:g}%.")


HEAD = ["case", "metric", "baseline", "new", "change %", "n (base / new)", "significance"]


def _rows(ds: list[Delta]) -> list[list[str]]:
    return [[d.case, d.metric, f"{d.base:.4g}", f"{d.new:.4g}", f"{d.change_pct:+.1f}",
             f"{d.n_base} / {d.n_new}", d.verdict] for d in ds]


def _finding_lines(fs: list[Finding]) -> list[str]:
    return [f"- {'**REGRESSION** ' if f.regression else ''}{f.kind}: {f.text}" for f in fs]


def markdown(cmp: Comparison) -> str:
    lines = [f"# copybench compare: baseline {cmp.names[0]}", "", method_line(cmp), ""]
    lines += [f"- {n}" for n in cmp.notes]
    for name, ds, fs in zip(cmp.names[1:], cmp.deltas, cmp.findings, strict=True):
        lines += ["", f"## {name}", ""]
        if fs:
            lines += _finding_lines(fs) + [""]
        lines += md_table(HEAD, _rows(ds))
    regs = cmp.regressions
    lines += ["", f"**{len(regs)} regression(s)**" + (":" if regs else "")]
    lines += [f"- {describe(r)}" for r in regs]
    return "\n".join(lines) + "\n"


def html(cmp: Comparison) -> str:
    parts = [f"<h1>copybench compare: baseline {escape(cmp.names[0])}</h1>"]
    parts += [f'<div class="warn">{escape(n)}</div>' for n in cmp.notes]
    parts.append(f"<p>{escape(method_line(cmp))}</p>")
    for name, ds, fs in zip(cmp.names[1:], cmp.deltas, cmp.findings, strict=True):
        items = "".join(f"<li>{'<b>REGRESSION</b> ' if f.regression else ''}"
                        f"{escape(f.kind + ': ' + f.text)}</li>" for f in fs)
        parts.append(f"<h2>{escape(name)}</h2><ul>{items}</ul><table><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h in HEAD) + "</tr>")
        for d, row in zip(ds, _rows(ds), strict=True):
            style = ' style="background:#f8d7da"' if d.regression else ""
            parts.append(f"<tr{style}>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    parts.append(f"<p><b>{len(cmp.regressions)} regression(s)</b></p><ul>"
                 + "".join(f"<li>{escape(describe(r))}</li>" for r in cmp.regressions) + "</ul>")
    from reports.html import CSS
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>copybench '
            f"compare</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
