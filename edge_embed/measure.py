"""One way to measure, for `edge-embed bench`, bench/ and the tests: a process's resident memory and
timed rounds that alternate the systems being compared (stdlib only)."""
from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path


def rss_mb(field: str = "VmRSS", pid: int | str = "self") -> float | None:
    """A process's resident memory in MB (this one's by default): "VmRSS" now, "VmHWM" its peak
    (Linux /proc).

    Elsewhere this process's peak falls back to ru_maxrss (macOS: bytes; other Unixes: KB) and the
    current size is None. Linux's ru_maxrss is never used: a child started by fork + exec inherits
    the parent's peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field != "VmHWM" or pid != "self":
        return None
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def peak_rss_mb() -> float | None:
    return rss_mb("VmHWM")


def one_round(calls: dict[str, Callable[[], object]], index: int, settle_s: float = 0.0) -> dict[str, float]:
    """Wall seconds of each call, run once in an order rotated by `index` (so no system always runs
    first or right after the same neighbour); garbage collected and `settle_s` idle before each."""
    names = list(calls)
    shift = index % len(names) if names else 0
    seconds = {}
    for name in names[shift:] + names[:shift]:
        gc.collect()
        if settle_s:
            time.sleep(settle_s)
        start = time.perf_counter()
        calls[name]()
        seconds[name] = time.perf_counter() - start
    return seconds


def alternating_rounds(calls: dict[str, Callable[[], object]], rounds: int,
                       settle_s: float = 0.0) -> dict[str, list[float]]:
    """{name: [seconds per round]} over `rounds` rounds of one_round."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(rounds):
        for name, value in one_round(calls, index, settle_s).items():
            seconds[name].append(value)
    return seconds
