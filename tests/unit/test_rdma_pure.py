"""RDMA pieces that need no RDMA: the out-of-band exchange, slot planning, device/GID choice
from a sysfs tree, stale soft-RoCE links, and the copy summary of an rdma row."""

from __future__ import annotations

import json
import os
import socket

import pytest

from bench import rxe
from bench.copycount import SOFT_ROCE_SIDE, summarize
from bench.errors import UsageError
from bench.tracing.base import PointCounts
from tests.unit.rdma_fakes import fake_verbs, poll_with_channel, wc_success
from workloads import rdma_verbs as rv

GID_V4 = "0000:0000:0000:0000:0000:ffff:c612:0002"      # ::ffff:198.18.0.2
GID_LL = "fe80:0000:0000:0000:5054:00ff:fe00:0001"


def info(**kw):
    d = {"proto": rv.PROTO, "qpn": 0x11, "psn": 0x8d5f5b, "gid": GID_V4, "lid": 0,
         "rkey": 0x218, "addr": 0x7F0000001000, "length": 1 << 20, "mtu": 3}
    d.update(kw)
    return d


# -- out-of-band exchange ------------------------------------------------------------------

def test_exchange_round_trips_every_field():
    assert rv.decode(rv.encode(info())) == info()
    assert rv.encode(info()).endswith(b"\n") and rv.encode(info()).count(b"\n") == 1


@pytest.mark.parametrize("bad, why", [
    (b"hello\n", "no connection info"),
    (json.dumps({**info(), "gid": "fe80::1"}).encode(), "not a GID"),
    (json.dumps({**info(), "proto": 99}).encode(), "protocol 99"),
    (json.dumps({k: v for k, v in info().items() if k != "rkey"}).encode(), "'rkey'"),
    (json.dumps({**info(), "qpn": 0}).encode(), "out of range"),
    (json.dumps({**info(), "psn": 1 << 24}).encode(), "out of range"),
    (json.dumps({**info(), "qpn": True}).encode(), "'qpn'"),
    (b"[1, 2]\n", "no connection info"),
])
def test_decode_refuses_what_is_not_a_peer(bad, why):
    with pytest.raises(ValueError) as e:
        rv.decode(bad)
    assert why in str(e.value)


def test_infiniband_peers_send_no_gid():
    assert rv.decode(rv.encode(info(gid=None, lid=7)))["lid"] == 7


def test_a_failed_peer_reports_its_reason_not_a_timeout():
    a, b = socket.socketpair()
    with a, b:
        rv.send_error(a, "receiver: VerbsError: MR registration of 16 MiB failed")
        with pytest.raises(rv.PeerGone) as e:
            rv.decode(rv.read_line(b, 5))
        assert "MR registration" in str(e.value)


def test_read_line_sees_a_peer_that_is_gone_and_one_that_says_nothing():
    a, b = socket.socketpair()
    a.close()
    with b, pytest.raises(rv.PeerGone, match="closed"):
        rv.read_line(b, 5)
    a, b = socket.socketpair()
    with a, b, pytest.raises(rv.PeerGone, match="within"):
        rv.read_line(b, 0.2)


def test_read_line_is_bounded():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"x" * 5000)
        with pytest.raises(ValueError, match="too long"):
            rv.read_line(b, 5, limit=4096)


def test_check_control_is_quiet_until_the_peer_goes():
    a, b = socket.socketpair()
    with b:
        rv.check_control(b, 0.01)                     # nothing: no exception, no data moved
        a.close()
        with pytest.raises(rv.PeerGone, match="gone"):
            rv.check_control(b, 0.5)


def test_slots_and_windows():
    assert rv.plan_slots(65536, 128, 16) == (256, 16)
    slots, window = rv.plan_slots(64 << 20, 128, 16)       # one slot is the whole cap
    assert slots == 2 and window == 1
    assert rv.plan_slots(4096, 4, 16) == (8, 4)           # a window never exceeds half the slots
    for size, depth, sig in ((1, 1, 1), (1 << 20, 512, 64), (4096, 3, 2)):
        s, w = rv.plan_slots(size, depth, sig)
        assert s >= 2 * w and 1 <= w <= depth and s * size <= max(rv.REGION_CAP, 2 * size)


