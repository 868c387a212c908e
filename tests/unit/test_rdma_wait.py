"""How ours and perftest wait for RDMA completions (rdma_wait = "events" | "poll"): the agent's
busy-poll mode against fake CQs (no RDMA here), perftest's argv and what each row records."""

from __future__ import annotations

import os
import socket
import time

import pytest

from tests.unit.rdma_fakes import fake_verbs, poll_with_channel, wc_success
from workloads import rdma_verbs as rv


@pytest.fixture(autouse=True)
def _wc_enums(monkeypatch):
    wc_success(monkeypatch)


class _CQ:
    """Empty until `delay` seconds have passed, then one good completion; counts its polls
    and would count any arming (a busy-polling agent never arms)."""
    class WC:
        status, opcode, wr_id = 0, 0, 1

    def __init__(self, delay: float = 1e9):
        self.at, self.polls, self.armed = time.monotonic() + delay, 0, 0

    def poll(self, n):
        self.polls += 1
        return (1, [self.WC()]) if time.monotonic() >= self.at else (0, [])

    def req_notify(self):
        self.armed += 1


def _polling(cq):
    return fake_verbs(cq, wait="poll")


@pytest.fixture
def no_sleeping(monkeypatch):
    """Busy-polling must never sleep: time.sleep fails the test, and every select() must
    have a zero timeout (it only looks at the control socket)."""
    real = rv.select.select
    timeouts = []

    def select(r, w, x, timeout=None):
        timeouts.append(timeout)
        assert timeout == 0, f"select() with timeout {timeout}: the agent slept"
        return real(r, w, x, timeout)

    def sleep(s):
        raise AssertionError(f"time.sleep({s}) while busy-polling")

    monkeypatch.setattr(rv.select, "select", select)
    monkeypatch.setattr(rv.time, "sleep", sleep)
    return timeouts


def test_busy_poll_takes_a_late_completion_without_sleeping_or_arming(no_sleeping):
    """A completion 50 ms away (25 x the events mode's spin): polled for all of it, no
    arming even with a channel there, no sleep; the whole wait is in spin_s."""
    cq = _CQ(delay=0.05)
    v = _polling(cq)
    wcs, took = poll_with_channel(v)
    assert len(wcs) == 1
    assert cq.armed == 0 and v.counters["sleeps"] == 0 and "cq_events" not in v.counters
    assert 0.04 < v.counters["spin_s"] <= took
    assert cq.polls > 1000                    # busy: thousands of polls, not one per nap
    # the control socket looked at about every CONTROL_CHECK_S, never waited on
    assert 1 <= v.counters["control_checks"] == len(no_sleeping) <= took / rv.CONTROL_CHECK_S + 1


def test_busy_poll_is_bounded_by_the_deadline(no_sleeping):
    v = _polling(_CQ())
    a, b = socket.socketpair()
    t0 = time.monotonic()
    with a, b, pytest.raises(rv.VerbsError, match="deadline"):
        v.poll(b, time.monotonic() + 0.1)
    assert 0.1 <= time.monotonic() - t0 < 2 and v.counters["sleeps"] == 0


def test_busy_poll_ends_when_the_peer_is_gone_and_at_once_when_it_failed(monkeypatch,
                                                                         no_sleeping):
    monkeypatch.setattr(rv, "PEER_GRACE_S", 0.2)
    v = _polling(_CQ())
    a, b = socket.socketpair()
    a.close()
    t0 = time.monotonic()
    with b, pytest.raises(rv.PeerGone, match="gone"):
        v.poll(b, time.monotonic() + 30)
    assert 0.2 <= time.monotonic() - t0 < 5     # after the grace, not at the deadline
    v = _polling(_CQ())
    a, b = socket.socketpair()
    with a, b:
        rv.send_error(a, "sender: VerbsError: bringing the QP to RTS failed")
        t0 = time.monotonic()
        with pytest.raises(rv.PeerGone, match="RTS failed"):
            v.poll(b, time.monotonic() + 30)
    assert time.monotonic() - t0 < 1


def test_busy_poll_raises_on_a_failed_completion():
    class Failed(_CQ):
        class WC:
            status, opcode, wr_id = 12, 0, 7       # IBV_WC_RETRY_EXC_ERR

        def poll(self, n):
            return 1, [self.WC()]
    a, b = socket.socketpair()
    with a, b, pytest.raises(rv.VerbsError, match="status 12"):
        _polling(Failed()).poll(b, time.monotonic() + 30)


