"""`edge-embed bench`: real sessions on the tiny bundles, timed as a user's program runs them."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import pytest

from edge_embed.benchmark import run_benchmark, throughput, workloads_for
from edge_embed.errors import InputError

V15, V2 = "nomic-v15-tiny", "nomic-v2moe-tiny"


def test_bench_cli_measures_two_precisions_side_by_side(bundle, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "edge_embed.cli", "bench", str(bundle(V15)), "--quick",
                             "--precision", "int8,fp32", "--threads", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    got = json.loads(out.read_text())
    assert got["precisions"] == ["int8", "fp32"] and got["threads"] == 1
    assert list(got["workloads"]) == ["short-32", "para-128", "chunk-512"]  # --quick: no 2048-token documents
    for name, target in (("short-32", 32), ("para-128", 128), ("chunk-512", 512)):
        w = got["workloads"][name]
        assert 0.75 * target <= w["tokens"] / w["texts"] <= 1.25 * target  # the bundle's tokenizer counts
        for precision in ("int8", "fp32"):
            figures = w["systems"][precision]
            assert len(figures["seconds"]) == w["rounds"] == 2
            assert figures["tokens_per_s_best"] >= figures["tokens_per_s"] > 0
    sizes = {p: sum((bundle(V15) / f).stat().st_size for f in files)
             for p, files in json.loads((bundle(V15) / "edge_embed.json").read_text())["models"].items()}
    assert got["file_sizes"] == sizes and sizes["int8"] < sizes["fp32"]
    for precision in ("int8", "fp32"):
        cold = got["cold_start"][precision]
        assert len(cold["runs"]) == 1 and "long_text_s" not in cold
        assert 0 < cold["load_to_first_embedding_s"] < 60 and cold["rss_after_load_mb"] > 20
    table = result.stdout
    assert "threads: 1" in table and "int8 tok/s" in table and "fp32 texts/s" in table
    assert table.count("load to first embedding") == 2


class _Sleeper:
    """A model whose embed call takes a known time: a known input for the throughput figures."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def embed(self, texts):
        time.sleep(self.seconds)


def test_throughput_figures_are_the_median_and_fastest_rounds():
    got = throughput({"slow": _Sleeper(0.06), "fast": _Sleeper(0.02)}, ["t"] * 10, tokens=1200, rounds=3)
    assert got["slow"]["tokens_per_s"] == pytest.approx(1200 / 0.06, rel=0.2)  # 20,000 tokens/s
    assert got["fast"]["texts_per_s"] == pytest.approx(10 / 0.02, rel=0.35)  # 500 texts/s
    assert got["slow"]["tokens_per_s"] <= got["slow"]["tokens_per_s_best"] < 1200 / 0.06
    assert [len(got[name]["seconds"]) for name in ("slow", "fast")] == [3, 3]


def test_long_text_runs_in_the_last_fresh_process(bundle):
    got = run_benchmark(bundle(V15), ["int8"], threads=1, workloads=["long-2048"], rounds=1)
    w = got["workloads"]["long-2048"]
    assert w["texts"] == 2 and 1900 <= w["tokens"] / 2 <= 2048
    assert got["max_length"] == 8192 and 8000 <= got["long_text_tokens"] <= 8192
    cold = got["cold_start"]["int8"]
    assert len(cold["runs"]) == 3 and [("long_text_s" in r) for r in cold["runs"]] == [False, False, True]
    assert cold["long_text_s"] > 0 and cold["peak_rss_mb"] >= cold["runs"][-1]["rss_after_load_mb"]
    assert cold["load_to_first_embedding_s"] == statistics.median(
        r["load_to_first_embedding_s"] for r in cold["runs"])


def test_workloads_are_the_ones_whose_texts_fit_the_model(bundle):
    from edge_embed.manifest import read_manifest

    max_length = read_manifest(bundle(V2)).max_length
    assert max_length == 512
    assert [w.name for w in workloads_for(max_length, None)] == ["short-32", "para-128", "chunk-512"]
    assert [w.name for w in workloads_for(256, None)] == ["short-32", "para-128"]  # all-MiniLM-L6-v2
    with pytest.raises(InputError, match=r"unknown workload\(s\) \['long-2048'\] for this model"):
        workloads_for(max_length, ["long-2048"])


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp16"], "error: this bundle has no fp16 model"),
    (["--precision", "int8,int8"], "error: --precision takes one or more distinct names"),
    (["--workloads", "tweets"], "error: unknown workload(s) ['tweets']"),
    (["--threads", "0"], "error: threads must be a positive int"),
    (["--rounds", "0"], "error: rounds must be a positive int"),
])
def test_bad_bench_arguments_give_one_line_errors(bundle, args, message):
    result = subprocess.run([sys.executable, "-m", "edge_embed.cli", "bench", str(bundle(V2)), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr

