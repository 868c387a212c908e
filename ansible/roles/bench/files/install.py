"""Install a copybench bundle into a venv, offline. Run by the `bench` role.

    python3 install.py BUNDLE.tar VENV

The bundle holds wheels/ (the project and every dependency). The venv uses
--system-site-packages so Debian's python3-pyverbs imports. Writes
VENV/.bundle-<name> last, so an interrupted install is retried next run.
"""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def main() -> None:
    bundle, venv = Path(sys.argv[1]), Path(sys.argv[2])
    if not (venv / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check",
           "install", "--no-index",
           # Byte-compiling thousands of files under emulation takes minutes; Python
           # compiles what it imports on first use instead.
           "--no-compile"]
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(bundle) as tar:
            # Our own tar; the filter only where this Python has it (3.11.4+ / backports).
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        wheels = Path(tmp) / "wheels"
        project = sorted(wheels.glob("copybench-*.whl"))
        if not project:
            sys.exit(f"{bundle}: no copybench wheel inside")
        # The extras a node's agents import (bench/lab/bundle.py NODE_EXTRAS: liburing).
        extras = os.environ.get("COPYBENCH_NODE_EXTRAS", "iouring")
        subprocess.run(pip + ["--find-links", str(wheels), f"{project[-1]}[{extras}]"],
                       check=True)
        # Same version, new code: reinstall the project itself, not its dependencies.
        subprocess.run(pip + ["--force-reinstall", "--no-deps", str(project[-1])], check=True)
    link = Path("/usr/local/bin/bench")
    link.unlink(missing_ok=True)
    link.symlink_to(venv / "bin" / "bench")
    for old in venv.glob(".bundle-*"):
        old.unlink()
    (venv / f".bundle-{bundle.stem}").write_text(str(bundle) + "\n")
    # Older bundles are no longer needed.
    for old in bundle.parent.glob("*.tar"):
        if old != bundle:
            old.unlink()
    print(f"installed {project[-1].name} into {venv}")


if __name__ == "__main__":
    main()
