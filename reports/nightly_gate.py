"""`bench nightly`'s verdict: a night judged against earlier comparable nights, not one run.

Run-to-run drift on a shared host exceeds the spread within one run, which is all a two-sample
test sees; so throughput and CPU are judged on the between-night spread: for each case x metric
the night's median against the medians of up to `window` earlier nights (same suite, machine,
host under a VM and run parameters) by a prediction test on logs (t with k-1 df, k >= 3
nights), the p values adjusted across every case x metric (as `bench compare`), and a
regression only where the adjusted p < ALPHA, the median lies outside the earlier nights' range,
for the worse and beyond the threshold against their median. With fewer than 3 earlier nights
the night falls back to `bench compare`'s within-run test against the latest one. Status and
copy/syscall counts are judged against the latest earlier night (exact rules need no spread)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.results import RunResult
from reports import compare, gatestats
from reports.gate_exact import Finding
from reports.markdown import md_table

MIN_NIGHTS = 3


@dataclass(frozen=True)
class NightDelta:
    case: str
    metric: str
    nights: int                  # earlier nights with this case ok
    centre: float                # median of their medians
    low: float
    high: float
    new: float
    change_pct: float
    p: float | None
    q: float | None
    better: bool
    regression: bool


@dataclass
class Verdict:
    deltas: list[NightDelta]
    findings: list[Finding]
    nights: int
    threshold_pct: float

    @property
    def regressions(self) -> list:
        out = [f for f in self.findings if f.regression] + [d for d in self.deltas if d.regression]
        return out


def _median(case, key: str) -> float | None:
    vals = compare._values(case, key)
    return statistics.median(vals) if vals else None


def judge(earlier: list[RunResult], new: RunResult, threshold_pct: float,
          adjust: str = compare.DEFAULT_ADJUST) -> Verdict:
    """`earlier`: comparable complete nights, newest first (at least one)."""
    findings = compare.exact_findings(earlier[0], new)
    if len(earlier) < MIN_NIGHTS:
        return Verdict([], findings, len(earlier), threshold_pct)
    raw = []
    for c in new.cases:
        if c.status != "ok":
            continue
        for key, label, sign in compare.metrics_for(c):
            x = _median(c, key)
            hist = [m for m in (_median(oc, key) for r in earlier for oc in r.cases
                                if oc.id == c.id and oc.status == "ok") if m]
            if x is None or len(hist) < MIN_NIGHTS:
                continue
            raw.append((c.id, label, sign, hist, x, gatestats.prediction_p(hist, x)))
    qs = gatestats.ADJUST[adjust]([r[-1] for r in raw])
    deltas = []
    for (case, label, sign, hist, x, p), q in zip(raw, qs, strict=True):
        centre = statistics.median(hist)
        change = 100 * (x - centre) / centre
        better = change * sign > 0
        outside = x < min(hist) or x > max(hist)
        reg = (q is not None and q < compare.ALPHA and outside and not better
               and abs(change) > threshold_pct)
        deltas.append(NightDelta(case, label, len(hist), centre, min(hist), max(hist), x, change,
                                 p, q, better, reg))
    return Verdict(deltas, findings, len(earlier), threshold_pct)


HEAD = ["case", "metric", "earlier nights", "their median (range)", "tonight", "change %",
        "p / adjusted", "verdict"]


def markdown(v: Verdict, title: str, notes: list[str]) -> str:
    lines = [f"# copybench nightly: {title}", "",
             f"Judged against {v.nights} earlier comparable night(s). " + (
                 "Throughput and CPU: prediction test of tonight's median against the earlier "
                 "nights' medians (between-run spread, logs), p adjusted across every case x "
                 f"metric at {compare.ALPHA:g}; a regression is significant, outside their "
                 f"range, for the worse and beyond {v.threshold_pct:g}%."
                 if v.nights >= MIN_NIGHTS else
                 f"Fewer than {MIN_NIGHTS}: throughput and CPU not judged yet (a within-run test "
                 "against one night flags drift); status and copies judged against the latest "
                 "night."), ""]
    lines += [f"- {n}" for n in notes]
    lines += [f"- {'**REGRESSION** ' if f.regression else ''}{f.kind}: {f.text}"
              for f in v.findings]
    if v.deltas:
        rows = [[d.case, d.metric, str(d.nights), f"{d.centre:.4g} ({d.low:.4g}-{d.high:.4g})",
                 f"{d.new:.4g}", f"{d.change_pct:+.1f}",
                 f"{d.p:.3g} / {d.q:.3g}" if d.p is not None else "-",
                 _verdict(d)]
                for d in v.deltas]
        lines += ["", *md_table(HEAD, rows)]
    regs = v.regressions
    lines += ["", f"**{len(regs)} regression(s)**" + (":" if regs else "")]
    lines += [f"- {describe(r)}" for r in regs]
    return "\n".join(lines) + "\n"


def _verdict(d: NightDelta) -> str:
    if d.regression:
        return "REGRESSION"
    where = "within their range" if d.low <= d.new <= d.high else "outside their range"
    sig = "significant" if d.q is not None and d.q < compare.ALPHA else "not significant"
    return f"{'better' if d.better else 'worse'}, {where}, {sig}"


def describe(r) -> str:
    if isinstance(r, NightDelta):
        return (f"{r.case} {r.metric} {r.change_pct:+.1f}% against {r.nights} earlier nights "
                f"(adjusted p {r.q:.3g})")
    return compare.describe(r)
