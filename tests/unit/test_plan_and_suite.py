import pytest

from bench import plan, suite
from bench.errors import UsageError

TWO = """
name = "t"
[defaults]
duration = 1.5
repeat = 2
[[matrix]]
workloads = ["udp", "tcp"]
sizes = [1000, 2000]
topologies = ["veth", "loopback"]
[[matrix]]
workloads = ["rdma"]
sizes = [4096]
"""


def test_expand_is_the_full_product_with_defaults():
    p = plan.expand(suite.parse(TWO))
    ids = [c.id for c in p.cases]
    assert len(ids) == 2 * 2 * 2 + 2          # "rdma" is a family: rdma_write and rdma_send
    assert ids[0] == "udp-1000-veth" and ids[1] == "udp-1000-loopback"
    udp = p.cases[0]
    assert (udp.duration, udp.repeat, udp.count, udp.reference) == (1.5, 2, None, True)


def test_unbuilt_workload_is_planned_as_skipped_with_reason_and_fix(monkeypatch):
    from dataclasses import replace

    from workloads import registry
    monkeypatch.setitem(registry.WORKLOADS, "tcp", replace(registry.WORKLOADS["tcp"], built=False,
                                                           not_built_fix="use udp meanwhile"))
    tcp = [c for c in plan.expand(suite.parse(TWO)).cases if c.workload == "tcp"][0]
    assert "not built" in tcp.skip_reason and tcp.skip_fix == "use udp meanwhile"


def test_rdma_family_expands_to_both_cases_with_suite_parameters():
    text = TWO.replace("[defaults]", "[defaults]\nrdma_depth = 64\nrdma_inline = 128\n"
                       "rdma_signal_every = 8")
    p = plan.expand(suite.parse(text), plan.Overrides(workloads=("rdma",)))
    assert [c.id for c in p.cases] == ["rdma_write-4096-veth", "rdma_send-4096-veth"]
    assert all(c.rdma == plan.RdmaParams(64, 128, 8) for c in p.cases)
    assert all(c.reference for c in p.cases)             # perftest is their peer
    only_send = plan.expand(suite.parse(TWO), plan.Overrides(workloads=("rdma_send",)))
    assert [c.workload for c in only_send.cases] == ["rdma_send"]
    assert plan.expand(suite.parse(TWO), plan.Overrides(workloads=("udp",))).cases[0].rdma is None


@pytest.mark.parametrize("bad", ["rdma_depth = 0", "rdma_inline = -1", "rdma_signal_every = 999"])
def test_bad_rdma_parameters_are_refused_with_a_fix(bad):
    with pytest.raises(UsageError) as e:
        plan.expand(suite.parse(TWO.replace("[defaults]", f"[defaults]\n{bad}")))
    assert bad.split()[0] in e.value.message and e.value.fix


def test_overrides_replace_sizes_topology_and_filter_workloads():
    ov = plan.Overrides(sizes=(1472,), topology="loopback", workloads=("udp",), repeat=5)
    p = plan.expand(suite.parse(TWO), ov)
    assert [c.id for c in p.cases] == ["udp-1472-loopback"]
    assert p.cases[0].repeat == 5


def test_bytes_become_a_message_count_rounded_up():
    p = plan.expand(suite.parse(TWO), plan.Overrides(bytes=10_001, workloads=("udp",)))
    assert {c.count for c in p.cases} == {11, 6}  # 10001/1000 -> 11, 10001/2000 -> 6


@pytest.mark.parametrize("size", [0, -1, 65508, 100000])
def test_impossible_udp_sizes_are_refused(size):
    with pytest.raises(UsageError) as e:
        plan.expand(suite.parse(TWO), plan.Overrides(sizes=(size,), workloads=("udp",)))
    assert "udp" in e.value.message and e.value.fix


def test_largest_udp_payload_is_allowed():
    p = plan.expand(suite.parse(TWO), plan.Overrides(sizes=(65507,), workloads=("udp",)))
    assert p.cases[0].size == 65507


@pytest.mark.parametrize("ov", [plan.Overrides(duration=0), plan.Overrides(duration=-2),
                                plan.Overrides(repeat=0), plan.Overrides(bytes=0),
                                plan.Overrides(topology="wire")])
def test_bad_overrides_are_refused(ov):
    with pytest.raises(UsageError):
        plan.expand(suite.parse(TWO), ov)


@pytest.mark.parametrize("text,needle", [
    ("name = ", "not valid TOML"),
    ("[[matrix]]\nworkloads=['udp']\nsizes=[1]\n[bogus]\n", "unknown key"),
    ("[defaults]\nduration='x'\n[[matrix]]\nworkloads=['udp']\nsizes=[1]", "wrong type"),
    ("[defaults]\nspeed=1\n[[matrix]]\nworkloads=['udp']\nsizes=[1]", "unknown default"),
    ("name='x'", "no [[matrix]]"),
    ("[[matrix]]\nworkloads=['udp']", "needs non-empty"),
])
def test_malformed_suites_are_refused_with_a_message(text, needle):
    with pytest.raises(UsageError) as e:
        suite.parse(text)
    assert needle in e.value.message


