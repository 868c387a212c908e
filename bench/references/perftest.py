"""perftest (ib_write_bw, ib_send_bw) as the reference of the RDMA workloads.

Same device, port, GID index, message size, send queue depth, inline threshold and completion
moderation as ours, in the same run, alternated with ours by the runner. Argument builders and
`parse()` are pure and tested on captured output (tests/data/perftest_*). perftest's JSON
(`--out_json`) has been invalid in some versions (trailing commas, bare words), so `parse()`
reads the JSON when it can, repairs the known breakage, and falls back to the text table.
"""

from __future__ import annotations

import json
import re
import shutil

from bench.errors import UsageError
from workloads.rdma_verbs import WAITS  # how both sides wait: the suite's rdma_wait

TOOLS = {"rdma_write": "ib_write_bw", "rdma_send": "ib_send_bw"}
PORT = 18515            # perftest's default TCP port for its own exchange
MIN_ITERS = 5           # perftest refuses fewer
EVENTS_FLAG = "-e"      # perftest's --events: "Sleep on CQ events (default poll)"
# What perftest prints in its header when -e is in effect (perftest_parameters.c).
EVENTS_BANNER = "Test with events"


def tool_for(workload: str) -> str | None:
    return TOOLS.get(workload)


def available(tool: str = "ib_write_bw") -> tuple[bool, str]:
    if shutil.which(tool):
        return True, ""
    return False, f"{tool} is not installed"


def check(tools) -> None:
    for t in sorted(set(tools)):
        ok, why = available(t)
        if not ok:
            raise UsageError(f"missing reference tool: {why}",
                             "apt-get install perftest, or run with --no-reference")


def events_refusal(workload: str, count: int | None) -> str | None:
    """Why perftest cannot sleep on CQ events in this case, in its own words (its option
    parser refuses both in 4.5-0.17 and upstream); None where -e works."""
    if workload == "rdma_write":
        return "ib_write_bw has no event mode (perftest: 'Events feature not available on " \
               "WRITE verb')"
    if not count:
        return "ib_send_bw refuses -e in duration mode (perftest: 'Duration mode doesn't " \
               "work with events.')"
    return None


def wait_used(workload: str, wait: str, count: int | None) -> str:
    """How perftest waits when ours wait `wait`: "events" (-e) where perftest can, else
    "poll" (its default, and the only mode of ib_write_bw)."""
    if wait not in WAITS:
        raise ValueError(f"rdma wait {wait!r}: must be one of {', '.join(WAITS)}")
    return "events" if wait == "events" and events_refusal(workload, count) is None else "poll"


OURS_HOW = {"events": "spin on the CQ up to spin_limit_s (each sample's rdma block), then sleep "
                      "on its completion channel (select, ibv_get_cq_event, ibv_req_notify_cq)",
            "poll": "busy-poll the CQ, never sleeping (the control socket select()ed with a "
                    "zero timeout every 10 ms)"}
PERFTEST_HOW = {"events": "-e: sleeps on CQ events (ibv_get_cq_event, re-armed with "
                          "ibv_req_notify_cq), without a spin first",
                "poll": "busy-polls its CQ (no -e)"}
UNLIKE_FIX = 'rdma_wait = "poll" in the suite (both busy-poll)'


def wait_method(workload: str, wait: str, count: int | None) -> dict:
    """The reference row's `method.wait`: how ours and perftest waited and whether that is
    like for like (both on events, or both polling), with perftest's reason where not."""
    used = wait_used(workload, wait, count)
    out = {"ours": wait, "reference": used, "ours_how": OURS_HOW[wait],
           "reference_how": PERFTEST_HOW[used], "like_for_like": used == wait}
    if used != wait:
        why = events_refusal(workload, count)
        fix = UNLIKE_FIX + (", or bytes / --bytes (ib_send_bw's -e needs -n)"
                            if workload == "rdma_send" else "")
        out.update(unlike=why, fix=fix)
    return out


def waited(stdout: str) -> str:
    """How perftest says it waited: its header names event mode when -e is in effect."""
    return "events" if EVENTS_BANNER in stdout else "poll"


def checked_wait(method: dict, client_out: str, server_out: str | None) -> dict:
    """`method` (wait_method) with what each perftest end printed; an end that did not wait
    as asked makes the row unlike."""
    seen = {"client": waited(client_out), "server": waited(server_out) if server_out else None}
    out = {**method, "seen": seen}
    wrong = [end for end, w in seen.items() if w not in (None, method["reference"])]
    if wrong:
        out.update(like_for_like=False, unlike=f"perftest's {' and '.join(wrong)} waited by "
                   f"{seen[wrong[0]]}, not {method['reference']} as asked")
    return out


