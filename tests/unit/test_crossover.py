"""The zerocopy break-even (bench/crossover.py): each zerocopy path against its own copying
twin, fixed buffers apart, "clear" only on >= 5 repeats per side with a rank test, and the
reports and plots reading that one result."""

from pathlib import Path

from bench.crossover import MIN_REPEATS, breakeven, entries
from bench.results import CaseResult, RunResult, load
from reports import html, markdown, plots

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "lab-zerocopy-crossover-2node.json"
FIVE = [1.0, 1.02, 0.98, 1.01, 0.99]            # five repeats around 1 s/GB


def _scaled(k: float, values=FIVE) -> list[float]:
    return [round(k * v, 4) for v in values]


def _result(paths: dict, topology: str = "veth") -> RunResult:
    """paths: {workload: ({size: [sender CPU s/GB per repeat]}, zc)} where zc is the share of
    completions the kernel reported zerocopy (None: the path reports none)."""
    def case(w, size, values, zc=None):
        samples = [{"cpu_s_per_gb": {"sender": v}} for v in values]
        if zc is not None:
            for s in samples:
                z = round(1000 * zc)
                s["zerocopy"] = {"send_calls": 1000, "completed": 1000, "zerocopy": z,
                                 "copied": 1000 - z, "copied_bytes": (1000 - z) * size}
        samples.insert(0, {"warmup": True, "cpu_s_per_gb": {"sender": 99.0}})
        return CaseResult(id=f"{w}-{size}-{topology}", workload=w, size=size, topology=topology,
                          samples=samples)
    cases = [case(w, s, v, zc) for w, (per_size, zc) in paths.items() for s, v in per_size.items()]
    return RunResult(suite="zerocopy-crossover", metadata={}, cases=cases)


def _by(result) -> dict:
    return {e["path"]: e for e in breakeven(result)}


def test_the_first_size_from_which_the_path_stays_cheaper_is_clear_on_five_repeats():
    tcp = {1024: FIVE, 16384: FIVE, 65536: FIVE, 262144: FIVE}
    zc = {1024: _scaled(1.5), 16384: _scaled(0.8), 65536: _scaled(1.1), 262144: _scaled(0.5)}
    e = _by(_result({"tcp": (tcp, None), "msg_zerocopy": (zc, 0.9)}))["msg_zerocopy"]
    assert e["baseline"] == "tcp" and [p["size"] for p in e["points"]] == [1024, 16384, 65536,
                                                                            262144]
    # 16384 is cheaper by itself, but 65536 is not: the crossing is at 262144, not before
    b = e["breakeven"]
    assert b["size"] == 262144 and b["clear"] is True and b["ratio"] == 0.5
    p = e["points"][-1]
    assert (p["n_path"], p["n_twin"]) == (5, 5)
    assert p["p_mann_whitney"] == round(2 / 252, 4)   # exact, 5 vs 5, fully separated
    assert "from 262144 B up" in e["verdict"] and "not at 65536 B" in e["verdict"]
    assert "clear (Mann-Whitney p = 0.008, 5 vs 5 repeats)" in e["verdict"]


def test_io_uring_zc_is_judged_against_io_uring_not_tcp():
    """io_uring's batching makes it cheaper than tcp with or without zerocopy: against tcp
    io_uring_zc would have a clear break-even; against io_uring it has none."""
    sizes = (4096, 65536)
    r = _result({"tcp": ({s: FIVE for s in sizes}, None),
                 "io_uring": ({s: _scaled(0.5) for s in sizes}, None),
                 "io_uring_zc": ({4096: _scaled(0.6), 65536: _scaled(0.55)}, 0.95)})
    e = _by(r)["io_uring_zc"]
    assert e["baseline"] == "io_uring" and e["breakeven"] is None
    assert e["verdict"].startswith("never cheaper than io_uring")
    assert [p["ratio"] for p in e["points"]] == [1.2, 1.1]
    # the same numbers against tcp (the old rule) would have said "cheaper from 4096 B, clear"
    assert all(v < 1 for v in _scaled(0.6) + _scaled(0.55))


def test_a_zerocopy_path_without_its_twin_is_not_compared():
    r = _result({"tcp": ({4096: FIVE, 65536: FIVE}, None),
                 "io_uring_zc": ({4096: _scaled(0.5), 65536: _scaled(0.4)}, 0.95)})
    (e,) = breakeven(r)
    assert e["path"] == "io_uring_zc" and e["breakeven"] is None and e["points"] == []
    assert e["verdict"].startswith("not compared: its copying twin io_uring did not run")


def test_fixed_buffers_are_reported_apart_never_as_a_break_even():
    r = _result({"io_uring": ({4096: FIVE, 65536: FIVE}, None),
                 "io_uring_fixed": ({4096: _scaled(1.2), 65536: _scaled(0.5)}, None)})
    (e,) = breakeven(r)
    assert e["kind"] == "fixed buffers" and e["baseline"] == "io_uring"
    assert e["breakeven"] is None and "cheaper" not in e["verdict"]
    assert e["verdict"].startswith("fixed buffers, not zerocopy")
    assert "1.20 at 4096 B, 0.50 at 65536 B" in e["verdict"]
    md = markdown.breakeven_table(r)
    assert "**io_uring_fixed** vs io_uring (veth): fixed buffers" in md