def test_the_agent_reads_its_wait_and_refuses_an_unknown_one():
    assert rv.Params.from_cfg({"size": 8}).wait == "events"      # as before: spin, then sleep
    assert rv.Params.from_cfg({"size": 8, "rdma_wait": "poll"}).wait == "poll"
    with pytest.raises(ValueError, match="rdma_wait 'spin'.*events, poll"):
        rv.Params.from_cfg({"size": 8, "rdma_wait": "spin"})


def test_each_agent_records_how_it_waited():
    from workloads.rdma_flow import wait_record
    v = object.__new__(rv.Verbs)
    assert wait_record(v) == {"wait": "events", "spin_limit_s": rv.SPIN_S}
    v.wait = "poll"
    assert wait_record(v) == {"wait": "poll", "spin_limit_s": None}


# -- perftest: argv and what the row records -------------------------------------------------

def _argv(workload, wait, count):
    from bench.references import perftest
    return perftest.argv(workload, "rxe0", 1, 1, 65536, 128, 0, 16, 2.0, count,
                         server="198.19.0.2", wait=wait)


@pytest.mark.parametrize("workload", ["rdma_write", "rdma_send"])
def test_polling_runs_perftest_as_before_without_e(workload):
    for count in (None, 256):
        a = _argv(workload, "poll", count)
        assert "-e" not in a and "--events" not in a and a[-1] == "198.19.0.2"


def test_events_give_ib_send_bw_e_where_perftest_allows_it():
    a = _argv("rdma_send", "events", 256)
    assert a[0] == "ib_send_bw" and "-e" in a and a[a.index("-n") + 1] == "256"
    # -D with -e: "Duration mode doesn't work with events." (perftest's parser refuses)
    d = _argv("rdma_send", "events", None)
    assert "-e" not in d and "-D" in d
    # ib_write_bw: "Events feature not available on WRITE verb", in any mode
    for count in (None, 256):
        assert "-e" not in _argv("rdma_write", "events", count)


def test_the_reference_method_says_how_each_side_waited_and_whether_alike():
    from bench.references import perftest
    m = perftest.wait_method("rdma_send", "events", 256)
    assert (m["ours"], m["reference"], m["like_for_like"]) == ("events", "events", True)
    assert "unlike" not in m and m["reference_how"].startswith("-e")
    for wl in ("rdma_write", "rdma_send"):
        m = perftest.wait_method(wl, "poll", None)
        assert (m["ours"], m["reference"], m["like_for_like"]) == ("poll", "poll", True)
    w = perftest.wait_method("rdma_write", "events", 256)
    assert (w["reference"], w["like_for_like"]) == ("poll", False)
    assert "Events feature not available on WRITE verb" in w["unlike"]
    assert w["fix"] == 'rdma_wait = "poll" in the suite (both busy-poll)'
    s = perftest.wait_method("rdma_send", "events", None)
    assert not s["like_for_like"] and "Duration mode" in s["unlike"] and "--bytes" in s["fix"]
    with pytest.raises(ValueError, match="events, poll"):
        perftest.wait_method("rdma_send", "sleep", None)


def test_perftest_is_believed_from_its_own_header(data_dir=None):
    from pathlib import Path

    from bench.references import perftest
    table = (Path(__file__).resolve().parents[1] / "data" / "perftest" /
             "send_n.client.txt").read_text()
    evented = table.replace("                    Send BW Test\n",
                            "                    Send BW Test\n Test with events. Using "
                            "rxe0_comp0\n")
    assert perftest.parse(table, tool="ib_send_bw")["wait"] == "poll"
    assert perftest.parse(evented, tool="ib_send_bw")["wait"] == "events"
    asked = perftest.wait_method("rdma_send", "events", 256)
    ok = perftest.checked_wait(asked, evented, evented)
    assert ok["like_for_like"] and ok["seen"] == {"client": "events", "server": "events"}
    bad = perftest.checked_wait(asked, evented, table)     # the server ignored -e
    assert not bad["like_for_like"] and "server waited by poll" in bad["unlike"]


class _Dev:
    device, port, gid_index = "rxe0", 1, 1