# -- devices and GIDs from sysfs ------------------------------------------------------------

def make_port(root, dev, port=1, state="4: ACTIVE", layer="Ethernet", gids=(), parent=None):
    d = root / "class/infiniband" / dev
    p = d / "ports" / str(port)
    (p / "gids").mkdir(parents=True)
    (p / "gid_attrs/types").mkdir(parents=True)
    (p / "gid_attrs/ndevs").mkdir(parents=True)
    (p / "state").write_text(state + "\n")
    (p / "link_layer").write_text(layer + "\n")
    if parent:
        (d / "parent").write_text(parent + "\n")
    for i, (gid, typ, ndev) in enumerate(gids):
        (p / "gids" / str(i)).write_text(gid + "\n")
        if typ:
            (p / "gid_attrs/types" / str(i)).write_text(typ + "\n")
            (p / "gid_attrs/ndevs" / str(i)).write_text(ndev + "\n")
    for i in range(len(gids), 4):                       # empty slots, as the kernel shows them
        (p / "gids" / str(i)).write_text("0000:" * 7 + "0000\n")
    return p


RXE_GIDS = ((GID_LL, "IB/RoCE v1", "cb1r"), (GID_LL, "RoCE v2", "cb1r"),
            ("0000:0000:0000:0000:0000:ffff:c612:0002", "IB/RoCE v1", "cb1r"),
            (GID_V4, "RoCE v2", "cb1r"))


def test_gid_is_roce_v2_ipv4_on_the_right_netdev_not_a_fixed_index(tmp_path):
    make_port(tmp_path, "cbrxe1", gids=RXE_GIDS, parent="cb1r")
    (p,) = rxe.ports(tmp_path)
    assert p.soft and p.active and len(p.gids) == 4
    g = rxe.pick_gid(p)
    assert (g.index, g.type, g.ndev, g.ipv4) == (3, "RoCE v2", "cb1r", "198.18.0.2")
    assert rxe.pick_gid(p, netdev="eth0") is None           # nothing on another netdev
    ll_only = make_port(tmp_path / "b", "rxe0", gids=RXE_GIDS[:2], parent="cb1r")
    assert ll_only and rxe.pick_gid(rxe.ports(tmp_path / "b")[0]).index == 1   # IPv6 v2


def test_choice_prefers_a_real_nic_and_never_an_inactive_port(tmp_path):
    make_port(tmp_path, "aa_rxe0", gids=RXE_GIDS, parent="cb1r")
    make_port(tmp_path, "mlx5_0", state="1: DOWN", gids=((GID_V4, "RoCE v2", "ens1"),))
    make_port(tmp_path, "mlx5_1", gids=((GID_LL, "IB/RoCE v1", "ens2"),
                                        (GID_V4, "RoCE v2", "ens2")))
    c = rxe.choose(rxe.ports(tmp_path))
    assert (c.device, c.gid_index, c.soft, c.netdev) == ("mlx5_1", 1, False, "ens2")
    assert rxe.choose(rxe.ports(tmp_path), "aa_rxe0").gid_index == 3
    with pytest.raises(UsageError, match="not ACTIVE") as e:
        rxe.choose(rxe.ports(tmp_path), "mlx5_0")
    assert e.value.fix
    with pytest.raises(UsageError, match="no such RDMA device") as e:
        rxe.choose(rxe.ports(tmp_path), "nope0")
    assert "mlx5_1" in e.value.message


def test_a_remote_nodes_ports_travel_as_json_and_are_used_as_they_are(tmp_path):
    """`bench sysinfo` on a node lists its ports; the runner elsewhere picks each side's
    device from them with the same rules (the GID carrying the side's address)."""
    import json
    make_port(tmp_path, "rxe0", gids=RXE_GIDS, parent="cb1r")
    wire = json.loads(json.dumps([rxe.port_to_json(p) for p in rxe.ports(tmp_path)]))
    ports = [rxe.port_from_json(d) for d in wire]
    assert ports == rxe.ports(tmp_path)
    c = rxe.choose_on_node(ports, "lab1", address="198.18.0.2")
    assert (c.device, c.gid_index, c.soft, c.created) == ("rxe0", 3, True, False)
    assert "on lab1, as it is" in c.why
    with pytest.raises(UsageError, match="lab0: no active RDMA port") as e:
        rxe.choose_on_node([], "lab0")
    assert "rdma link add" in e.value.fix
    with pytest.raises(UsageError, match="lab1: --rdma-device nope0"):
        rxe.choose_on_node(ports, "lab1", "nope0")