def test_unknown_workload_and_suite_name_the_choices():
    with pytest.raises(UsageError) as e:
        plan.expand(suite.parse("[[matrix]]\nworkloads=['carrier-pigeon']\nsizes=[1]"))
    assert "udp" in e.value.fix
    with pytest.raises(UsageError) as e:
        suite.load("no-such-suite")
    assert "smoke" in e.value.fix


def test_builtin_suites_load_and_expand():
    names = suite.builtin_names()
    assert {"smoke", "sockets", "socket-vs-rdma"} <= set(names)
    for n in names:
        assert plan.expand(suite.load(n)).cases
    workloads = {c.workload for c in plan.expand(suite.load("socket-vs-rdma")).cases}
    assert workloads == {"udp", "tcp", "msg_zerocopy", "tcp_zerocopy_receive", "io_uring",
                         "io_uring_fixed", "io_uring_zc", "rdma_write", "rdma_send",
                         "tcp_rr", "udp_rr", "io_uring_rr", "rdma_send_lat", "rdma_write_lat"}
    # the latency suite: every request/response path at its smallest, 64 B, 4 KiB, 64 KiB
    lat = {c.id for c in plan.expand(suite.load("latency")).cases}
    assert {"tcp_rr-1-veth", "io_uring_rr-65536-veth", "udp_rr-8-veth",
            "udp_rr-65507-veth", "rdma_send_lat-1-veth-poll",
            "rdma_write_lat-65536-veth-poll"} <= lat and len(lat) == 20


def test_batch_applies_to_datagrams_only_and_is_in_the_id():
    p = plan.expand(suite.parse(TWO), plan.Overrides(batch=32, topology="veth"))
    ids = {c.id for c in p.cases}
    assert "udp-1000-veth-b32" in ids and "tcp-1000-veth" in ids
    with pytest.raises(UsageError):
        plan.expand(suite.parse(TWO), plan.Overrides(batch=0))


def test_unmet_needs_are_skips_with_doctors_reason_and_fix():
    from bench import plan, suite
    p = plan.expand(suite.load("socket-vs-rdma"), plan.Overrides(sizes=(4096,)))
    assert "io_uring" in plan.needed_capabilities(p)
    caps = {"io_uring": (False, "io_uring_setup failed: Operation not permitted",
                         "sysctl kernel.io_uring_disabled=0"),
            "so_zerocopy": (True, "SO_ZEROCOPY accepted", "")}
    got = {c.id: c for c in plan.require(p, caps).cases}
    uring = got["io_uring-4096-veth"]
    assert uring.skip_reason.startswith("needs io_uring: io_uring_setup failed")
    assert uring.skip_fix == "sysctl kernel.io_uring_disabled=0"
    assert got["msg_zerocopy-4096-veth"].skip_reason is None      # its need is met
    assert got["tcp-4096-veth"].skip_reason is None


def test_bytes_on_the_command_line_is_not_cut_by_the_suites_duration():
    """smoke has duration = 1.0: `--bytes` must still deliver every byte on a slow link."""
    from bench import plan, suite
    p = plan.expand(suite.load("smoke"), plan.Overrides(bytes=19660800, workloads=("tcp",)))
    [c] = p.cases
    assert c.count == 300 and c.duration == plan.MAX_DURATION_CAP
    both = plan.expand(suite.load("smoke"), plan.Overrides(bytes=19660800, duration=3.0,
                                                           workloads=("tcp",)))
    assert both.cases[0].duration == 3.0          # both given: both bound the sample


# -- --target auto -------------------------------------------------------------------------------
def test_suites_declare_what_they_need_and_unknown_needs_are_refused():
    from bench import suite
    assert suite.load("socket-vs-rdma").needs == ("exact-copies", "rdma")
    assert suite.load("smoke").needs == ()
    with pytest.raises(UsageError) as e:
        suite.parse('needs = ["gpus"]\n[[matrix]]\nworkloads = ["udp"]\nsizes = [1]\n')
    assert "gpus" in e.value.message and "exact-copies" in e.value.fix


def test_auto_counts_only_the_needs_the_plan_uses():
    from bench import autotarget, plan, suite
    s = suite.load("socket-vs-rdma")
    full = plan.expand(s)
    assert autotarget.used_needs(s, full, "auto") == ["exact-copies", "rdma"]
    socket_only = plan.expand(s, plan.Overrides(workloads=("tcp",)))
    assert autotarget.used_needs(s, socket_only, "auto") == ["exact-copies"]
    assert autotarget.used_needs(s, socket_only, "off") == []
    assert autotarget.used_needs(suite.load("smoke"), plan.expand(suite.load("smoke")), "auto") == []


