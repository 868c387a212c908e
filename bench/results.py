"""The result document: one JSON file per run, versioned, written atomically.

Schema history (refuse newer, upgrade older when a reader knows how):
  1 — 2026-11: metadata, cases with samples (ours) and reference samples (iperf3 et al.);
      optional per-case `copies` (the traced sample: copy counts per side, backend choices,
      tracer overhead, cost model). Readers treat a missing `copies` as "not counted".
  2 — 2026-11-26: run `reason`; case status "not run"; samples carry `warmup`, `order`,
      `clock`, `window_bytes`; reference samples `buffers` and `cpu_s_per_gb`; copies per
      point `quality`, `calls_exact`, `bytes_exact`, `lost`, `ns_probe_per_call`, per side
      `deferred` and `total_*`; metadata `method`, `copies_note`. Every addition is optional,
      so version 1 files read as they are (no warm-up, no quality: treated as not stated).
  3 — 2026-12: per-case `syscalls` (the agents' system calls counted in the kernel: per side
      calls, calls per GB, per message, top syscalls, quality; which sample counted them);
      metadata `syscalls_note` and `method.syscalls`; run `analysis.breakeven` (the zerocopy
      break-even size per path and topology, bench/crossover.py); cases' `params.queue_depth`
      and samples' `io_uring`. Optional: version 1 and 2 files read as they are, their
      syscall columns shown as not counted. 2026-12-02: optional case `traceback` (an
      unforeseen error that failed the case) and copies `traceback` (a tracer that broke);
      optional `params.zc_chunk` and `params.zc_rcvlowat` (zerocopy-receive cases).
The fields are described in DESIGN.md ("Result schema"); a unit test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.atomic import write_text
from bench.errors import UsageError

SCHEMA_VERSION = 3
SOFT_ROCE_SIDE = "soft-RoCE"     # copies.sides key of a row's soft-RoCE copies (bench/copycount.py)
STATUSES = ("ok", "skipped", "failed", "interrupted", "not run")
RUN_STATUSES = ("running", "complete", "failed", "interrupted")


@dataclass
class CaseResult:
    id: str
    workload: str
    size: int
    topology: str
    status: str = "ok"
    reason: str | None = None
    fix: str | None = None
    params: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    reference: list[dict] = field(default_factory=list)
    network: dict = field(default_factory=dict)
    copies: dict = field(default_factory=dict)
    syscalls: dict = field(default_factory=dict)
    traceback: str | None = None       # an unforeseen error that failed the case: where
    latency: dict = field(default_factory=dict)   # request/response cases (bench/latency.py)

    @property
    def is_latency(self) -> bool:
        """A request/response case: its figures are round trips (`latency`), not bandwidth."""
        return "in_flight" in self.params

    def measured(self, which: str = "samples") -> list[dict]:
        """The samples that count: warm-up samples stay in the file, out of every statistic."""
        return [s for s in getattr(self, which) if not s.get("warmup")]

    def stat(self, key: str, which: str = "samples") -> dict | None:
        """median, spread (min-max, 95% interval), mean, stdev of a numeric per-sample field
        (dotted keys allowed), over the measured samples."""
        values = [v for v in (dig(s, key) for s in self.measured(which)) if v is not None]
        return summarize(values)


@dataclass
class RunResult:
    suite: str
    metadata: dict
    cases: list[CaseResult] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished: str | None = None
    status: str = "running"
    reason: str | None = None          # why the run is failed/interrupted
    analysis: dict = field(default_factory=dict)   # figures computed across cases (breakeven)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return asdict(self)


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free confidence interval of the median from order statistics: the
    narrowest [x(k), x(n-k+1)] whose coverage 1 - 2*P(Binomial(n, 1/2) < k) is >= level.
    Returns (low, high, coverage), or None when n is too small for the level (n < 6 at 95%)."""
    from math import comb
    xs = sorted(values)
    n = len(xs)
    best = None
    for k in range(1, n // 2 + 1):
        below = sum(comb(n, i) for i in range(k)) / 2 ** n
        coverage = 1 - 2 * below
        if coverage >= level:
            best = (xs[k - 1], xs[n - k], coverage)
        else:
            break
    return best


def summarize(values: list[float]) -> dict | None:
    if not values:
        return None
    ci = median_interval(values)
    med = statistics.median(values)
    return {
        "n": len(values), "mean": statistics.fmean(values), "median": med,
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values), "max": max(values),
        # (max - min) / median: the spread the README's "under 5%" goals refer to
        "spread_pct": round(100 * (max(values) - min(values)) / med, 3) if med else None,
        "ci95": {"low": ci[0], "high": ci[1], "coverage": round(ci[2], 4)} if ci else None,
    }