def test_infiniband_needs_no_gid_and_no_device_is_none(tmp_path):
    make_port(tmp_path, "mlx4_0", layer="InfiniBand", gids=((GID_LL, None, None),))
    c = rxe.choose(rxe.ports(tmp_path))
    assert c.gid_index is None and c.link_layer == "InfiniBand"
    assert rxe.choose(rxe.ports(tmp_path / "none")) is None


def test_stale_soft_roce_links_are_ours_and_dead_only():
    names = ["cbrxe123", "cbrxe456", "rxe0", "cbrxe", "mlx5_0", "cbrxe12x"]
    assert rxe.stale_links(names, alive=lambda pid: pid == 456) == ["cbrxe123"]
    assert rxe.our_link_name(42) == "cbrxe42"


def test_rxe_availability_from_modules(tmp_path):
    proc, mods = tmp_path / "proc", tmp_path / "lib/modules"
    proc.mkdir()
    assert not rxe.rxe_available(proc, mods, "6.1.0")[0]             # no /proc/modules
    (proc / "modules").write_text("veth 40960 0 - Live 0x0\n")
    assert not rxe.rxe_available(proc, mods, "6.1.0")[0]
    ko = mods / "6.1.0/kernel/drivers/infiniband/sw/rxe"
    ko.mkdir(parents=True)
    (ko / "rdma_rxe.ko.xz").write_bytes(b"")
    assert rxe.rxe_available(proc, mods, "6.1.0")[0]
    (proc / "modules").write_text("rdma_rxe 139264 0 - Live 0x0\n")
    assert rxe.rxe_available(proc, tmp_path / "x", "6.1.0") == (True, "rdma_rxe loaded")


def test_soft_roce_link_that_exists_is_one_clear_error(tmp_path, monkeypatch):
    make_port(tmp_path, "cbrxe7", gids=RXE_GIDS, parent="cb1r")
    monkeypatch.setattr(rxe.subprocess, "run", lambda *a, **k: None)    # modprobe: not here
    with pytest.raises(UsageError) as e:
        rxe.SoftRoce("cb9r", name="cbrxe7", sys_root=tmp_path).add()
    assert "already exists" in e.value.message and "rdma link delete cbrxe7" in e.value.fix
    with pytest.raises(UsageError) as e:
        rxe.SoftRoce("cb1r", name="cbrxe8", sys_root=tmp_path).add()
    assert "already has a soft-RoCE link (cbrxe7)" in e.value.message


# -- copies of an rdma row -------------------------------------------------------------------

def pc(point, side, symbol, calls, nbytes):
    return PointCounts(point=point, side=side, symbol=symbol, backend="kmod", exact=True,
                       calls=calls, bytes=nbytes)


def test_soft_roce_copies_are_the_rows_and_no_side_looks_copy_free():
    n, size = 100, 65536
    points = [pc("send_copy", "sender", "_copy_from_iter", 0, 0),
              pc("recv_copy", "receiver", "_copy_to_iter", 0, 0),
              pc("rxe_copy", "sender", "rxe_mr_copy", 1600, n * size),
              pc("rxe_copy", "other", "rxe_mr_copy", 1600, n * size)]
    sides = summarize(points, {"sender": n, "receiver": n},
                      {"sender": n * size, "receiver": n * size}, rdma={"soft": True})
    for side in ("sender", "receiver"):
        assert sides[side]["calls"] == 0 and sides[side]["bytes"] == 0
        assert sides[side]["total_copied_per_payload_byte"] is None    # never 0 on soft-RoCE
    sr = sides[SOFT_ROCE_SIDE]
    assert sr["bytes"] == 2 * n * size and sr["bytes_per_payload_byte"] == 2.0
    assert sr["copies_per_message"] == 32.0 and "soft-RoCE in the kernel" in sr["kind"]
    assert sr["ran_in"] == ["other", "sender"]
    assert "not a CPU-free path" in sides["sender"]["total_note"]


