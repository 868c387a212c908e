"""BTF lookups: split BTF of a module (its types and strings continue where vmlinux's end)."""

import struct

import pytest

from bench.tracing import btf


def _blob(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body),
                       len(strings)) + body + strings


def _t(name, kind, vlen, size_or_type, trailer=b""):
    return struct.pack("<III", name, (kind << 24) | vlen, size_or_type) + trailer


def _m(name, tid, bits):
    return struct.pack("<III", name, tid, bits)


def test_a_private_module_struct_embeds_a_vmlinux_struct():
    # vmlinux: 1 = int, 2 = struct ib_mr { int lkey; }
    bnames = b"\0int\0ib_mr\0lkey\0"
    boff = {n: bnames.index(n.encode() + b"\0") for n in ("int", "ib_mr", "lkey")}
    base = btf.Types(_blob([_t(boff["int"], 1, 0, 4, struct.pack("<I", 32)),
                            _t(boff["ib_mr"], 4, 1, 4, _m(boff["lkey"], 1, 0))], bnames))
    # rdma_rxe: 3 = struct rxe_mr { int elem[..]; struct ib_mr ibmr; } (ibmr at byte 40),
    # its own names after the base's strings; "int" reused from the base
    mnames = b"\0rxe_mr\0ibmr\0elem\0"
    moff = {n: len(bnames) + mnames.index(n.encode() + b"\0") for n in ("rxe_mr", "ibmr", "elem")}
    mod = btf.Types(_blob([_t(moff["rxe_mr"], 4, 2, 48,
                              _m(moff["elem"], 1, 0) + _m(moff["ibmr"], 2, 320))], mnames), base)
    assert mod.member("rxe_mr", "ibmr", embedded=True) == (40, 4)
    assert mod.member("rxe_mr", "elem") == (0, 4)
    with pytest.raises(ValueError, match="not a struct"):
        mod.member("rxe_mr", "elem", embedded=True)
    assert mod.member("ib_mr", "lkey") == (0, 4)          # the base's structs, through it


def test_module_member_says_why_without_the_modules_btf(tmp_path):
    off, why = btf.module_member("rdma_rxe", "rxe_mr", "ibmr", embedded=True, btf_dir=tmp_path)
    assert off is None and "vmlinux" in why
