"""The lab VM image: Debian bookworm built by mmdebstrap, cached by what went into it.

Cache key = hash(package list, guest files, recipe version, SSH public key), so an
image is rebuilt only when one of those changes. Builds go to a temporary
directory next to the cache entry and are renamed into place at the end: an
interrupted build never leaves a half image that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bench.errors import UsageError
from bench.lab.progress import Progress

# Bump when the build steps change in a way the hash inputs do not capture.
RECIPE_VERSION = 1
SUITE = "bookworm"
MIRRORS = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
# Free space needed to build: the unpacked tree plus the raw image (sparse).
MIN_FREE_BYTES = 6 * 1024**3
# Room left in the guest file system for the bench venv and kernel module builds.
HEADROOM_BYTES = 3 * 1024**3

# Interfaces: eth0 is QEMU user networking (SSH forward); eth1 is the two-node
# link whose address comes from the kernel command line, so one image serves all
# nodes.
INTERFACES = """\
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp

allow-hotplug eth1
iface eth1 inet manual
    up /usr/local/sbin/copybench-eth1
"""

ETH1_SCRIPT = """\
#!/bin/sh
# Give eth1 the address passed as copybench.eth1=ADDR/PREFIX on the kernel command line.
set -e
for arg in $(cat /proc/cmdline); do
    case "$arg" in copybench.eth1=*) addr="${arg#copybench.eth1=}" ;; esac
done
ip link set eth1 up
[ -n "$addr" ] && ip addr replace "$addr" dev eth1
exit 0
"""

# Units that cost boot time under emulation and do nothing useful in a lab VM.
MASKED_UNITS = [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
]


def parse_packages(text: str) -> list[str]:
    """Package names from a list file: one per line, '#' comments, sorted, unique."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return sorted(names)


def default_packages() -> list[str]:
    return parse_packages(resources.files("bench.lab").joinpath("packages.txt").read_text())


def guest_files(pubkey: str) -> dict[str, tuple[str, int]]:
    """Files written into the image: guest path -> (content, mode)."""
    return {
        "root/.ssh/authorized_keys": (pubkey.strip() + "\n", 0o600),
        "etc/network/interfaces": (INTERFACES, 0o644),
        "usr/local/sbin/copybench-eth1": (ETH1_SCRIPT, 0o755),
        "etc/hostname": ("copybench-lab\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost\n127.0.1.1 copybench-lab\n", 0o644),
        "etc/fstab": ("/dev/vda / ext4 rw,errors=remount-ro 0 1\n", 0o644),
    }


def image_key(packages: list[str], pubkey: str, recipe: int = RECIPE_VERSION) -> str:
    """Stable 16-hex-digit cache key; order of the package list does not matter."""
    blob = json.dumps(
        {
            "recipe": recipe,
            "suite": SUITE,
            "packages": sorted(set(packages)),
            "files": guest_files(pubkey),
            "masked": MASKED_UNITS,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def manifest(self) -> dict:
        return json.loads((self.dir / "manifest.json").read_text())

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.rootfs, self.kernel, self.initrd,
                                         self.dir / "manifest.json"))


def find_image(images: Path, key: str) -> Image | None:
    img = Image(images / key)
    return img if img.complete() else None


def check_tools() -> None:
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("mkfs.ext4", "e2fsprogs")):
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} not found (needed to build the lab image)",
                             f"apt-get install {pkg}")
    if os.geteuid() != 0:
        raise UsageError("building the lab image needs root (mmdebstrap --mode=root)",
                         "run `bench lab up` as root")


