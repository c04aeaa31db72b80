"""A large embed() call holds little more than its result: tokenization in blocks, float32 pooling,
Matryoshka in row blocks (measured in a fresh process on the tiny bundle)."""
from __future__ import annotations

import subprocess
import sys

import pytest

_PEAK_OF_A_LARGE_JOB = r"""
import sys
from edge_embed import Embedder
from edge_embed.measure import peak_rss_mb, rss_mb
model = Embedder(sys.argv[1], precision="int8", providers="cpu", threads=2)
texts = [f"document number {i} talks about topic {i % 97} and more" for i in range(30000)]
model.embed(texts[:3000], progress=False)  # the arena and the heap at their working size
before = rss_mb()
vectors = model.embed(texts, task="search_document", dim=32, progress=False)
print(before, peak_rss_mb(), vectors.nbytes / 2**20 * 64 / 32)  # the full-width pooled states' size
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux: reads /proc/self/status")
def test_a_large_job_peaks_at_a_few_times_its_pooled_states(bundle):
    # Measured at 30k texts: +25 MB over 7 MB of pooled states; holding every text's tokenizers
    # Encoding and a float64 accumulator per text had made it +115 MB.
    result = subprocess.run([sys.executable, "-c", _PEAK_OF_A_LARGE_JOB, str(bundle("nomic-v15-tiny"))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    before, peak, pooled_mb = (float(x) for x in result.stdout.split())
    assert peak - before < 8 * pooled_mb