def argv(workload: str, device: str, port: int, gid_index: int | None, size: int, depth: int,
         inline: int, signal_every: int, duration: float, count: int | None,
         tcp_port: int = PORT, server: str | None = None, json_file: str | None = None,
         wait: str = "events", qps: int = 1) -> list[str]:
    """One side of perftest doing what our agents do. `server`: the client's target (the
    server's address); None for the server. Count mode (-n) when ours had a message count,
    else duration mode (-D, whole seconds, with --cpu_util: perftest reports CPU only there).
    `wait`: how ours wait; -e where perftest can sleep on events too (wait_used). `qps`: the
    case's flows, as -q QPs in one perftest process per side (each QP its own -n messages,
    as each of our flows sends the case's count)."""
    tool = tool_for(workload)
    if tool is None:
        raise ValueError(f"perftest has no peer for workload {workload}")
    a = [tool, "-d", device, "-i", str(port), "-s", str(size), "-t", str(depth),
         "-I", str(inline), "-Q", str(max(1, min(signal_every, depth))), "-F",
         "--report_gbits", "-p", str(tcp_port)]
    if gid_index is not None:
        a += ["-x", str(gid_index)]
    if workload == "rdma_send":
        a += ["-r", str(2 * depth)]           # posted receives, as our receiver's slots
    if qps > 1:
        a += ["-q", str(qps)]
    if count:
        a += ["-n", str(max(count, MIN_ITERS))]
    else:
        a += ["-D", str(max(int(round(duration)), 1)), "--cpu_util"]
    if wait_used(workload, wait, count) == "events":
        a.append(EVENTS_FLAG)
    if json_file:
        a += ["--out_json", f"--out_json_file={json_file}"]
    if server:
        a.append(server)
    return a


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _json_lenient(text: str) -> dict | None:
    """perftest's --out_json document, repaired where known versions break it: 4.5-0.17
    (Debian 12) writes bare keys and bare words (`results: {MsgSize: 65536, ...},`), others
    leave trailing commas. Valid JSON first; then only the numbers of the `results` block."""
    text = text.strip()
    if not text:
        return None
    for attempt in (text, re.sub(r",\s*([}\]])", r"\1", text)):
        try:
            doc = json.loads(attempt)
            return doc if isinstance(doc, dict) else None
        except json.JSONDecodeError:
            continue
    m = re.search(r'"?results"?\s*:\s*\{([^{}]*)\}', text)
    if not m:
        return None
    pairs = {k: float(v) for k, v in
             re.findall(rf'"?(\w+)"?\s*:\s*({_NUM})\s*(?=,|\n|$)', m.group(1))}
    return {"results": pairs, "repaired": True} if pairs else None


def _table(text: str) -> dict | None:
    """The results table: a header line starting with '#bytes', then one line of numbers."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("#bytes"):
            cols = re.split(r"\s{2,}|\t+", line.strip())
            for row in lines[i + 1:]:
                vals = row.split()
                if vals and re.fullmatch(r"\d+", vals[0]):
                    return dict(zip(cols, vals, strict=False))
    return None


def _unit_factor(col: str) -> float | None:
    """Gbit/s per unit of a perftest BW column: Gb/sec is 1e9 bit/s; MB/sec is 2^20 B/s."""
    if "Gb/sec" in col:
        return 1.0
    if "MB/sec" in col:
        return 8 * 1048576 / 1e9
    return None


def parse(stdout: str, json_text: str | None = None, tool: str = "ib_write_bw",
          duration_mode: bool = False) -> dict:
    """One perftest side's result: bytes per message, iterations, average (and peak) Gbit/s,
    message rate, CPU % where reported, and which source gave them (json / json repaired /
    table). In duration mode (-D) perftest's iteration count is not the measured window's (and
    its peak is 0), so no byte count or window is derived there."""
    out: dict = {"tool": tool, "version": _version(stdout), "wait": waited(stdout)}
    doc = _json_lenient(json_text) if json_text else None
    res = (doc or {}).get("results") if doc else None
    table = _table(stdout)
    if isinstance(res, dict) and res.get("BW_average") is not None:
        out.update(source="json repaired" if doc.get("repaired") else "json", size=_int(res.get("MsgSize")),
                   iterations=_int(res.get("n_iterations")),
                   gbps=float(res["BW_average"]), peak_gbps=_float(res.get("BW_peak")),
                   mpps=_float(res.get("MsgRate")), cpu_pct=_float(res.get("CPU_util")))
        if table:     # the unit is only in the table header; JSON numbers follow --report_gbits
            f = _unit_factor(next((c for c in table if c.startswith("BW average")), ""))
            if f not in (None, 1.0):
                out["gbps"] = round(out["gbps"] * f, 6)
                if out["peak_gbps"] is not None:
                    out["peak_gbps"] = round(out["peak_gbps"] * f, 6)
    elif table:
        avg_col = next((c for c in table if c.startswith("BW average")), None)
        peak_col = next((c for c in table if c.startswith("BW peak")), None)
        f = _unit_factor(avg_col or "")
        if avg_col is None or f is None:
            raise ValueError(f"{tool}: results table without a known BW column: {list(table)}")
        cpu_col = next((c for c in table if c.lower().startswith("cpu")), None)
        rate_col = next((c for c in table if c.startswith("MsgRate")), None)
        out.update(source="table", size=_int(table.get("#bytes")),
                   iterations=_int(table.get("#iterations")),
                   gbps=round(float(table[avg_col]) * f, 6),
                   peak_gbps=round(float(table[peak_col]) * f, 6) if peak_col and
                   _float(table.get(peak_col)) is not None else None,
                   mpps=_float(table.get(rate_col)) if rate_col else None,
                   cpu_pct=_float(table.get(cpu_col)) if cpu_col else None)
    else:
        err = _error_line(stdout)
        raise ValueError(f"{tool} printed no results{': ' + err if err else ''}")
    if not out.get("peak_gbps"):
        out["peak_gbps"] = None                  # duration mode reports 0: not measured
    if duration_mode:
        out["mode"] = "duration"
    elif out.get("size") and out.get("iterations"):
        out["mode"] = "iterations"
        out["bytes"] = out["size"] * out["iterations"]
    if out.get("gbps") and out.get("bytes"):
        out["window_s"] = round(out["bytes"] * 8 / (out["gbps"] * 1e9), 6)
    return out


# What perftest's --cpu_util reports (perftest_resources.c get_cpu_stats, calc_cpu_util): the
# first line of /proc/stat at the start and end of the run, user / (user + idle) of the whole
# machine. Not the tool's own CPU, and system and softirq time are left out: it is recorded as
# perftest states it and never turned into a per-side CPU per GB beside our agents' rusage.
CPU_UTIL_MEANING = ("perftest --cpu_util: the whole machine's user time / (user + idle) from "
                    "/proc/stat over the run; not perftest's own CPU, system and softirq time "
                    "excluded")


# Around perftest, each end prints its port's hw_counters before and after (device-wide, like
# our agents' `device_counters`), so its rows show retransmissions as ours do.
HW_TAG = "copybench-hw"
# `read`, a shell builtin, not $(cat): under TCG each fork and exec costs 0.05-0.1 s, and a
# port has 16 counters, read twice per side and sample.
_HW_SCRIPT = ('d="$1"; shift; '
              'dump() { for f in "$d"/*; do [ -r "$f" ] && read -r v < "$f" 2>/dev/null && '
              'echo "' + HW_TAG + ' $1 ${f##*/} $v"; done; }; '
              # perftest runs as sh's child: a TERM for sh (the runner stopping it, or
              # PDEATHSIG) is passed on, so no perftest outlives its wrapper.
              'dump before; "$@" & p=$!; '
              'trap \'kill $p 2>/dev/null; wait $p 2>/dev/null; exit 143\' TERM INT HUP; '
              'wait $p; rc=$?; dump after; exit $rc')


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """perftest has no affinity option: taskset puts it on the CPU our agent of that side has
    (--cpus), so the two run like for like; unpinned when ours are."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def with_counters(argv: list[str], device: str, port: int,
                  root: str = "/sys/class/infiniband") -> list[str]:
    """perftest's argv wrapped in sh: the port's hw_counters before and after, on stdout."""
    return ["sh", "-c", _HW_SCRIPT, "sh", f"{root}/{device}/ports/{port}/hw_counters", *argv]


