"""bench/int8_schemes.py compares bundles side by side: real sessions on the tiny bundle."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import int8_schemes  # noqa: E402


def test_prints_tokens_per_second_and_batch_dependence_per_system(bundle, capsys):
    path = bundle("nomic-v15-tiny")
    assert int8_schemes.main([f"int8={path}:int8", f"fp32={path}:fp32", "--threads", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for workload in ("short-32", "para-128", "chunk-512"):
        assert re.search(rf"^{workload} +tokens/s int8 [\d,]+  fp32 [\d,]+$", out, re.M), out
    gaps = {name: float(re.search(rf"^{name} +alone vs batched, 1 - cosine: mean (\S+),", out, re.M).group(1))
            for name in ("int8", "fp32")}
    assert gaps["fp32"] < 1e-6 < gaps["int8"]  # dynamic int8's per-batch activation range
