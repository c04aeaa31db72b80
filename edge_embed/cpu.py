"""What this CPU has, as Linux's /proc/cpuinfo lists it (elsewhere: None, and callers ask another source)."""
from __future__ import annotations

import os

CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The flags of /proc/cpuinfo (or of the text given), or None where there is no such file."""
    if cpuinfo is None:
        if not os.path.exists(CPUINFO):
            return None
        with open(CPUINFO, encoding="utf-8", errors="replace") as fh:
            cpuinfo = fh.read()
    return {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
