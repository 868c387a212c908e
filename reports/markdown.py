"""A result as a Markdown document: what was measured, where, and the comparison table."""

from __future__ import annotations

from bench import crossover
from bench.results import RunResult
from reports import flows, latency, zerocopy_receive
from reports.figures import run_warnings
from reports.tables import COLUMNS, fmt, rows


def md_table(header: list[str], body: list) -> list[str]:
    """A Markdown table's lines; cells formatted by `fmt`, a `|` inside a cell made `/`."""
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(fmt(v).replace("|", "/") for v in r) + " |" for r in body])


def zerocopy_receive_section(result: RunResult) -> str | None:
    """The TCP_ZEROCOPY_RECEIVE rows against tcp (reports/zerocopy_receive.py's figures)."""
    zr = zerocopy_receive
    rs = zr.rows(result)
    if not rs:
        return None
    lines = md_table(zr.HEAD, zr.table_rows(rs)) + [""]
    lines += [f"- **{r['case']}**: {r['reason']}" for r in rs]
    lines += ["", f"Reference, {zr.REFERENCE}.", "", zr.METHOD]
    return "\n".join(lines)


def flows_section(result: RunResult) -> str | None:
    """Each flow of the cases that ran several (reports/flows.py)."""
    body = flows.table_rows(result.cases)
    return "\n".join(md_table(flows.HEAD, body) + ["", flows.METHOD]) if body else None


def latency_section(result: RunResult) -> str | None:
    """The request/response cases' round trips against sockperf and qperf, and their copies'
    share (reports/latency.py)."""
    table = latency.markdown(result.to_json())
    return (table + "\n" + latency.METHOD) if table else None


def warnings(result: RunResult) -> str | None:
    """What the HTML says first about the run's figures (emulated target, soft-RoCE), as
    Markdown quotes: the same words in the Markdown report and on the terminal."""
    notes = [f"> **{title}.** {text}." for title, text in run_warnings(result)]
    return "\n\n".join(notes) if notes else None     # one quote each, not one paragraph


def terminal(result: RunResult) -> str:
    """What `bench run` prints when the run ends: the warnings, the table, then the copies,
    syscalls and break-even sections the run has."""
    parts = [warnings(result), table(result)]
    parts += [section(result) for section in (latency_section, copies_table, syscalls_table,
                                              breakeven_table, zerocopy_receive_section)]
    return "\n\n".join(p for p in parts if p)


def table(result: RunResult) -> str:
    """The bandwidth table; "" when every case is in the latency table instead."""
    body = [[getattr(r, key) for key, _ in COLUMNS] for r in rows(result)]
    return "\n".join(md_table([title for _, title in COLUMNS], body)) if body else ""


COPY_COLUMNS = ["case", "side", "copies", "per msg", "bytes copied", "per payload byte",
                "deferred/unseen per byte", "total per payload byte", "ns/copy", "model ms (DRAM/cache)",
                "measured ms", "CPU ms", "copy share of CPU (DRAM/cache)", "symbols", "backend",
                "kind"]


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def _pair(a, b, scale=1.0):
    """'a / b' for the DRAM and cache-hot variants of one model figure."""
    if a is None:
        return None
    first = fmt(a * scale)
    return first if b is None else f"{first} / {fmt(b * scale)}"


def _kind(d: dict) -> str:
    """exact / estimate / lossy, with what was lost and which half is an estimate."""
    q = d.get("quality") or ("exact" if d.get("exact") else "estimate")
    if q == "lossy":
        return "lossy (" + ", ".join(f"{k} {v}" for k, v in d.get("lost", {}).items()) + ")"
    if q == "estimate" and d.get("bytes_exact") and not d.get("calls_exact"):
        return "bytes exact, calls estimate"
    return q


def _deferred_note(case_id: str, d: dict, side: str = "sender") -> str | None:
    dfr = d.get("deferred")
    if dfr and dfr.get("kind"):
        return (f"- {case_id}: {side}: {dfr['bytes']} B {dfr['kind']} "
                f"({', '.join(dfr['symbols'])}, {dfr['quality']}), counted in its total")
    if dfr:
        where = ", ".join(dfr.get("ran_in") or []) or "-"
        src = ("measured at " + ", ".join(dfr["symbols"]) + f" (ran in: {where})"
               if dfr["source"] == "probe" else
               "from the kernel's completion reports (" + ", ".join(dfr["symbols"]) + ")")
        return (f"- {case_id}: the sender's zerocopy sends were copied later after all: "
                f"{dfr['calls']} copies, {dfr['bytes']} B, {src}, {dfr['quality']}"
                + (f" ({dfr['attribution_note']})" if dfr.get("attribution_note") else ""))
    if d.get("total_note"):
        return f"- {case_id}: {d['total_note']}"
    return None


