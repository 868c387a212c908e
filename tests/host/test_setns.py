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


def test_enter_joins_the_named_namespace_without_pyroute2(root_only):
    name = f"cbsetns{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        p = subprocess.run([sys.executable, "-c", CODE, name], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
        assert p.stdout.split() == ["True", "True", "False"], p.stderr
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    p = subprocess.run([sys.executable, "-c", CODE, name], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert p.stdout.split() == ["error", "2"], p.stderr     # gone: ENOENT, nothing created
    assert not os.path.exists(f"/var/run/netns/{name}")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".."])
def test_bad_names_are_refused(bad):
    from bench.setns import enter
    with pytest.raises(ValueError):
        enter(bad)
