import gzip

from bench import doctor, results
from bench.topology import stale_namespaces
from reports import markdown


def test_doctor_reads_capabilities_from_fixture_roots(tmp_path):
    proc, sysr, boot, mods = (tmp_path / n for n in ("proc", "sys", "boot", "modules"))
    for d in (proc, sysr / "class/infiniband/rxe0/ports/1", boot, mods / "6.1.0-28-amd64/build"):
        d.mkdir(parents=True)
    (sysr / "class/infiniband/rxe0/ports/1/state").write_text("4: ACTIVE\n")
    (sysr / "class/infiniband/rxe0/parent").write_text("eth0\n")
    (proc / "modules").write_text("")
    (boot / "config-6.1.0-28-amd64").write_text("CONFIG_KPROBES=y\nCONFIG_MODULES=y\n")
    checks = {c.name: c for c in doctor.run_checks(doctor.Roots(proc, sysr, boot, mods), "6.1.0-28-amd64")}
    assert checks["kprobes"].ok and checks["modules"].ok and checks["kernel_headers"].ok
    assert checks["rdma_device"].ok and checks["rdma_device"].detail == "rxe0/1 (soft-RoCE)"


def test_doctor_names_the_fix_when_capabilities_are_missing(tmp_path):
    proc, sysr = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    sysr.mkdir()
    (proc / "config.gz").write_bytes(gzip.compress(b"# CONFIG_KPROBES is not set\n"))
    checks = {c.name: c for c in doctor.run_checks(
        doctor.Roots(proc, sysr, tmp_path / "boot", tmp_path / "m"), "6.18.0")}
    for name in ("kprobes", "modules", "kernel_headers", "rdma_device"):
        assert not checks[name].ok and checks[name].fix, name
    assert "lab" in checks["kprobes"].fix


def test_unmounted_tracefs_is_fine_as_root_and_named_otherwise(tmp_path):
    roots = doctor.Roots(tmp_path / "proc", tmp_path / "sys", tmp_path / "boot", tmp_path / "m")
    as_root = doctor.check_tracefs(roots, is_root=True)
    assert as_root.ok and "mounts it" in as_root.detail          # bench mounts it on demand
    user = doctor.check_tracefs(roots, is_root=False)
    assert not user.ok and "root" in user.fix


def test_stale_namespace_detection_only_takes_dead_owners():
    names = ["cb123tx", "cb123rx", "cb456tx", "other", "cbxtx"]
    assert stale_namespaces(names, alive=lambda pid: pid == 456) == ["cb123tx", "cb123rx"]


def test_markdown_report_shows_ratio_and_skip_reasons():
    r = results.RunResult(suite="s", metadata={"kernel": "k"})
    r.cases.append(results.CaseResult(id="tcp-65536-veth", workload="tcp", size=65536, topology="veth",
                                      samples=[{"gbps": 9.0}, {"gbps": 10.0}, {"gbps": 11.0}],
                                      reference=[{"gbps": 20.0}]))
    r.cases.append(results.CaseResult(id="rdma-4096-veth", workload="rdma", size=4096, topology="veth",
                                      status="skipped", reason="workload rdma is not built yet",
                                      fix="wait for it"))
    text = markdown.render(r)
    assert "| tcp-65536-veth | ok | 10.000 | 9.000–11.000 | 20.000 |" in text
    assert "| 20.000 | 0.500 |" in text
    assert "rdma is not built yet — fix: wait for it" in text


def test_the_readme_example_is_bench_report_of_the_committed_result(data_dir):
    """The README's example table is what `bench report` prints for a real committed run."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = markdown.table(results.load(data_dir / "smoke-example.json"))
    assert table in readme
