"""Set up everything copybench needs on a Debian 12 machine, idempotently, with the stdlib only.

    python3 -m bench.bootstrap            # what `bench run` needs
    python3 -m bench.bootstrap --tests    # plus what the test suite and the lab VM need

It installs Debian packages (as root), creates `.venv` from Debian's /usr/bin/python3 with
--system-site-packages (so Debian's python3-pyverbs stays importable, DESIGN.md) and installs
this project into it with its pinned dependencies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN_PACKAGES = [
    "python3-venv", "python3-dev", "gcc", "make", "iproute2", "iperf3", "bpftrace",
    "ethtool", "kmod",
    "sockperf", "qperf",     # the latency references (bench/references/sockperf.py, qperf.py)
]
# The lab VM: for the tests, and for `bench run --target auto` on a kernel without kprobes,
# modules or RDMA (the main job then runs there).
LAB_PACKAGES = [
    "qemu-system-x86", "qemu-utils", "mmdebstrap", "openssh-client", "e2fsprogs",
]
# The test suite: the HTML report is opened in headless Chromium (tests/unit/test_report_screenshot.py).
TEST_PACKAGES = ["chromium"]


def kernel_needs_lab(proc: Path = Path("/proc")) -> bool:
    """A kernel that loads no modules has neither our kprobe module nor rdma_rxe: exact copy
    counts and RDMA rows of the main suite run in the lab VM (bench/autotarget.py)."""
    return not (proc / "modules").exists()


def say(msg: str) -> None:
    print(f"[bootstrap] {msg}", flush=True)


def missing_packages(names: list[str]) -> list[str]:
    """Packages dpkg does not report as installed."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *names],
        capture_output=True, text=True,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [n for n in names if n not in installed]


def apt_install(names: list[str]) -> None:
    if not shutil.which("dpkg-query"):
        say("not a Debian system: install these yourself: " + " ".join(names))
        return
    todo = missing_packages(names)
    if not todo:
        say("Debian packages: all present")
        return
    if os.geteuid() != 0:
        sys.exit(f"bootstrap: missing Debian packages {' '.join(todo)} "
                 f"(fix: run as root, or `sudo apt-get install {' '.join(todo)}`)")
    say("installing Debian packages: " + " ".join(todo))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo],
                   check=True, env=env)


def kernel_headers(release: str = os.uname().release, proc: Path = Path("/proc"),
                   modules: Path = Path("/lib/modules")) -> str | None:
    """The Debian headers package exact copy counting (the kmod backend) needs, or None with
    the reason said: only kernels that load modules and lack headers need it."""
    if (modules / release / "build" / "Makefile").exists():
        return None
    if not (proc / "modules").exists():
        say(f"kernel {release} cannot load modules: no headers needed (copies are counted with "
            "bpftrace here; exact kprobe counts run in the lab VM)")
        return None
    name = f"linux-headers-{release}"
    if not shutil.which("apt-cache"):
        return None
    known = subprocess.run(["apt-cache", "show", name], capture_output=True, text=True)
    if known.returncode != 0 or not known.stdout.strip():
        if os.geteuid() == 0:   # lists may be empty on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], capture_output=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            known = subprocess.run(["apt-cache", "show", name], capture_output=True, text=True)
    if known.returncode != 0 or not known.stdout.strip():
        say(f"no Debian package {name} (a non-Debian kernel): the kmod backend cannot be built "
            "here; bpftrace counts instead")
        return None
    return name


def base_python() -> str:
    # Debian's interpreter is the one python3-pyverbs installs into (DESIGN.md).
    for cand in ("/usr/bin/python3", sys.executable):
        if cand and Path(cand).exists():
            return cand
    return sys.executable


def make_venv(venv: Path, extras: str) -> None:
    py = venv / "bin" / "python"
    if not py.exists():
        say(f"creating {venv} (system site packages visible, for pyverbs)")
        subprocess.run([base_python(), "-m", "venv", "--system-site-packages", str(venv)], check=True)
    say(f"installing copybench[{extras}] into {venv}")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extras}]"], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.bootstrap", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", action="store_true", help="also install test and lab-VM tools")
    ap.add_argument("--venv", default=str(ROOT / ".venv"), help="venv path (default: .venv)")
    args = ap.parse_args(argv)
    lab = args.tests or kernel_needs_lab()
    if lab and not args.tests:
        say("this kernel loads no modules (no kprobe module, no soft-RoCE): installing the lab "
            "VM's tools, where `bench run --suite socket-vs-rdma` runs its exact counts and RDMA")
    pkgs = RUN_PACKAGES + (LAB_PACKAGES if lab else []) + (TEST_PACKAGES if args.tests else [])
    headers = kernel_headers()
    if headers:
        pkgs.append(headers)     # exact counts with our kprobe module on a stock Debian kernel
    apt_install(pkgs)
    make_venv(Path(args.venv), "test,lab,lint,iouring" if args.tests else "lab,iouring")
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