class _FakePlacement:
    """perftest stand-ins: each end prints a captured table (with the event banner where its
    argv has -e) and exits; the argv each end was given is kept."""
    remote = True

    def __init__(self, tmp_path):
        self.tmp, self.argvs = tmp_path, {}

    def rdma_devices(self, requested, ep):
        return {"rx": _Dev(), "tx": _Dev()}

    def start_tool(self, side, netns, argv):
        import subprocess
        from pathlib import Path
        self.argvs[side] = argv
        text = (Path(__file__).resolve().parents[1] / "data" / "perftest" /
                f"send_n.{'client' if side == 'tx' else 'server'}.txt").read_text()
        if "-e" in argv:
            text = " Test with events. Using rxe0_comp0\n" + text
        out = self.tmp / f"{side}.txt"
        out.write_text(text)
        p = subprocess.Popen(["cat", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        return p, None

    def wait_listening(self, *a, **k):
        return None


@pytest.mark.parametrize("wait,count,alike", [("events", 256, True), ("poll", 256, True),
                                              ("events", None, False), ("poll", None, True)])
def test_the_reference_row_records_the_wait_both_ends_were_given(tmp_path, wait, count, alike):
    from bench import plan
    from bench.references.rows import ReferenceRows
    from bench.topology import Endpoints
    case = plan.Case("rdma_send", 65536, "veth", 2.0, count, 1, True,
                     rdma=plan.RdmaParams(wait=wait))
    pl = _FakePlacement(tmp_path)
    row = ReferenceRows(pl, None, None).row(case, Endpoints("veth", None, None, "198.19.0.1",
                                                            "198.19.0.2"))
    assert "error" not in row, row
    w = row["method"]["wait"]
    used = "events" if alike and wait == "events" else "poll"
    assert (w["ours"], w["reference"], w["like_for_like"]) == (wait, used, alike)
    assert w["seen"] == {"client": used, "server": used}
    for side in ("tx", "rx"):                       # both ends, -e or neither
        assert ("-e" in pl.argvs[side]) == (used == "events")


# -- the suite key ---------------------------------------------------------------------------

SUITE = """
name = "w"
[defaults]
duration = 1.0
{defaults}
[[matrix]]
workloads = ["rdma"]
sizes = [4096]
{entry}
"""


def _plan(defaults="", entry=""):
    from bench import plan, suite
    return plan.expand(suite.parse(SUITE.format(defaults=defaults, entry=entry)))


def test_default_is_events_and_keeps_todays_case_ids():
    p = _plan()
    assert [c.id for c in p.cases] == ["rdma_write-4096-veth", "rdma_send-4096-veth"]
    assert {c.rdma.wait for c in p.cases} == {"events"}
    assert p.cases[0].rdma.to_json()["wait"] == "events"        # in the case's params


def test_poll_from_the_defaults_or_one_entry_and_both_in_one_run():
    assert {c.rdma.wait for c in _plan('rdma_wait = "poll"').cases} == {"poll"}
    both = _plan(entry='\n[[matrix]]\nworkloads = ["rdma"]\nsizes = [4096]\nrdma_wait = "poll"')
    assert [c.id for c in both.cases] == ["rdma_write-4096-veth", "rdma_send-4096-veth",
                                          "rdma_write-4096-veth-poll", "rdma_send-4096-veth-poll"]
    assert [c.rdma.wait for c in both.cases] == ["events", "events", "poll", "poll"]


def test_the_agents_are_told_how_to_wait():
    from bench.sample import Sampler

    class Placement:
        def rdma_devices(self, requested, ep):
            return {}
    s = object.__new__(Sampler)
    s.placement, s.rdma_device = Placement(), None
    case = _plan('rdma_wait = "poll"').cases[0]
    assert s._rdma_config(case, None, "tx")["rdma_wait"] == "poll"
    assert rv.Params.from_cfg({"size": 8, **s._rdma_config(case, None, "tx")}).wait == "poll"


@pytest.mark.parametrize("where,bad", [("defaults", 'rdma_wait = "spin"'),
                                       ("entry", 'rdma_wait = "busy"'),
                                       ("defaults", "rdma_wait = 1")])
def test_a_bad_wait_is_one_message_naming_the_fix(where, bad):
    from bench.errors import UsageError
    with pytest.raises(UsageError) as e:
        _plan(**{where: bad})
    assert "rdma_wait" in e.value.message
    assert e.value.fix and ("events" in e.value.fix or "suite format" in e.value.fix)


def test_a_bad_wait_exits_2_with_one_message_and_no_traceback(tmp_path):
    import subprocess
    import sys
    f = tmp_path / "w.toml"
    f.write_text(SUITE.format(defaults='rdma_wait = "spin"', entry=""))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", str(f), "--out",
                        str(out), "--target", "local"], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__)))))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "rdma_wait 'spin'" in r.stderr
    assert '"poll"' in r.stderr and not out.exists()