def copies_table(result: RunResult) -> str | None:
    """The seed's view per case and side: how many copies, how many bytes, who measured them,
    and how far each count can be trusted."""
    rows = []
    notes = []
    run_note = result.metadata.get("copies_note")
    if run_note:
        notes.append(f"- copies not counted in this run: {run_note.get('reason')}"
                     + (f" (fix: {run_note['fix']})" if run_note.get("fix") else ""))
    for c in result.cases:
        cp = c.copies or {}
        if cp.get("status") != "ok":
            if cp.get("status") == "failed":
                notes.append(f"- {c.id}: {cp['reason']}" + (f" (fix: {cp['fix']})" if cp.get("fix")
                                                             else ""))
            elif cp.get("reason") and cp.get("status") != "off" and not cp.get("run_note"):
                notes.append(f"- {c.id}: copies not counted: {cp['reason']}")
            continue
        for side in ("sender", "receiver"):
            d = cp["sides"].get(side)
            if not d:
                continue
            k = d.get("cost") or {}
            dfr = d.get("deferred") or {}
            rows.append([c.id, side, d["calls"], d["copies_per_message"], d["bytes"],
                         d["bytes_per_payload_byte"], dfr.get("per_payload_byte"),
                         d.get("total_copied_per_payload_byte"), d["ns_per_copy"],
                         _pair(k.get("model_seconds"), k.get("model_seconds_cached"), 1e3),
                         _ms(k.get("measured_copy_seconds")), _ms(k.get("cpu_seconds")),
                         _pair(k.get("share_of_cpu"), k.get("share_of_cpu_cached")),
                         ", ".join(d["symbols"]), "+".join(d["backends"]), _kind(d)])
            note = _deferred_note(c.id, d, side)
            if note:
                notes.append(note)
            if d.get("total_note") and d.get("deferred"):
                notes.append(f"- {c.id}: {side}: {d['total_note']}")
        # "other": outside both agents; two-node runs: "other@<node>", per node.
        for oside, od in cp["sides"].items():
            if oside != "other" and not oside.startswith("other@"):
                continue
            where = f" on {oside.partition('@')[2]}" if "@" in oside else ""
            for point, d in (od.get("other_points") or {}).items():
                counted = (" (counted in the sender's deferred copies, as an upper bound: not "
                           "tied to this flow)") if point == "zc_fallback" else ""
                notes.append(f"- {c.id}: {d['calls']} {point} copies ({d['bytes']} B, "
                             f"{d['symbol']}) ran outside both agents{where} "
                             f"(softirq/kernel threads){counted}")
        ratio = cp.get("tracer_overhead_ratio")
        if ratio:
            notes.append(f"- {c.id}: throughput while counting = {ratio:.2f}× untraced")
    if not rows and not notes:
        return None
    bw = result.metadata.get("memory_bandwidth")
    if bw:
        ws = result.metadata.get("working_set_bandwidth") or {}
        hot = ", ".join(f"{int(size) // 1024 if int(size) >= 1024 else size}"
                        f"{' KiB' if int(size) >= 1024 else ' B'}: "
                        f"{b['memcpy_bytes_per_s'] / 1e9:.1f} GB/s" for size, b in sorted(
                            ws.items(), key=lambda kv: int(kv[0])))
        notes.append(f"- model: bytes copied × 2 / {bw['memory_bytes_per_s'] / 1e9:.1f} GB/s memory "
                     f"bandwidth (memcpy {bw['memcpy_bytes_per_s'] / 1e9:.1f} GB/s, 256 MiB, DRAM)"
                     + (f"; cache-hot memcpy at the working set (message × batch, ≥ 32 KiB): {hot}"
                        if hot else "")
                     + "; share = model time / the agent's CPU time in the traced sample")
    lines = []
    if rows:
        lines = md_table(COPY_COLUMNS, rows) + [""]
    return "\n".join(lines + notes)


SYSCALL_COLUMNS = ["case", "side", "syscalls", "per GB", "per msg", "top syscalls (calls)",
                   "kind", "sample"]


def syscalls_table(result: RunResult) -> str | None:
    """The agents' system calls per case and side, counted in the kernel (bench/tracing/
    syscount.py): how many calls each side needed to move its bytes, and which."""
    rows, notes = [], []
    run_note = result.metadata.get("syscalls_note")
    if run_note:
        notes.append(f"- syscalls not counted in this run: {run_note.get('reason')}"
                     + (f" (fix: {run_note['fix']})" if run_note.get("fix") else ""))
    for c in result.cases:
        sc = getattr(c, "syscalls", None) or {}
        if sc.get("status") != "ok":
            if sc.get("status") == "failed":
                notes.append(f"- {c.id}: {sc['reason']}" + (f" (fix: {sc['fix']})"
                                                            if sc.get("fix") else ""))
            continue
        for side in ("sender", "receiver"):
            d = (sc.get("sides") or {}).get(side)
            if not d:
                continue
            top = ", ".join(f"{t['name']} {t['calls']}" for t in d.get("top", []))
            kind = d.get("quality", "exact")
            if d.get("lost"):
                kind += " (" + ", ".join(f"{k} {v}" for k, v in d["lost"].items()) + ")"
            rows.append([c.id, side, d["calls"], d.get("per_gb"), d.get("per_message"), top,
                         kind, sc.get("sample")])
        chk = sc.get("recv_calls_check")
        if chk and chk.get("ratio") is not None:
            notes.append(f"- {c.id}: receiver's own recv calls per GB in the counted sample = "
                         f"{chk['ratio']:.2f}× the untraced samples'")
        ratio = sc.get("tracer_overhead_ratio")
        if ratio and sc.get("sample") == "dedicated":
            notes.append(f"- {c.id}: throughput while counting syscalls = {ratio:.2f}× untraced")
    if not rows and not notes:
        return None
    lines = []
    if rows:
        lines = md_table(SYSCALL_COLUMNS, rows) + [""]
    return "\n".join(lines + notes)


