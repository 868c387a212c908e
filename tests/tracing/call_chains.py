"""Print the kernel call chains of the copies (copytrace stacks=N -> dmesg), per protocol.

Run inside a kprobe-capable kernel (the lab VM): `python3 call_chains.py udp tcp`. The output
is what the catalog's `verified` entries and the report's call-chain table are made from.
"""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))

from peers import udp_pair  # noqa: E402

from bench.tracing.kmod import KmodTracer  # noqa: E402

OPT = Path("/proc/sys/debug/kprobes-optimization")


def parse_chains(log: str) -> list[tuple[str, str]]:
    """dmesg text -> [(symbol, "caller <- caller's caller <- ...")], up to the syscall entry.

    The frames that matter follow the "RIP: 0010:<probed function>" line of the int3 frame;
    "? " frames are unreliable guesses of the unwinder and are dropped.
    """
    out, sym, frames, inside = [], None, [], False
    for line in log.splitlines():
        text = line.split("] ", 1)[-1]
        if "copytrace: call chain of " in text:
            sym = text.split("call chain of ")[1].split()[0]
            frames, inside = [], False
        elif sym and (text.startswith("RIP: 0010:") or text.strip().startswith(sym + "+")):
            inside = True   # int3 kprobes show a RIP line, ftrace-based ones the frame itself
        elif sym and inside and text.startswith(" ") and not text.startswith(" ?"):
            name = text.strip().split("+")[0]
            if name in ("<TASK>", "</IRQ>", "<IRQ>") or name.startswith("__x64_sys"):
                continue
            if name.startswith(("____sys", "__sys_")):
                frames.append(name)          # the syscall body ends the chain
            if name.startswith(("____sys", "__sys_", "entry_SYSCALL", "do_syscall", "</TASK>")):
                out.append((sym, " <- ".join(frames)))
                sym, inside = None, False
            else:
                frames.append(name)
    return out


def chains(proto: str) -> list[tuple[str, str]]:
    """Chains of the first copies per probe; int3 kprobes so the unwinder sees the caller."""
    old = OPT.read_text().strip()
    OPT.write_text("0")
    subprocess.run(["dmesg", "-C"], check=True)
    tracer = KmodTracer(stacks=1)
    try:
        with udp_pair(20, 1000 if proto == "udp" else 100000, proto) as (pids, go):
            try:
                tracer.attach(pids)
                go()
                tracer.read()
            finally:
                tracer.detach()
    finally:
        OPT.write_text(old)
    log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    return parse_chains(log)


if __name__ == "__main__":
    for proto in sys.argv[1:] or ["udp", "tcp"]:
        for sym, chain in chains(proto):
            print(f"{proto}: {sym} <- {chain}")
