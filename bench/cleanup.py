"""Remove what a killed run may have left: our network namespaces, soft-RoCE links, a node
launcher's socket directory and tracer state."""

from __future__ import annotations


def cleanup_all() -> list[str]:
    done = []
    try:
        from bench.topology import remove_stale
        done += [f"removed stale netns {n}" for n in remove_stale()]
    except (ImportError, OSError) as exc:
        done.append(f"netns cleanup skipped: {exc}")
    try:
        from bench.rxe import remove_stale as remove_stale_rxe
        done += [f"removed stale soft-RoCE link {n}" for n in remove_stale_rxe()]
    except (ImportError, OSError, ValueError) as exc:
        done.append(f"soft-RoCE cleanup skipped: {exc}")
    try:
        from bench.lab import manager
        from bench.lab.paths import lab_paths
        done += [f"stopped a lab QEMU its state did not list: {r.describe()}"
                 for r in manager.stop_unlisted(lab_paths(), _Quiet())]
    except ImportError:
        pass    # no lab in this build
    from bench.launcher import remove_stale as remove_stale_launchers
    done += [f"removed a dead launcher's socket directory {d}" for d in remove_stale_launchers()]
    try:
        from bench.tracing.stale import cleanup_stale
    except ImportError:
        return done
    done += list(cleanup_stale())
    return done


class _Quiet:
    """A progress sink: cleanup_all reports through its returned lines."""

    def line(self, text: str) -> None:
        pass
