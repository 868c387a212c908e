"""Attach a tracer to this process, print "attached", and wait to be killed (crash tests).

usage: hold_tracer.py BACKEND [SYMBOL]   (SYMBOL: an ad-hoc send_copy probe for kprobe_events)
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from bench.tracing.catalog import Probe  # noqa: E402
from bench.tracing.select import make_tracer  # noqa: E402

backend = sys.argv[1]
kw = {}
if len(sys.argv) > 2:
    kw["probes"] = [Probe("send_copy", sys.argv[2], "kprobe", "crash test", len_arg=2)]
tracer = make_tracer(backend, **kw)
tracer.attach({"sender": __import__("os").getpid()})
print("attached", flush=True)
time.sleep(3600)