def test_auto_chooses_one_place_and_says_why():
    from bench.autotarget import choose
    here = choose(["exact-copies", "rdma"], {}, (False, None))
    assert here.target == "local" and not here.boot and "exact-copies and rdma" in here.why
    unmet = {"rdma": "no active RDMA port", "exact-copies": "tracepoints only"}
    running = choose(["exact-copies", "rdma"], unmet, (True, None))
    assert running.target == "lab" and not running.boot and "running lab" in running.why
    boot = choose(["exact-copies", "rdma"], unmet, (False, None))
    assert boot.target == "lab" and boot.boot and "no active RDMA port" in boot.why
    stuck = choose(["rdma"], {"rdma": "no active RDMA port"},
                   (False, "the lab VM cannot start here: qemu-system-x86_64 missing"))
    assert stuck.target == "local" and not stuck.boot and "qemu-system-x86_64" in stuck.why
    doc = boot.to_json(booted=True)
    assert doc["requested"] == "auto" and doc["chosen"] == "lab" and doc["booted_by_this_run"]
    assert doc["unmet_here"] == unmet


URING = """
name = "u"
[defaults]
queue_depth = 8
[[matrix]]
workloads = ["io_uring", "io_uring_fixed", "tcp"]
sizes = [4096]
[[matrix]]
workloads = ["io_uring_zc"]
sizes = [4096]
queue_depth = 32
"""


def test_queue_depth_is_carried_to_io_uring_cases_only_and_named_in_the_id():
    p = plan.expand(suite.parse(URING))
    got = {c.id: c for c in p.cases}
    assert got["io_uring-4096-veth-q8"].queue_depth == 8
    assert got["io_uring_fixed-4096-veth-q8"].queue_depth == 8
    assert got["io_uring_zc-4096-veth"].queue_depth == 32       # the entry's own; the default
    assert got["tcp-4096-veth"].queue_depth is None
    over = plan.expand(suite.parse(URING), plan.Overrides(queue_depth=64))
    assert {c.queue_depth for c in over.cases if c.workload != "tcp"} == {64}


@pytest.mark.parametrize("depth", [0, -1, 32769])
def test_queue_depth_outside_the_kernels_limit_is_a_usage_error(depth):
    with pytest.raises(UsageError, match="queue depth"):
        plan.expand(suite.parse(URING), plan.Overrides(queue_depth=depth))
    with pytest.raises(UsageError, match="queue depth"):
        plan.expand(suite.parse(URING.replace("queue_depth = 8", f"queue_depth = {depth}")))


