"""Suites are data: TOML files with defaults and a matrix (workloads x sizes x topologies).

    name = "smoke"
    description = "..."
    needs = ["exact-copies", "rdma"]   # optional: what `--target auto` looks for (SUITE_NEEDS)
    [defaults]                # any of: duration, bytes, repeat, topology, reference, batch
    duration = 1.0
    [[matrix]]
    workloads = ["udp"]
    sizes = [1472]
    topologies = ["veth"]     # optional, else defaults.topology
    batch = 1                 # optional, else defaults.batch (UDP datagrams per call)
    queue_depth = 32          # optional, else defaults.queue_depth (io_uring requests per submission)
    rdma_wait = "poll"        # optional, else defaults.rdma_wait ("events": the default)
    zc_chunk = 65536          # optional, else defaults.zc_chunk (TCP_ZEROCOPY_RECEIVE bytes per call)
    zc_rcvlowat = 65536       # optional, else defaults.zc_rcvlowat (its SO_RCVLOWAT, bytes)
    response_size = 64        # optional, else defaults.response_size (request/response: R, else Q)
    in_flight = 1             # optional, else defaults.in_flight (transactions outstanding)
    flows = [1, 2, 4]         # optional, else defaults.flows: one case per flow count
    duration = 1.0            # optional, else defaults.duration (--duration/--bytes still win)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from bench.errors import UsageError

DEFAULT_KEYS = {"duration": (int, float), "bytes": int, "repeat": int, "topology": str,
                "reference": bool, "batch": int,
                # RDMA cases (issue 9): send queue depth, inline threshold (B), a signalled
                # completion every N WRs
                "rdma_depth": int, "rdma_inline": int, "rdma_signal_every": int,
                # how both sides wait for completions: "events" (ours spin, then sleep;
                # perftest -e where it can) or "poll" (both busy-poll)
                "rdma_wait": str,
                # io_uring cases (issue 10): requests in flight per submission
                "queue_depth": int,
                # TCP_ZEROCOPY_RECEIVE cases: bytes mapped per call, the receiver's SO_RCVLOWAT
                "zc_chunk": int, "zc_rcvlowat": int,
                # request/response cases: R bytes (default Q), transactions in flight (1)
                "response_size": int, "in_flight": int,
                # sendfile cases: the directory of the file they send from (its file system)
                "sendfile_dir": str,
                # independent flows per case (each its own sender and receiver processes)
                "flows": int}
# What a suite can declare it needs, for `--target auto` (bench/autotarget.py): exact per-copy
# counts (kprobes) and an RDMA device with pyverbs.
SUITE_NEEDS = ("exact-copies", "rdma")
MATRIX_KEYS = {"workloads": list, "sizes": list, "topologies": list, "batch": int,
               "queue_depth": int, "zc_chunk": int, "zc_rcvlowat": int, "response_size": int,
               "in_flight": int, "flows": list}
MATRIX_KEYS["rdma_wait"] = str      # RDMA cases: as defaults.rdma_wait, for this entry
# seconds per sample for this entry's cases (defaults.duration else); --duration and --bytes
# on the command line still decide for every case
MATRIX_KEYS["duration"] = (int, float)


@dataclass(frozen=True)
class MatrixEntry:
    workloads: tuple[str, ...]
    sizes: tuple[int, ...]
    topologies: tuple[str, ...] = ()
    batch: int | None = None        # overrides defaults.batch for this entry's UDP cases
    queue_depth: int | None = None  # overrides defaults.queue_depth for its io_uring cases
    rdma_wait: str | None = None    # overrides defaults.rdma_wait for its RDMA cases
    zc_chunk: int | None = None     # overrides defaults.zc_chunk for its zerocopy-receive cases
    zc_rcvlowat: int | None = None  # overrides defaults.zc_rcvlowat likewise
    response_size: int | None = None   # overrides defaults.response_size (request/response)
    in_flight: int | None = None       # overrides defaults.in_flight likewise
    flows: tuple[int, ...] | None = None   # one case per flow count (defaults.flows else)
    duration: float | None = None      # overrides defaults.duration for this entry's cases


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    defaults: dict = field(default_factory=dict)
    matrix: tuple[MatrixEntry, ...] = ()
    source: str = ""
    needs: tuple[str, ...] = ()


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("bench.suites").iterdir()
                  if p.name.endswith(".toml"))


def load(name_or_path: str) -> Suite:
    """A built-in suite by name, or a TOML file by path."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise UsageError(f"suite file {name_or_path} not found",
                             "give an existing .toml path or a built-in name: "
                             + ", ".join(builtin_names()))
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"suite file {name_or_path} is not UTF-8 text (byte {exc.start}: "
                             f"{exc.reason})", "give a TOML suite file saved as UTF-8") from None
        except OSError as exc:
            raise UsageError(f"cannot read suite file {name_or_path}: {exc.strerror}",
                             "give a readable .toml path") from None
        return parse(text, source=str(path))
    if name_or_path not in builtin_names():
        raise UsageError(f"unknown suite {name_or_path!r}",
                         "use one of: " + ", ".join(builtin_names()) + " (or a path to a .toml)")
    text = resources.files("bench.suites").joinpath(f"{name_or_path}.toml").read_text()
    return parse(text, source=f"builtin:{name_or_path}")