def test_fewer_than_five_repeats_is_never_clear():
    three = FIVE[:3]
    r = _result({"tcp": ({4096: three, 65536: three}, None),
                 "msg_zerocopy": ({4096: _scaled(1.5, three), 65536: _scaled(0.2, three)}, 0.9)})
    e = _by(r)["msg_zerocopy"]
    assert e["breakeven"]["size"] == 65536 and e["breakeven"]["clear"] is False
    assert f"not enough repeats (n < {MIN_REPEATS}: 3 vs 3)" in e["verdict"]
    assert "clear (" not in e["verdict"]


def test_mostly_copied_sends_are_not_a_clear_break_even():
    """The two-node lab's io_uring_zc at 64 KiB: 10.6% of the sends went zerocopy. However
    clear the CPU saving, it is not zerocopy's."""
    r = _result({"tcp": ({4096: FIVE, 65536: FIVE}, None),
                 "msg_zerocopy": ({4096: _scaled(1.5), 65536: _scaled(0.4)}, 0.106)})
    e = _by(r)["msg_zerocopy"]
    assert e["breakeven"]["size"] == 65536 and e["breakeven"]["clear"] is False
    assert "only 10.6% of sends went zerocopy there, mostly copied" in e["verdict"]


def test_overlapping_repeats_are_within_the_noise():
    twin = [1.0, 1.2, 0.8, 1.1, 0.9]
    path = [0.95, 1.15, 0.75, 1.05, 0.85]              # median lower, ranks interleaved
    r = _result({"tcp": ({4096: twin}, None), "msg_zerocopy": ({4096: path}, 0.9)})
    e = _by(r)["msg_zerocopy"]
    assert e["breakeven"]["clear"] is False and e["points"][0]["p_mann_whitney"] >= 0.05
    assert "within the noise (Mann-Whitney p = " in e["verdict"]


def test_no_zerocopy_happened_is_said_never_a_break_even():
    r = _result({"tcp": ({4096: FIVE, 65536: FIVE}, None),
                 "msg_zerocopy": ({4096: _scaled(0.9), 65536: _scaled(0.4)}, 0.0)})
    e = _by(r)["msg_zerocopy"]
    assert e["breakeven"] is None and e["verdict"].startswith("no zerocopy happened")


def test_reports_and_plot_read_the_stored_entries_and_recompute_stale_ones():
    r = _result({"tcp": ({4096: FIVE, 65536: FIVE}, None),
                 "msg_zerocopy": ({4096: _scaled(1.2), 65536: _scaled(0.3)}, 0.8)})
    r.analysis["breakeven"] = breakeven(r)
    r.analysis["breakeven"][0]["points"][0]["ratio"] = 7.0     # marks what the readers use
    assert plots.breakeven_data([r]) == {"msg_zerocopy / tcp veth": [(4096, 7.0), (65536, 0.3)]}
    md = markdown.breakeven_table(r)
    assert "| msg_zerocopy | tcp | veth | 4096 | 7.000 |" in md
    assert "| msg_zerocopy | tcp | veth | 65536 | 0.300 |" in md and "5 / 5" in md
    assert "Zerocopy break-even" in html.breakeven_section(r) and "7.000" in html.render([r])
    for e in r.analysis["breakeven"]:                 # a file written under the old rule
        del e["method"]
    assert entries(r)[0]["points"][0]["ratio"] == 1.2
    assert markdown.breakeven_table(_result({})) is None


def test_the_two_node_golden_is_no_longer_clear():
    """The golden run (2 measured repeats, no io_uring row) said "cheaper from 64 KiB, clear"
    for io_uring_zc against tcp with 10.6% of its sends zerocopy there."""
    r = load(GOLDEN)
    by = {e["path"]: e for e in entries(r)}
    assert by == {e["path"]: e for e in breakeven(r)}          # its stored analysis is current
    zc = by["msg_zerocopy"]
    assert zc["baseline"] == "tcp" and zc["breakeven"]["size"] == 65536
    assert zc["breakeven"]["clear"] is False and "not enough repeats (n < 5: 2 vs 2)" in zc["verdict"]
    assert by["io_uring_zc"]["breakeven"] is None
    assert "its copying twin io_uring did not run" in by["io_uring_zc"]["verdict"]
    assert by["io_uring_fixed"]["kind"] == "fixed buffers"
    assert by["io_uring_fixed"]["breakeven"] is None
    md, page = markdown.breakeven_table(r), html.render([r])
    for text in (md, page):
        assert "cheaper than tcp from 65536 B up" in text and "clear (" not in text
        assert "io_uring_zc" in text and "cheaper than io_uring" not in text
