"""Running the project's Ansible playbook against an inventory, with progress.

The lab builds the bundle itself and passes it in, so the controller-side task
in the `bench` role is skipped and the playbook's output stays about the hosts.

Provisioning an already provisioned lab node under TCG takes minutes (every task is a Python
run in the guest), so `bench lab up` skips it when each node carries this provisioning's key
(`provision_key`: the roles and the inventory without its SSH ports), and then only installs
this tree's bundle where a node has another (as every `--target lab` run does). site.yml
itself removes the key as its first task and writes it as its last: a run that fails, a
different inventory (one node or two), or any other way of running the playbook leaves no
stale key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
from bench.lab.bundle import build_bundle, content_key, project_root
from bench.lab.progress import Progress

MARKER = "/var/lib/copybench/provisioned"      # written by site.yml's last task
ANSIBLE_FIX = "pip install -e '.[lab]' (ansible-core 2.19 in the project's venv)"
_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass
class RecapLine:
    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int


def ansible_dir() -> Path:
    return project_root() / "ansible"


def find_playbook_bin() -> str:
    # Prefer the one installed next to this Python (the project's venv).
    local = Path(sys.executable).parent / "ansible-playbook"
    if local.is_file():
        return str(local)
    found = shutil.which("ansible-playbook")
    if not found:
        raise UsageError("ansible-playbook not found: provisioning needs ansible-core",
                         ANSIBLE_FIX)
    return found


def parse_recap(output: str) -> list[RecapLine]:
    out = []
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        m = _RECAP.match(line.strip()) if in_recap else None
        if m:
            out.append(RecapLine(m[1], *(int(x) for x in m.groups()[1:])))
    return out


def playbook_argv(inventory: Path, extra: list[str], bundle: Path | None,
                  playbook_bin: str = "ansible-playbook") -> list[str]:
    argv = [playbook_bin, "-i", str(inventory), str(ansible_dir() / "site.yml")]
    if bundle is not None:
        argv += ["-e", f"copybench_bundle={bundle}"]
    argv += ["-e", f"copybench_provision_key={provision_key(inventory)}"]
    return argv + extra


def provision_key(inventory: Path) -> str:
    """What a node's provisioning depends on: every file of the playbook and its roles, and
    the inventory (hosts, their vars: one node or two) less the SSH ports a boot picks. Not
    the bundle: a newer tree is installed on its own (LabTarget.prepare), in a minute instead
    of a whole playbook run."""
    root = ansible_dir()
    items = [(str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".retry"]
    inventory_text = re.sub(r"\bansible_port=\S+", "", inventory.read_text())
    return content_key(items + [("inventory", inventory_text.encode())])


def run_playbook(inventory: Path, extra: list[str] | None = None,
                 progress: Progress | None = None, bundle: Path | None = None,
                 ) -> list[RecapLine]:
    """Run site.yml; returns the recap. UsageError (with the failing lines) on failure."""
    progress = progress or Progress()
    if not inventory.is_file():
        raise UsageError(f"inventory {inventory} does not exist", "run `bench lab up` first")
    pb = find_playbook_bin()
    # A fixed bundle makes repeated runs comparable (tests check changed=0).
    bundle = bundle or build_bundle(progress)
    argv = playbook_argv(inventory, extra or [], bundle, pb)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ansible_dir() / "ansible.cfg"),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    lines: list[str] = []
    with progress.step("Provisioning with Ansible (" + " ".join(extra or ["site.yml"]) + ")"):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, stdin=subprocess.DEVNULL, errors="replace")
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line.rstrip())
                # Task headers and per-host results are the useful progress.
                if line.startswith(("TASK [", "PLAY RECAP", "RUNNING HANDLER")) or \
                        line.startswith(("changed:", "fatal:", "failed:")) or _RECAP.match(
                            line.strip()):
                    progress.line("  " + line.rstrip().rstrip("*").rstrip())
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    recap = parse_recap("\n".join(lines))
    if rc != 0:
        bad = [ln for ln in lines if ln.startswith(("fatal:", "failed:", "ERROR!", "[ERROR]"))]
        shown = "\n  ".join((bad or lines)[-8:])
        raise UsageError(f"ansible-playbook failed (exit {rc}):\n  {shown}",
                         "fix the reported task and run `bench lab up` again (it re-provisions)")
    return recap
