"""The lab's SSH key and the ssh/scp argument lists every remote call uses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.errors import UsageError

# Lab VMs are recreated often and share host keys baked into the image, so host
# key checking only produces noise; real hosts can tighten this via ~/.ssh/config.
COMMON_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
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


def ssh_argv(host: str, port: int = 22, user: str | None = None, key: Path | None = None,
             tty: bool = False) -> list[str]:
    """`ssh ... host`; append the remote command (already shlex.join-ed) yourself."""
    argv = ["ssh", *COMMON_OPTS, "-p", str(port)]
    if key is not None:
        argv += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    argv.append("-t" if tty else "-T")
    argv.append(f"{user}@{host}" if user else host)
    return argv


def ssh_ok(host: str, port: int, user: str | None, key: Path | None,
           timeout: float = 15.0) -> tuple[bool, str]:
    """One quick `ssh true`; (reachable, error text)."""
    argv = ssh_argv(host, port, user, key) + ["true"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"ssh timed out after {timeout:.0f}s"
    return res.returncode == 0, res.stderr.strip()