def _typed(where: str, key: str, value, want) -> None:
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise UsageError(f"{where}: {key} = {value!r} has the wrong type",
                         "see the suite format in bench/suite.py")


def parse(text: str, source: str = "<string>") -> Suite:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"suite {source} is not valid TOML: {exc}",
                         "fix the TOML syntax at the position shown") from None
    unknown = set(doc) - {"name", "description", "needs", "defaults", "matrix"}
    if unknown:
        raise UsageError(f"suite {source}: unknown key(s) {', '.join(sorted(unknown))}",
                         "allowed top-level keys: name, description, needs, defaults, matrix")
    needs = doc.get("needs", [])
    _typed(f"suite {source}", "needs", needs, list)
    if set(needs) - set(SUITE_NEEDS):
        raise UsageError(f"suite {source}: unknown need(s) "
                         + ", ".join(sorted(map(str, set(needs) - set(SUITE_NEEDS)))),
                         "allowed: " + ", ".join(SUITE_NEEDS))
    defaults = doc.get("defaults", {})
    for key, value in defaults.items():
        if key not in DEFAULT_KEYS:
            raise UsageError(f"suite {source}: unknown default {key!r}",
                             "allowed: " + ", ".join(DEFAULT_KEYS))
        _typed(f"suite {source} [defaults]", key, value, DEFAULT_KEYS[key])
    entries = []
    for i, raw in enumerate(doc.get("matrix", [])):
        where = f"suite {source} [[matrix]] #{i + 1}"
        for key, value in raw.items():
            if key not in MATRIX_KEYS:
                raise UsageError(f"{where}: unknown key {key!r}", "allowed: " + ", ".join(MATRIX_KEYS))
            _typed(where, key, value, MATRIX_KEYS[key])
        if not raw.get("workloads") or not raw.get("sizes"):
            raise UsageError(f"{where}: needs non-empty 'workloads' and 'sizes' lists",
                             'e.g. workloads = ["udp"] and sizes = [1472]')
        for s in raw["sizes"]:
            _typed(where, "sizes", s, int)
        entries.append(MatrixEntry(tuple(raw["workloads"]), tuple(raw["sizes"]),
                                   tuple(raw.get("topologies", ())), raw.get("batch"),
                                   raw.get("queue_depth"), zc_chunk=raw.get("zc_chunk"),
                                   zc_rcvlowat=raw.get("zc_rcvlowat"),
                                   response_size=raw.get("response_size"),
                                   in_flight=raw.get("in_flight"),
                                   flows=tuple(raw["flows"]) if "flows" in raw else None,
                                   duration=raw.get("duration")))
    # each entry's own rdma_wait, where it names one
    entries = [replace(e, rdma_wait=raw["rdma_wait"]) if "rdma_wait" in raw else e
               for e, raw in zip(entries, doc.get("matrix", []), strict=True)]
    if not entries:
        raise UsageError(f"suite {source} has no [[matrix]] entries",
                         "add at least one [[matrix]] with workloads and sizes")
    return Suite(name=str(doc.get("name", Path(source).stem)),
                 description=str(doc.get("description", "")), defaults=defaults,
                 matrix=tuple(entries), source=source, needs=tuple(needs))
