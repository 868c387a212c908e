"""SIGINT, SIGTERM and SIGHUP end `bench run` / `bench nightly` at any moment with exit
128 + the signal and a result whose status is "interrupted", whatever dispositions the run
inherited.

Every run here starts with all three signals ignored, as a background job of a non-interactive
shell starts (SIGINT ignored there made `bench run … &` deaf to `kill -INT`), so the outcome does
not depend on how pytest itself was started. Each moment is reached by waiting on what the run
itself shows (its progress lines, its own child processes), not on a sleep."""

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, bench_cmd

IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _inherit_ignored():
    for s in IGNORED:
        signal.signal(s, signal.SIG_IGN)


class Run:
    """`bench ARGS` in a subprocess with its stderr read line by line as it comes."""

    def __init__(self, *args: str):
        self.p = subprocess.Popen(bench_cmd(*args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO,
                                  preexec_fn=_inherit_ignored)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.p.stderr:
            self.lines.append(line)

    def wait_line(self, needle: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in ln for ln in self.lines):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no progress line with {needle!r}:\n" + "".join(self.lines))

    def wait_child(self, comm: str, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in descendants(self.p.pid):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                        return pid
                except OSError:
                    pass
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {comm} process under the run:\n" + "".join(self.lines))

    def finish(self, timeout: float = 60) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("the run did not stop after the signal:\n"
                                 + "".join(self.lines)) from None
        self._reader.join(5)
        return rc


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int(
                    (d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _one_result(out: Path) -> dict:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _assert_interrupted(run: Run, sig: signal.Signals, out: Path) -> dict:
    rc = run.finish()
    err = "".join(run.lines)
    assert rc == 128 + sig, err
    assert "interrupted" in err and "Traceback" not in err
    doc = _one_result(out)
    assert doc["status"] == "interrupted", doc.get("reason")
    assert sig.name in doc["reason"], doc["reason"]
    statuses = [c["status"] for c in doc["cases"]]
    assert "interrupted" in statuses, statuses
    after = statuses[statuses.index("interrupted") + 1:]
    assert all(s == "not run" for s in after), statuses
    return doc


def _smoke(out: Path, *extra: str) -> list[str]:
    return ["run", "--suite", "smoke", "--out", str(out), "--duration", "2", *extra]


@pytest.mark.parametrize("sig", IGNORED, ids=lambda s: s.name)
def test_signal_inside_a_sample(tmp_path, root_only, no_leftovers, sig):
    run = Run(*_smoke(tmp_path, "--no-reference", "--copies", "off"))
    run.wait_child("sender")
    run.p.send_signal(sig)
    doc = _assert_interrupted(run, sig, tmp_path)
    assert doc["cases"][0]["status"] == "interrupted"


def test_signal_between_samples(tmp_path, root_only, no_leftovers):
    """Right after the first sample's progress line: the runner is between samples or starting
    the next one; either way the case is interrupted, its finished sample kept."""
    run = Run(*_smoke(tmp_path, "--no-reference", "--copies", "off", "--repeat", "3"))
    run.wait_line("#1:")
    run.p.send_signal(signal.SIGHUP)
    doc = _assert_interrupted(run, signal.SIGHUP, tmp_path)
    assert doc["cases"][0]["status"] == "interrupted"


def test_signal_during_the_traced_sample(tmp_path, root_only, no_leftovers):
    """The copy tracer (bpftrace on this kernel's tracepoints) is running: it must be stopped and
    the interrupt still win."""
    import shutil
    if not shutil.which("bpftrace"):
        pytest.skip("bpftrace is not installed: `python3 -m bench.bootstrap --tests` installs it")
    run = Run(*_smoke(tmp_path, "--no-reference", "--workload", "tcp", "--copies", "tracepoints"))
    run.wait_line("#1:")                   # the measured sample is over; the traced one follows
    run.wait_child("bpftrace", timeout=120)
    run.wait_child("sender")               # the traced sample's traffic is flowing
    run.p.send_signal(signal.SIGTERM)
    _assert_interrupted(run, signal.SIGTERM, tmp_path)
    assert not [p for p in descendants(run.p.pid)], "processes of the run left behind"


def test_signal_while_the_reference_runs(tmp_path, root_only, no_leftovers):
    run = Run(*_smoke(tmp_path, "--workload", "udp", "--copies", "off", "--sizes", "1472"))
    run.wait_line("udp-1472-veth (")       # the case with the iperf3 reference has started
    run.wait_child("iperf3")
    run.p.send_signal(signal.SIGINT)
    _assert_interrupted(run, signal.SIGINT, tmp_path)


def test_nightly_takes_sigterm_like_run(tmp_path, root_only, no_leftovers):
    out = tmp_path / "night"
    run = Run("nightly", "--suite", "smoke", "--db", str(tmp_path / "h.sqlite3"), "--out",
              str(out), "--duration", "2", "--no-reference", "--copies", "off")
    run.wait_child("receiver")
    run.p.send_signal(signal.SIGTERM)
    _assert_interrupted(run, signal.SIGTERM, out)