def check_space(where: Path, need: int = MIN_FREE_BYTES) -> None:
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise UsageError(
            f"only {free / 1024**3:.1f} GiB free under {where}; the lab image needs "
            f"{need / 1024**3:.0f} GiB",
            "free disk space or point COPYBENCH_CACHE at a larger file system",
        )


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def _write_guest_files(root: Path, pubkey: str) -> None:
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    for rel, (content, mode) in guest_files(pubkey).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.unlink(missing_ok=True)
        p.write_text(content)
        p.chmod(mode)
    systemd = root / "etc/systemd/system"
    systemd.mkdir(parents=True, exist_ok=True)
    for unit in MASKED_UNITS:
        link = systemd / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _extract_boot(root: Path, out: Path) -> str:
    """Copy the newest kernel and its initrd out of the tree; return its version."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise UsageError("the image has no kernel in /boot", "check that linux-image-amd64 "
                         "is in bench/lab/packages.txt")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise UsageError(f"the image has no initrd for kernel {version}",
                         "check that initramfs-tools ran (see the mmdebstrap log)")
    shutil.copyfile(kernels[-1], out / "vmlinuz")
    shutil.copyfile(initrd, out / "initrd.img")
    return version


def _run_logged(argv: list[str], log: Path, progress: Progress, prefix: str) -> None:
    """Run argv, echo its 'I:'/'E:' lines as progress, keep everything in `log`."""
    with open(log, "a") as logf:
        logf.write(f"$ {' '.join(argv)}\n")
        logf.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        try:
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                logf.write(line)
                tail = (tail + [line.rstrip()])[-15:]
                if line.startswith(("I: ", "E: ", "W: ")):
                    progress.line(f"  {prefix}: {line[3:].rstrip()}")
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if rc != 0:
        raise UsageError(f"{prefix} failed (exit {rc}); last lines:\n  " + "\n  ".join(tail),
                         f"see {log}; Debian's mirror must be reachable to build the image")


# Where the `bench` Ansible role keeps its venv (roles/bench/defaults/main.yml).
GUEST_VENV = "/opt/copybench/venv"


def _preinstall(root: Path, wheels: Path, requirements: list[str], log: Path,
                progress: Progress) -> None:
    """Install the harness's dependencies into the guest venv now, natively in a
    chroot: under emulation the same pip install takes minutes. The `bench` role
    then only adds the project itself. Not part of the cache key: if the
    dependencies change later, the role installs the difference."""
    stage = root / "tmp" / "copybench-wheels"
    shutil.copytree(wheels, stage)
    try:
        _run_logged(["chroot", str(root), "/usr/bin/python3", "-m", "venv",
                     "--system-site-packages", GUEST_VENV], log, progress, "venv")
        _run_logged(["chroot", str(root), f"{GUEST_VENV}/bin/python", "-m", "pip",
                     "--disable-pip-version-check", "install", "--no-index",
                     "--find-links", "/tmp/copybench-wheels", *requirements],
                    log, progress, "pip")
    except UsageError as e:
        shutil.rmtree(root / GUEST_VENV.lstrip("/"), ignore_errors=True)
        progress.line(f"  warning: could not pre-install dependencies ({e.message.splitlines()[0]}); "
                      "provisioning will install them")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build_image(images: Path, packages: list[str], pubkey: str, progress: Progress,
                wheels: Path | None = None, requirements: list[str] | None = None) -> Image:
    """Build (or reuse) the image for this package list and key; atomic on success."""
    key = image_key(packages, pubkey)
    found = find_image(images, key)
    if found:
        progress.line(f"image {key} is cached in {found.dir}")
        return found
    check_tools()
    images.mkdir(parents=True, exist_ok=True)
    check_space(images)
    _remove_stale_temps(images)
    tmp = images / f".tmp-{key}-{os.getpid()}"
    safe_rmtree(tmp)
    tmp.mkdir()
    root = tmp / "root"
    log = images / f"build-{key}.log"
    log.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        with progress.step(f"Building image {key} with mmdebstrap ({len(packages)} packages)"):
            _run_logged(
                ["mmdebstrap", "--mode=root", "--variant=apt", "--skip=cleanup/apt/lists",
                 "--aptopt=Acquire::Retries \"3\"",
                 "--include=" + ",".join(packages), SUITE, str(root), *MIRRORS],
                log, progress, "mmdebstrap",
            )
        _write_guest_files(root, pubkey)
        if wheels is not None and requirements:
            with progress.step("Pre-installing the harness's Python dependencies"):
                _preinstall(root, wheels, requirements, log, progress)
        version = _extract_boot(root, tmp)
        size = int(_tree_bytes(root) * 1.2) + HEADROOM_BYTES
        size -= size % (1024 * 1024)
        with progress.step(f"Making ext4 file system ({size / 1024**3:.1f} GiB, sparse)"):
            with open(tmp / "rootfs.raw", "wb") as f:
                f.truncate(size)
            _run_logged(["mkfs.ext4", "-q", "-F", "-L", "copybench", "-d", str(root),
                         str(tmp / "rootfs.raw")], log, progress, "mkfs.ext4")
        safe_rmtree(root)
        (tmp / "manifest.json").write_text(json.dumps({
            "key": key, "suite": SUITE, "kernel_version": version, "packages": packages,
            "recipe": RECIPE_VERSION, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()),
            "build_seconds": round(time.monotonic() - t0, 1),
        }, indent=2) + "\n")
        final = images / key
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        # Also on Ctrl-C: no half-written image survives.
        safe_rmtree(tmp)
        raise
    progress.line(f"image {key} built in {time.monotonic() - t0:.0f}s (kernel {version})")
    return Image(final)


def prune(images: Path, keep: str) -> list[Path]:
    """Delete cached images other than `keep` (each is ~1.5 GiB); returns what went."""
    gone = []
    for d in images.iterdir() if images.is_dir() else []:
        if d.is_dir() and not d.name.startswith(".") and d.name != keep:
            shutil.rmtree(d, ignore_errors=True)
            (images / f"build-{d.name}.log").unlink(missing_ok=True)
            gone.append(d)
    return gone


def mounts_under(path: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below `path` (mmdebstrap mounts /proc, /sys, /dev in its chroot)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    base = os.path.realpath(path)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            mp = fields[4].replace("\\040", " ")
            if mp == base or mp.startswith(base + "/"):
                found.append(mp)
    return found


def safe_rmtree(path: Path) -> None:
    """rmtree that never descends into a mount: an interrupted mmdebstrap can leave
    the host's /dev or /proc bound inside the tree, and deleting through them
    would damage the host. Unmount first; if that fails, leave the tree."""
    mounts = mounts_under(path)
    for mp in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mp], capture_output=True)
    if mounts_under(path):
        raise UsageError(f"{path} still has mounts inside; not deleting it",
                         f"unmount them (grep {path} /proc/self/mountinfo) and delete it")
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale_temps(images: Path) -> None:
    """Remove temp build dirs whose builder process is gone (e.g. killed with -9)."""
    for d in images.glob(".tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            safe_rmtree(d)
