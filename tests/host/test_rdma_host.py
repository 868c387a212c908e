"""RDMA on a machine without it (our development and CI machines): the rdma rows are skipped
with the reason and the fix, the run completes (exit 0), and nothing is left behind."""

import pytest

from bench import doctor

pytestmark = pytest.mark.root


def _rdma_possible() -> str | None:
    c = doctor.check_rdma(doctor.Roots())
    return c.detail if c.ok else None


def test_rdma_rows_skip_with_the_fix_where_no_rdma_exists(run_bench, root_only, no_leftovers):
    possible = _rdma_possible()
    if possible:
        pytest.skip(f"this machine can do RDMA ({possible}): the lab tests cover it")
    rc, out, err, doc = run_bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                  "--workload", "rdma")
    assert rc == 0, err
    assert doc["status"] == "complete"
    assert [c["id"] for c in doc["cases"]] == [
        "rdma_write-4096-veth", "rdma_write-65536-veth", "rdma_send-4096-veth",
        "rdma_send-65536-veth"]
    for c in doc["cases"]:
        assert c["status"] == "skipped" and not c["samples"]
        assert "rdma_device" in c["reason"]
        assert "bench lab up" in c["fix"] and "rdma link add" in c["fix"]
    assert "skipped" in out and "bench lab up" in out


def test_an_unknown_rdma_device(run_bench, root_only, no_leftovers):
    """Where RDMA runs, a device that does not exist fails its case with the reason; where
    it cannot (this machine), the rows are skipped before any device is looked up."""
    rc, out, err, doc = run_bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                  "--workload", "rdma_write",
                                  "--sizes", "4096", "--bytes", "40960", "--rdma-device", "nope9")
    c = doc["cases"][0]
    if _rdma_possible():
        assert rc == 1 and c["status"] == "failed" and "no such RDMA device" in c["reason"]
    else:
        assert rc == 0 and c["status"] == "skipped" and "rdma_device" in c["reason"], c
