"""`bench history`: every run stored in one SQLite file (stdlib sqlite3), listed, and the
previous comparable run found for `bench nightly`.

The file is `--db`, else `$XDG_DATA_HOME/copybench/history.sqlite3` (default
`~/.local/share/copybench/history.sqlite3`). Write-ahead log (readers never block the writer,
a crash loses no committed run), one transaction per added run, a busy timeout for a second
writer; the whole result document is kept, so later readers lose nothing.

Schema history (PRAGMA user_version; refuse newer, upgrade older):
  1 — 2026-11: runs (one row per result, its JSON and sha256) and cases (per case medians).
  2 — 2026-12-03: cases gain p50_ns and p99_ns (request/response cases' medians over their
      samples; their gbps, of request bytes, is left NULL). A version 1 file is upgraded in
      place (two columns added; its runs predate latency cases).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import statistics
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
from bench.results import RunResult, dig, from_json

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL UNIQUE,
  suite TEXT NOT NULL,
  started TEXT,
  status TEXT,
  hostname TEXT, cpu_model TEXT, cpu_count INTEGER, arch TEXT, kernel TEXT, git_sha TEXT,
  source TEXT,
  stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  doc TEXT NOT NULL
);
CREATE TABLE cases (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  case_id TEXT NOT NULL, workload TEXT, size INTEGER, topology TEXT, status TEXT,
  gbps REAL, sender_cpu_gb REAL, receiver_cpu_gb REAL, n INTEGER,
  p50_ns REAL, p99_ns REAL,
  PRIMARY KEY (run_id, case_id)
);
CREATE INDEX runs_by_suite ON runs(suite, hostname, started);
"""


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "copybench" / "history.sqlite3"


def _fail(path: Path, exc: sqlite3.Error) -> UsageError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return UsageError(f"history database {path} is locked by another process ({text})",
                          "wait for the other `bench` to finish and run again; nothing was "
                          "written")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return UsageError(f"history database {path} is corrupt ({text})",
                          "keep the file for recovery (`sqlite3 FILE .recover`) and pass a new "
                          "--db; nothing was written")
    return UsageError(f"history database {path}: {text}", "check the path and its permissions")


@dataclass(frozen=True)
class StoredRun:
    id: int
    suite: str
    started: str
    status: str
    hostname: str
    kernel: str
    git_sha: str | None
    source: str | None
    cases: int


