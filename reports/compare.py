"""`bench compare`: per case deltas between runs, pyperf-style.

The first result is the baseline; each later one is compared with it case by case (same id).
A change counts only when it is significant: a two-sample Student's t-test on the measured
repeats at 95% (pyperf's `is_significant`: pooled variance, two-tailed critical values). Fewer
than two repeats on either side cannot be tested, so noise is never flagged: the row says
"n too small". A regression is a significant change for the worse larger than the threshold.

Runs from different machines (host, CPU model and count, architecture) or of different suites
are refused unless forced: their differences are not the code's."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from html import escape

from bench.errors import UsageError
from bench.results import CaseResult, RunResult
from reports.markdown import md_table

# (per-sample key, label, +1: higher is better / -1: lower is better)
METRICS = (
    ("gbps", "Gbit/s", +1),
    ("cpu_s_per_gb.sender", "sender CPU s/GB", -1),
    ("cpu_s_per_gb.receiver", "receiver CPU s/GB", -1),
)
MACHINE_KEYS = ("hostname", "cpu_model", "cpu_count", "arch")
DEFAULT_THRESHOLD_PCT = 5.0

# Two-tailed 95% critical values of Student's t by degrees of freedom (as pyperf's table).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
        17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
        25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def t_critical(df: int) -> float:
    if df in _T95:
        return _T95[df]
    return 2.021 if df <= 40 else 2.000 if df <= 60 else 1.980 if df <= 120 else 1.960


def t_score(a: list[float], b: list[float]) -> float:
    """Two-sample t statistic with pooled variance; inf when both are constant but differ."""
    na, nb = len(a), len(b)
    var = ((na - 1) * statistics.variance(a) + (nb - 1) * statistics.variance(b)) / (na + nb - 2)
    diff = statistics.fmean(b) - statistics.fmean(a)
    if var == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var * (1 / na + 1 / nb))


def significant(a: list[float], b: list[float]) -> bool | None:
    """None: cannot be tested (fewer than 2 values on a side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    return abs(t_score(a, b)) >= t_critical(len(a) + len(b) - 2)


@dataclass(frozen=True)
class Delta:
    case: str
    metric: str
    base: float
    new: float
    n_base: int
    n_new: int
    change_pct: float           # (new - base) / base, signed as measured
    significant: bool | None
    better: bool                # the direction is an improvement
    regression: bool

    @property
    def verdict(self) -> str:
        if self.significant is None:
            return "n too small to test"
        if not self.significant:
            return "not significant"
        return ("better" if self.better else "worse") + (" — REGRESSION" if self.regression else "")


def _values(cr: CaseResult, key: str) -> list[float]:
    from bench.results import dig
    return [v for v in (dig(s, key) for s in cr.measured()) if isinstance(v, (int, float))]


def machine(result: RunResult) -> dict:
    m = result.metadata or {}
    return {k: m.get(k) for k in MACHINE_KEYS}


def check_comparable(results: list[RunResult], names: list[str], force: bool) -> list[str]:
    """Raises UsageError for runs of different suites or machines unless forced; returns the
    differences that were forced past (shown in the report)."""
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
        diff = {k: (machine(base)[k], machine(r)[k]) for k in MACHINE_KEYS
                if machine(base)[k] != machine(r)[k]}
        if diff:
            said = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in diff.items())
            if not force:
                raise UsageError(f"{name} ran on a different machine than {base_name} ({said})",
                                 "compare runs from one machine, or pass --force")
            notes.append(f"{name}: different machine ({said})")
        kb, kr = (base.metadata or {}).get("kernel"), (r.metadata or {}).get("kernel")
        if kb != kr:
            notes.append(f"{name}: kernel {kr} (baseline {kb})")
    return notes


def compare(base: RunResult, new: RunResult,
            threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> list[Delta]:
    by_id = {c.id: c for c in base.cases if c.status == "ok"}
    out = []
    for c in new.cases:
        b = by_id.get(c.id)
        if b is None or c.status != "ok":
            continue
        for key, label, sign in METRICS:
            va, vb = _values(b, key), _values(c, key)
            if not va or not vb:
                continue
            ma, mb = statistics.median(va), statistics.median(vb)
            if not ma:
                continue
            change = 100 * (mb - ma) / ma
            sig = significant(va, vb)
            better = change * sign > 0
            out.append(Delta(c.id, label, ma, mb, len(va), len(vb), change, sig, better,
                             bool(sig) and not better and abs(change) > threshold_pct))
    return out


def unmatched(base: RunResult, new: RunResult) -> list[str]:
    ok_b = {c.id for c in base.cases if c.status == "ok"}
    ok_n = {c.id for c in new.cases if c.status == "ok"}
    return sorted(ok_b ^ ok_n)


@dataclass
class Comparison:
    names: list[str]
    results: list[RunResult]
    threshold_pct: float
    notes: list[str]
    deltas: list[list[Delta]]     # per later result, against the first

    @property
    def regressions(self) -> list[Delta]:
        return [d for ds in self.deltas for d in ds if d.regression]


def run(results: list[RunResult], names: list[str], threshold_pct: float = DEFAULT_THRESHOLD_PCT,
        force: bool = False) -> Comparison:
    if len(results) < 2:
        raise UsageError("compare needs two result files or more", "bench compare BASE.json NEW.json")
    notes = check_comparable(results, names, force)
    deltas = [compare(results[0], r, threshold_pct) for r in results[1:]]
    for r, name in zip(results[1:], names[1:], strict=True):
        only = unmatched(results[0], r)
        if only:
            notes.append(f"{name}: not compared (ok in one run only): {', '.join(only)}")
    return Comparison(names, results, threshold_pct, notes, deltas)


HEAD = ["case", "metric", "baseline", "new", "change %", "n (base / new)", "significance"]


def _rows(ds: list[Delta]) -> list[list[str]]:
    return [[d.case, d.metric, f"{d.base:.4g}", f"{d.new:.4g}", f"{d.change_pct:+.1f}",
             f"{d.n_base} / {d.n_new}", d.verdict] for d in ds]


def markdown(cmp: Comparison) -> str:
    lines = [f"# copybench compare: baseline {cmp.names[0]}", "",
             f"Significance: two-sample t-test at 95% on the measured repeats; a regression is a "
             f"significant change for the worse beyond {cmp.threshold_pct:g}%.", ""]
    lines += [f"- {n}" for n in cmp.notes]
    for name, ds in zip(cmp.names[1:], cmp.deltas, strict=True):
        lines += ["", f"## {name}", "", *md_table(HEAD, _rows(ds))]
    regs = cmp.regressions
    lines += ["", f"**{len(regs)} regression(s)**" + (": " + ", ".join(
        f"{d.case} {d.metric} {d.change_pct:+.1f}%" for d in regs) if regs else "")]
    return "\n".join(lines) + "\n"


def html(cmp: Comparison) -> str:
    parts = [f"<h1>copybench compare: baseline {escape(cmp.names[0])}</h1>"]
    parts += [f'<div class="warn">{escape(n)}</div>' for n in cmp.notes]
    for name, ds in zip(cmp.names[1:], cmp.deltas, strict=True):
        parts.append(f"<h2>{escape(name)}</h2><table><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h in HEAD) + "</tr>")
        for d, row in zip(ds, _rows(ds), strict=True):
            style = ' style="background:#f8d7da"' if d.regression else ""
            parts.append(f"<tr{style}>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    parts.append(f"<p><b>{len(cmp.regressions)} regression(s)</b> (threshold "
                 f"{cmp.threshold_pct:g}%, t-test at 95%).</p>")
    from reports.html import CSS
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>copybench '
            f"compare</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
