"""`--target lab`: the local QEMU lab VM(s), reached over SSH on 127.0.0.1.

With two nodes, node 0 (lab0, eth1 198.18.0.1) and node 1 (lab1, eth1
198.18.0.2) are joined by a QEMU socket link; `link_address(node)` says where
the other side reaches a node for test traffic. Before a run, `prepare` makes
every node run this working tree's copybench (the bundle `bench lab up`
provisions), so the runner here and the agents, tracers and topology there are
the same code.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from bench.errors import UsageError
from bench.lab.image import GUEST_VENV
from bench.lab.inventory import Host
from bench.lab.paths import LabPaths, lab_paths
from bench.lab.state import load_state, status
from bench.targets.ssh import SshTarget

GUEST_HOME = GUEST_VENV.rsplit("/", 1)[0]      # ansible/roles/bench/defaults/main.yml


class LabTarget(SshTarget):
    kind = "lab"
    unreachable_fix = ("the lab VM does not answer: `bench lab status`, then "
                       "`bench lab down && bench lab up`")

    def __init__(self, hosts: list[Host], remote_bench: str = "bench"):
        super().__init__(hosts, remote_bench)
        self.known_hosts = None        # bench built the VM's host keys: no checking (sshkeys)
        # Under TCG a new SSH connection costs about 2 s of key exchange, a shared one 0.2 s;
        # the lab's sshd allows the sessions (copybench_ssh_max_sessions in its inventory).
        self.share_connections()

    @classmethod
    def from_lab(cls, paths: LabPaths | None = None) -> LabTarget:
        paths = paths or lab_paths()
        st = status(paths)
        if not st["running"]:
            raise UsageError("--target lab: the lab is not running",
                             "run `bench lab up` (or `bench lab up --nodes 2`)")
        state = load_state(paths) or {"nodes": []}
        hosts = []
        for n in state["nodes"]:
            hv = {"link_addr": n["link_addr"]} if n.get("link_addr") else {}
            hosts.append(Host(name=n["name"], address="127.0.0.1", port=n["ssh_port"],
                              user="root", key=paths.key, vars=hv))
        return cls(hosts)

    def prepare(self, progress=None) -> None:
        """Install this tree's bundle on every node whose marker (written by the bench role's
        install.py) names another; a no-op, one SSH call per node, when they are current."""
        from bench.lab import bundle
        from bench.lab.progress import Progress
        progress = progress or Progress(stream=sys.stderr)
        root = bundle.project_root()
        key = bundle.bundle_key(root, bundle.dependencies(root / "pyproject.toml"))
        marker = f"{GUEST_VENV}/.bundle-copybench-{key}"
        stale = [i for i in range(len(self.hosts))
                 if self.run(i, ["test", "-e", marker], check=False, timeout=60).returncode != 0]
        if not stale:
            return
        tar = bundle.build_bundle(progress)
        install = root / "ansible" / "roles" / "bench" / "files" / "install.py"
        for i in stale:
            with progress.step(f"Installing this tree's copybench ({tar.stem}) on "
                               f"{self.hosts[i].name}"):
                dest = f"{GUEST_HOME}/bundles/{tar.name}"
                self._push(i, tar, dest)
                self._push(i, install, f"{GUEST_HOME}/install.py")
                self.run(i, ["python3", f"{GUEST_HOME}/install.py", dest, GUEST_VENV],
                         timeout=900)

    def _push(self, node: int, src, dest: str) -> None:
        """Copy one file to `dest` on a node (written under a temporary name, then renamed)."""
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1.part" && mv "$1.part" "$1"'
        with open(src, "rb") as f:
            res = subprocess.run(self.ssh_argv(node) + [shlex.join(["sh", "-c", script, "sh",
                                                                   dest])],
                                 stdin=f, capture_output=True, timeout=900)
        if res.returncode != 0:
            raise UsageError(f"copying {src} to {self._where(node)} failed: "
                             f"{res.stderr.decode(errors='replace').strip()[-300:]}",
                             self.unreachable_fix)
