"""Whether a reference tool is on PATH, and the one message naming the fix where it is not."""

from __future__ import annotations

import shutil

from bench.errors import UsageError


def available(tool: str) -> tuple[bool, str]:
    if shutil.which(tool):
        return True, ""
    return False, f"{tool} is not installed"


def check(tool: str, package: str) -> None:
    """UsageError (exit 2) naming the Debian package, or --no-reference, where `tool` is missing."""
    ok, why = available(tool)
    if not ok:
        raise UsageError(f"missing reference tool: {why}",
                         f"apt-get install {package}, or run with --no-reference")


# The Debian package of each reference tool that is not perftest's (ib_*_bw, ib_*_lat).
PACKAGES = {"iperf3": "iperf3", "sockperf": "sockperf", "qperf": "qperf"}


def check_tools(tools) -> None:
    """Every tool the plan's reference rows run, each with its own package named."""
    for t in sorted(set(tools)):
        check(t, PACKAGES.get(t, "perftest"))
