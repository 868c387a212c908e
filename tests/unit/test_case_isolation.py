"""Per-case isolation (issue 20, part 7): whatever one case raises fails that case only, with
its traceback in the result; a broken tracer costs only the copy counts; the traced sample's
payload errors fail the case. A runner with fake samples: no agents, no root."""

import json

import pytest

from bench import results
from bench.counting import Instruments
from bench.plan import Case, Plan
from bench.runner import Runner
from bench.sample import Sample


class FakePlacement:
    remote = False
    machines = 1

    def sysinfo(self):
        return {}

    def endpoints(self, kind):
        return None

    def snapshot(self, kind):
        return {"kind": kind}

    def teardown(self):
        self.torn_down = True


def _case(workload: str, size: int = 1000) -> Case:
    return Case(workload=workload, size=size, topology="loopback", duration=1.0, count=None,
                repeat=2, reference=False)


def _sample(**extra) -> dict:
    return {"bytes": 1000, "messages": 1, "messages_sent": 1, "gbps": 1.0, "payload_errors": 0,
            **extra}


class FakeSampler:
    """Samples from a table instead of agents: `raises[workload]` is what its samples raise,
    `tracer_raises` what a traced sample raises (the tracer's attach or read failing),
    `traced` the record of a traced sample."""

    def __init__(self, raises=None, tracer_raises=None, traced=None):
        self.raises, self.tracer_raises, self.traced = raises or {}, tracer_raises, traced

    def run(self, case, ep, tracer=None, syscalls=None):
        exc = self.raises.get(case.workload)
        if exc is not None:
            raise exc
        if tracer is not None and self.tracer_raises is not None:
            raise self.tracer_raises
        return Sample(self.traced if tracer is not None and self.traced else _sample())

    def stop(self):
        pass


class FakeCounting(Instruments):
    """A copy tracer that needs no kernel; the copies are the traced sample as it came."""

    def tracers_for(self, case):
        return object(), None

    def copies(self, case, cr, sample, tracer):
        return {"status": "ok", "traced_sample": sample.record}


def _run(tmp_path, cases, copies=False, **fakes) -> results.RunResult:
    r = Runner(Plan("t", tuple(cases)), tmp_path / "r.json", placement=FakePlacement(),
               warmup=False)
    r.sampler = FakeSampler(**fakes)
    r.counting = FakeCounting(r.placement, "off", "off", r.result.metadata)
    r.counting.check()                      # copies and syscalls off: no placement asked
    if copies:
        r.counting.copies_state = None      # as if a tracer were available
    out = r.run()
    on_disk = results.load(tmp_path / "r.json")
    assert [c.status for c in on_disk.cases] == [c.status for c in out.cases]
    return out


def _netlink_error():
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError(17, "File exists")


@pytest.mark.parametrize("exc,name", [
    (TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"), "TypeError"),
    (OSError(28, "No space left on device"), "OSError"),
    (ZeroDivisionError("division by zero"), "ZeroDivisionError"),
    (None, "NetlinkError"),
])
def test_any_exception_fails_only_its_case(tmp_path, exc, name):
    exc = exc or _netlink_error()
    res = _run(tmp_path, [_case("udp"), _case("tcp")], raises={"udp": exc})
    bad, good = res.cases
    assert bad.status == "failed" and bad.reason.startswith(f"{name}: ")
    assert bad.traceback is not None and "Traceback (most recent call last)" in bad.traceback
    assert f"{name}" in bad.traceback and "_run_sample" in bad.traceback
    assert good.status == "ok" and len(good.samples) == 2 and good.traceback is None
    assert res.status == "failed" and res.reason == "1 of 2 cases failed: udp-1000-loopback"
    # the traceback is in the file, as text
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["cases"][0]["traceback"] == bad.traceback


def test_keyboard_interrupt_is_not_swallowed_by_isolation(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, [_case("udp"), _case("tcp")], raises={"udp": KeyboardInterrupt()})
    doc = results.load(tmp_path / "r.json")
    assert doc.status == "interrupted"
    assert [c.status for c in doc.cases] == ["interrupted", "not run"]


@pytest.mark.parametrize("exc", [RuntimeError("bpftrace exited 1"), KeyError("send_copy"),
                                 TypeError("'NoneType' object is not subscriptable")])
def test_a_tracer_error_costs_only_the_counts(tmp_path, exc):
    res = _run(tmp_path, [_case("udp")], copies=True, tracer_raises=exc)
    (cr,) = res.cases
    assert cr.status == "ok" and len(cr.samples) == 2     # the measured samples stay
    assert cr.copies["status"] == "failed"
    assert cr.copies["reason"] == f"copy counting failed: {type(exc).__name__}: {exc}"
    assert "Traceback" in cr.copies["traceback"] and "_copy_sample" in cr.copies["traceback"]
    assert res.status == "complete"


def test_an_agent_error_in_the_traced_sample_fails_the_case(tmp_path):
    from bench.agents import AgentError
    res = _run(tmp_path, [_case("udp"), _case("tcp")], copies=True,
               tracer_raises=AgentError("receiver died"))
    assert [c.status for c in res.cases] == ["failed", "failed"]
    assert res.cases[0].reason == "receiver died"


def test_payload_errors_in_the_traced_sample_fail_the_case(tmp_path):
    res = _run(tmp_path, [_case("udp")], copies=True, traced=_sample(payload_errors=3))
    (cr,) = res.cases
    assert cr.status == "failed"
    assert cr.reason == ("payload verification failed in 0 of 2 samples and in the traced "
                         "sample (3 bad)")
    assert "wrong bytes" in cr.fix


def test_clean_traced_sample_keeps_the_case_ok(tmp_path):
    res = _run(tmp_path, [_case("udp")], copies=True)
    assert res.cases[0].status == "ok" and res.cases[0].copies["status"] == "ok"