def rdma_retransmits(sample: dict) -> tuple[int, int] | None:
    """(timeouts that resent a window, duplicates the responder saw) in one RDMA sample, from
    the ports' hw_counters (the sender's port retransmits, the receiver's sees duplicates)."""
    r = sample.get("rdma") or {}
    tx = ((r.get("sender") or {}).get("device_counters")) or None
    rx = ((r.get("receiver") or {}).get("device_counters")) or None
    if tx is None and rx is None:
        return None
    return ((tx or rx).get("retransmits", 0), (rx or tx).get("duplicates", 0))


def dig(d: dict, dotted: str):
    """d['a']['b'] for 'a.b'; None where any part is missing."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# Pseudo filesystems: a "directory" there takes no result files (or takes them into the kernel).
PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def out_dir_error(out: Path) -> str | None:
    """Why `out` cannot hold result files, or None. Creates nothing: the run makes it later."""
    resolved = out.resolve()
    for root in PSEUDO_ROOTS:
        if resolved == root or root in resolved.parents:
            return f"is under {root}, a kernel pseudo filesystem"
    if resolved.exists() and not resolved.is_dir():
        return "exists and is not a directory"
    existing = resolved
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def new_path(out: Path, suite: str, now: datetime | None = None) -> Path:
    """A result file name no other run uses: suite, local time to the second, then this
    process's pid and two random bytes (two runs started in the same second differ by pid on
    one host, by the random part across hosts sharing a directory). Skips names that exist."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    while True:
        path = out / f"{suite}-{stamp}-{os.getpid():x}{os.urandom(2).hex()}.json"
        if not path.exists():
            return path


def save(result: RunResult, path: Path) -> Path:
    """Written atomically (bench/atomic.py): never a half file."""
    return write_text(path, json.dumps(result.to_json(), indent=1, sort_keys=False) + "\n",
                      mode=None)


def from_json(doc: dict, source: str = "<dict>") -> RunResult:
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if version is None:
        raise UsageError(f"{source} is not a copybench result (no schema_version)",
                         "pass a JSON file written by `bench run`")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(f"{source} has schema_version {version!r}, newer than this copybench "
                         f"understands ({SCHEMA_VERSION})", "upgrade copybench to read it")
    if version < 1:
        raise UsageError(f"{source} has unknown schema_version {version}",
                         "re-run the benchmark with this copybench")
    cases = [CaseResult(**c) for c in doc.get("cases", [])]
    fields = {k: doc[k] for k in ("suite", "metadata", "started", "finished", "status", "reason",
                                  "analysis") if k in doc}
    return RunResult(cases=cases, schema_version=version, **fields)


def load(path: Path) -> RunResult:
    """One result file, or one clear UsageError naming the fix (never a traceback): missing,
    a directory, empty, unreadable, truncated or corrupt JSON, unknown or newer schema."""
    path = Path(path)
    fix = "pass a result JSON written by `bench run`"
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a result file", fix + " (e.g. results/*.json)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"result file {path} not found", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", fix) from None
    if not text.strip():
        raise UsageError(f"{path} is empty (a run killed before its first write?)", fix)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON, truncated or corrupt ({exc})", fix) from None
    try:
        return from_json(doc, str(path))
    except (TypeError, AttributeError, ValueError) as exc:
        raise UsageError(f"{path} is a corrupt copybench result ({exc})", fix) from None
