"""Shared fixtures. Tiers: tests/unit (pure), tests/host (root on this machine: netns, veth,
real sockets), tests/lab and tests/tracing/lab (inside the QEMU lab VM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def our_netns() -> set[str]:
    try:
        from pyroute2 import netns
        return {n for n in netns.listnetns() if n.startswith("cb")}
    except OSError:
        return set()


def agent_pids() -> set[int]:
    """Our agents: named like the seed's programs and running workloads.agent."""
    pids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if ((d / "comm").read_text().strip() in ("sender", "receiver")
                        and b"workloads.agent" in (d / "cmdline").read_bytes()):
                    pids.add(int(d.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def data_dir() -> Path:
    return DATA


SOCKET_LIMIT = 4 << 20     # the harness's default socket buffer (bench.references.iperf3)


@pytest.fixture
def roomy_socket_limits():
    """UDP has no flow control: N datagrams arrive exactly only if the receiver's buffer can
    hold what it has not read yet, and at the stock net.core.rmem_max (212992) a receiver
    descheduled for a moment on a loaded 2-core machine dropped half of 1000 (545 arrived).
    Raised to the harness's default buffer for the test, and always put back."""
    paths = [Path("/proc/sys/net/core/rmem_max"), Path("/proc/sys/net/core/wmem_max")]
    old = [int(p.read_text()) for p in paths]
    try:
        for p, v in zip(paths, old, strict=True):
            if v < SOCKET_LIMIT:
                p.write_text(str(SOCKET_LIMIT))
        yield SOCKET_LIMIT
    finally:
        for p, v in zip(paths, old, strict=True):
            p.write_text(str(v))


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces): run the suite as root, as CI does")


@pytest.fixture
def run_bench(tmp_path):
    """Run the real CLI in a subprocess; return (returncode, stdout, stderr, result-or-None)."""

    def run(*args: str, timeout: float = 180):
        out_dir = tmp_path / "out"
        p = subprocess.run(bench_cmd(*args, "--out", str(out_dir)) if args and args[0] == "run"
                           else bench_cmd(*args), capture_output=True, text=True, timeout=timeout,
                           cwd=REPO)
        files = sorted(out_dir.glob("*.json")) if out_dir.exists() else []
        doc = json.loads(files[-1].read_text()) if files else None
        return p.returncode, p.stdout, p.stderr, doc

    return run


def _orphaned(pid: int) -> bool:
    """An agent whose runner is gone (reparented to init or a subreaper that is not bench)."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False          # the agent itself is gone
    return ppid == 1 or b"bench" not in parent


@pytest.fixture
def no_leftovers():
    """Asserts a test leaves no netns and no agent behind.

    Other runs may work beside this test (a developer's second checkout, helpers): what counts
    is what only a leak leaves, namespaces whose creating runner (cb<pid>…) is dead and agents
    whose runner is gone."""
    ns0, agents0 = our_netns(), agent_pids()
    yield
    ns, agents = leaked(ns0, agents0)
    assert ns == set(), "network namespaces left behind"
    assert agents == set(), "agent processes left behind"


def leaked(ns0: set[str], agents0: set[int]) -> tuple[set[str], set[int]]:
    """Since (ns0, agents0): namespaces whose creating runner is dead or is this process (its
    run is over), agents whose runner is gone — what only a leak leaves, whatever else runs
    beside."""
    from bench.topology import stale_namespaces
    new = sorted(our_netns() - ns0)
    mine = {n for n in new if n.startswith(f"cb{os.getpid()}")}   # a runner in this process
    return (set(stale_namespaces(new)) | mine,
            {p for p in agent_pids() - agents0 if _orphaned(p)})


# -- required tiers ------------------------------------------------------------------------------
# COPYBENCH_REQUIRE=host,lab (set by .ci/run): a skipped test of a required tier is a failure,
# so CI can never pass without exercising the root tests on this machine and the lab VM.
def pytest_configure(config):
    config.addinivalue_line("markers", "host: needs this machine's kernel facilities (io_uring, "
                            "liburing) but not root; in the host tier")


@pytest.fixture(autouse=True)
def _lab_left_working(request):
    """After each test that uses the lab VM: a VM it left frozen fails that test (with the
    console tail) and is restarted, so the failure stays with its cause."""
    if not request.node.get_closest_marker("lab"):
        yield
        return
    from bench.lab.paths import lab_paths
    from tests import lab_recovery
    yield
    paths = lab_paths()
    why = lab_recovery.broken(paths)
    if why:
        tails = lab_recovery.console_tails(paths)
        lab_recovery.restart_one_node(paths)
        pytest.fail(f"this test left the lab VM broken ({why}); the lab was restarted for the "
                    f"tests after it\n{tails}", pytrace=False)


def tier(item) -> str:
    if item.get_closest_marker("lab"):
        return "lab"
    if (item.get_closest_marker("root") or item.get_closest_marker("host")
            or "/tests/host/" in str(item.path)):
        return "host"
    return "unit"


def path_tier(path: str) -> str:
    """A module's tier from its path alone (a collection report has no markers)."""
    if "/tests/lab/" in path or "/lab/" in path.split("/tests/", 1)[-1]:
        return "lab"
    return "host" if "/tests/host/" in path else "unit"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module of a required tier that skips at collection (module-level skip/importorskip)
    fails like a skipped test does: otherwise its tests vanish without a word."""
    outcome = yield
    report = outcome.get_result()
    t = path_tier(str(getattr(collector, "path", "")))
    if report.skipped and t in required_tiers():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"required tier {t!r} skipped at collection (COPYBENCH_REQUIRE="
                           f"{os.environ.get('COPYBENCH_REQUIRE')}): {reason}")


def required_tiers() -> set[str]:
    return {t.strip() for t in os.environ.get("COPYBENCH_REQUIRE", "").split(",") if t.strip()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    t = tier(item)
    if report.skipped and t in required_tiers() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"required tier {t!r} skipped (COPYBENCH_REQUIRE="
                           f"{os.environ.get('COPYBENCH_REQUIRE')}): {reason}")


def wait_for_agent(parent: int, role: str, timeout=30) -> int:
    """The pid of the `role` agent (sender/receiver) that the runner `parent` started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in agent_pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == role and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no {role} agent appeared")