# -- the report's RDMA note ------------------------------------------------------------------

def _case(workload, wait, count, sleeps=(51, 275), limit=0.002):
    from bench.references import perftest
    from bench.results import CaseResult
    blocks = {"sender": {"wait": wait, "sleeps": sleeps[0],
                         "spin_limit_s": limit if wait == "events" else None},
              "receiver": {"wait": wait, "sleeps": sleeps[1],
                           "spin_limit_s": limit if wait == "events" else None}}
    ref = {"tool": perftest.tool_for(workload), "gbps": 0.2,
           "method": {"wait": perftest.wait_method(workload, wait, count)}}
    return CaseResult(id=f"{workload}-65536-veth", workload=workload, size=65536,
                      topology="veth", status="ok",
                      params={"rdma": {"depth": 128, "inline": 0, "signal_every": 16,
                                       "wait": wait}},
                      samples=[{"gbps": 0.1, "rdma": blocks}], reference=[ref])


def test_the_note_says_how_each_side_waited():
    from reports.tables import case_row
    n = case_row(_case("rdma_send", "events", 256)).note
    assert "waiting: ours spin ≤2 ms, then sleep on CQ events (median 275 sleeps per agent " \
        "and sample); ib_send_bw -e sleeps on CQ events" in n
    assert "waiting: ours busy-poll; ib_write_bw busy-polls" in \
        case_row(_case("rdma_write", "poll", None, sleeps=(0, 0))).note
    one_cpu = case_row(_case("rdma_send", "events", 256, limit=0.0)).note
    assert "waiting: ours sleep on CQ events" in one_cpu       # no spin on one CPU


def test_the_note_is_loud_where_perftest_could_not_wait_like_ours():
    from reports import markdown
    from reports.tables import case_row
    cr = _case("rdma_write", "events", None)
    n = case_row(cr).note
    assert n.startswith("waiting NOT like for like: ours spin ≤2 ms, then sleep on CQ events")
    assert "ib_write_bw busy-polls (ib_write_bw has no event mode (perftest: 'Events feature " \
        "not available on WRITE verb'); fix: rdma_wait = \"poll\" in the suite" in n
    from bench.results import RunResult
    result = RunResult(suite="w", metadata={}, cases=[cr], status="complete")
    assert "waiting NOT like for like" in markdown.terminal(result)


def test_no_wait_note_for_results_that_did_not_record_it():
    from bench.results import CaseResult
    from reports.tables import case_row
    cr = CaseResult(id="rdma_write-65536-veth", workload="rdma_write", size=65536,
                    topology="veth", status="ok", samples=[{"gbps": 0.1}],
                    reference=[{"tool": "ib_write_bw", "gbps": 0.2,
                                "method": {"polling": "busy-polls its CQ (no -e)"}}])
    assert "waiting" not in case_row(cr).note


def test_the_rdma_wait_suite_runs_both_modes_with_e_wherever_perftest_has_it():
    from bench import plan, suite
    from bench.references import perftest
    p = plan.expand(suite.load("rdma-wait"))
    got = {c.id: (c.rdma.wait, perftest.wait_method(c.workload, c.rdma.wait, c.count)
                  ["like_for_like"]) for c in p.cases}
    assert got == {f"{wl}-{size}-veth{sfx}": (wait, alike)
                   for sfx, wait in (("", "events"), ("-poll", "poll"))
                   for wl in ("rdma_write", "rdma_send") for size in (4096, 65536)
                   for alike in [not (wl == "rdma_write" and wait == "events")]}
    assert all(c.count for c in p.cases)       # -n: ib_send_bw's -e needs it