def test_soft_roce_nobody_could_count_gives_no_total():
    points = [pc("send_copy", "sender", "_copy_from_iter", 0, 0)]
    sides = summarize(points, {"sender": 10}, {"sender": 10}, rdma={"soft": True})
    assert sides["sender"]["total_copied_per_payload_byte"] is None
    assert "nothing could count them" in sides["sender"]["total_note"]
    assert SOFT_ROCE_SIDE not in sides


def test_a_real_nic_row_totals_its_socket_copies():
    points = [pc("send_copy", "sender", "_copy_from_iter", 0, 0)]
    sides = summarize(points, {"sender": 10}, {"sender": 10}, rdma={"soft": False})
    assert sides["sender"]["total_copied_per_payload_byte"] == 0.0
    assert "DMA" in sides["sender"]["total_note"]


class _EmptyCQ:
    def poll(self, n):
        return 0, []


class _FailedCQ:
    class WC:
        status, opcode, wr_id = 12, 0, 7       # IBV_WC_RETRY_EXC_ERR

    def poll(self, n):
        return 1, [self.WC()]


@pytest.fixture(autouse=True)
def _wc_enums(monkeypatch):
    wc_success(monkeypatch)      # poll() needs IBV_WC_SUCCESS



def test_poll_ends_when_the_peer_agent_is_gone(monkeypatch):
    import time
    monkeypatch.setattr(rv, "PEER_GRACE_S", 0.2)
    v = fake_verbs(_EmptyCQ())
    a, b = socket.socketpair()
    a.close()                                  # the peer died: its end of the control closed
    t0 = time.monotonic()
    with b, pytest.raises(rv.PeerGone, match="gone"):
        v.poll(b, time.monotonic() + 30)
    assert time.monotonic() - t0 < 5           # after the grace, not at the deadline


def test_poll_reports_the_peers_own_failure_at_once():
    import time
    v = fake_verbs(_EmptyCQ())
    a, b = socket.socketpair()
    with a, b:
        rv.send_error(a, "sender: VerbsError: bringing the QP to RTS failed")
        with pytest.raises(rv.PeerGone, match="RTS failed"):
            v.poll(b, time.monotonic() + 30)


class _ChannelCQ:
    """Empty until its completion channel fires, then one good completion."""
    class WC:
        status, opcode, wr_id = 0, 0, 1

    def __init__(self):
        self.ready, self.armed, self.acked = False, 0, 0

    def poll(self, n):
        return (1, [self.WC()]) if self.ready else (0, [])

    def req_notify(self):
        self.armed += 1

    def ack_events(self, n):
        self.acked += n


class _Channel:
    def __init__(self, fd):
        self.fd = fd

    def get_cq_event(self, cq):
        os.read(self.fd, 1)
        cq.ready = True


def test_poll_sleeps_on_the_completion_channel_and_acks_its_event():
    cq = _ChannelCQ()
    v = fake_verbs(cq)
    wcs, _ = poll_with_channel(v, _Channel, fire_after=0.2)
    assert len(wcs) == 1
    # armed once before sleeping, the one event acked (ibv_destroy_cq waits for every ack)
    assert (cq.armed, cq.acked, v.counters["cq_events"]) == (1, 1, 1)


class _LateCQ(_ChannelCQ):
    """Empty for `delay` seconds, then one good completion (no event needed)."""
    def __init__(self, delay):
        super().__init__()
        import time
        self.at = time.monotonic() + delay

    def poll(self, n):
        import time
        self.ready = self.ready or time.monotonic() >= self.at
        return super().poll(n)


def test_agents_spin_only_where_another_cpu_runs_the_transport():
    assert rv.spin_seconds(1) == rv.spin_seconds(None) == 0.0
    assert rv.spin_seconds(2) == rv.SPIN_MAX_S > 0


