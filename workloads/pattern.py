"""The payload pattern every workload sends and every receiver verifies.

Pattern bytes: `block(size)[k:k + size]` is the pattern from phase k, byte j being (k + j) % 251.
PERIOD is prime so it never lines up with message or page sizes.

Order, loss and duplication: message i of a stream (stream offset i * size) is the pattern from
phase `phase(i)`, a fixed pseudo-random schedule of the message index with no period (a 64 Ki
table of phases, re-permuted per page of 64 Ki messages). A receiver that checks message i
against phase(i) sees any shift of the stream (a lost, a duplicated, a stale message, whatever
their number) as soon as one later message's phase differs: each does with probability
250/251, independently, so a shift escapes 1 in 251^m over its next m messages. A fault with no
message after it in the stream shows in the byte count, not here. The senders keep one buffer
(view, registered buffer, MR offset) per phase as before: choosing one costs a table index.

Datagrams may be lost, duplicated and reordered by the network: each carries its own sequence
number in an 8-byte header (little endian), the body is the pattern from phase seq % PERIOD,
and the receiver counts gaps as loss and reports duplicates and late arrivals (SeqTracker).
"""

from __future__ import annotations

import random
import struct

PERIOD = 251
PAGE_BITS = 16                     # messages per schedule page: 65536
PAGE_MASK = (1 << PAGE_BITS) - 1
SEQ = struct.Struct("<Q")          # a datagram's sequence number header
SEQ_BYTES = SEQ.size


def block(size: int) -> bytes:
    """A buffer long enough that any chunk of up to `size` bytes is a slice of it."""
    return bytes(i % PERIOD for i in range(size + PERIOD))


# Chunks longer than this are compared segment by segment against one cache-resident
# reference: a multiple of PERIOD, so every segment starts at the same pattern phase. Against
# a reference as long as a 1 MiB chunk, memcmp streams twice the memory (22 vs 17.6 GB/s here).
SEGMENT = PERIOD * 256     # 64256 bytes

# The schedule: a fixed table of 64 Ki phases, and per page of 64 Ki messages a permutation of
# the phases applied to it (bytes.translate, C speed). Seeded: sender and receiver agree.
_BASE = bytes(random.Random(0x5EED).choices(range(PERIOD), k=1 << PAGE_BITS))
_pages: dict[int, bytes] = {}


def page(p: int) -> bytes:
    """Phases of messages p * 65536 ... p * 65536 + 65535."""
    tab = _pages.get(p)
    if tab is None:
        perm = random.Random(p * 0x9E3779B97F4A7C15 + 1).sample(range(PERIOD), PERIOD)
        tab = _BASE.translate(bytes(perm) + bytes(range(PERIOD, 256)))
        if len(_pages) > 64:           # a long run walks forward: old pages are never back
            _pages.clear()
        _pages[p] = tab
    return tab


def phase(i: int) -> int:
    """The pattern phase message i of a stream starts at."""
    return page(i >> PAGE_BITS)[i & PAGE_MASK]


def stream_bytes(size: int, count: int, first: int = 0) -> bytes:
    """What a stream sender sends as messages first .. first + count - 1 (tests, benchmarks)."""
    ref = block(size)
    return b"".join(ref[phase(i):phase(i) + size] for i in range(first, first + count))


class StreamVerifier:
    """Checks a byte stream of `size`-byte messages chunk by chunk: each message's part in a
    chunk against the pattern from that message's phase, one memcmp per part (per SEGMENT of
    a long part), no per-byte Python work. Every byte is checked."""

    def __init__(self, size: int, max_chunk: int | None = None):
        self.size = size
        self.ref = block(min(max(size, max_chunk or 0), SEGMENT))
        self.offset = 0
        self.bad_chunks = 0
        self._tp, self._tab = 0, page(0)

    def _phase(self, i: int) -> int:
        if (i >> PAGE_BITS) != self._tp:
            self._tp = i >> PAGE_BITS
            self._tab = page(self._tp)
        return self._tab[i & PAGE_MASK]

    def _part(self, part: memoryview, k: int) -> bool:
        ref, n = self.ref, len(part)
        if n <= SEGMENT:
            return ref.startswith(part, k)
        return all(ref.startswith(part[i:i + SEGMENT], k) for i in range(0, n, SEGMENT))

    def matches(self, chunk: memoryview, offset: int) -> bool:
        """Whether `chunk` is the stream's bytes from `offset` on (no state change)."""
        size, n = self.size, len(chunk)
        i, within = divmod(offset, size)
        pos = 0
        while pos < n:
            take = min(size - within, n - pos)
            if not self._part(chunk[pos:pos + take] if take < n else chunk,
                              (self._phase(i) + within) % PERIOD):
                return False
            pos += take
            i += 1
            within = 0
        return True

    def check(self, chunk: memoryview) -> bool:
        ok = self.matches(chunk, self.offset)
        self.offset += len(chunk)
        if not ok:
            self.bad_chunks += 1
        return ok


# -- datagrams ---------------------------------------------------------------------------------
def datagram(size: int, seq: int, ref: bytes | None = None) -> bytes:
    """Datagram `seq` as the sender sends it: its sequence number, then the pattern."""
    ref = ref or block(size)
    k = seq % PERIOD
    return SEQ.pack(seq) + ref[k:k + size - SEQ_BYTES]


def datagram_seq(ref: bytes, data: memoryview) -> int | None:
    """The sequence number of a good datagram (header, then the pattern from its phase), or
    None when its bytes are wrong."""
    if len(data) < SEQ_BYTES:
        return None
    seq = SEQ.unpack_from(data)[0]
    return seq if ref.startswith(data[SEQ_BYTES:], seq % PERIOD) else None


class SeqTracker:
    """Datagram sequence numbers in arrival order -> unique, lost, duplicated, late.

    In order is the fast path (one compare). A gap counts its datagrams as lost and remembers
    them (up to WINDOW behind the newest): one that arrives later is `late` (reordered) and no
    longer lost; one already received is a `duplicate`. A sequence number older than the
    window cannot be told apart and counts as `stale`."""

    WINDOW = 1 << 16

    def __init__(self):
        self.expect = 0        # next in-order sequence number
        self.unique = 0
        self.lost = 0
        self.duplicates = 0
        self.late = 0
        self.stale = 0
        self.missing: set[int] = set()

    def see(self, seq: int) -> bool:
        """Record one good datagram; True when it is new (counts as delivered)."""
        if seq == self.expect:
            self.expect += 1
            self.unique += 1
            return True
        return self._slow(seq)

    def _slow(self, seq: int) -> bool:
        if seq > self.expect:
            gap = seq - self.expect
            self.lost += gap
            self.missing.update(range(max(self.expect, seq - self.WINDOW), seq))
            self.expect = seq + 1
            self.unique += 1
            if len(self.missing) > 2 * self.WINDOW:
                floor = self.expect - self.WINDOW
                self.missing = {s for s in self.missing if s >= floor}
            return True
        if seq in self.missing:
            self.missing.discard(seq)
            self.lost -= 1
            self.late += 1
            self.unique += 1
            return True
        if seq < self.expect - self.WINDOW:
            self.stale += 1
        else:
            self.duplicates += 1
        return False

    def report(self) -> dict:
        return {"lost": self.lost, "duplicates": self.duplicates, "late": self.late,
                "stale": self.stale, "highest_seq": self.expect - 1}
