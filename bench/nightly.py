"""`bench nightly`: run a suite, store the run in the history, write its reports, compare it
with the previous comparable run (same suite, same machine) and exit non-zero on a regression
beyond the threshold (or a run that did not complete). What CI and cron call every night."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from bench.history import History
from bench.results import RunResult, load

EXIT_REGRESSION = 1


def after_run(result_path: Path, db: Path | None, out: Path, threshold_pct: float,
              say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> int:
    """Everything after the run (separate, so it is tested without running a benchmark)."""
    from reports import compare, publish
    result: RunResult = load(result_path)
    with History(db) as hist:
        run_id, new = hist.add(result, str(result_path))
        say(f"history: run {run_id} {'stored' if new else 'already stored'} in {hist.path}")
        prev = hist.previous(result, before_id=run_id)
    if prev is None:
        say("nightly: no earlier complete run of this suite on this machine: nothing to compare")
        return 0 if result.status == "complete" else EXIT_REGRESSION
    prev_id, prev_result = prev
    names = [f"history run {prev_id}", str(result_path)]
    cmp = compare.run([prev_result, result], names, threshold_pct)
    stem = Path(result_path).stem
    written = publish.write_atomic(out / f"{stem}-compare.md", compare.markdown(cmp)), \
        publish.write_atomic(out / f"{stem}-compare.html", compare.html(cmp))
    print(compare.markdown(cmp))
    say("compare: " + ", ".join(str(p) for p in written))
    if cmp.regressions:
        say(f"nightly: {len(cmp.regressions)} regression(s) beyond {threshold_pct:g}%")
        return EXIT_REGRESSION
    return 0 if result.status == "complete" else EXIT_REGRESSION