def test_poll_spins_through_a_short_gap_without_sleeping_on_the_channel(monkeypatch):
    """A completion due within SPIN_S is taken by polling: no arming, no event, no sleep
    (each sleep costs a wake-up per message: perftest busy-polls instead)."""
    monkeypatch.setattr(rv, "SPIN_S", rv.SPIN_MAX_S)
    cq = _LateCQ(rv.SPIN_S / 4)
    v = fake_verbs(cq)
    wcs, took = poll_with_channel(v, _Channel)
    assert len(wcs) == 1
    assert (cq.armed, cq.acked, v.counters.get("cq_events", 0)) == (0, 0, 0)
    # the spin measured, not the limit: within the call's own time, short of SPIN_S; no sleep
    assert 0 < v.counters["spin_s"] <= took < rv.SPIN_S
    assert v.counters["sleeps"] == 0


def test_poll_arms_the_channel_once_the_spin_is_over(monkeypatch):
    monkeypatch.setattr(rv, "SPIN_S", rv.SPIN_MAX_S)
    cq = _ChannelCQ()
    v = fake_verbs(cq)
    _, took = poll_with_channel(v, _Channel, fire_after=rv.SPIN_S * 5)
    assert cq.armed == 1 and took >= rv.SPIN_S
    # one whole spin (it ends at the first clock read past SPIN_S), then at least one sleep
    assert rv.SPIN_S <= v.counters["spin_s"] < rv.SPIN_S * 4
    assert v.counters["sleeps"] >= 1


class _CountingCQ(_EmptyCQ):
    polls = 0

    def poll(self, n):
        self.polls += 1
        return super().poll(n)


def test_after_the_spin_every_empty_poll_sleeps(monkeypatch):
    """Once SPIN_S is over the agent naps between polls (no channel here), never busy-polls
    on: about one poll per nap, the naps growing from 0.1 to 4 ms until the deadline."""
    import time
    monkeypatch.setattr(rv, "SPIN_S", 0.0)
    cq = _CountingCQ()
    v = fake_verbs(cq)
    v.channel_fd = None
    a, b = socket.socketpair()
    with a, b, pytest.raises(rv.VerbsError, match="deadline"):
        v.poll(b, time.monotonic() + 0.3)
    assert rv.SPIN_POLLS < cq.polls < rv.SPIN_POLLS + 150
    # every poll after the spin was a nap: the measured sleeps are the polls less the spin's
    assert v.counters["sleeps"] == cq.polls - rv.SPIN_POLLS
    assert 0.0 <= v.counters["spin_s"] < 0.05


def test_no_completion_channel_fds_in_a_plain_process():
    assert rv._event_fds() == set()


def test_a_failed_completion_names_the_error_state():
    import time
    v = fake_verbs(_FailedCQ())
    a, b = socket.socketpair()
    with a, b, pytest.raises(rv.VerbsError, match="error state") as e:
        v.poll(b, time.monotonic() + 30)
    assert "status 12" in str(e.value)


def test_a_failed_soft_roce_setup_is_tried_once_and_cleaned_up(tmp_path, monkeypatch):
    """The rxe link cannot be made (it exists already): every RDMA case of the run fails with
    the same message, and the carrier veth made for it is removed at the end."""
    from bench.topology import Endpoints
    calls = []
    monkeypatch.setattr(rxe, "rxe_available", lambda *a, **k: (True, "rdma_rxe loaded"))
    monkeypatch.setattr(rxe.os, "geteuid", lambda: 0)
    monkeypatch.setattr(rxe.subprocess, "run", lambda argv, **k: calls.append(argv) or
                        type("R", (), {"returncode": 0, "stderr": "", "stdout": ""})())
    make_port(tmp_path, rxe.our_link_name(), gids=RXE_GIDS, parent="x")  # "already exists"
    devs = rxe.Devices(sys_root=tmp_path)
    ep = Endpoints("veth", "cb1tx", "cb1rx", "198.18.0.1", "198.18.0.2", "cb1t", "cb1r")
    for _ in range(2):
        with pytest.raises(UsageError, match="already exists"):
            devs.for_endpoints(ep)
    adds = [a for a in calls if a[:3] == ["ip", "link", "add"]]
    assert len(adds) == 1                                  # tried once
    devs.release()
    assert calls[-1][:3] == ["ip", "link", "del"]          # the carrier is gone again


