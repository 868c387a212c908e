"""compare (pyperf-style significance, machine checks, exit codes) and history (SQLite round
trips, duplicates, locked and corrupt databases) and nightly's after-run step."""

import copy
import json
import sqlite3
import subprocess
import sys

import pytest

from bench import nightly, results
from bench.errors import UsageError
from bench.history import SCHEMA_VERSION, History
from reports import compare

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _run(gbps: list[float], host="h", suite="s") -> results.RunResult:
    r = results.RunResult(suite=suite, metadata={"hostname": host, "cpu_model": "c", "cpu_count": 2,
                                                 "arch": "x86_64", "kernel": "k"}, status="complete")
    r.cases.append(results.CaseResult(id="tcp-65536-veth", workload="tcp", size=65536,
                                      topology="veth", samples=[{"gbps": g} for g in gbps]))
    return r


def test_noise_is_not_flagged_and_a_real_drop_is():
    base = _run([10.0, 10.4, 9.6, 10.2, 9.8])
    noisy = _run([9.4, 10.6, 9.9, 10.8, 9.1])      # -1% median, overlapping: noise
    [d] = compare.compare(base, noisy)
    assert d.significant is False and not d.regression
    slower = _run([8.0, 8.2, 7.9, 8.1, 8.0])
    [d] = compare.compare(base, slower)
    assert d.significant and d.regression and d.change_pct == pytest.approx(-20.0)
    faster = _run([12.0, 12.1, 11.9, 12.2, 12.0])
    [d] = compare.compare(base, faster)
    assert d.significant and d.better and not d.regression


def test_one_repeat_cannot_be_tested():
    [d] = compare.compare(_run([10.0]), _run([5.0]))
    assert d.significant is None and not d.regression and d.verdict == "n too small to test"


def test_threshold_spares_small_significant_changes():
    [d] = compare.compare(_run([10.0, 10.0, 10.01, 10.02, 10.03]),
                          _run([9.8, 9.8, 9.81, 9.82, 9.83]), threshold_pct=5)
    assert d.significant and not d.better and not d.regression


def test_different_machines_or_suites_are_refused_unless_forced():
    with pytest.raises(UsageError, match="different machine"):
        compare.run([_run([1, 2]), _run([1, 2], host="other")], ["a", "b"])
    with pytest.raises(UsageError, match="different suites"):
        compare.run([_run([1, 2]), _run([1, 2], suite="t")], ["a", "b"])
    cmp = compare.run([_run([1, 2]), _run([1, 2], host="other")], ["a", "b"], force=True)
    assert any("different machine" in n for n in cmp.notes)


def _write(tmp_path, name, r):
    p = tmp_path / name
    results.save(r, p)
    return p


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def test_compare_cli_exit_codes_and_outputs(tmp_path):
    a = _write(tmp_path, "a.json", _run([10.0, 10.1, 9.9, 10.2, 9.8]))
    b = _write(tmp_path, "b.json", _run([7.0, 7.1, 6.9, 7.2, 6.8]))
    p = _bench("compare", a, b, "--md", tmp_path / "c.md", "--html", tmp_path / "c.html")
    assert p.returncode == 1 and "REGRESSION" in p.stdout
    assert "REGRESSION" in (tmp_path / "c.md").read_text()
    assert "<table>" in (tmp_path / "c.html").read_text()
    assert _bench("compare", a, a).returncode == 0
    other = _write(tmp_path, "o.json", _run([10.0, 10.1], host="elsewhere"))
    p = _bench("compare", a, other, "--md", tmp_path / "o.md")
    assert p.returncode == 2 and "--force" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o.md").exists()


@pytest.mark.parametrize("content", [None, "", "{\"schema_version\": 2, \"suite\": \"s\", \"cas",
                                     "{\"schema_version\": 99}", "[1, 2]",
                                     "{\"schema_version\": 2, \"cases\": [\"x\"]}"],
                         ids=["directory", "empty", "truncated", "newer", "not-a-result", "corrupt"])
def test_bad_input_is_one_message_exit_2_nothing_written(tmp_path, content):
    bad = tmp_path / "bad.json"
    if content is None:
        bad.mkdir()
    else:
        bad.write_text(content)
    good = _write(tmp_path, "good.json", _run([1.0, 2.0]))
    for args in (["report", bad, "--html", tmp_path / "r.html", "--md", tmp_path / "r.md"],
                 ["report", good, bad, "--html", tmp_path / "r.html"],
                 ["compare", good, bad, "--md", tmp_path / "c.md"],
                 ["history", "add", good, bad, "--db", tmp_path / "h.sqlite3"]):
        p = _bench(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr and "bench: fix:" in p.stderr
        assert len([ln for ln in p.stderr.splitlines() if ln.startswith("bench: error")]) == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.json", "good.json"]


def test_report_cli_writes_html_and_markdown(tmp_path, data_dir):
    p = _bench("report", data_dir / "smoke-example.json", "--html", tmp_path / "r.html",
               "--md", tmp_path / "r.md")
    assert p.returncode == 0, p.stderr
    assert "udp-1472-veth-b32" in (tmp_path / "r.html").read_text()
    assert "| udp-1472-veth-b32 |" in (tmp_path / "r.md").read_text()
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".")] == []   # no temp left


