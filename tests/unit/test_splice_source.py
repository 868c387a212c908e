"""The splice sender's pages: the pattern in an anonymous mapping of its own, never heap
memory (workloads.sockets.MappedPatternSource says what heap memory did)."""

import mmap

from workloads.sockets import MappedPatternSource, PatternSource


def test_the_splice_source_is_the_pattern_in_a_mapping_of_its_own():
    a, b = MappedPatternSource(4096), PatternSource(4096)
    assert isinstance(a.buf, mmap.mmap) and len(a.buf) % mmap.PAGESIZE == 0
    assert [bytes(v) for v in a.views] == [bytes(v) for v in b.views]
