"""`bench nightly` judges a night against earlier nights' spread: simulated nights with
run-to-run drift larger than the within-run spread (what this host shows) rarely flag, a real
drop does, and a lab result without its host is compared with nothing."""

import random

from bench import nightly, results
from reports import nightly_gate


def _night(rng, cases=19, repeats=5, within=0.04, drift=0.08, factor=1.0):
    r = results.RunResult(suite="smoke", metadata={"hostname": "h", "cpu_model": "c",
                                                   "cpu_count": 2, "arch": "x86_64",
                                                   "virtualization": "none"}, status="complete")
    for i in range(cases):
        shift = [rng.lognormvariate(0, drift) for _ in range(3)]   # this night's drift
        f = factor if i == 0 else 1.0
        samples = [{"gbps": 10 * f * shift[0] * rng.lognormvariate(0, within),
                    "cpu_s_per_gb": {"sender": 0.3 * shift[1] * rng.lognormvariate(0, within),
                                     "receiver": 0.4 * shift[2] * rng.lognormvariate(0, within)}}
                   for _ in range(repeats)]
        r.cases.append(results.CaseResult(id=f"c{i}", workload="tcp", size=4096, topology="veth",
                                          samples=samples))
    return r


def test_drifting_unchanged_nights_rarely_flag():
    rng = random.Random(3)
    flagged = 0
    sims = 100
    for _ in range(sims):
        earlier = [_night(rng) for _ in range(10)]
        v = nightly_gate.judge(earlier, _night(rng), 5.0)
        assert len(v.deltas) == 57
        flagged += bool(v.regressions)
    assert flagged / sims <= 0.05


def test_a_large_drop_against_a_steady_history_is_flagged():
    rng = random.Random(4)
    hits = 0
    for _ in range(20):
        earlier = [_night(rng, drift=0.03) for _ in range(10)]
        v = nightly_gate.judge(earlier, _night(rng, drift=0.03, factor=0.7), 5.0)
        hits += any(d.case == "c0" and d.metric == "Gbit/s" for d in v.regressions)
    assert hits >= 18


def test_nightly_uses_the_window_and_refuses_an_unknown_host(tmp_path, data_dir):
    db, out = tmp_path / "h.sqlite3", tmp_path / "n"
    out.mkdir()
    rng = random.Random(5)
    codes = []
    for i in range(5):
        night = _night(rng, cases=2)
        night.started = f"2026-12-0{i + 1}T00:00:00+00:00"
        p = tmp_path / f"night{i}.json"
        results.save(night, p)
        codes.append(nightly.after_run(p, db, out, 5.0, say=lambda s: None))
    assert codes == [0, 0, 0, 0, 0]
    assert "Judged against 4 earlier comparable night(s)" in (out / "night4-compare.md").read_text()
    said = []
    lab = tmp_path / "lab.json"
    results.save(results.load(data_dir / "lab-msg-zerocopy.json"), lab)
    lab2 = tmp_path / "lab2.json"
    r = results.load(data_dir / "lab-msg-zerocopy.json")
    r.started = "2030-01-01T00:00:00+00:00"
    results.save(r, lab2)
    nightly.after_run(lab, db, out, 5.0, say=said.append)
    nightly.after_run(lab2, db, out, 5.0, say=said.append)
    assert any("not comparable: unknown host" in s for s in said)


def test_a_flag_stands_only_if_the_rerun_confirms_it(tmp_path):
    out = tmp_path / "n"
    out.mkdir()

    def history(db):
        rng = random.Random(6)
        for i in range(5):
            night = _night(rng, cases=2, drift=0.02)
            night.started = f"2026-12-0{i + 1}T00:00:00+00:00"
            p = tmp_path / f"{db.stem}-night{i}.json"
            results.save(night, p)
            assert nightly.after_run(p, db, out, 5.0, say=lambda s: None) == 0
        return rng

    def night_path(rng, name, factor):
        r = _night(rng, cases=2, drift=0.02, factor=factor)
        r.started = "2026-12-09T00:00:00+00:00"
        p = tmp_path / name
        results.save(r, p)
        return p

    for factor_again, expected in ((0.6, 1), (1.0, 0)):
        db = tmp_path / f"h{expected}.sqlite3"
        rng = history(db)
        drop = night_path(rng, f"drop{expected}.json", 0.6)
        asked, said = [], []

        def rerun(cases, rng=rng, f=factor_again, e=expected, asked=asked):
            asked.append(sorted(c.id for c in cases))
            return night_path(rng, f"again{e}.json", f)

        assert nightly.after_run(drop, db, out, 5.0, say=said.append, rerun=rerun) == expected
        assert asked == [["c0"]]
        assert any(s.startswith("nightly: re-running c0") for s in said)
        if not expected:
            assert any("not confirmed by the re-run" in s for s in said)


def test_a_night_whose_p99_doubled_is_flagged_on_p99():
    rng = random.Random(5)

    def night(p99):
        r = results.RunResult(suite="latency", metadata={"hostname": "h"}, status="complete")
        r.cases.append(results.CaseResult(
            id="tcp_rr-64-veth", workload="tcp_rr", size=64, topology="veth",
            params={"in_flight": 1},
            samples=[{"latency": {"p50_ns": 20_000 * rng.lognormvariate(0, 0.03),
                                  "p99_ns": p99 * rng.lognormvariate(0, 0.03),
                                  "transactions_per_s": 48_000 * rng.lognormvariate(0, 0.03),
                                  "cpu_us_per_transaction": 10 * rng.lognormvariate(0, 0.03)}}
                     for _ in range(5)]))
        return r

    v = nightly_gate.judge([night(40_000) for _ in range(10)], night(80_000), 5.0)
    assert {d.metric for d in v.deltas} == {"p50 round trip ns", "p99 round trip ns",
                                            "transactions/s", "requester CPU µs/transaction"}
    assert [d.metric for d in v.regressions] == ["p99 round trip ns"]
