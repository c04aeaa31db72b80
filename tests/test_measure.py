"""edge_embed/measure.py, the one way edge-embed bench, bench/ and the tests measure: known work in,
known figures out."""
from __future__ import annotations

import subprocess
import sys
import time
import venv

import pytest

from edge_embed.measure import ColdStartError, alternating_rounds, cold_start

_ALLOCATE_64_MB = """
import numpy as np
from edge_embed.measure import peak_rss_mb, rss_mb
before = rss_mb()
block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
during = rss_mb()
del block
print(before, during, rss_mb(), peak_rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux: reads /proc/self/status")
def test_rss_follows_an_allocation_and_the_peak_keeps_it():
    # A fresh process: in pytest's own, freed blocks would be reused and the RSS would not move.
    out = subprocess.run([sys.executable, "-c", _ALLOCATE_64_MB], capture_output=True, text=True, timeout=120)
    before, during, after, peak = (float(x) for x in out.stdout.split())
    assert during - before > 60 and after < during - 60 and peak > during - 1  # VmHWM lags VmRSS by pages


def test_rounds_alternate():
    order = []
    seconds = alternating_rounds({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3)
    assert order == ["a", "b", "b", "a", "a", "b"]  # rotated each round: neither always runs first
    assert [len(s) for s in seconds.values()] == [3, 3] and min(seconds["a"]) >= 0


def test_rounds_time_each_call_and_until_ends_them_early():
    seen = []

    def until(index, seconds):
        seen.append((index, sorted(seconds)))
        return index == 1

    got = alternating_rounds({"slow": lambda: time.sleep(0.05), "fast": lambda: time.sleep(0.01)}, rounds=5,
                             until=until)
    assert seen == [(0, ["fast", "slow"]), (1, ["fast", "slow"])]  # stopped after the second of five
    assert all(0.05 <= s < 0.15 for s in got["slow"]) and all(0.01 <= s < 0.05 for s in got["fast"])
    assert len(got["slow"]) == len(got["fast"]) == 2


# A model whose every stage takes a known time and memory. It needs nothing but the standard library:
# the fresh process runs in a bare venv, as a peer's own venv would, with no edge_embed installed.
_MODEL = """
import sys, time

assert "edge_embed" not in sys.modules
time.sleep(0.3)  # an import that takes 0.3 s


class Model:
    def __init__(self, seconds):
        time.sleep(seconds)
        self.kept = None

    def embed(self, texts):
        if texts[0] == "long":
            block = b"x" * (64 * 2**20)  # 64 MB, touched, freed on return: only the peak keeps it
            time.sleep(0.5)
        else:
            self.kept = b"x" * (32 * 2**20)  # 32 MB kept
            time.sleep(0.2)


def broken(**kwargs):
    raise ValueError("no such bundle: /nowhere")
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bare")
    (folder / "slow_model.py").write_text(_MODEL, encoding="utf-8")
    venv.create(folder / "venv", with_pip=False)
    return str(folder / "venv" / "bin" / "python"), str(folder)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux: reads /proc/self/status")
def test_cold_start_times_and_sizes_each_stage_in_a_fresh_process(bare_python):
    python, folder = bare_python
    got = cold_start("slow_model:Model", {"seconds": 0.4}, "short", "long", python=python, path=(folder,))
    assert 0.3 <= got["imports_s"] < 3  # interpreter start-up + the 0.3 s import
    assert 0.4 <= got["construct_s"] < 0.9 and 0.2 <= got["first_embedding_s"] < 0.7
    assert 0.5 <= got["long_text_s"] < 1.0
    assert got["load_to_first_embedding_s"] == pytest.approx(
        got["imports_s"] + got["construct_s"] + got["first_embedding_s"])
    assert 28 < got["rss_after_embed_mb"] - got["rss_after_load_mb"] < 40  # the 32 MB the first call kept
    assert got["peak_rss_mb"] - got["rss_after_embed_mb"] > 60  # the long text's 64 MB, freed since
    assert got["rss_after_load_mb"] < 60  # a bare interpreter: the parent's size is not inherited


def test_cold_start_says_why_the_fresh_process_failed(bare_python):
    python, folder = bare_python
    with pytest.raises(ColdStartError, match=r"exit 1: .*ValueError: no such bundle: /nowhere"):
        cold_start("slow_model:broken", {}, "short", python=python, path=(folder,))
