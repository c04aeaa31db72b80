"""bench/int8_kernels.py builds a valid one-node graph for every int8 kernel it compares."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import int8_kernels  # noqa: E402


def test_every_kernel_runs_and_matches_fp32():
    results = int8_kernels.measure(rows=64, threads=1, rounds=1)
    assert set(results) == {f"{k}x{n}" for k, n in int8_kernels.SHAPES}
    for shape, kernels in results.items():
        assert set(kernels) == set(int8_kernels.KERNELS), shape
        for name, entry in kernels.items():
            assert "error" not in entry, (shape, name, entry)
            assert entry["gflops_best"] > 0
            # int8 kernels land within a few percent of fp32; fp32 is the reference itself
            limit = 1e-5 if name == "fp32" else 0.05
            assert entry["rel_error"] < limit, (shape, name, entry["rel_error"])
        # block-quantized 8-bit weights are more accurate than per-channel 7-bit ones
        assert kernels["nbits8_b32"]["rel_error"] < kernels["dqmm_u8s8_w7"]["rel_error"]
