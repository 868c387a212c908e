"""The payload pattern every workload sends and every receiver verifies.

Byte at stream offset `o` is `o % PERIOD`. PERIOD is prime so it never lines up with message
sizes or page sizes, and a shifted, dropped or duplicated chunk cannot compare equal. A datagram
starts at offset `seq % PERIOD`, so its first byte tells the receiver where it starts: datagrams
verify on their own, without a header.
"""

from __future__ import annotations

PERIOD = 251


def block(size: int) -> bytes:
    """A buffer long enough that any chunk of up to `size` bytes is a slice of it."""
    return bytes(i % PERIOD for i in range(size + PERIOD))


class StreamVerifier:
    """Checks a byte stream chunk by chunk; one memcmp per chunk, no per-byte Python work."""

    def __init__(self, max_chunk: int):
        self._ref = block(max_chunk)
        self.offset = 0
        self.bad_chunks = 0

    def check(self, chunk: memoryview) -> bool:
        k = self.offset % PERIOD
        # bytes.startswith takes a buffer and memcmps it: ~50 GB/s, where memoryview == is
        # element-wise and far slower than the network.
        ok = self._ref.startswith(chunk, k)
        self.offset += len(chunk)
        if not ok:
            self.bad_chunks += 1
        return ok


def datagram_ok(ref: bytes, data: memoryview) -> bool:
    """A datagram is good when it equals the pattern slice its first byte names."""
    if not data:
        return False
    k = data[0]
    return k < PERIOD and ref.startswith(data, k)
