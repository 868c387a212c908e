"""Keep one broken lab VM from failing every lab test after it.

A lab test that leaves the VM frozen (SSH gone while QEMU runs) fails itself, with the
console tail, and the lab is restarted (down, up) so the next test starts on a working VM;
a lab that is gone is booted again instead of skipping what follows."""

from __future__ import annotations

from pathlib import Path

SSH_CHECK_S = 20


def broken(paths) -> str | None:
    """Why a lab that its state lists as running does not answer, or None (healthy, or down)."""
    from bench.lab import manager, sshkeys
    st = manager.status(paths)
    if not st["nodes"] or not any(n["running"] for n in st["nodes"]):
        return None                        # taken down: not broken, the next test boots one
    for n in st["nodes"]:
        if not n["running"]:
            return f"{n['name']}: QEMU exited"
        ok, err = sshkeys.ssh_ok("127.0.0.1", n["ssh_port"], "root", Path(st["key"]),
                                 timeout=SSH_CHECK_S, known_hosts=None)
        if not ok:
            return f"{n['name']}: SSH does not answer within {SSH_CHECK_S}s ({err or 'no error'})"
    return None


def console_tails(paths) -> str:
    from bench.lab import manager, qemu
    return "\n".join(f"--- {n['name']} console ---\n{qemu.console_tail(Path(n['console']))}"
                     for n in manager.status(paths)["nodes"])


def restart_one_node(paths) -> None:
    from bench.lab import manager
    manager.down(paths)
    manager.up(paths, nodes=1, provision=False)


def running_or_boot(paths) -> dict:
    """The lab's status, booting a one-node lab (not provisioned: tests push the tree) when
    none runs. The boot is stopped when the test session ends."""
    import atexit

    from bench.lab import manager
    st = manager.status(paths)
    if not st.get("running"):
        manager.down(paths)                # whatever half of a lab is left
        manager.up(paths, nodes=1, provision=False)
        atexit.register(manager.down, paths)
        st = manager.status(paths)
    return st