def _hw(tmp_path, values: dict):
    d = tmp_path / "rxe0" / "ports" / "1" / "hw_counters"
    d.mkdir(parents=True, exist_ok=True)
    for k, v in values.items():
        (d / k).write_text(f"{v}\n")
    return str(tmp_path)


def test_device_counters_give_the_ports_retransmissions_over_the_data_path(tmp_path):
    root = _hw(tmp_path, {"completer_retry_err": 10, "duplicate_request": 100, "rcvd_pkts": 5,
                          "lifespan": "x"})
    before = rv.device_counters("rxe0", 1, root)
    assert before == {"completer_retry_err": 10, "duplicate_request": 100, "rcvd_pkts": 5}
    _hw(tmp_path, {"completer_retry_err": 13, "duplicate_request": 170, "rcvd_pkts": 905})
    d = rv.counters_delta(before, rv.device_counters("rxe0", 1, root), "rxe0", 1)
    assert d["delta"] == {"completer_retry_err": 3, "duplicate_request": 70, "rcvd_pkts": 900}
    assert (d["retransmits"], d["duplicates"]) == (3, 70)
    assert "every QP" in d["scope"]
    assert rv.device_counters("mlx5_0", 1, root) is None            # no counters: no claim
    assert rv.counters_delta(None, before, "rxe0", 1) is None


def test_retransmitting_samples_are_named_in_the_row_and_the_progress_line():
    from bench.progress import LineReporter
    from bench.results import CaseResult, rdma_retransmits
    from reports.tables import case_row

    def sample(rtx, dup):
        hw = {"retransmits": rtx, "duplicates": dup}
        return {"gbps": 0.1, "rdma": {"sender": {"device_counters": hw},
                                      "receiver": {"device_counters": hw}}}
    clean, bad = sample(0, 0), sample(4, 900)
    assert rdma_retransmits(clean) == (0, 0) and rdma_retransmits({"gbps": 1}) is None
    cr = CaseResult(id="rdma_write-65536-veth", workload="rdma_write", size=65536,
                    topology="veth", status="ok", samples=[clean, bad, bad])
    assert "RDMA retransmitted: ours in 2 of 3 samples (8 timeouts, 1800 duplicate packets)" \
        in case_row(cr).note
    cr.samples = [clean]
    assert "retransmit" not in case_row(cr).note
    lines = []
    rep = LineReporter()
    rep._say = lines.append
    rep.sample_done(None, 0, bad, [])
    assert "RDMA retransmits 4 (duplicates 900)" in lines[0]
    ref = {"tool": "ib_write_bw", "gbps": 0.3, "rdma": bad["rdma"]}
    rep.sample_done(None, 0, clean, [ref])
    assert "RDMA retransmits" not in lines[1].split("|")[0]          # ours: none
    assert "ib_write_bw 0.30 Gbit/s, RDMA retransmits 4 (duplicates 900)" in lines[1]


def test_a_stale_slot_fails_for_certain_even_with_the_expected_phase():
    """2 * depth * size a multiple of 251 (502 slots of 4 KiB): a slot the sender did not
    rewrite holds message i - slots. Where that message's scheduled phase equals message i's,
    its bytes are the expected ones: only the poison written after verification shows it."""
    from workloads import pattern
    from workloads.rdma_flow import poison_slots, take_slot
    size, slots = 4096, 502
    assert slots * size % 251 == 0
    i = next(j for j in range(slots, 10**6) if pattern.phase(j) == pattern.phase(j - slots))
    region = bytearray(slots * size)
    mv = memoryview(region)
    poison_slots(mv, slots, size)
    v = pattern.StreamVerifier(size)
    data = pattern.stream_bytes(size, i + 1)
    for m in range(i + 1):
        k = m % slots
        if m != i:                                   # message i: the sender skipped its write
            region[k * size:(k + 1) * size] = data[m * size:(m + 1) * size]
        assert take_slot(v, mv, k, size, size) == (m != i), m
    assert v.bad_chunks == 1
    # a slot never written at all fails too
    w = pattern.StreamVerifier(size)
    fresh = bytearray(size)
    poison_slots(memoryview(fresh), 1, size)
    assert not take_slot(w, memoryview(fresh), 0, size, size)
