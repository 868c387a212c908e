"""perftest's latency tests (ib_send_lat, ib_write_lat) as the references of the RDMA
request/response workloads (rdma_send_lat, rdma_write_lat).

What perftest measures (perftest_parameters.c, print_report_lat): in iteration mode (-n N) the
client stamps each post with the CPU's cycle counter; the N - 1 differences between successive
posts are its round trips; it sorts them, drops the 2 largest, and prints each figure halved
("one-way": SEND and WRITE round trips are divided by 2): t_min, t_max, t_typical (the median),
t_avg, t_stdev, the 99% and 99.9% percentiles. In duration mode (-D) it prints only t_avg (also
halved) and a rate. `parse()` gives the round trips (2 x what it printed) in ns, as our rows
and sockperf's are. ib_write_lat has no event mode ("Events feature not available on WRITE
verb"); ib_send_lat's -e works only with -n. Argument builders and `parse()` are pure and
tested on captured output (tests/data/perftest).
"""

from __future__ import annotations

import re

from bench.references import installed
from bench.references.perftest import MIN_ITERS, _error_line, _version, waited

TOOL = "perftest"
TOOLS = {"rdma_send_lat": "ib_send_lat", "rdma_write_lat": "ib_write_lat"}
COUNTS = True            # it runs for a count (-n) as well as a time: a --bytes case has a peer
PORT = 18515             # perftest's default TCP port for its own exchange
DROPPED_TAIL = 2         # perftest's LAT_MEASURE_TAIL: the largest round trips it leaves out
MEASURE = ("round trip = 2 x perftest's one-way figures (it halves each SEND/WRITE round trip); "
           "iteration mode: the N - 1 intervals between successive posts, the 2 largest "
           "dropped, median = t_typical; timed with the CPU cycle counter at its /proc/cpuinfo "
           "MHz")


def tool_for(workload: str) -> str | None:
    return TOOLS.get(workload)


def available(tool: str = "ib_send_lat") -> tuple[bool, str]:
    return installed.available(tool)


def check(tools) -> None:
    for t in sorted(set(tools)):
        installed.check(t, "perftest")


def peer_note(workload: str, size: int, response: int | None = None,
              in_flight: int = 1) -> str | None:
    """Why a latency row has no perftest peer, or None where ib_*_lat mirrors it."""
    if workload not in TOOLS:
        return "no like-for-like peer in perftest"
    if response not in (None, size):
        return "perftest's latency tests send the same size both ways: no peer for R != Q"
    if in_flight != 1:
        return "perftest's latency tests keep one message in flight"
    return None


def wait_used(workload: str, wait: str, iterations: int | None) -> str:
    """How perftest waits when ours wait `wait`: -e (events) only for ib_send_lat in
    iteration mode; otherwise it busy-polls (its default)."""
    if wait == "events" and workload == "rdma_send_lat" and iterations:
        return "events"
    return "poll"


def unlike(workload: str, wait: str, iterations: int | None) -> str | None:
    """Why perftest cannot wait as ours do, in its own words; None where it can."""
    if wait_used(workload, wait, iterations) == wait:
        return None
    if workload == "rdma_write_lat":
        return "ib_write_lat has no event mode (perftest: 'Events feature not available on " \
               "WRITE verb')"
    return "ib_send_lat refuses -e in duration mode (perftest: 'Duration mode doesn't work " \
           "with events.')"


def argv(workload: str, device: str, port: int, gid_index: int | None, size: int, inline: int,
         iterations: int | None, duration: float, tcp_port: int = PORT,
         server: str | None = None, wait: str = "poll") -> list[str]:
    """One side of ib_*_lat doing what our agents do: the same device, port, GID index, size
    and inline threshold; `iterations` transactions (-n, at least perftest's minimum) where
    known, else `duration` (-D, whole seconds). `server`: the client's target; None for the
    server."""
    tool = tool_for(workload)
    if tool is None:
        raise ValueError(f"perftest has no latency peer for workload {workload}")
    a = [tool, "-d", device, "-i", str(port), "-s", str(size), "-I", str(inline), "-F",
         "-p", str(tcp_port)]
    if gid_index is not None:
        a += ["-x", str(gid_index)]
    if iterations:
        a += ["-n", str(max(iterations, MIN_ITERS))]
    else:
        a += ["-D", str(max(int(round(duration)), 1))]
    if wait_used(workload, wait, iterations) == "events":
        a.append("-e")
    if server:
        a.append(server)
    return a


# The results table's columns, as perftest names them (RESULT_FMT_LAT, RESULT_FMT_LAT_DUR):
# single spaces separate some of them, so they are matched by name, not split on spaces.
_COLUMNS = re.compile(r"#bytes|#iterations|t_\w+\[\w+\]|99(?:\.9)?% percentile\[\w+\]|"
                      r"tps average|CPU_Util\[%\]")
_FIGURES = {"t_min": "min_ns", "t_max": "max_ns", "t_typical": "p50_ns", "t_avg": "mean_ns",
            "t_stdev": "stddev_ns", "99% percentile": "p99_ns",
            "99.9% percentile": "p99_9_ns"}
_UNITS = {"usec": 1000.0, "nsec": 1.0, "msec": 1e6}


def _table(text: str) -> tuple[list[str], list[str]] | None:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("#bytes"):
            cols = _COLUMNS.findall(line)
            for row in lines[i + 1:]:
                vals = row.split()
                if vals and re.fullmatch(r"\d+", vals[0]):
                    return cols, vals
    return None


def parse(stdout: str, tool: str = "ib_send_lat") -> dict:
    """The client's report as a latency row: round trips in ns (2 x the printed one-way
    figures), iterations, the mode, and the round trips per second (duration mode: its
    printed rate; iteration mode: 1 / mean, perftest prints no rate there)."""
    found = _table(stdout)
    if found is None:
        err = _error_line(stdout)
        raise ValueError(f"{tool} printed no results{': ' + err if err else ''}")
    cols, vals = found
    out: dict = {"tool": tool, "version": _version(stdout), "wait": waited(stdout),
                 "measure": MEASURE}
    for col, val in zip(cols, vals, strict=False):
        try:
            num = float(val)
        except ValueError:
            continue
        if col == "#bytes":
            out["size"] = int(num)
        elif col == "#iterations":
            out["iterations"] = int(num)
        elif col == "tps average":
            out["transactions_per_s"] = num
        elif col.startswith("CPU_Util"):
            out["cpu_pct"] = num
        else:
            name, _, unit = col.partition("[")
            key = _FIGURES.get(name)
            factor = _UNITS.get(unit.rstrip("]"))
            if key and factor:
                out[key] = int(round(2 * num * factor))     # one-way, as printed -> round trip
    if "mean_ns" not in out:
        raise ValueError(f"{tool}: results table without t_avg: {cols}")
    out["mode"] = "iterations" if "p50_ns" in out else "duration"
    if out["mode"] == "iterations":
        out["transactions"] = max(out.get("iterations", 0) - 1 - DROPPED_TAIL, 0)
        out["transactions_per_s"] = round(1e9 / out["mean_ns"], 3) if out["mean_ns"] else None
        out["rate_from"] = "1 / mean round trip (perftest prints no rate in iteration mode)"
    else:
        out["rate_from"] = "perftest's tps average (duration mode: no percentiles printed)"
    return out

