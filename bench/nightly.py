"""`bench nightly`: run a suite, store the run in the history, write its reports, judge it
against earlier comparable nights (reports/nightly_gate.py: the between-night spread of a
window of up to `window` nights, not one previous run) and exit 1 on a regression (or a run
that did not complete). What CI and cron call every night.

Comparable: same suite, machine (the host under a VM included: a lab result without its host
is "unknown host" and compared with nothing) and run parameters. A throughput/CPU flag is
confirmed before the verdict: the flagged cases' workloads and sizes are run once more (`rerun`,
the same runner call filtered with --workload/--sizes) and judged against the same earlier
nights; only flags raised by both runs stand. The re-run is kept beside the night, not stored in
the history (it is not a whole suite)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from html import escape
from pathlib import Path

from bench.history import History, window
from bench.results import RunResult, load

EXIT_REGRESSION = 1
DEFAULT_WINDOW = 10


def night(suite, options, db: Path | None, threshold_pct: float, nights: int = DEFAULT_WINDOW,
          shown: Callable[[object], None] = lambda outcome: None) -> int:
    """`bench nightly`: the run (bench/session.py, as `bench run`), then `after_run`; the
    flagged cases are re-run through the same session. `shown(outcome)` prints each run."""
    from bench import session
    outcome = session.run(suite, options)
    shown(outcome)
    rc = 0 if outcome.result.status == "complete" else EXIT_REGRESSION

    def rerun(cases) -> Path | None:
        """The flagged cases again: the same run, filtered to their workloads and sizes."""
        again = session.run(suite, options.only({c.workload for c in cases},
                                                {c.size for c in cases}))
        shown(again)
        return again.path

    return after_run(outcome.path, db, Path(options.out), threshold_pct, nights=nights,
                     rerun=rerun) or rc


def after_run(result_path: Path, db: Path | None, out: Path, threshold_pct: float,
              say: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
              nights: int = DEFAULT_WINDOW,
              rerun: Callable[[list], Path | None] | None = None) -> int:
    """Everything after the run (separate, so it is tested without running a benchmark)."""
    from reports import gate_exact, nightly_gate, publish
    result: RunResult = load(result_path)
    with History(db) as hist:
        run_id, new = hist.add(result, str(result_path))
        say(f"history: run {run_id} {'stored' if new else 'already stored'} in {hist.path}")
        candidates = window(hist, result, before_id=run_id, limit=4 * nights)
    notes, earlier = [], []
    for rid, r in candidates:
        why = gate_exact.machine_differences(r, result) or gate_exact.param_differences(r, result)
        if why:
            notes.append(f"history run {rid} not comparable: {why[0]}")
        elif len(earlier) < nights:
            earlier.append((rid, r))
    for n in notes:
        say(f"nightly: {n}")
    if not earlier:
        say("nightly: no earlier comparable complete run of this suite on this machine: "
            "nothing to compare")
        return 0 if result.status == "complete" else EXIT_REGRESSION
    verdict = nightly_gate.judge([r for _, r in earlier], result, threshold_pct)
    title = f"{result_path} against history runs {', '.join(str(i) for i, _ in earlier)}"
    text = nightly_gate.markdown(verdict, title, notes)
    stem = Path(result_path).stem
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>copybench '
            f"nightly</title></head><body><pre>{escape(text)}</pre></body></html>\n")
    written = publish.write_atomic(out / f"{stem}-compare.md", text), \
        publish.write_atomic(out / f"{stem}-compare.html", page)
    print(text)
    say("compare: " + ", ".join(str(p) for p in written))
    regs = verdict.regressions
    flagged = [r for r in regs if isinstance(r, nightly_gate.NightDelta)]
    if flagged and rerun is not None:
        ids = {r.case for r in flagged}
        cases = [c for c in result.cases if c.id in ids]
        say(f"nightly: re-running {', '.join(sorted(ids))} before the verdict")
        again_path = rerun(cases)
        confirmed: set[tuple[str, str]] = set()
        if again_path is not None:
            again = nightly_gate.judge([r for _, r in earlier], load(again_path), threshold_pct)
            confirmed = {(d.case, d.metric) for d in again.deltas if d.regression}
        for r in flagged:
            if (r.case, r.metric) not in confirmed:
                say(f"nightly: not confirmed by the re-run ({again_path}): "
                    f"{nightly_gate.describe(r)}")
        regs = [r for r in regs if not isinstance(r, nightly_gate.NightDelta)
                or (r.case, r.metric) in confirmed]
    elif flagged:
        say("nightly: flagged cases were not re-run before this verdict (no runner given)")
    if regs:
        for r in regs:
            say(f"nightly: REGRESSION {nightly_gate.describe(r)}")
        say(f"nightly: {len(regs)} regression(s)")
        return EXIT_REGRESSION
    return 0 if result.status == "complete" else EXIT_REGRESSION
