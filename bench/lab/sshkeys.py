"""The lab's SSH key, bench's known_hosts, and the ssh argument lists every remote call uses.

Host keys: real hosts are checked against bench's own known_hosts file (`default_known_hosts`),
trust on first use (StrictHostKeyChecking=accept-new): a new host's key is recorded, a changed
one ends the run (`host_key_error`). Only the lab VM, whose host keys are baked into the image
bench built (and change with every rebuilt image, on a port QEMU forwards on 127.0.0.1), is
reached without checking (`known_hosts=None`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.errors import UsageError

LAB_VM_HOST_KEYS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
COMMON_OPTS = [
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=15",
    "-o", "ServerAliveCountMax=8",
]


def ensure_key(key: Path) -> Path:
    """Create an ed25519 key pair at `key` (and `key`.pub) unless it exists."""
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    if shutil.which("ssh-keygen") is None:
        raise UsageError("ssh-keygen not found", "apt-get install openssh-client")
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "copybench-lab", "-f", str(key)],
        check=True,
    )
    return key


def default_known_hosts(env: dict[str, str] | None = None) -> Path:
    """Where bench records real hosts' keys: $COPYBENCH_KNOWN_HOSTS, else beside the lab key
    in the cache ($COPYBENCH_CACHE/ssh/known_hosts, /var/cache/copybench by default) where
    this user may write, else the user's data dir (~/.local/share/copybench/known_hosts)."""
    from bench.lab.paths import lab_paths
    env = os.environ if env is None else env
    if env.get("COPYBENCH_KNOWN_HOSTS"):
        return Path(env["COPYBENCH_KNOWN_HOSTS"])
    path = lab_paths(env).cache / "ssh" / "known_hosts"
    existing = next(p for p in path.parents if p.exists())
    if os.access(existing, os.W_OK) and (not path.exists() or os.access(path, os.W_OK)):
        return path
    data = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "copybench" / "known_hosts"


def ensure_known_hosts(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot keep SSH host keys in {path}: {exc.strerror}",
                         "set COPYBENCH_KNOWN_HOSTS=FILE to a file you may write") from None
    return path


def known_hosts_name(host: str, port: int = 22) -> str:
    """How ssh names a host in known_hosts (`[host]:port` off port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def host_key_error(stderr: str, where: str, host: str, port: int,
                   known_hosts: Path) -> UsageError | None:
    """ssh's refusal of a host whose key differs from the recorded one, as one message with
    the fix; None for any other failure."""
    if "Host key verification failed" not in stderr and "IDENTIFICATION HAS CHANGED" not in stderr:
        return None
    name = known_hosts_name(host, port)
    return UsageError(f"{where}: its SSH host key is not the one recorded in {known_hosts} "
                      "(the host was reinstalled, or something is in between): nothing was run",
                      f"if you trust the host's new key, forget the old one with "
                      f"`ssh-keygen -R '{name}' -f {known_hosts}` and run again (the new key is "
                      "recorded on first use); otherwise find out why it changed")


# A shared connection's master outlives its last session by this long: the run closes it
# (`close_shared`); the timeout only bounds a master left by a runner that was killed.
CONTROL_PERSIST_S = 30


def control_opts(control: Path) -> list[str]:
    """Sessions share one SSH connection per host through a master socket in `control`."""
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}/%C",
            "-o", f"ControlPersist={CONTROL_PERSIST_S}"]


def ssh_argv(host: str, port: int = 22, user: str | None = None, key: Path | None = None,
             tty: bool = False, *, known_hosts: Path | None,
             control: Path | None = None) -> list[str]:
    """`ssh ... host`; append the remote command (already shlex.join-ed) yourself.
    known_hosts: bench's file for real hosts (trust on first use, a changed key refused);
    None only for the lab VM (no checking: bench built its host keys).
    control: a directory for shared connections (control_opts), or None for one per call."""
    keys = LAB_VM_HOST_KEYS if known_hosts is None else [
        "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}"]
    argv = ["ssh", *keys, *COMMON_OPTS, *(control_opts(control) if control else []),
            "-p", str(port)]
    if key is not None:
        argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    argv.append("-t" if tty else "-T")
    argv.append(f"{user}@{host}" if user else host)
    return argv


def ssh_ok(host: str, port: int, user: str | None, key: Path | None,
           timeout: float = 15.0, *, known_hosts: Path | None) -> tuple[bool, str]:
    """One quick `ssh true`; (reachable, error text)."""
    argv = ssh_argv(host, port, user, key, known_hosts=known_hosts) + ["true"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"ssh timed out after {timeout:.0f}s"
    return res.returncode == 0, res.stderr.strip()


def close_shared(host: str, port: int, user: str | None, control: Path) -> None:
    """Stop the master of a shared connection (`ssh -O exit`); quiet when there is none."""
    argv = ["ssh", *control_opts(control), "-p", str(port), "-O", "exit",
            f"{user}@{host}" if user else host]
    try:
        subprocess.run(argv, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass
