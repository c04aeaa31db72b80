"""How much CPU other processes took while we measured (a validity check for every figure).

/proc/stat gives the machine's busy time; os.times() gives this process's own CPU time (its
threads, children it has waited for, and the live children it names: a peer run in its own venv).
The difference, over the wall time and the core
count, is the share of the machine that something else used during the measurement. On a
2-core machine a few percent already shows in the medians.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_of(pid: int) -> float:
    """CPU seconds so far of a child this process does not wait for (a RemoteSystem's)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    except (OSError, IndexError):
        return 0.0


def _sample(helpers: tuple[int, ...] = ()) -> tuple[float, float, float]:
    """(monotonic s, machine busy CPU s, own CPU s, the `helpers` processes' included)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        # user nice system idle iowait irq softirq steal
        busy = (sum(fields) - fields[3] - fields[4]) / _TICK
    except OSError:
        busy = float("nan")
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system + sum(_cpu_of(pid) for pid in helpers)
    return time.monotonic(), busy, own


class CpuMeter:
    def __init__(self, helpers: tuple[int, ...] = ()):
        """helpers: pids of our own children that count as this process (a peer's, in its venv)."""
        self.cores = os.cpu_count() or 1
        self.helpers = helpers
        self.start = _sample(helpers)

    def others(self) -> float:
        """Fraction of all cores used by other processes since the meter started."""
        now = _sample(self.helpers)
        wall = now[0] - self.start[0]
        if wall <= 0:
            return 0.0
        foreign = (now[1] - self.start[1]) - (now[2] - self.start[2])
        return max(0.0, foreign / (wall * self.cores))


WAIT_BUDGET = {"left_s": 600.0}  # total waiting allowed in one run (run.py sets it)


def wait_quiet(max_wait: float, threshold: float = 0.05, window: float = 1.0, log=None) -> float:
    """Wait (up to max_wait s, and within WAIT_BUDGET) until other processes use under
    `threshold` of the cores for one `window`. Returns the share they used in the last window."""
    start = time.monotonic()
    deadline = start + min(max_wait, WAIT_BUDGET["left_s"])
    said = False
    while True:
        meter = CpuMeter()
        time.sleep(window)
        share = meter.others()
        if share < threshold or time.monotonic() >= deadline:
            WAIT_BUDGET["left_s"] = max(0.0, WAIT_BUDGET["left_s"] - (time.monotonic() - start))
            return share
        if log and not said:
            log(f"[bench]     other processes use {100 * share:.0f}% of the CPU; waiting up to "
                f"{max_wait:.0f} s for them to finish")
            said = True
