"""Removing what crashed copybench runs left behind: tracefs instances, kprobe event groups,
the copytrace module, orphan bpftrace. Only leftovers whose owner pid is dead are touched
(names carry the pid; copytrace records it in its `owner` parameter).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.procs import stop_pid
from bench.tracing import kmod, tracefs
from bench.tracing.env import Environment


def _ours_and_dead(name: str, proc_root: Path) -> bool:
    pid = tracefs.owner_pid(name)
    return pid is not None and pid != os.getpid() and not tracefs.pid_alive(pid, proc_root)


def cleanup_stale(env=None, unload_module: bool = True) -> list[str]:
    """Remove what crashed copybench runs left behind; returns what was done (for doctor).
    `env`: an env.Environment (fixture roots); the real /proc, /sys by default."""
    env = env or Environment()
    done: list[str] = []
    root = tracefs.find(env.roots)
    if root:
        inst_dir = root / "instances"
        for inst in sorted(inst_dir.glob(f"{tracefs.PREFIX}-*")) if inst_dir.exists() else []:
            if _ours_and_dead(inst.name, env.proc_root):
                try:
                    tracefs.write(inst / "events/enable", "0")
                except OSError:
                    pass
                try:
                    tracefs.rmdir_retry(inst)
                    done.append(f"removed tracefs instance {inst.name}")
                except OSError as e:
                    done.append(f"could not remove tracefs instance {inst.name}: {e}")
        ke = root / "kprobe_events"
        if ke.exists():
            from bench.tracing.kprobe_events import remove_group
            groups = {line.split()[0].split(":", 1)[1].split("/")[0]
                      for line in ke.read_text().splitlines() if line.strip()}
            for g in sorted(groups):
                if g.startswith(tracefs.PREFIX + "_") and _ours_and_dead(g, env.proc_root):
                    n = remove_group(root, g)
                    done.append(f"removed {n} kprobe events of group {g}")
    owner = kmod.module_owner(env.sys_root)
    if owner and owner != os.getpid() and tracefs.pid_alive(owner, env.proc_root):
        done.append(f"copytrace is loaded by running process {owner}: left alone")
    elif unload_module and kmod.module_loaded(env.sys_root):
        if kmod.unload(env.sys_root):
            done.append("unloaded the copytrace module")
        else:
            done.append("copytrace is loaded and could not be unloaded (in use?): rmmod copytrace")
    done += _kill_orphan_bpftrace(env.proc_root)
    return done


def _kill_orphan_bpftrace(proc_root: Path) -> list[str]:
    """bpftrace processes running one of our scripts whose owner is gone."""
    done = []
    for d in proc_root.glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"bpftrace"):
            continue
        scripts = [a.decode(errors="replace") for a in argv
                   if b"/" + tracefs.PREFIX.encode() + b"-" in a and a.endswith(b".bt")]
        if not scripts or not _ours_and_dead(Path(scripts[0]).name, proc_root):
            continue
        pid = int(d.name)
        stop_pid(pid, (proc_root / str(pid)).exists, int_grace=0.5, term_grace=0.5,
                 kill_grace=0.5)
        Path(scripts[0]).unlink(missing_ok=True)
        done.append(f"stopped orphan bpftrace {pid} ({scripts[0]})")
    return done

