"""Remote targets: `--target lab` (the local QEMU lab, bench/lab/target.py) or real lab hosts
from an inventory or host list (bench/targets/ssh.py)."""

from __future__ import annotations


def open_target(spec: str):
    """`--target` value -> target: "lab" is the local lab, anything else an inventory path or
    host list."""
    if spec == "lab":
        from bench.lab.target import LabTarget
        return LabTarget.from_lab()
    from bench.targets.ssh import SshTarget
    return SshTarget.from_spec(spec)
