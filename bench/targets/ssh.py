"""Run the harness on other machines over SSH: real lab hosts or the lab VM(s).

Hosts come from an Ansible INI inventory or a host list (`root@a,root@b:2222`).
The remote side is the same `bench` CLI, installed by the `bench` Ansible role;
we run it with `--target local` and bring its result JSON back.
Every remote command is an argument list joined with shlex.join: no shell
strings are built from user input on either side.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import uuid
from pathlib import Path

from bench.errors import UsageError
from bench.lab import sshkeys
from bench.lab.inventory import Host, load_hosts

PROVISION_FIX = ("provision it: cd ansible && ansible-playbook -i INVENTORY site.yml "
                 "(or `bench lab up` for the lab)")


class SshTarget:
    kind = "ssh"

    def __init__(self, hosts: list[Host], remote_bench: str = "bench"):
        if not hosts:
            raise UsageError("no hosts to run on", "pass an inventory or host1,host2")
        self.hosts = hosts
        self.remote_bench = remote_bench

    @classmethod
    def from_spec(cls, spec: str) -> SshTarget:
        return cls(load_hosts(spec))

    # -- nodes -------------------------------------------------------------
    def host(self, node: int | str = 0) -> Host:
        if isinstance(node, int):
            if not 0 <= node < len(self.hosts):
                raise UsageError(f"node {node} does not exist ({len(self.hosts)} host(s))",
                                 "list more hosts in the inventory")
            return self.hosts[node]
        for h in self.hosts:
            if h.name == node:
                return h
        raise UsageError(f"no host named {node!r}",
                         "use one of: " + ", ".join(h.name for h in self.hosts))

    def link_address(self, node: int | str = 0) -> str | None:
        """The address other nodes reach this one at for test traffic (host var
        `link_addr`, e.g. the lab's eth1 198.18.0.2), without the prefix length."""
        addr = self.host(node).vars.get("link_addr")
        return addr.split("/")[0] if addr else None

    def ssh_argv(self, node: int | str = 0, tty: bool = False) -> list[str]:
        h = self.host(node)
        return sshkeys.ssh_argv(h.address, h.port, h.user, h.key, tty=tty)

    # -- running things ----------------------------------------------------
    def exec(self, node: int | str, argv: list[str], stdin=None, stdout=subprocess.PIPE,
             stderr=subprocess.PIPE, text: bool = True) -> subprocess.Popen:
        """Start `argv` on a node; the caller owns the Popen (agents speak JSON lines
        over its stdin/stdout). stdin=None means no input (DEVNULL)."""
        return subprocess.Popen(self.ssh_argv(node) + [shlex.join(argv)],
                                stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=stdout, stderr=stderr, text=text)

    def run(self, node: int | str, argv: list[str], timeout: float | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run to completion, capturing output."""
        try:
            res = subprocess.run(self.ssh_argv(node) + [shlex.join(argv)], capture_output=True,
                                 text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UsageError(f"{self._where(node)}: `{shlex.join(argv)}` timed out after "
                             f"{timeout:.0f}s", "check the host's load and connectivity") from None
        if res.returncode == 255:
            raise self._unreachable(node, res.stderr)
        if check and res.returncode != 0:
            raise UsageError(f"{self._where(node)}: `{shlex.join(argv)}` exited "
                             f"{res.returncode}: {res.stderr.strip()[-500:]}",
                             "see the remote message")
        return res

    def check(self, timeout: float = 20.0) -> None:
        """Every host answers over SSH with our key; UsageError naming the first that does not."""
        for i, h in enumerate(self.hosts):
            ok, err = sshkeys.ssh_ok(h.address, h.port, h.user, h.key, timeout=timeout)
            if not ok:
                raise self._unreachable(i, err)

    def _where(self, node: int | str) -> str:
        h = self.host(node)
        return f"{h.name} ({h.user + '@' if h.user else ''}{h.address}:{h.port})"

    def _unreachable(self, node: int | str, err: str) -> UsageError:
        return UsageError(f"{self._where(node)} is unreachable over SSH: "
                          f"{err.strip() or 'no answer'}", self.unreachable_fix)

    unreachable_fix = ("check the address and port, that sshd runs there and that your key is "
                       "authorized (ssh-copy-id; ansible_ssh_private_key_file in the inventory)")

    # -- the harness remotely ------------------------------------------------
    def _bench(self, node: int | str, argv: list[str], capture: bool) -> subprocess.CompletedProcess:
        cmd = self.ssh_argv(node) + [shlex.join([self.remote_bench, *argv])]
        # Not capturing: the remote progress lines stream straight to our terminal.
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, text=True, capture_output=capture)
        if res.returncode == 255:
            raise self._unreachable(node, res.stderr or "")
        if res.returncode == 127:
            raise UsageError(f"`{self.remote_bench}` is not installed on {self._where(node)}",
                             PROVISION_FIX)
        return res

    def run_bench(self, argv: list[str], local_out: Path, node: int | str = 0) -> list[Path]:
        """`bench ARGV --target local --out DIR` on a node; result JSON copied to local_out.

        Output streams through to ours (the remote progress lines). Returns the
        copied paths. The remote directory is removed afterwards."""
        remote_dir = f"/tmp/copybench-out-{uuid.uuid4().hex[:12]}"
        res = self._bench(node, [*argv, "--target", "local", "--out", remote_dir], capture=False)
        try:
            paths = self.fetch_dir(node, remote_dir, local_out, pattern=".json")
        finally:
            self.run(node, ["rm", "-rf", remote_dir], check=False, timeout=60)
        if res.returncode != 0 and not paths:
            raise UsageError(f"bench on {self._where(node)} exited {res.returncode} "
                             "and wrote no result", "see its messages above")
        return paths

    def fetch_dir(self, node: int | str, remote_dir: str, local_dir: Path,
                  pattern: str = "") -> list[Path]:
        """Copy regular files under remote_dir whose names end with `pattern` into
        local_dir (flat). One tar stream over SSH: no scp -r quoting surprises."""
        local_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            self.ssh_argv(node) + [shlex.join(["tar", "-C", remote_dir, "-cf", "-", "."])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        got = []
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    name = Path(member.name).name
                    if not member.isfile() or not name.endswith(pattern) or name.startswith("."):
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    dest = local_dir / name
                    tmp = dest.with_name("." + name + ".part")
                    tmp.write_bytes(src.read())
                    tmp.replace(dest)  # never a half-copied result under its real name
                    got.append(dest)
        except tarfile.ReadError:
            pass  # no such directory: tar wrote nothing; reported below
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            rc = proc.wait()
        if rc == 255:
            raise self._unreachable(node, err)
        return sorted(got)

    def doctor(self, argv: list[str] | None = None, node: int | str = 0) -> dict:
        """`bench doctor --json` on a node, parsed."""
        res = self._bench(node, ["doctor", "--json", *(argv or [])], capture=True)
        if res.returncode != 0:
            raise UsageError(f"bench doctor on {self._where(node)} exited {res.returncode}: "
                             f"{res.stderr.strip()[-500:]}", PROVISION_FIX)
        try:
            return json.loads(res.stdout)
        except ValueError:
            raise UsageError(f"bench doctor on {self._where(node)} did not print JSON",
                             PROVISION_FIX) from None


def forward_argv(argv: list[str], drop: tuple[str, ...] = ("--target", "--out")) -> list[str]:
    """The command line to repeat remotely: our argv without the options that
    only make sense here (`--target X`, `--target=X`, `--out DIR`)."""
    out: list[str] = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--":
            out += argv[i:]
            break
        if a in drop:
            skip = True
            continue
        if any(a.startswith(d + "=") for d in drop):
            continue
        out.append(a)
    return out


def open_target(spec: str) -> SshTarget:
    """`--target` value -> target: "lab" is the local lab, anything else an
    inventory path or host list."""
    if spec == "lab":
        from bench.targets.lab import LabTarget
        return LabTarget.from_lab()
    return SshTarget.from_spec(spec)
