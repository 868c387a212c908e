"""bench/session.py: typed options in, the outcome out; the plan expanded once (a two-node
target, which runs across its link, expands it again for that topology only)."""

from pathlib import Path

import pytest

from bench import plan, session, suite
from bench.errors import UsageError
from bench.results import RunResult


class FakePlacement:
    forced_topology = None
    closed = False

    def capabilities(self, names):
        return {}

    def describe(self):
        return {"kind": "fake"}

    def usable_cpus(self, side):
        return 2

    def close(self):
        self.closed = True


class FakeRunner:
    made: list = []

    def __init__(self, the_plan, out, **kw):
        self.plan, self.out, self.kw = the_plan, out, kw
        self.result = RunResult(suite=the_plan.suite, metadata={})
        FakeRunner.made.append(self)

    def check(self):
        pass

    def run(self):
        self.result.status = "complete"
        return self.result


@pytest.fixture
def fakes(monkeypatch):
    expanded = []
    real = plan.expand

    def expand(s, ov=plan.Overrides()):
        expanded.append(ov.topology)
        return real(s, ov)
    placement = FakePlacement()
    monkeypatch.setattr(plan, "expand", expand)
    monkeypatch.setattr(session, "placement_for", lambda spec: placement)
    monkeypatch.setattr("bench.runner.Runner", FakeRunner)
    FakeRunner.made = []
    return expanded, placement


def _options(tmp_path, **kw):
    return session.RunOptions(out=tmp_path, target="local", copies="off", syscalls="off",
                              workloads=("tcp",), sizes=(4096,), repeat=1, **kw)


def test_a_run_expands_the_plan_once_and_returns_its_outcome(tmp_path, fakes):
    expanded, placement = fakes
    out = session.run(suite.load("smoke"), _options(tmp_path, cpus=(0, 1)),
                      reporter_for=lambda total: None)
    assert expanded == [None]
    assert out.result.status == "complete" and out.target == {"requested": "local",
                                                               "chosen": "local"}
    assert out.path.parent == Path(tmp_path) and out.path.name.startswith("smoke-")
    (runner,) = FakeRunner.made
    assert runner.kw["cpus"] == (0, 1) and runner.kw["copies_spec"] == "off"
    assert runner.result.metadata["target"] == out.target and placement.closed


def test_a_two_node_target_expands_again_for_its_link_only(tmp_path, fakes):
    expanded, placement = fakes
    placement.forced_topology = "link"
    session.run(suite.load("smoke"), _options(tmp_path), reporter_for=lambda total: None)
    assert expanded == [None, "link"]
    assert {c.topology for c in FakeRunner.made[0].plan.cases} == {"link"}
    with pytest.raises(UsageError, match="a two-node target runs across its link"):
        session.run(suite.load("smoke"), _options(tmp_path, topology="veth"),
                    reporter_for=lambda total: None)


def test_a_rerun_is_the_same_options_filtered():
    o = session.RunOptions(out=Path("n"), repeat=5, copies="auto")
    again = o.only({"udp", "tcp"}, {65536, 1472})
    assert again.workloads == ("tcp", "udp") and again.sizes == (1472, 65536)
    assert again.repeat == 5 and again.copies == "auto" and again.out == Path("n")