class History:
    def __init__(self, path: Path | None = None, timeout: float = 5.0):
        self.path = Path(path) if path else default_path()
        if self.path.is_dir():
            raise UsageError(f"--db {self.path} is a directory", "name a file, e.g. history.sqlite3")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open history database {self.path}: {exc}",
                             "pass a writable --db") from None
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            self.db.close()
            raise _fail(self.path, exc) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageError(f"history database {self.path} has schema version {version}, newer "
                             f"than this copybench understands ({SCHEMA_VERSION})",
                             "upgrade copybench, or pass another --db")
        if version == SCHEMA_VERSION:
            return
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            found = self.db.execute("PRAGMA user_version").fetchone()[0]
            if found == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
            elif found == 1:         # round-trip medians (schema 2)
                self.db.execute("ALTER TABLE cases ADD COLUMN p50_ns REAL")
                self.db.execute("ALTER TABLE cases ADD COLUMN p99_ns REAL")
            if found < SCHEMA_VERSION:
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # -- writing ----------------------------------------------------------------------------------
    def add(self, result: RunResult, source: str | None = None) -> tuple[int, bool]:
        """Store one run in one transaction; (run id, True if new). A run already stored (same
        document) is not stored twice."""
        doc = json.dumps(result.to_json(), sort_keys=True)
        sha = hashlib.sha256(doc.encode()).hexdigest()
        m = result.metadata or {}
        try:
            with closing(self.db.cursor()) as cur:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    row = cur.execute("SELECT id FROM runs WHERE sha256 = ?", (sha,)).fetchone()
                    if row:
                        cur.execute("COMMIT")
                        return row[0], False
                    cur.execute(
                        "INSERT INTO runs (sha256, suite, started, status, hostname, cpu_model, "
                        "cpu_count, arch, kernel, git_sha, source, doc) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (sha, result.suite, result.started, result.status, m.get("hostname"),
                         m.get("cpu_model"), m.get("cpu_count"), m.get("arch"), m.get("kernel"),
                         m.get("git_sha"), source, doc))
                    run_id = cur.lastrowid
                    for c in result.cases:
                        keys = ("cpu_s_per_gb.sender", "cpu_s_per_gb.receiver") + (
                            ("latency.p50_ns", "latency.p99_ns") if c.is_latency else ("gbps",))
                        vals = {k: [v for v in (dig(s, k) for s in c.measured()) if v is not None]
                                for k in keys}
                        med = {k: statistics.median(v) if v else None for k, v in vals.items()}
                        cur.execute(
                            "INSERT INTO cases (run_id, case_id, workload, size, topology, "
                            "status, gbps, sender_cpu_gb, receiver_cpu_gb, n, p50_ns, p99_ns) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (run_id, c.id, c.workload, c.size, c.topology, c.status,
                             med.get("gbps"), med["cpu_s_per_gb.sender"],
                             med["cpu_s_per_gb.receiver"], len(c.measured()),
                             med.get("latency.p50_ns"), med.get("latency.p99_ns")))
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise _fail(self.path, exc) from None
        return run_id, True

    # -- reading ----------------------------------------------------------------------------------
    def _query(self, sql: str, args=()) -> list[tuple]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _fail(self.path, exc) from None

    def runs(self, suite: str | None = None) -> list[StoredRun]:
        rows = self._query(
            "SELECT r.id, r.suite, r.started, r.status, r.hostname, r.kernel, r.git_sha, r.source, "
            "(SELECT count(*) FROM cases c WHERE c.run_id = r.id) FROM runs r "
            + ("WHERE r.suite = ? " if suite else "") + "ORDER BY r.started, r.id",
            (suite,) if suite else ())
        return [StoredRun(*r) for r in rows]

    def load(self, run_id: int) -> RunResult:
        rows = self._query("SELECT doc FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise UsageError(f"no run {run_id} in {self.path}", "see `bench history list`")
        return from_json(json.loads(rows[0][0]), f"{self.path}#{run_id}")

    def previous(self, result: RunResult, before_id: int | None = None) -> tuple[int, RunResult] | None:
        """The latest stored complete run of the same suite on the same machine (host, CPU,
        arch), other than `before_id`: what `bench nightly` compares with."""
        ids = _comparable_rows(self, result, before_id, 1)
        return (ids[0], self.load(ids[0])) if ids else None

    def trend(self, suite: str | None = None) -> dict[str, list[tuple[str, float]]]:
        """case id -> [(started, median Gbit/s)] over the stored ok cases, oldest first."""
        rows = self._query(
            "SELECT c.case_id, r.started, c.gbps FROM cases c JOIN runs r ON r.id = c.run_id "
            "WHERE c.status = 'ok' AND c.gbps IS NOT NULL" + (" AND r.suite = ?" if suite else "")
            + " ORDER BY r.started, r.id", (suite,) if suite else ())
        out: dict[str, list[tuple[str, float]]] = {}
        for case_id, started, gbps in rows:
            out.setdefault(case_id, []).append((started, gbps))
        return out

    def latency_trend(self, suite: str | None = None) -> dict[str, list[tuple[str, float]]]:
        """case id -> [(started, median p50 round trip ns)] of request/response cases."""
        rows = self._query(
            "SELECT c.case_id, r.started, c.p50_ns FROM cases c JOIN runs r ON r.id = c.run_id "
            "WHERE c.status = 'ok' AND c.p50_ns IS NOT NULL"
            + (" AND r.suite = ?" if suite else "") + " ORDER BY r.started, r.id",
            (suite,) if suite else ())
        out: dict[str, list[tuple[str, float]]] = {}
        for case_id, started, p50 in rows:
            out.setdefault(case_id, []).append((started, p50))
        return out


def _comparable_rows(hist: History, result: RunResult, before_id: int | None,
                     limit: int) -> list[int]:
    m = result.metadata or {}
    rows = hist._query(
        "SELECT id FROM runs WHERE suite = ? AND hostname IS ? AND cpu_model IS ? AND "
        "cpu_count IS ? AND arch IS ? AND status = 'complete' AND id IS NOT ? "
        "ORDER BY started DESC, id DESC LIMIT ?",
        (result.suite, m.get("hostname"), m.get("cpu_model"), m.get("cpu_count"),
         m.get("arch"), before_id, limit))
    return [r[0] for r in rows]


def window(hist: History, result: RunResult, before_id: int | None = None,
           limit: int = 10) -> list[tuple[int, RunResult]]:
    """Up to `limit` latest stored complete runs of the same suite on the same machine (host,
    CPU, arch), newest first, other than `before_id`: the earlier nights `bench nightly` judges
    a night against. The caller filters them further (host under a VM, run parameters)."""
    return [(i, hist.load(i)) for i in _comparable_rows(hist, result, before_id, limit)]
