"""Other machines over SSH: real lab hosts (or, as LabTarget, the lab VMs).

Hosts come from an Ansible INI inventory or a host list (`root@a,root@b:2222`). The runner
stays here; bench.placement starts the agents, iperf3, tracers and topology on the hosts with
the same `bench` CLI there (installed by the `bench` Ansible role). Host keys are checked
against bench's own known_hosts, trust on first use (bench/lab/sshkeys.py). Every remote
command is an argument list joined with shlex.join: no shell strings are built from user input
on either side.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.errors import UsageError
from bench.lab import sshkeys
from bench.lab.inventory import Host, load_hosts

PROVISION_FIX = ("provision it: cd ansible && ansible-playbook -i INVENTORY site.yml "
                 "(or `bench lab up` for the lab)")


class SshTarget:
    kind = "ssh"

    def __init__(self, hosts: list[Host], remote_bench: str = "bench",
                 known_hosts: Path | None = None):
        if not hosts:
            raise UsageError("no hosts to run on", "pass an inventory or host1,host2")
        self.hosts = hosts
        self.remote_bench = remote_bench
        self.known_hosts = known_hosts or sshkeys.default_known_hosts()
        self._share = False                 # share_connections() was asked for
        self._control: Path | None = None   # the masters' sockets, made on first use

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
        if self._share and self._control is None:
            # Short: a unix socket path has at most 107 bytes (%C adds 40).
            self._control = Path(tempfile.mkdtemp(prefix="cbssh-", dir="/tmp"))
        return sshkeys.ssh_argv(h.address, h.port, h.user, h.key, tty=tty,
                                known_hosts=self.known_hosts, control=self._control)

    def share_connections(self) -> None:
        """From now on every call to a host rides one SSH connection (a master per host):
        a run makes several calls per sample, and each new connection repeats the key
        exchange. The host's sshd must allow that many sessions per connection (MaxSessions,
        10 by default; the lab's is raised by its inventory). `close()` ends the masters."""
        self._share = True

    def can_forward(self) -> bool:
        """Whether forward_unix() works: only over a shared connection (share_connections)."""
        return self._share

    def forward_unix(self, node: int | str, remote: str) -> Path:
        """A local unix socket whose connections reach `remote` (a unix socket on the node)
        through the node's shared connection: one channel per connection, no session, no
        process started there (the agents' launcher, bench/launcher.py). It ends with the
        shared connection (close())."""
        argv = self.ssh_argv(node)                # makes the control directory if need be
        self._forwards = getattr(self, "_forwards", 0) + 1
        local = self._control / f"fwd{self._forwards}.sock"
        argv[-1:-1] = ["-O", "forward", "-L", f"{local}:{remote}"]
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=60)
        if res.returncode != 0:
            raise UsageError(f"{self._where(node)}: could not forward {remote} over the shared "
                             f"SSH connection: {res.stderr.strip()[-300:]}",
                             "the node's sshd must allow stream-local forwarding "
                             "(AllowStreamLocalForwarding, yes by default)")
        return local

    def close(self) -> None:
        """End the shared connections, if any (a no-op otherwise)."""
        control, self._control = self._control, None
        if control is None:
            return
        for h in self.hosts:
            sshkeys.close_shared(h.address, h.port, h.user, control)
        shutil.rmtree(control, ignore_errors=True)

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
        """Every host answers over SSH with our key and the host key recorded for it (a new
        host's is recorded); UsageError naming the first that does not."""
        if self.known_hosts is not None:
            sshkeys.ensure_known_hosts(self.known_hosts)
        for i, h in enumerate(self.hosts):
            ok, err = sshkeys.ssh_ok(h.address, h.port, h.user, h.key, timeout=timeout,
                                     known_hosts=self.known_hosts)
            if not ok:
                raise self._unreachable(i, err)

    def prepare(self) -> None:
        """Real hosts run the copybench their provisioning installed (ansible-playbook
        site.yml); one too old for this runner says so with that fix when it is used."""

    def _where(self, node: int | str) -> str:
        h = self.host(node)
        return f"{h.name} ({h.user + '@' if h.user else ''}{h.address}:{h.port})"

    def _unreachable(self, node: int | str, err: str) -> UsageError:
        if self.known_hosts is not None:
            h = self.host(node)
            changed = sshkeys.host_key_error(err, self._where(node), h.address, h.port,
                                             self.known_hosts)
            if changed:
                return changed
        return UsageError(f"{self._where(node)} is unreachable over SSH: "
                          f"{err.strip() or 'no answer'}", self.unreachable_fix)

    unreachable_fix = ("check the address and port, that sshd runs there and that your key is "
                       "authorized (ssh-copy-id; ansible_ssh_private_key_file in the inventory)")

    # -- the harness remotely ------------------------------------------------
    def _bench(self, node: int | str, argv: list[str],
               timeout: float | None = None) -> subprocess.CompletedProcess:
        cmd = self.ssh_argv(node) + [shlex.join([self.remote_bench, *argv])]
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, text=True, capture_output=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UsageError(f"{self._where(node)}: `bench {shlex.join(argv)}` did not finish in "
                             f"{timeout:.0f} s (a hung SSH session or node)",
                             "check the node's load and that ssh to it answers, then retry") from None
        if res.returncode == 255:
            raise self._unreachable(node, res.stderr or "")
        if res.returncode == 127:
            raise UsageError(f"`{self.remote_bench}` is not installed on {self._where(node)}",
                             PROVISION_FIX)
        return res

    def doctor(self, argv: list[str] | None = None, node: int | str = 0,
               timeout: float = 300.0) -> list[dict]:
        """`bench doctor --json` on a node, parsed; a node that does not answer within `timeout`
        (minutes under TCG are normal, more is a hang) is a UsageError, not a wait."""
        res = self._bench(node, ["doctor", "--json", *(argv or [])], timeout=timeout)
        if res.returncode != 0:
            raise UsageError(f"bench doctor on {self._where(node)} exited {res.returncode}: "
                             f"{res.stderr.strip()[-500:]}", PROVISION_FIX)
        try:
            return json.loads(res.stdout)
        except ValueError:
            raise UsageError(f"bench doctor on {self._where(node)} did not print JSON",
                             PROVISION_FIX) from None
