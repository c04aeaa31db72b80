"""The exported NomicBERT attention: RotaryEmbedding + flash-eligible MultiHeadAttention.

The mask rides in an extra q/k head dimension (export/attention_fused.py), so no node gets a
mask input and onnxruntime's CPU kernel runs flash attention: memory linear in the length.
Parity with the torch model is checked here on shapes never traced, with padding and per-text
NTK bases in one batch; bundle-level parity is tests/test_parity.py.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.checkpoint import load_state_dict, read_config
from export.nomic_bert import build_nomic

NAME = "nomic-v15-tiny-longctx"  # 2 layers, 4 heads of 16, NTK scaling past 64 tokens


@pytest.fixture(scope="module")
def fp32_path(bundle):
    return bundle(NAME) / "model.fp32.onnx"


def test_attention_is_rotary_and_unmasked_multihead_attention(fp32_path):
    graph = onnx.load(str(fp32_path)).graph
    ops = [node.op_type for node in graph.node]
    mha = [node for node in graph.node if node.op_type == "MultiHeadAttention"]
    assert len(mha) == 2 and ops.count("RotaryEmbedding") == 4
    assert "Softmax" not in ops  # no unfused attention left
    for node in mha:
        assert len(node.input) == 3, "a mask or bias input turns off the flash kernel"
        scale = next(a.f for a in node.attribute if a.name == "scale")
        assert scale == pytest.approx(1 / math.sqrt(16))  # 1/sqrt(d), not 1/sqrt(d + 1)


def test_int8_still_quantizes_the_attention_projections(bundle):
    graph = onnx.load(str(bundle(NAME) / "model.int8.onnx")).graph
    float_matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and "/attn/" in n.name]
    integer = ("MatMulInteger", "MatMulIntegerToFloat")  # the dynamic scheme's, the static one's
    quantized = [n.name for n in graph.node if n.op_type in integer and "/attn/" in n.name]
    assert not float_matmuls
    assert len(quantized) == 8  # q, k, v and out_proj in each of 2 layers
    # q, k and v are separate MatMuls on one input: one activation quantization, no Split copy
    assert not [n.name for n in graph.node if n.op_type == "Split" and "/attn/" in n.name]
    for layer in range(2):
        projections = [n for n in graph.node if n.op_type in integer
                       and f"layers.{layer}/attn/" in n.name and "out_proj" not in n.name]
        assert len(projections) == 3 and len({n.input[0] for n in projections}) == 1


def test_matches_torch_on_padded_batches_with_per_text_ntk(checkpoint, fp32_path):
    source = checkpoint(NAME)
    model = build_nomic(read_config(source), load_state_dict(source))
    session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for lengths in ([150, 90, 20], [7], [65, 64, 63, 1]):  # traced at (2, 11)
        ids = np.zeros((len(lengths), max(lengths)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, n in enumerate(lengths):
            ids[row, :n] = rng.integers(5, 1000, n)
            mask[row, :n] = 1
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        real = mask.astype(bool)
        assert np.abs(got - want)[real].max() <= 1e-4, lengths


# Peak RSS is VmHWM: ru_maxrss of a child started by fork/vfork + exec starts at the parent's
# peak (pytest with torch loaded is already past the bound).
_LONG_RUN = r"""
import json, sys
import numpy as np, onnxruntime as ort
from edge_embed.measure import peak_rss_mb, rss_mb
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
loaded = rss_mb()
ids = np.full((1, 8192), 1000, dtype=np.int64)
session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
print(json.dumps({"loaded": loaded, "peak": peak_rss_mb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux: reads /proc/self/status")
def test_one_8192_token_text_never_holds_the_score_matrix(fp32_path):
    # One [heads, S, S] fp32 score tensor at S = 8192 is 1 GiB for the tiny model's 4 heads.
    out = subprocess.run([sys.executable, "-c", _LONG_RUN, str(fp32_path)],
                         capture_output=True, text=True, check=True, timeout=300)
    memory = json.loads(out.stdout.strip().splitlines()[-1])
    assert memory["peak"] - memory["loaded"] < 256, memory