@pytest.mark.parametrize("depth", ["0", "40000"])
def test_bad_queue_depth_on_the_command_line_exits_2_before_the_run(depth, tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", "socket-vs-rdma",
                        "--workload", "io_uring", "--queue-depth", depth, "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"queue depth {depth}" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())        # nothing ran, no result file


# -- zerocopy break-even (bench/crossover.py: tests/unit/test_crossover.py) ---------------------
def test_the_crossover_suite_compares_every_path_at_every_size():
    s = suite.load("zerocopy-crossover")
    p = plan.expand(s)
    got = {(c.workload, c.size) for c in p.cases}
    sizes = [1024, 4096, 16384, 65536, 262144, 1048576]
    assert got == {(w, z) for w in ("tcp", "msg_zerocopy", "io_uring", "io_uring_zc",
                                    "io_uring_fixed") for z in sizes}
    assert s.defaults["repeat"] >= 5        # "clear" needs five repeats per side


def test_a_node_without_the_agents_python_module_skips_with_the_fix():
    """The agents' Python module is asked of the machine that runs them (a lab node's own
    `bench doctor`), not of the runner: a node without liburing skips the io_uring rows."""
    p = plan.expand(suite.load("socket-vs-rdma"), plan.Overrides(sizes=(4096,)))
    assert "python:liburing" in plan.needed_capabilities(p)
    caps = {"python:liburing": (False, "Python module liburing is not installed",
                                "python3 -m bench.bootstrap"), "io_uring": (True, "ok", "")}
    got = {c.id: c for c in plan.require(p, caps).cases}
    assert "needs python:liburing" in got["io_uring-4096-veth"].skip_reason
    assert got["io_uring_zc-4096-veth"].skip_fix == "python3 -m bench.bootstrap"
    assert got["tcp-4096-veth"].skip_reason is None
    from bench import doctor
    assert doctor.capabilities(["python:json"])["python:json"][0] is True
    assert doctor.capabilities(["python:no_such_mod_x"])["python:no_such_mod_x"][0] is False


RR = """
name = "rr"
[defaults]
duration = 1.0
[[matrix]]
workloads = ["tcp_rr", "udp_rr", "io_uring_rr"]
sizes = [8, 4096]
[[matrix]]
workloads = ["tcp_rr"]
sizes = [64]
response_size = 65536
in_flight = 4
"""


def test_request_response_cases_carry_their_shape_and_their_peers():
    from bench.references.rows import latency_notes, tool_for
    cases = {c.id: c for c in plan.expand(suite.parse(RR)).cases}
    assert list(cases) == ["tcp_rr-8-veth", "tcp_rr-4096-veth", "udp_rr-8-veth",
                           "udp_rr-4096-veth", "io_uring_rr-8-veth", "io_uring_rr-4096-veth",
                           "tcp_rr-64-veth-r65536-f4"]
    t = cases["tcp_rr-4096-veth"]
    assert t.rr and (t.response, t.in_flight, t.response_size) == (4096, 1, None)
    assert t.reference and tool_for(t) == "sockperf+qperf"
    small = cases["tcp_rr-8-veth"]      # under sockperf's 14-byte header: qperf alone
    assert tool_for(small) == "qperf" and "at least 14 B" in latency_notes(small)["sockperf"]
    # R != Q, several in flight, io_uring: no tool mirrors them, so no reference at all
    for cid in ("tcp_rr-64-veth-r65536-f4", "io_uring_rr-4096-veth"):
        assert not cases[cid].reference and set(latency_notes(cases[cid])) == {"sockperf",
                                                                                "qperf"}
    big = cases["tcp_rr-64-veth-r65536-f4"]
    assert (big.response, big.in_flight) == (65536, 4)
    # bandwidth cases have no request/response shape
    assert not plan.expand(suite.parse(TWO)).cases[0].rr


def test_request_response_overrides_and_bad_values():
    p = plan.expand(suite.parse(RR), plan.Overrides(workloads=("udp_rr",), in_flight=8,
                                                    response_size=64))
    assert [c.id for c in p.cases] == ["udp_rr-8-veth-r64-f8", "udp_rr-4096-veth-r64-f8"]
    for ov, needle in ((plan.Overrides(in_flight=0), "in_flight 0"),
                       (plan.Overrides(in_flight=1025), "in_flight 1025"),
                       (plan.Overrides(response_size=70000, workloads=("udp_rr",)),
                        "response size 70000"),
                       (plan.Overrides(response_size=4, workloads=("udp_rr",)),
                        "response size 4")):
        with pytest.raises(UsageError) as e:
            plan.expand(suite.parse(RR), ov)
        assert needle in e.value.message and e.value.fix
    with pytest.raises(UsageError, match="message size 1 for udp_rr"):
        plan.expand(suite.parse(RR.replace("sizes = [8, 4096]", "sizes = [1]")))


def test_a_matrix_entry_sets_its_own_duration_and_the_command_line_still_wins():
    text = ('[defaults]\nduration = 2.0\n'
            '[[matrix]]\nworkloads = ["tcp"]\nsizes = [4096]\n'
            '[[matrix]]\nworkloads = ["tcp_rr"]\nsizes = [64]\nduration = 1.0\n')
    got = {c.workload: c.duration for c in plan.expand(suite.parse(text)).cases}
    assert got == {"tcp": 2.0, "tcp_rr": 1.0}
    cli = plan.expand(suite.parse(text), plan.Overrides(duration=3.0)).cases
    assert {c.duration for c in cli} == {3.0}
    counted = {c.workload: (c.duration, c.count)
               for c in plan.expand(suite.parse(text), plan.Overrides(bytes=4096 * 10)).cases}
    assert counted["tcp_rr"] == (plan.MAX_DURATION_CAP, 640)    # --bytes: no entry's cut
    with pytest.raises(UsageError) as e:
        plan.expand(suite.parse(text.replace("duration = 1.0", "duration = 0")))
    assert "duration 0" in e.value.message


def test_the_main_job_has_latency_rows_at_64_b_and_4_kib():
    rr = {c.id: c for c in plan.expand(suite.load("socket-vs-rdma")).cases if c.rr}
    assert set(rr) == {f"{w}-{s}-veth{'-poll' if w.startswith('rdma') else ''}"
                       for w in ("tcp_rr", "udp_rr", "io_uring_rr", "rdma_send_lat",
                                 "rdma_write_lat") for s in (64, 4096)}
    assert all(c.in_flight == 1 for c in rr.values())
    # every path a peer tool can mirror has it (io_uring has no round-trip peer)
    assert {i for i, c in rr.items() if not c.reference} == {"io_uring_rr-64-veth",
                                                             "io_uring_rr-4096-veth"}
    assert {c.duration for i, c in rr.items() if not i.startswith("rdma")} == {1.0}
