"""Struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF).

kprobe_events fetch arguments are raw offsets (`+116(%di):u32`), so what a C probe reads by
name (skb->data_len, sock->sk->sk_family) is looked up here for the running kernel. One parse
of the type section serves every lookup (≈0.1 s for 5 MB on this host, several times that
under TCG).
"""

from __future__ import annotations

import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F
# kind -> size of the data after the 12-byte btf_type: (fixed bytes, bytes per vlen item)
TRAILER = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
           8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8),
           14: (4, 0), 15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12)}
INT, PTR, STRUCT, UNION = 1, 2, 4, 5
MODIFIERS = {8, 9, 10, 11, 18}   # typedef, volatile, const, restrict, type_tag
POINTER_SIZE = 8                 # the 64-bit kernels copybench traces
ERRORS = (ValueError, struct.error, IndexError, UnicodeDecodeError)   # what a bad file raises


class Types:
    """The type section of one BTF blob. Raises ValueError for anything unexpected."""

    def __init__(self, data: bytes, base: Types | None = None):
        """base: vmlinux's types when `data` is a module's split BTF (/sys/kernel/btf/<mod>),
        whose type ids and string offsets continue where the base's end."""
        if len(data) < 24:
            raise ValueError("BTF too short")
        self.end = "<" if struct.unpack_from("<H", data, 0)[0] == MAGIC else ">"
        magic, _v, _f, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            self.end + "HBBIIIII", data, 0)
        if magic != MAGIC:
            raise ValueError("not BTF (bad magic)")
        types_at, self.strs_at = hdr_len + type_off, hdr_len + str_off
        if types_at + type_len > len(data) or self.strs_at + str_len > len(data):
            raise ValueError("BTF sections outside the data")
        self.data, self.base = data, base
        self.str_base = base.str_end if base else 0      # split BTF: offsets past the base's
        self.str_end = self.str_base + str_len
        # type id -> (kind, kind_flag, name_off, size_or_type, vlen, position of the trailer,
        # the Types whose data holds it); a split BTF's ids follow its base's
        self.types: list[tuple] = list(base.types) if base else [(0, 0, 0, 0, 0, 0, self)]
        self.structs: dict[str, list[int]] = {}
        pos, stop = types_at, types_at + type_len
        while pos < stop:
            name_off, info, size = struct.unpack_from(self.end + "III", data, pos)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            if kind not in TRAILER:
                raise ValueError(f"unknown BTF type kind {kind}")
            if kind == STRUCT and vlen:
                self.structs.setdefault(self.name(name_off), []).append(len(self.types))
            self.types.append((kind, kflag, name_off, size, vlen, pos + 12, self))
            fixed, per = TRAILER[kind]
            pos += 12 + fixed + per * vlen

    def name(self, off: int) -> str:
        if off < self.str_base:
            return self.base.name(off)
        at = self.strs_at + off - self.str_base
        return self.data[at:self.data.index(b"\0", at)].decode()

    def _resolve(self, tid: int) -> tuple:
        for _ in range(32):
            t = self.types[tid]
            if t[0] not in MODIFIERS:
                return t
            tid = t[3]
        raise ValueError("BTF modifier chain too long")

    def member(self, struct_name: str, member: str, pointer: bool = False,
               embedded: bool = False) -> tuple[int, int]:
        """(byte offset, byte size) of a plain integer member (pointer=True: a pointer
        member; embedded=True: a struct member, its size) of a struct; members of anonymous
        structs/unions are found too."""
        what = "a pointer" if pointer else "a struct" if embedded else "a plain integer"

        def find(t, base_bits: int) -> tuple[int, int] | None:
            _kind, kflag, _n, _size, vlen, at, owner = t
            for k in range(vlen):
                m_name, m_type, m_off = struct.unpack_from(owner.end + "III", owner.data,
                                                           at + 12 * k)
                bits, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                mt = self._resolve(m_type)
                if m_name == 0 and mt[0] in (STRUCT, UNION):
                    hit = find(mt, base_bits + bits)
                    if hit:
                        return hit
                elif m_name and owner.name(m_name) == member:
                    plain = (mt[0] == PTR) if pointer else (mt[0] == STRUCT) if embedded else (
                        mt[0] == INT and mt[3] in (1, 2, 4, 8))
                    if bitfield or bits % 8 or not plain:
                        raise ValueError(f"{struct_name}.{member} is not {what}")
                    return (base_bits + bits) // 8, POINTER_SIZE if pointer else mt[3]
            return None

        ids = self.structs.get(struct_name)
        if not ids and self.base:
            return self.base.member(struct_name, member, pointer, embedded)
        if not ids:
            raise ValueError(f"no struct {struct_name} in BTF")
        for tid in ids:
            hit = find(self.types[tid], 0)
            if hit:
                return hit
        raise ValueError(f"struct {struct_name} has no member {member}")


def member(data: bytes, struct_name: str, name: str, pointer: bool = False) -> tuple[int, int]:
    return Types(data).member(struct_name, name, pointer)


def load(path: Path = VMLINUX, base: Types | None = None) -> tuple[Types | None, str]:
    """(types, "ok"), or (None, why not) when the kernel's BTF cannot be read. A module's
    BTF (/sys/kernel/btf/<module>) needs vmlinux's as its base."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"{path}: {e.strerror} (CONFIG_DEBUG_INFO_BTF)"
    try:
        return Types(data, base), "ok"
    except ERRORS as e:
        return None, f"cannot read {path}: {e}"


def module_member(module: str, struct_name: str, name: str, embedded: bool = False,
                  btf_dir: Path = VMLINUX.parent) -> tuple[tuple[int, int] | None, str]:
    """A member of a struct private to a loaded module (its own headers are not installed)."""
    base, why = load(btf_dir / "vmlinux")
    if base is None:
        return None, why
    types, why = load(btf_dir / module, base)
    if types is None:
        return None, why
    try:
        return types.member(struct_name, name, embedded=embedded), "ok"
    except ERRORS as e:
        return None, f"{module}: {e}"
