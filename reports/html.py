"""A self-contained HTML report from one or more results: tables, plots (embedded PNG), the
seed's path diagrams with the measured counts (inline SVG), address correlation, cost model and
wire arithmetic per case, and the run's metadata. No script, no stylesheet or image from the
network: the file opens anywhere, offline."""

from __future__ import annotations

import base64
import json
from html import escape

from bench import crossover
from bench.results import RunResult
from reports import diagrams, flows, latency, plots, wire, zerocopy_receive
from reports.figures import CaseFigures, figures, run_warnings
from reports.tables import COLUMNS, fmt, rows

NM = diagrams.NOT_MEASURED

CSS = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#eee} td.l,th.l{text-align:left}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.5em .8em;margin:.5em 0}
.nm{color:#999;font-style:italic}
details{margin:.8em 0;border-left:3px solid #ddd;padding-left:.8em}
summary{font-weight:bold;cursor:pointer}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dt{font-weight:bold} code{font-size:12px}
img{max-width:100%}
"""


def _cell(v, left: bool = False) -> str:
    text = fmt(v)
    cls = ' class="nm"' if v is None else (' class="l"' if left else "")
    return f"<td{cls}>{escape(text)}</td>"


def _table(head: list[str], body: list[list], left_cols: int = 1, caption: str | None = None) -> str:
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<tr>" + "".join(f'<th{" class=l" if i < left_cols else ""}>{escape(h)}</th>'
                                for i, h in enumerate(head)) + "</tr>")
    for r in body:
        out.append("<tr>" + "".join(_cell(v, i < left_cols or i == len(r) - 1 and isinstance(v, str))
                                    for i, v in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def zerocopy_receive_section(result: RunResult) -> str:
    """The TCP_ZEROCOPY_RECEIVE rows against tcp (reports/zerocopy_receive.py's figures)."""
    zr = zerocopy_receive
    rs = zr.rows(result)
    if not rs:
        return ""
    reasons = "".join(f"<li><b>{escape(r['case'])}</b>: {escape(r['reason'])}</li>" for r in rs)
    return ("<h3>TCP_ZEROCOPY_RECEIVE against tcp (receiver CPU per MiB)</h3>"
            + _table(zr.HEAD, zr.table_rows(rs), left_cols=2) + f"<ul>{reasons}</ul>"
            + f"<p>Reference, {escape(zr.REFERENCE)}.</p><p>{escape(zr.METHOD)}</p>")


def flows_section(result: RunResult) -> str:
    """Each flow of the cases that ran several, folded (reports/flows.py)."""
    body = flows.table_rows(result.cases)
    if not body:
        return ""
    return ("<details><summary>Flows: each flow of the cases that ran several</summary>"
            + _table(flows.HEAD, body, left_cols=3) + f"<p>{escape(flows.METHOD)}</p></details>")


def latency_section(result: RunResult) -> str:
    """The request/response cases' round trips (reports/latency.py's rows)."""
    data = latency.rows(result.to_json())
    if not data:
        return ""
    return ("<h3>Latency (request/response round trips)</h3>"
            + _table(latency.HEAD, latency.table_rows(data), left_cols=3)
            + f"<p>{escape(latency.METHOD)}</p>")


def comparison_table(result: RunResult) -> str:
    body = [[getattr(r, key) for key, _ in COLUMNS] for r in rows(result)]
    return _table([title for _, title in COLUMNS], body, left_cols=2)


COPY_HEAD = ["case", "copies/msg (tx / rx)", "COPY#1 B/B", "COPY#4 B/B", "deferred / fallback B/B",
             "soft-RoCE B/B", "total copied B/B (tx / rx)", "copy-time share of CPU (tx / rx, model)",
             "measured copy ms (tx / rx)", "tracer (tx)", "tracer (rx)"]


def _pair(a, b, scale: float = 1.0) -> str | None:
    if a is None and b is None:
        return None
    return f"{fmt(None if a is None else a * scale)} / {fmt(None if b is None else b * scale)}"


def copies_row(f: CaseFigures) -> list:
    s, r = f.sender, f.receiver
    if f.status != "ok":
        return [f.id, *([None] * (len(COPY_HEAD) - 2)), f"case {f.status}"]
    if not f.counted:
        why = f.copies_status + (f": {f.copies_reason}" if f.copies_reason else "")
        return [f.id, *([None] * (len(COPY_HEAD) - 2)), f"not counted ({why})"]
    deferred = [x.deferred_per_payload_byte for x in (s, r) if x and x.deferred_per_payload_byte]
    return [
        f.id,
        _pair(s and s.per_message, r and r.per_message),
        s.per_payload_byte if s else None, r.per_payload_byte if r else None,
        sum(deferred) if deferred else None,
        f.soft_roce.per_payload_byte if f.soft_roce else None,
        _pair(s and s.total_per_payload_byte, r and r.total_per_payload_byte),
        _pair(s and s.share_of_cpu, r and r.share_of_cpu),
        _pair(s and s.measured_copy_s, r and r.measured_copy_s, 1e3),
        s.tracer if s else None, r.tracer if r else None,
    ]


def copies_table(result: RunResult) -> str:
    return _table(COPY_HEAD, [copies_row(f) for f in figures(result)])


def _notes(result: RunResult) -> str:
    notes = [f"<b>{escape(title)}.</b> {escape(text)}." for title, text in run_warnings(result)]
    cn = (result.metadata or {}).get("copies_note")
    if cn:
        notes.append("<b>Copies not counted in this run:</b> " + escape(str(cn.get("reason")))
                     + (f" (fix: {escape(cn['fix'])})" if cn.get("fix") else ""))
    if result.status != "complete":
        notes.append(f"<b>Run {escape(result.status)}.</b> " + escape(result.reason or ""))
    return "".join(f'<div class="warn">{n}</div>' for n in notes)


def _meta_value(v) -> str:
    if isinstance(v, (dict, list)):
        return f"<code>{escape(json.dumps(v, sort_keys=True))}</code>"
    return escape(str(v)) if v is not None else f'<span class="nm">{NM}</span>'


def metadata(result: RunResult) -> str:
    m = result.metadata or {}
    items = [("host", m.get("hostname")), ("kernel", m.get("kernel")), ("arch", m.get("arch")),
             ("CPU", f"{m.get('cpu_model')} × {m.get('cpu_count')}"),
             ("virtualization", m.get("virtualization")), ("target", m.get("target")),
             ("placement", m.get("placement")), ("git", m.get("git_sha")),
             ("tools", m.get("tools")), ("libraries", m.get("libraries")),
             ("copy backends", {c.get("point"): c.get("backend") for c in m.get("copy_backends") or []}
              or None),
             ("memory bandwidth (memcpy)", f"{m['memory_bandwidth']['memcpy_bytes_per_s'] / 1e9:.2f} GB/s"
              if m.get("memory_bandwidth") else None)]
    method = m.get("method") or {}
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{_meta_value(v)}</dd>" for k, v in items)
    dl += "".join(f"<dt>method: {escape(k)}</dt><dd>{_meta_value(v)}</dd>" for k, v in method.items())
    return f"<dl>{dl}</dl>"


def _correlation(f: CaseFigures) -> str:
    c = diagrams.correlation(f)
    def addrs(a):
        if not a:
            return None
        distinct = list(dict.fromkeys(a))
        return ", ".join(distinct[:4]) + (f" (+{len(distinct) - 4} more)" if len(distinct) > 4 else "")
    body = [["COPY#1 kernel address (sender)", addrs(c.copy1_addrs), c.copy1_kind],
            ["COPY#4 kernel address (receiver)", addrs(c.copy4_addrs), c.copy4_kind],
            ["same kernel address?", c.same_kernel, ""],
            ["sender user buffer", c.sender_buffer, "agent's own report"],
            ["receiver user buffer", c.receiver_buffer, "agent's own report"],
            ["same user address?", c.same_user, ""],
            ["conclusion", c.conclusion, ""]]
    return _table(["address correlation", "value", "what it is"], body, left_cols=3)


def _cost(f: CaseFigures, result: RunResult) -> str:
    bw = (result.metadata or {}).get("memory_bandwidth") or {}
    per = bw.get("memory_bytes_per_s")
    body = []
    for s in (f.sender, f.receiver, f.soft_roce):
        if s is None:
            continue
        body.append([s.side, s.cost_bytes,
                     f"{s.cost_bytes} × 2 / {per / 1e9:.2f} GB/s" if per and s.cost_bytes is not None
                     else None,
                     None if s.model_s is None else s.model_s * 1e3,
                     None if s.model_cached_s is None else s.model_cached_s * 1e3,
                     None if s.measured_copy_s is None else s.measured_copy_s * 1e3,
                     None if s.cpu_s is None else s.cpu_s * 1e3, s.share_of_cpu])
    if not body:
        return f'<p class="nm">cost model: {NM} (copies not counted)</p>'
    return _table(["side", "bytes copied (deferred included)", "model: bytes × 2 / memory bandwidth",
                   "model ms (DRAM)", "model ms (cache-hot)", "measured copy ms", "agent CPU ms",
                   "model share of CPU"], body,
                  caption="the seed's copy-cost model beside the measured copy time and CPU "
                          "(traced sample)")


def _wire(f: CaseFigures) -> str:
    w = wire.for_case(f.protocol, f.case.size, f.mtu)
    if w is None:
        why = "RDMA: RoCE headers are the NIC's" if f.protocol == "rdma" else "MTU not recorded"
        return f'<p class="nm">skb and wire arithmetic: {NM} ({escape(why)})</p>'
    body = [["payload", w.payload], [f"{w.protocol.upper()} header", w.transport_header],
            ["IP + Ethernet headers per frame", wire.IPV4 + wire.ETH],
            [f"frames per message (MTU {w.mtu})", w.frames],
            ["payload + all headers (skb->len at the MAC layer, summed)", w.frame_bytes],
            ["on a physical wire (+4 B FCS per frame)", w.wire_bytes],
            ["wire bytes per payload byte", round(w.per_payload_byte, 4)],
            ["headroom / tailroom", None], ["note", w.note]]
    return _table(["skb and wire arithmetic", "bytes"], body, left_cols=1)


def path_section(f: CaseFigures, result: RunResult) -> str:
    head = f"{f.id} — {f.status}"
    if f.status != "ok":
        reason = f.case.reason or ""
        return (f"<details><summary>{escape(head)}</summary><p>{escape(reason)}"
                + (f" — fix: {escape(f.case.fix)}" if f.case.fix else "") + "</p></details>")
    return (f"<details open><summary>{escape(head)}</summary>"
            f"{diagrams.path_svg(f)}{_correlation(f)}{_cost(f, result)}{_wire(f)}</details>")


def breakeven_section(result: RunResult) -> str:
    """The zerocopy break-even per path against its twin (bench/crossover.py), verdict first."""
    from reports.markdown import BREAKEVEN_COLUMNS, breakeven_rows
    entries = crossover.entries(result)
    if not entries:
        return ""
    verdicts = "".join(f"<li><b>{escape(e['path'])}</b> vs {escape(e['baseline'])} "
                       f"({escape(e['topology'])}): {escape(e['verdict'])}</li>" for e in entries)
    return ("<h3>Zerocopy break-even</h3><ul>" + verdicts + "</ul>"
            + _table(BREAKEVEN_COLUMNS, breakeven_rows(entries), left_cols=3)
            + f"<p>{escape(entries[0]['metric'])}; range from the repeats' extremes; clear only "
              f"with &ge; {crossover.MIN_REPEATS} repeats per side, Mann-Whitney p &lt; "
              f"{crossover.ALPHA} and most sends zerocopy.</p>")


def run_section(result: RunResult, source: str | None) -> str:
    title = f"{result.suite}: {result.status}, started {result.started}"
    return "".join([
        f"<h2>{escape(title)}</h2>",
        f"<p>result file: <code>{escape(source)}</code></p>" if source else "",
        _notes(result), "<h3>Comparison per path</h3>", comparison_table(result),
        flows_section(result),
        "<h3>Copies (one traced sample per case)</h3>", copies_table(result),
        "<p>B/B: bytes copied per payload byte. COPY#1: user → kernel on send; COPY#4: kernel → "
        "user on receive; deferred/fallback: copies a zerocopy path moved rather than avoided "
        "(skb_copy_ubufs, completion reports, TCP_ZEROCOPY_RECEIVE copybuf); soft-RoCE: rxe's "
        "own copies. Quality per tracer: exact / estimate / lossy.</p>",
        breakeven_section(result), zerocopy_receive_section(result), latency_section(result),
        "<h3>Paths: the seed's diagrams with the measured counts</h3>",
        "".join(path_section(f, result) for f in figures(result)),
    ])


def metadata_section(result: RunResult, many: bool) -> str:
    title = "Run metadata" + (f": {result.suite}, started {result.started}" if many else "")
    return f"<h2>{escape(title)}</h2>" + metadata(result)


def plots_section(results: list[RunResult]) -> str:
    out = ["<h2>Plots</h2>"]
    drawn = plots.draw_all(results)
    for key, title, fig in drawn:
        data = base64.b64encode(plots.png(fig)).decode()
        out.append(f'<figure id="plot-{key}"><img alt="{escape(title)}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{escape(title)}</figcaption>'
                   "</figure>")
    missing = [title for key, title in plots.PLOTS if key not in {d[0] for d in drawn}]
    if missing:
        out.append('<p class="nm">not drawn (nothing measured for them in these results): '
                   + escape("; ".join(missing)) + "</p>")
    return "".join(out)


def render(results: list[RunResult], sources: list[str] | None = None) -> str:
    sources = sources or [None] * len(results)
    title = "copybench: " + ", ".join(dict.fromkeys(r.suite for r in results))
    body = "".join(run_section(r, s) for r, s in zip(results, sources, strict=True))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>{body}{plots_section(results)}"
            # the metadata last: plots are what a reader came for
            + "".join(metadata_section(r, len(results) > 1) for r in results)
            + "</body></html>\n")