def test_history_round_trip(tmp_path, data_dir):
    db = tmp_path / "h.sqlite3"
    r = results.load(data_dir / "smoke-example.json")
    with History(db) as h:
        assert h.add(r, "x") == (1, True)
        assert h.add(r, "x") == (1, False)                 # the same run is stored once
        assert h.load(1).to_json() == r.to_json()          # nothing lost
        assert [run.cases for run in h.runs()] == [3]
        assert h.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert h.previous(r, before_id=1) is None
        assert set(h.trend()) == {c.id for c in r.cases}
    p = _bench("history", "list", "--db", db)
    assert p.returncode == 0 and "smoke" in p.stdout
    p = _bench("history", "plot", "--db", db, "--out", tmp_path / "t.html")
    assert p.returncode == 0 and "data:image/png;base64," in (tmp_path / "t.html").read_text()


def test_history_refuses_newer_schema_and_corrupt_files(tmp_path):
    newer = tmp_path / "n.sqlite3"
    con = sqlite3.connect(newer)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(UsageError, match="newer"):
        History(newer)
    corrupt = tmp_path / "c.sqlite3"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    p = _bench("history", "list", "--db", corrupt)
    assert p.returncode == 2 and "corrupt" in p.stderr and "Traceback" not in p.stderr
    assert corrupt.read_bytes() == b"this is not sqlite" * 100      # left as it was


def test_locked_history_is_a_clear_message_and_loses_nothing(tmp_path, data_dir):
    db = tmp_path / "h.sqlite3"
    r = results.load(data_dir / "smoke-example.json")
    with History(db) as h:
        h.add(r)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")                        # another writer holds the lock
    try:
        other = copy.deepcopy(r)
        other.started = "2030-01-01T00:00:00+00:00"
        with History(db, timeout=0.2) as h, pytest.raises(UsageError, match="locked"):
            h.add(other)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with History(db) as h:
        assert len(h.runs()) == 1


def test_nightly_compares_with_the_previous_comparable_run(tmp_path):
    db, out = tmp_path / "h.sqlite3", tmp_path / "night"
    out.mkdir()
    first = _write(tmp_path, "first.json", _run([10.0, 10.1, 9.9, 10.2, 9.8]))
    assert nightly.after_run(first, db, out, 5.0, say=lambda s: None) == 0
    for i, vals in enumerate(([10.05, 10.0, 9.95], [10.3, 10.2, 10.4], [9.7, 9.8, 9.75])):
        same = _run(vals)
        same.started = f"2026-12-0{i + 2}T00:00:00+00:00"
        same = _write(tmp_path, f"same{i}.json", same)
        assert nightly.after_run(same, db, out, 5.0, say=lambda s: None) == 0
    worse = _run([7.0, 7.1, 6.9, 7.2, 6.8])
    worse.started = "2026-12-09T00:00:00+00:00"
    worse = _write(tmp_path, "worse.json", worse)
    assert nightly.after_run(worse, db, out, 5.0, say=lambda s: None) == 1
    assert "REGRESSION" in (out / "worse-compare.md").read_text()
    elsewhere = _write(tmp_path, "elsewhere.json", _run([1.0, 1.1], host="other"))
    assert nightly.after_run(elsewhere, db, out, 5.0, say=lambda s: None) == 0   # nothing comparable
    assert json.loads(first.read_text())["suite"] == "s"


def test_history_keeps_round_trips_and_upgrades_a_version_1_file(tmp_path):
    from bench.results import CaseResult, RunResult
    old = tmp_path / "v1.sqlite3"
    con = sqlite3.connect(old)
    con.executescript(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, suite TEXT "
        "NOT NULL, started TEXT, status TEXT, hostname TEXT, cpu_model TEXT, cpu_count "
        "INTEGER, arch TEXT, kernel TEXT, git_sha TEXT, source TEXT, stored_at TEXT NOT NULL "
        "DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), doc TEXT NOT NULL);"
        "CREATE TABLE cases (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, "
        "case_id TEXT NOT NULL, workload TEXT, size INTEGER, topology TEXT, status TEXT, gbps "
        "REAL, sender_cpu_gb REAL, receiver_cpu_gb REAL, n INTEGER, PRIMARY KEY (run_id, "
        "case_id)); PRAGMA user_version = 1;")
    con.close()
    r = RunResult(suite="latency", metadata={"hostname": "h"}, status="complete")
    r.cases.append(CaseResult(id="tcp_rr-64-veth", workload="tcp_rr", size=64,
                              topology="veth", params={"in_flight": 1},
                              samples=[{"gbps": 0.01, "latency": {"p50_ns": p, "p99_ns": 3 * p}}
                                       for p in (20_000, 22_000, 21_000)]))
    with History(old) as h:
        assert h.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        h.add(r, "x")
        row = h.db.execute("SELECT gbps, p50_ns, p99_ns, n FROM cases").fetchone()
        assert row == (None, 21_000, 63_000, 3)      # request bytes/s is no figure of it
        assert h.latency_trend() == {"tcp_rr-64-veth": [(r.started, 21_000)]}
        assert h.trend() == {}
        from reports import trends
        assert "p50 round trip" not in trends.page(h.trend(), "t")
        assert "data:image/png;base64," in trends.page(h.trend(), "t", h.latency_trend())
