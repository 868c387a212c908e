"""Every report says first what the figures are worth: "Emulated target" (a TCG lab: figures
functional, not performance) and "soft-RoCE" (rxe copies what a NIC would DMA), in the HTML,
the Markdown and the terminal alike. The HTML's plots come before the run metadata and the
CPU-per-GB legend never covers the data."""

import subprocess
import sys

from bench import results
from reports import html, markdown, plots

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _lab_rdma() -> results.RunResult:
    """A run whose metadata says TCG (the CPU model only) and whose case used an rxe device
    (named so, no `soft` flag)."""
    r = results.RunResult(suite="s", metadata={"cpu_model": "QEMU TCG CPU version 2.5+",
                                               "hostname": "lab0"})
    r.cases.append(results.CaseResult(
        id="rdma_write-65536-veth", workload="rdma_write", size=65536, topology="veth",
        samples=[{"gbps": 0.1}], network={"rdma": {"tx": {"device": "rxe0"},
                                                   "rx": {"device": "rxe0"}}}))
    return r


def _both(text: str) -> None:
    assert "**Emulated target.** TCG lab: figures are functional, not performance." in text
    assert "**soft-RoCE.** The RDMA device of rdma_write-65536-veth is soft-RoCE" in text


def test_markdown_and_terminal_say_emulated_target_and_soft_roce():
    r = _lab_rdma()
    md, term = markdown.render(r), markdown.terminal(r)
    _both(md)
    _both(term)
    assert md.index("Emulated target") < md.index("| case |")      # before the table
    assert term.startswith("> **Emulated target.**")
    page = html.render([r])
    assert "<b>Emulated target.</b> TCG lab: figures are functional" in page
    assert "<b>soft-RoCE.</b> The RDMA device of rdma_write-65536-veth" in page


def test_bench_report_prints_the_warnings(tmp_path):
    path = results.save(_lab_rdma(), tmp_path / "r.json")
    out = subprocess.run([sys.executable, "-m", "bench.cli", "report", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    _both(out.stdout)


def test_a_local_run_has_no_warnings(data_dir):
    r = results.load(data_dir / "smoke-example.json")
    assert markdown.warnings(r) is None
    for text in (markdown.render(r), markdown.terminal(r)):
        assert "Emulated target" not in text and "soft-RoCE." not in text


def test_the_lab_golden_warns_in_every_report(data_dir):
    r = results.load(data_dir / "lab-rdma-softroce.json")
    for text in (markdown.render(r), markdown.terminal(r)):
        assert "Emulated target" in text and "rdma_write-65536-veth, rdma_send-65536-veth" in text


def test_plots_come_before_the_run_metadata(data_dir):
    page = html.render([results.load(data_dir / "socket-vs-rdma-local.json")])
    assert page.index('<figure id="plot-') < page.index("Run metadata")
    assert page.index("Comparison per path") < page.index('<figure id="plot-')


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0) * max(h, 0)


def _ten_paths() -> results.RunResult:
    """Ten paths x sender/receiver: the 20-entry CPU-per-GB legend of socket-vs-rdma."""
    r = results.RunResult(suite="s", metadata={})
    for i in range(10):
        for size in (1024, 4096, 65536):
            r.cases.append(results.CaseResult(
                id=f"p{i}-{size}-veth", workload=f"path{i}", size=size, topology="veth",
                samples=[{"gbps": 1.0, "cpu_s_per_gb": {"sender": 10.0 / size ** 0.5 + i,
                                                        "receiver": 5.0 + i}}]))
    return r


def test_the_cpu_legend_does_not_cover_the_plot():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fig = plots.cpu([_ten_paths()])
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()]
    (legend,) = legends
    entries = len(legend.get_texts())
    assert entries == 20
    styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles["path3 veth sender"] == "-" and styles["path3 veth receiver"] == "--"
    renderer = canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    (ax,) = fig.axes
    assert _overlap(box, ax.get_window_extent(renderer)) == 0
    fw, fh = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fw and box.y1 <= fh   # not cut off
