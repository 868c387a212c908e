"""Bad input that used to end in a traceback (issue 20, part 8): through the real CLI, each is
one message naming the fix, exit code 2, and nothing left behind."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, bench_cmd


def _bench(*args: str, cwd=REPO):
    p = subprocess.run(bench_cmd(*args), capture_output=True, text=True, timeout=120, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def _one_message(rc: int, err: str, needle: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert needle in err, err
    assert "bench: fix:" in err, err


def _suite(tmp_path, defaults: str = "", sizes: str = "[1472]"):
    p = tmp_path / "s.toml"
    p.write_text(f'name = "s"\n[defaults]\n{defaults}\n[[matrix]]\nworkloads = ["udp"]\n'
                 f'sizes = {sizes}\ntopologies = ["loopback"]\n')
    return p


def test_suite_file_not_utf8(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    out = tmp_path / "out"
    rc, _, err = _bench("run", "--suite", str(bad), "--out", str(out))
    _one_message(rc, err, "is not UTF-8 text")
    assert not out.exists()


@pytest.mark.parametrize("defaults,sizes,needle", [
    ("repeat = 100000000", "[1472]", "repeat 100000000: must be at least 1 and at most 1000"),
    ("duration = 1e9", "[1472]", "at most 3600 seconds"),
    ("duration = -1.0", "[1472]", "must be more than 0"),
    ("bytes = 0", "[1472]", "bytes 0: must be between 1 and"),
    ("bytes = 100000000000000000", "[1472]", "(1 TiB)"),
    ("", "[0]", "must be at least 1 byte"),
    ("", "[-4096]", "must be at least 1 byte"),
    ("", "[1000000000]", "the largest is 65507"),
    ("zc_chunk = 1000", "[1472]", "zc_chunk 1000: must be a multiple of the page size"),
    ("zc_rcvlowat = 0", "[1472]", "zc_rcvlowat 0: must be between 1 and"),
])
def test_absurd_suite_values(tmp_path, defaults, sizes, needle):
    out = tmp_path / "out"
    rc, _, err = _bench("run", "--suite", str(_suite(tmp_path, defaults, sizes)),
                        "--out", str(out))
    _one_message(rc, err, needle)
    assert not out.exists()


def test_out_under_proc(tmp_path):
    rc, _, err = _bench("run", "--suite", str(_suite(tmp_path)), "--out", "/proc/copybench-out")
    _one_message(rc, err, "kernel pseudo filesystem")


def test_out_is_a_regular_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("keep me\n")
    rc, _, err = _bench("run", "--suite", str(_suite(tmp_path)), "--out", str(f))
    _one_message(rc, err, "exists and is not a directory")
    assert f.read_text() == "keep me\n"


def test_out_below_a_regular_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("")
    rc, _, err = _bench("run", "--suite", str(_suite(tmp_path)), "--out", str(f / "sub"))
    _one_message(rc, err, "is not a directory")


@pytest.mark.parametrize("where,needle", [
    ("/proc/copybench-trace.json", "kernel pseudo filesystem"),
    ("{tmp}/no/such/dir/t.json", "does not exist"),
    ("{tmp}", "is a directory"),
])
def test_trace_json_unwritable_before_the_command_runs(tmp_path, where, needle):
    marker = tmp_path / "ran"
    rc, _, err = _bench("trace", "--json", where.format(tmp=tmp_path), "--",
                        "sh", "-c", f"touch {marker}")
    _one_message(rc, err, needle)
    assert not marker.exists(), "the traced command ran although its output had nowhere to go"


@pytest.fixture
def shared_tmp():
    """A directory another user can write in (pytest's tmp_path is root's alone)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="copybench-nonroot-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d)


@pytest.mark.parametrize("extra,kind", [
    ((), "loopback-mtu61492"),          # the suite's own topologies, the first one named
    (("--topology", "veth-mtu61492"), "veth-mtu61492"),
])
def test_mtu_topologies_refused_up_front_without_root(root_only, no_leftovers, shared_tmp,
                                                      extra, kind):
    # KIND-mtuN creates network namespaces like veth: as another user the run must stop before
    # any case, not fail every case one by one.
    if not shutil.which("runuser"):
        pytest.skip("needs runuser to run the CLI as another user")
    out = shared_tmp / "out"
    p = subprocess.run(["runuser", "-u", "nobody", "--", *bench_cmd(
        "run", "--suite", "zerocopy-receive", "--target", "local", "--workload", "tcp",
        "--copies", "off", "--syscalls", "off", "--out", str(out), *extra)],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    _one_message(p.returncode, p.stderr, f"the {kind} topology creates network namespaces and "
                 "needs root")
    assert "run as root" in p.stderr
    assert not out.exists()
