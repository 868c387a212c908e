"""The bundle the `bench` role installs on hosts that may have no PyPI access.

One tar: wheels/ with the project's wheel and every dependency's wheel (built or
downloaded on the controller for CPython 3.11 on x86_64 Linux, which is what
Debian 12 hosts run). It is named by a hash of the project sources and the
dependency list, and reused while they are unchanged, so Ansible sees identical
bytes and reports nothing to do.

    python -m bench.lab.bundle      # prints the bundle path (last line)
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

from bench.errors import UsageError
from bench.lab.paths import lab_paths
from bench.lab.progress import Progress

SOURCE_DIRS = ("bench", "workloads", "reports")
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE")
KEEP_BUNDLES = 3


def project_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"no project source tree at {root} to ship to the hosts",
                         "install copybench with `pip install -e .[lab]` from a clone, "
                         "or pass -e copybench_bundle=BUNDLE.tar to ansible-playbook")
    return root


def source_files(root: Path) -> list[Path]:
    files = [root / f for f in SOURCE_FILES if (root / f).is_file()]
    for d in SOURCE_DIRS:
        for dirpath, dirnames, names in os.walk(root / d):
            dirnames[:] = sorted(n for n in dirnames if n != "__pycache__" and
                                 not n.startswith("."))
            files += [Path(dirpath) / n for n in sorted(names)
                      if not n.endswith((".pyc", ".pyo")) and not n.startswith(".")]
    return files


# Optional dependencies the agents on a node import (the io_uring workloads' liburing): built
# into wheels here, installed on the node with the project (install.py).
NODE_EXTRAS = ("iouring",)


def dependencies(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return list(project.get("dependencies", [])) + [d for e in NODE_EXTRAS
                                                     for d in extras.get(e, [])]


def content_key(items: list[tuple[str, bytes]]) -> str:
    """16 hex digits for named contents (the bundle's, the lab's provisioning)."""
    h = hashlib.sha256()
    for name, data in items:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def deps_key(deps: list[str]) -> str:
    return content_key([(d, b"") for d in sorted(deps)] + [("py", b"cp311-x86_64")])


def bundle_key(root: Path, deps: list[str]) -> str:
    items = [(str(p.relative_to(root)), p.read_bytes()) for p in source_files(root)]
    return content_key(items + [("deps", deps_key(deps).encode())])


def _pip(args: list[str], log_to: Path) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    with open(log_to, "a") as log:
        res = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        tail = log_to.read_text(errors="replace").splitlines()[-10:]
        raise UsageError("pip failed while preparing wheels for the hosts:\n  " + "\n  ".join(tail),
                         f"see {log_to}; the controller needs PyPI access for the first bundle")


def dependency_wheels(wheels_root: Path, deps: list[str], progress: Progress) -> Path:
    """Wheels for all dependencies, cached by the dependency list."""
    out = wheels_root / deps_key(deps)
    if out.is_dir():
        return out
    wheels_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=wheels_root, prefix=".tmp-"))
    try:
        with progress.step(f"Preparing {len(deps)} dependencies as wheels for the hosts"):
            if deps:
                # `pip wheel` downloads wheels where PyPI has them and builds the rest
                # (e.g. sdists) with this CPython 3.11, which matches Debian 12's.
                _pip(["wheel", "--wheel-dir", str(tmp), *deps], wheels_root / "pip.log")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def project_wheel(root: Path, out_dir: Path, progress: Progress) -> Path:
    """Build the project's wheel from a staging copy (the work tree stays clean)."""
    with tempfile.TemporaryDirectory() as stage:
        st = Path(stage)
        for p in source_files(root):
            dest = st / p.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        if not (st / "README.md").exists():  # pyproject names it; may not exist yet
            (st / "README.md").write_text("copybench\n")
        with progress.step("Building the copybench wheel"):
            _pip(["wheel", "--no-deps", "--wheel-dir", str(out_dir), str(st)],
                 out_dir / "pip.log")
    wheels = sorted(out_dir.glob("copybench-*.whl"))
    if not wheels:
        raise UsageError("building the copybench wheel produced nothing", f"see {out_dir}/pip.log")
    return wheels[-1]


def build_bundle(progress: Progress | None = None) -> Path:
    progress = progress or Progress()
    paths = lab_paths()
    root = project_root()
    deps = dependencies(root / "pyproject.toml")
    key = bundle_key(root, deps)
    bundle = paths.bundles / f"copybench-{key}.tar"
    if bundle.is_file():
        return bundle
    wheels = dependency_wheels(paths.wheels, deps, progress)
    paths.bundles.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.bundles, prefix=".tmp-") as tmp:
        proj = project_wheel(root, Path(tmp), progress)
        part = Path(tmp) / "bundle.tar"
        with tarfile.open(part, "w") as tar:
            for whl in sorted(wheels.glob("*.whl")) + [proj]:
                info = tar.gettarinfo(str(whl), arcname=f"wheels/{whl.name}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(whl, "rb") as f:
                    tar.addfile(info, f)
            readme = f"copybench bundle {key}\n".encode()
            info = tarfile.TarInfo("BUNDLE")
            info.size = len(readme)
            tar.addfile(info, io.BytesIO(readme))
        os.rename(part, bundle)
    # Keep a few recent bundles; the rest are superseded.
    old = sorted(paths.bundles.glob("copybench-*.tar"), key=lambda p: p.stat().st_mtime)
    for p in old[:-KEEP_BUNDLES]:
        p.unlink(missing_ok=True)
    progress.line(f"bundle {bundle.name} ({bundle.stat().st_size / 1e6:.0f} MB)")
    return bundle


def main() -> int:
    try:
        print(build_bundle(Progress(stream=sys.stderr)))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