def counters_from(stdout: str, device: str, port: int) -> dict | None:
    """The wrapper's before/after lines as a `device_counters` delta (None without them)."""
    from workloads.rdma_verbs import counters_delta
    seen: dict[str, dict[str, int]] = {"before": {}, "after": {}}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == HW_TAG and parts[1] in seen:
            try:
                seen[parts[1]][parts[2]] = int(parts[3])
            except ValueError:
                continue
    if not seen["before"] or not seen["after"]:
        return None
    return counters_delta(seen["before"], seen["after"], device, port, over="the tool's whole run")


def combine(client: dict, server: dict | None, workload: str) -> dict:
    """The reference row: the receiver's figure where perftest reports one (ib_send_bw's
    server counts what arrived), else the client's; both kept."""
    main = client
    if workload == "rdma_send" and server and server.get("gbps"):
        main = server
    util = {"client": client.get("cpu_pct"), "server": (server or {}).get("cpu_pct")}
    return {
        "tool": client["tool"], "version": client.get("version") or (server or {}).get("version"),
        "bytes": main.get("bytes"), "window_s": main.get("window_s"), "gbps": main["gbps"],
        "sent_gbps": client.get("gbps"), "peak_gbps": main.get("peak_gbps"),
        "mpps": main.get("mpps"),
        "machine_user_pct": util, "machine_user_pct_meaning": CPU_UTIL_MEANING,
        # perftest does not measure its own processes' CPU: no per-side figure to compare.
        "cpu_s_per_gb": {"sender": None, "receiver": None},
        "source": {"client": client.get("source"), "server": (server or {}).get("source")},
        "measured_by": "server (receiver)" if main is server else "client (sender)",
    }


def _version(text: str) -> str | None:
    m = re.search(r"[Vv]ersion\s*:?\s*([\d.]+)", text)
    return m.group(1) if m else None


def _error_line(text: str) -> str:
    for line in text.splitlines():
        low = line.lower()
        # "not available" / "doesn't work": perftest's refusals of an option (-e on WRITE,
        # events in duration mode)
        if any(w in low for w in ("error", "failed", "unable", "couldn't", "no ib devices",
                                  "not available", "doesn't work")):
            return line.strip()[:200]
    return text.strip().splitlines()[-1][:200] if text.strip() else ""


def _int(v) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
