"""A node's tracer process for tests: the real protocol loop (bench.tracing.remote.serve and its
signal handlers) around a fake backend that records what happened in files.

usage: fake_node_tracer.py LOGDIR NODE [MODE]
  MODE ok (default) | refuse (the backend cannot work here: select raises) | noattach
Writes LOGDIR/NODE.attach (the pids it was given as JSON) and appends a line to
LOGDIR/NODE.detach on every real detach.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from bench.costmodel import Bandwidth  # noqa: E402
from bench.errors import UsageError  # noqa: E402
from bench.tracing import remote  # noqa: E402
from bench.tracing.base import Availability, PointCounts, Tracer  # noqa: E402
from bench.tracing.select import Choice  # noqa: E402

logdir, node = Path(sys.argv[1]), sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "ok"


class FakeTracer(Tracer):
    name = "kmod"

    def __init__(self, spec):
        self.choices = [Choice("send_copy", "kmod", ["_copy_from_iter"], True),
                        Choice("recv_copy", "kmod", ["_copy_to_iter"], True)]
        self.pids: dict[str, int] = {}

    def available(self):
        return Availability(True, f"fake copytrace on {node}")

    def attach(self, pids):
        if mode == "noattach":
            raise UsageError("insmod copytrace failed: fake", "see dmesg")
        self.pids = pids
        (logdir / f"{node}.attach").write_text(json.dumps(pids))

    def read(self):
        out = []
        for side, pid in self.pids.items():
            point, sym = (("send_copy", "_copy_from_iter") if side == "sender"
                          else ("recv_copy", "_copy_to_iter"))
            out.append(PointCounts(point, side, sym, "kmod", True, calls=pid % 1000,
                                   bytes=(pid % 1000) * 1000, ns_total=5000))
        out.append(PointCounts("zc_fallback", "other", "skb_copy_ubufs", "kmod", True,
                               calls=2, bytes=8192, ns_total=100))
        return out

    def detach(self):
        with open(logdir / f"{node}.detach", "a") as f:
            f.write("detached\n")


def make(spec, points):
    if mode == "refuse":
        raise UsageError("backend bpftrace cannot measure anything here: _copy_from_iter: "
                         "not in available_filter_functions (notrace)",
                         "use --backend auto, or the lab VM (bench lab up)")
    return FakeTracer(spec)


remote.install_handlers()
sys.exit(remote.serve(sys.stdin, sys.stdout, make_tracer=make,
                      measure_bandwidth=lambda: Bandwidth(1 << 20, 1, 1e-4),
                      prepare=lambda t: None, kernel="6.1.0-fake"))
