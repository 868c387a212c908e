"""`bench trace`: argument errors, the seed view, and (as root) a real traced command."""

import argparse
import json
import os
import sys

import pytest

from bench import trace_cmd
from bench.errors import UsageError
from bench.tracing.base import PointCounts

UDP_SELF = ("import socket\n"
            "a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('127.0.0.1', 0))\n"
            "b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range(23):\n"
            "    b.sendto(b'x' * 1000, a.getsockname()); a.recv(2000)\n")


def parse(*argv):
    ap = argparse.ArgumentParser()
    trace_cmd.add_parser(ap.add_subparsers())
    return ap.parse_args(["trace", *argv])


@pytest.mark.parametrize("argv, words", [
    ([], "no command"),
    (["--", "no-such-program-xyz"], "command not found"),
    (["--samples", "-1", "--", "true"], "--samples"),
    (["--comm", "a-name-much-too-long", "--", "true"], "--comm"),
])
def test_bad_input_is_a_usage_error(argv, words):
    args = parse(*argv)
    with pytest.raises(UsageError) as e:
        args.func(args)
    assert words in e.value.message and e.value.fix


def test_parser_keeps_the_command_verbatim():
    args = parse("--backend", "kmod", "--", "true", "-u", "--", "x")
    assert trace_cmd._command(args) == ["true", "-u", "--", "x"]


def test_render_is_the_seed_view():
    send = PointCounts("send_copy", "other", "_copy_from_iter", "kmod", True, calls=2, bytes=26,
                       ns_total=900, samples=[{"addr": "0xffff888112340050", "len": 13,
                                               "pid": 1234, "ns": 450}])
    recv = PointCounts("recv_copy", "other", "_copy_to_iter", "kmod", True, calls=2, bytes=26,
                       ns_total=800, samples=[{"addr": "0xffff888112340050", "len": 13,
                                               "pid": 1235, "ns": 400}])
    choices = [{"point": "send_copy", "backend": "kmod", "symbols": ["_copy_from_iter"],
                "exact": True}, {"point": "rxe_copy", "backend": None, "symbols": [],
                                 "exact": False}]
    text = trace_cmd.render([send, recv], choices)
    assert "[COPY1] PID=1234 dest=0xffff888112340050 len=13 ns=450" in text
    assert "[COPY4] PID=1235 src=0xffff888112340050 len=13" in text
    assert "copies: 4, bytes copied: 52, bytes copied per byte sent: 2.00" in text
    assert "same kernel address in COPY#1 and COPY#4: 0xffff888112340050" in text
    assert "# rxe_copy: not measurable here" in text
    row = next(line for line in text.splitlines() if line.startswith("send_copy "))
    assert row.split()[-2:] == ["450", "exact"]                 # ns per copy, quality


@pytest.mark.root
def test_trace_a_real_command(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root: tracers")
    out = tmp_path / "t.json"
    args = parse("--json", str(out), "--", sys.executable, "-c", UDP_SELF)
    try:
        rc = args.func(args)
    except UsageError as e:
        pytest.skip(f"no tracer here: {e}")
    assert rc == 0
    doc = json.loads(out.read_text())
    recv = [c for c in doc["counts"] if c["point"] == "recv_copy"]
    assert sum(c["calls"] for c in recv) == 23 and sum(c["bytes"] for c in recv) == 23000
    assert "[COPY4]" in capsys.readouterr().out
