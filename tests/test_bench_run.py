"""bench/run.py's throughput rounds (through edge_embed.measure): known call times in, known figures out."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run  # noqa: E402

from edge_embed.bench_texts import WORKLOADS  # noqa: E402


class _Sleeper:
    """A system whose embed call takes a known time, and fails from its `fail_from`-th call on."""

    def __init__(self, seconds: float, fail_from: int | None = None):
        self.seconds, self.fail_from, self.calls = seconds, fail_from, 0

    def prepare(self, texts):
        pass

    def embed(self, texts):
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise MemoryError("out of memory")
        time.sleep(self.seconds)


def test_throughput_rounds_give_each_systems_rate_and_report_a_failing_one():
    short = next(w for w in WORKLOADS if w.name == "short-32")
    systems = {"slow": _Sleeper(0.06), "fast": _Sleeper(0.02), "broken": _Sleeper(0.02, fail_from=3)}
    got = run.measure_workload(systems, short, ["a text"] * 10, [30] * 10, rounds=3, quiet_wait=0)
    assert got["tokens"] == 300 and got["rounds_run"] == 3  # no quiet wait: no extra rounds
    slow, fast = got["systems"]["slow"], got["systems"]["fast"]
    assert 1_000 < slow["tok_s"] <= 5_000  # 300 tokens in 0.06 s at best
    assert 50 < fast["texts_s"] <= 500  # 10 texts in 0.02 s at best
    assert len(slow["times_s"]) == 3 and len(slow["others_cpu"]) == 3
    # warm-up is call 1, round 1 call 2: it fails in round 2 and is left out from then on
    assert got["systems"]["broken"] == {"error": "MemoryError: out of memory"}
    assert systems["broken"].calls == 3
