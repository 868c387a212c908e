"""The HTML report from every golden result: self-contained, holds the table, the seed's
diagrams with the measured counts, "not measured" where the result has nothing, and the
emulation and soft-RoCE notes."""

import re
import warnings
from pathlib import Path

import pytest

from bench import results
from reports import diagrams, figures, html, plots, wire

GOLDEN = sorted((Path(__file__).resolve().parents[1] / "data").glob("*.json"))
GOLDEN = [p for p in GOLDEN if not p.name.startswith("iperf3")]


def test_goldens_exist():
    names = {p.name for p in GOLDEN}
    assert {"smoke-example.json", "socket-vs-rdma-local.json", "lab-rdma-softroce.json",
            "lab-seed-udp-1000.json", "lab-msg-zerocopy.json"} <= names


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_every_plot_of_every_golden_draws_without_warnings(path):
    r = results.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = plots.draw_all([r])
        for _, _, fig in drawn:
            assert plots.png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn, "no plot drawn"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_html_is_self_contained_and_holds_every_case(path):
    r = results.load(path)
    page = html.render([r], [str(path)])
    # nothing fetched from anywhere: no src/href to a URL, no script, no external stylesheet
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//)', page)
    assert "<script" not in page and "<link" not in page
    for c in r.cases:
        assert f"<td class=\"l\">{c.id}</td>" in page
    assert page.count("<svg") == sum(1 for c in r.cases if c.status == "ok")


def test_copy_bars_are_the_results_bytes_per_payload_byte(data_dir):
    r = results.load(data_dir / "lab-msg-zerocopy.json")
    [(case, parts)] = plots.copies_data([r])
    side = r.cases[0].copies["sides"]
    assert parts["COPY#1 (send)"] == side["sender"]["bytes_per_payload_byte"] == 0
    assert parts["COPY#4 (receive)"] == side["receiver"]["bytes_per_payload_byte"]
    assert parts["deferred / fallback"] == side["sender"]["deferred"]["per_payload_byte"] > 0


def test_breakeven_needs_both_paths_at_two_sizes(data_dir):
    local = results.load(data_dir / "socket-vs-rdma-local.json")
    curve = plots.breakeven_data([local])
    from bench.crossover import entries
    (e,) = entries(local)                   # no stored analysis: computed there, once
    # the curve is bench/crossover.py's, labelled with its verdict (veth copied every send)
    assert curve == {"msg_zerocopy / tcp (no zerocopy happened) veth":
                     [(p["size"], p["ratio"]) for p in e["points"]]}
    assert [s for s, _ in curve["msg_zerocopy / tcp (no zerocopy happened) veth"]] == [4096, 65536]
    assert plots.breakeven_data([results.load(data_dir / "smoke-example.json")]) == {}


def test_diagram_draws_the_measured_counts(data_dir):
    r = results.load(data_dir / "lab-seed-udp-1000.json")
    f = figures.figures(r)[0]
    svg = diagrams.path_svg(f)
    assert "COPY#1: 1000 calls, 1.00 MB" in svg and "COPY#4: 1000 calls, 1.00 MB" in svg
    c = diagrams.correlation(f)
    assert c.same_kernel.startswith("YES")            # kmod saw the same skb data on both sides
    assert c.conclusion.startswith("1 + 1 CPU copies per message")


def test_tracepoint_addresses_are_not_called_skb_addresses(data_dir):
    f = figures.figures(results.load(data_dir / "smoke-example.json"))[0]
    c = diagrams.correlation(f)
    assert "socket" in c.copy1_kind and c.same_kernel.startswith("not measured")
    assert "sk 0x" in diagrams.path_svg(f)


def test_not_counted_copies_say_not_measured():
    r = results.RunResult(suite="s", metadata={})
    r.cases.append(results.CaseResult(id="tcp-65536-veth", workload="tcp", size=65536,
                                      topology="veth", samples=[{"gbps": 1.0}],
                                      copies={"status": "unavailable", "reason": "no bpftrace"}))
    page = html.render([r])
    assert "COPY#1" in page and diagrams.NOT_MEASURED in page and "no bpftrace" in page


def test_emulation_and_soft_roce_notes(data_dir):
    lab = html.render([results.load(data_dir / "lab-rdma-softroce.json")])
    assert "Emulated target" in lab and "QEMU TCG" in lab
    assert "soft-RoCE.</b> The RDMA device of rdma_write-65536-veth" in lab
    local = html.render([results.load(data_dir / "smoke-example.json")])
    assert "Emulated target" not in local and "soft-RoCE.</b>" not in local


def test_wire_arithmetic_is_the_seeds():
    w = wire.udp(1000, 1500)
    assert (w.frame_bytes, w.wire_bytes, w.frames) == (1042, 1046, 1)
    assert wire.udp(1473, 1500).frames == 2
    assert wire.tcp(65536, 1500).frames == 45
    assert wire.for_case("rdma", 4096, 1500) is None


def test_the_two_node_crossover_golden_has_zerocopy_in_both_reports():
    """Across the lab link the kernel really sent from the user's pages: not "no zerocopy
    happened"; the verdicts themselves are tested in test_crossover.py."""
    from bench.results import load
    from reports import html, markdown
    r = load(Path(__file__).resolve().parents[1] / "data" / "lab-zerocopy-crossover-2node.json")
    by = {e["path"]: e for e in r.analysis["breakeven"]}
    assert set(by) == {"msg_zerocopy", "io_uring_zc", "io_uring_fixed"}
    assert by["msg_zerocopy"]["topology"] == "link"
    assert all(p["zerocopy_fraction"] > 0 for p in by["msg_zerocopy"]["points"])
    md = markdown.breakeven_table(r)
    assert "**msg_zerocopy** vs tcp (link): cheaper than tcp from 65536 B up" in md
    assert "cheaper than tcp from 65536 B up" in html.render([r])
