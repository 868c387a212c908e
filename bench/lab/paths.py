"""Where the lab keeps things.

Everything lives under one cache directory so it survives between CI runs on the
same machine: built images are expensive (minutes), running-lab state is cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = "/var/cache/copybench"


@dataclass(frozen=True)
class LabPaths:
    cache: Path

    @property
    def images(self) -> Path:
        return self.cache / "images"

    @property
    def key(self) -> Path:
        return self.cache / "ssh" / "id_ed25519"

    @property
    def wheels(self) -> Path:
        return self.cache / "wheels"

    @property
    def bundles(self) -> Path:
        return self.cache / "bundles"

    @property
    def kvm_probe(self) -> Path:
        """Whether KVM guests run on this host, remembered for the host's current boot."""
        return self.cache / "kvm-probe.json"

    @property
    def state(self) -> Path:
        """The running lab: overlays, pid files, console logs, inventory, state.json."""
        return self.cache / "lab"

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"

    @property
    def inventory(self) -> Path:
        return self.state / "inventory.ini"


def lab_paths(env: dict[str, str] | None = None) -> LabPaths:
    env = os.environ if env is None else env
    return LabPaths(Path(env.get("COPYBENCH_CACHE") or DEFAULT_CACHE))
