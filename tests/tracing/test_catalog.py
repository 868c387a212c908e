"""The probe catalog's internal consistency and its /proc readers on fixtures."""

import pytest

from bench.tracing import catalog


def test_every_entry_is_well_formed():
    for p in catalog.CATALOG:
        assert p.point in catalog.POINTS, p
        if p.kind == "kprobe":
            for pos in (p.addr_arg, p.len_arg):
                assert pos is None or 0 <= pos < 6
            assert p.len_field is None
        else:
            assert p.kind == "tracepoint" and ":" in p.symbol and p.len_field
            assert p.exact is False          # tracepoints are estimates unless proven per case
        for inner in p.nests:                # a wrapper must nest something we probe anyway
            assert catalog.by_symbol(inner).default and not p.default


def test_send_and_receive_copies_were_verified_on_the_lab_kernel():
    for sym in ("_copy_from_iter", "_copy_to_iter"):
        assert catalog.by_symbol(sym).verified[catalog.K61].startswith("counted 1000/1000")


def test_registers_per_arch():
    p = catalog.by_symbol("_copy_from_iter")
    assert (p.reg(p.addr_arg), p.reg(p.len_arg)) == ("di", "si")          # the seed's regs
    assert (p.reg(p.addr_arg, "aarch64"), p.reg(p.len_arg, "aarch64")) == ("x0", "x1")
    assert catalog.C_ARG_REGS["x86_64"][1] == "regs->si"


def test_default_selection_excludes_wrappers():
    syms = [p.symbol for p in catalog.probes("recv_copy", kind="kprobe")]
    assert "_copy_to_iter" in syms and "copy_page_to_iter" not in syms
    assert "copy_page_to_iter" in [p.symbol for p in catalog.probes(
        "recv_copy", kind="kprobe", defaults_only=False)]


def test_kallsyms_fixture(tmp_path):
    (tmp_path / "kallsyms").write_text(
        "ffffffff81b69be0 T _copy_from_iter\n"
        "ffffffffc09bbb30 t rxe_mr_copy\t[rdma_rxe]\n"
        "ffffffff82000000 D some_data\n")
    assert catalog.kallsyms(tmp_path) == {"_copy_from_iter", "rxe_mr_copy"}
    assert catalog.kallsyms(tmp_path / "missing") == set()
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/osrelease").write_text("6.1.0-56-amd64\n")
    assert catalog.kernel_release(tmp_path) == "6.1.0-56-amd64"


def test_unknown_symbol():
    with pytest.raises(KeyError):
        catalog.by_symbol("memcpy")
