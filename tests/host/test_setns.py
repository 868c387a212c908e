"""bench.setns: the agents' and nsexec's way into our namespaces, without pyroute2's import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

CODE = """
import os, sys
from bench.setns import enter
before = os.stat('/proc/self/ns/net').st_ino
try:
    enter(sys.argv[1])
except OSError as e:
    print('error', e.errno); raise SystemExit(0)
print(before != os.stat('/proc/self/ns/net').st_ino,
      os.stat('/proc/self/ns/net').st_ino == os.stat('/var/run/netns/' + sys.argv[1]).st_ino,
      'pyroute2' in sys.modules)
"""


@pytest.fixture
def scratch_netns(root_only):
    name = f"cbsetns{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    if os.path.exists(f"/var/run/netns/{name}"):
        subprocess.run(["ip", "netns", "del", name], check=True)


def _child(code: str, name: str) -> list[str]:
    p = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_enter_joins_the_named_namespace_without_pyroute2(scratch_netns):
    assert _child(CODE, scratch_netns) == ["True", "True", "False"]
    subprocess.run(["ip", "netns", "del", scratch_netns], check=True)
    assert _child(CODE, scratch_netns) == ["error", "2"]     # gone: ENOENT, nothing created
    assert not os.path.exists(f"/var/run/netns/{scratch_netns}")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".."])
def test_bad_names_are_refused(bad):
    from bench.setns import enter
    with pytest.raises(ValueError):
        enter(bad)


INSIDE = """
import os, socket, sys, threading
from bench.setns import inside
home = os.stat('/proc/thread-self/ns/net').st_ino
target = os.stat('/var/run/netns/' + sys.argv[1]).st_ino
seen = {}
go = threading.Event()
def other():            # a thread started before stays where it was meanwhile
    go.wait(10)
    seen['other'] = os.stat('/proc/thread-self/ns/net').st_ino
t = threading.Thread(target=other); t.start()
with inside(sys.argv[1]):
    seen['in'] = os.stat('/proc/thread-self/ns/net').st_ino
    go.set(); t.join()
    s = socket.socket()          # a socket opened inside belongs there: no 198.18.9.9 here
    with open('/proc/sys/net/core/somaxconn', 'w') as f:
        f.write('77')            # a per-namespace sysctl, written inside only
try:
    with inside(sys.argv[1]):
        raise KeyError('boom')
except KeyError:
    pass
after = os.stat('/proc/thread-self/ns/net').st_ino
print(seen['in'] == target, seen['other'] == home, after == home,
      open('/proc/sys/net/core/somaxconn').read().strip() != '77')
"""


def test_inside_moves_only_this_thread_for_the_block_and_always_comes_back(scratch_netns):
    assert _child(INSIDE, scratch_netns) == ["True"] * 4
    inner = subprocess.run(["ip", "netns", "exec", scratch_netns, "cat",
                            "/proc/sys/net/core/somaxconn"], capture_output=True, text=True)
    assert inner.stdout.strip() == "77"