BREAKEVEN_COLUMNS = ["path", "vs twin", "topology", "size B", "CPU/GB ratio (median)", "range",
                     "repeats", "Mann-Whitney p", "zerocopy sends"]


def breakeven_rows(entries: list[dict]) -> list[list]:
    """One row per (entry, size): the ratio to the path's copying twin and its test."""
    out = []
    for e in entries:
        for p in e["points"]:
            zc, pv = p.get("zerocopy_fraction"), p.get("p_mann_whitney")
            out.append([e["path"], e["baseline"], e["topology"], p["size"], p["ratio"],
                        f"{p['ratio_min']:.2f}–{p['ratio_max']:.2f}",
                        f"{p.get('n_path', p['n'])} / {p.get('n_twin', p['n'])}",
                        None if pv is None else f"{pv:.3f}",
                        None if zc is None else f"{100 * zc:.1f}%"])
    return out


def breakeven_table(result: RunResult) -> str | None:
    """The zerocopy break-even per path against its copying twin (bench/crossover.py, computed
    there once): every size's ratio, then the verdict; fixed buffers reported apart."""
    entries = crossover.entries(result)
    if not entries:
        return None
    verdicts = [f"- **{e['path']}** vs {e['baseline']} ({e['topology']}): {e['verdict']}"
                for e in entries]
    return "\n".join(md_table(BREAKEVEN_COLUMNS, breakeven_rows(entries)) + ["", *verdicts, "",
                     "Metric: " + entries[0]["metric"] + "; range from the repeats' extremes; "
                     f"clear only with >= {crossover.MIN_REPEATS} repeats per side, Mann-Whitney "
                     f"p < {crossover.ALPHA} and most sends zerocopy."])


def render(result: RunResult) -> str:
    m = result.metadata
    lines = [
        f"# copybench: {result.suite}",
        "",
        f"- status: **{result.status}**" + (f" ({result.reason})" if result.reason else "")
        + f", started {result.started}",
        f"- host: {m.get('hostname')} — kernel {m.get('kernel')}, {m.get('cpu_model')}, "
        f"{m.get('cpu_count')} CPUs, virtualization: {m.get('virtualization')}",
        f"- copybench {m.get('libraries', {}).get('copybench')} (git {m.get('git_sha')}), "
        f"reference: iperf3 {m.get('tools', {}).get('iperf3')}",
        "",
        *([warnings(result), ""] if warnings(result) else []),
        table(result),
        "",
        *(["## Latency (request/response round trips)", "", latency_section(result), ""]
          if latency_section(result) else []),
        *(["## Flows (each flow of the cases that ran several)", "", flows_section(result), ""]
          if flows_section(result) else []),
        *(["## Copies (one traced sample per case)", "", copies_table(result), ""]
          if copies_table(result) else []),
        *(["## System calls (counted in the kernel, per agent)", "", syscalls_table(result), ""]
          if syscalls_table(result) else []),
        *(["## Zerocopy break-even", "", breakeven_table(result), ""]
          if breakeven_table(result) else []),
        *(["## TCP_ZEROCOPY_RECEIVE against tcp (receiver CPU per MiB)", "",
           zerocopy_receive_section(result), ""] if zerocopy_receive_section(result) else []),
        "Gbit/s: verified payload bytes at the receiver over its own clock, first to last "
        "verified byte (median of the repeats after one discarded warm-up; min–max and spread = "
        "(max − min) / median). ratio = ours / reference (iperf3 on the same path, size and "
        "socket buffers, alternated with ours: A B, B A, ...; UDP only at one datagram per "
        "call). CPU s/GB: CPU-seconds per 1e9 payload bytes: each agent's user+sys per byte it "
        "sent or received, iperf3's own from its JSON, and system-wide softirq (which on a "
        "kernel without IRQ time accounting overlaps the sides' sys time: never add them). "
        "syscalls/GB: the agent's system calls (all of them, counted in the kernel in one "
        "counted sample) per 1e9 payload bytes it sent or received; – where not counted.",
    ]
    return "\n".join(lines) + "\n"
