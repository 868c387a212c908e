"""--cpus as CPU lists: SENDERS,RECEIVERS[,SOFTIRQ], each side one CPU or a range (`0-3`).

Flow i's sender runs on the i-th sender CPU and its receiver on the i-th receiver CPU, round
robin when there are more flows than CPUs (then CPUs are shared, and the result says so). One
CPU per side is the plain `--cpus 0,1` every path has always taken. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UsageError

FIX = ("e.g. --cpus 0,1 (sender, receiver), --cpus 0,1,1 (and the receive softirq) or "
       "--cpus 0-3,4-7 (one CPU per flow on each side)")


@dataclass(frozen=True)
class CpuLists:
    sender: tuple[int, ...]
    receiver: tuple[int, ...]
    softirq: int | None = None

    @property
    def first(self) -> tuple[int, ...]:
        """(sender, receiver[, softirq]): the CPUs of flow 0, as --cpus has always read."""
        return (self.sender[0], self.receiver[0]) + (
            (self.softirq,) if self.softirq is not None else ())

    def for_flow(self, i: int) -> tuple[int, int]:
        return self.sender[i % len(self.sender)], self.receiver[i % len(self.receiver)]

    def sides(self) -> tuple[tuple[int, ...], ...]:
        """Every CPU per --cpus position (the placement checks each against its machine)."""
        return (self.sender, self.receiver) + (
            ((self.softirq,),) if self.softirq is not None else ())

    def shared(self, flows: int) -> str | None:
        """How flows share CPUs when the lists are shorter than the flows, else None."""
        short = [f"{len(cpus)} {side} CPU{'s' if len(cpus) > 1 else ''}"
                 for side, cpus in (("sender", self.sender), ("receiver", self.receiver))
                 if len(cpus) < flows]
        if flows < 2 or not short:
            return None
        return (f"{flows} flows on {' and '.join(short)}: placed round robin, so flows share "
                "CPUs")


def _side(text: str, whole: str) -> tuple[int, ...]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise UsageError(f"--cpus {whole!r}: {text!r} is not a CPU number or range", FIX) \
            from None
    if a < 0 or b < a:
        raise UsageError(f"--cpus {whole!r}: {text!r} is not a CPU number or range", FIX)
    return tuple(range(a, b + 1))


def parse(text: str | None) -> CpuLists | None:
    if not text:
        return None
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise UsageError(f"--cpus {text!r}: expected two or three CPU numbers or ranges", FIX)
    sender, receiver = _side(parts[0], text), _side(parts[1], text)
    softirq = None
    if len(parts) == 3:
        q = _side(parts[2], text)
        if len(q) != 1:
            raise UsageError(f"--cpus {text!r}: the softirq CPU is one CPU", FIX)
        softirq = q[0]
    return CpuLists(sender, receiver, softirq)
