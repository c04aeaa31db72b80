"""fp32 ONNX -> static int8 ONNX: activation ranges calibrated once, on real text, by NNCF; written as
onnxruntime's integer operators (export/static_for_onnxruntime.py) and/or as the QDQ model OpenVINO runs.

Why static: the dynamic scheme measures each activation's range per batch, so a text's vector moves
with its batch-mates; fixed ranges give a text the same vector in any batch. OpenVINO runs the QDQ
model as int8 (a dynamic one it turns back into float); onnxruntime runs the integer-operator form at
its dynamic scheme's speed (the QDQ one at about its fp32 speed). The ranges come from the texts in
export/calibration/ (written for this project, see the README there), each with one of the model's
task prefixes, as single texts and as long concatenations so that long inputs are covered too.

Why NNCF (`nncf.quantize`, model_type TRANSFORMER): its SmoothQuant moves activation outliers into
the weights before the ranges are set. onnxruntime's quantize_static with min/max ranges gave
all-MiniLM-L6-v2 a min cosine to fp32 of 0.887 on 20 texts; NNCF 0.9955 (dynamic int8: 0.980).
NNCF keeps weights per-channel int8 and the embedding table int8 (Gather); the MoE router stays fp32.
So do the products of two activations (a plain graph's attention scores and weighted sum; v1.5's
attention is one MultiHeadAttention node, never quantized): quantized, they broke OpenVINO's bf16
float parts on padded batches (all-MiniLM-L6-v2, a text padded 27 -> 32 tokens: cosine to fp32 0.632),
and in float they are closer to fp32 with either hint (min cosine 0.9957 against 0.9893, 64 mixed texts).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from export.onnx_export import save
from export.quantize import KEEP_FP32, fp32_nodes
from export.static_for_onnxruntime import activation_quantizers, integer_operators

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
ENGLISH = "en.txt"
MULTILINGUAL = "multilingual.txt"
SHORT_ITEM_EVERY = 4
LONG_ITEMS = 24  # concatenations of consecutive passages: ranges for 200-500-token inputs
PASSAGES_PER_LONG_ITEM = 8
CALIBRATION_LENGTH = 512  # tokens: longer calibration items are cut here


class StaticInt8(NamedTuple):
    """What quantize_static_int8 wrote: file names per engine, and the activation quantizers of
    onnxruntime's model ([scale name, scale, zero point name, zero point], for edge_embed/int8_saturation.py)."""
    onnxruntime: list[str] | None = None
    openvino: list[str] | None = None
    activation_quantizers: list[list] | None = None


def calibration_passages(multilingual: bool) -> list[str]:
    """The shipped passages (one a line); with the multilingual file for multilingual models."""
    names = [ENGLISH, MULTILINGUAL] if multilingual else [ENGLISH]
    passages = []
    for name in names:
        lines = (CALIBRATION_DIR / name).read_text(encoding="utf-8").splitlines()
        passages.extend(line.strip() for line in lines if line.strip())
    return passages


def calibration_texts(prefixes: dict[str, str], multilingual: bool) -> list[str]:
    """Each passage once, with the task prefixes (and no prefix) in turn, then short texts (the first 1-3
    words of every SHORT_ITEM_EVERY-th passage) and LONG_ITEMS long texts."""
    passages = calibration_passages(multilingual)
    choices = [""] + sorted(set(prefixes.values()) - {""})
    texts = [choices[i % len(choices)] + passage for i, passage in enumerate(passages)]
    # Greetings, keywords and short queries: a few tokens, where [CLS] and [SEP] weigh most, have ranges
    # of their own (all-MiniLM-L6-v2 on "Hello!": cosine to fp32 0.980 without them, 0.988 with them).
    for i, passage in enumerate(passages[::SHORT_ITEM_EVERY]):
        texts.append(choices[i % len(choices)] + " ".join(passage.split()[: 1 + i % 3]))
    step = max(1, len(passages) // LONG_ITEMS)
    for item in range(LONG_ITEMS):
        start = (item * step) % len(passages)
        body = " ".join(passages[start:start + PASSAGES_PER_LONG_ITEM])
        texts.append(choices[item % len(choices)] + body)
    return texts


def calibration_items(tokenizer_path: Path, texts: list[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """One model input per text, unpadded (padding would put pad-token activations into the ranges)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.fspath(tokenizer_path))
    tokenizer.enable_truncation(min(max_length, CALIBRATION_LENGTH))
    items = []
    for encoding in tokenizer.encode_batch(texts):
        ids = np.asarray([encoding.ids], dtype=np.int64)
        items.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return items


def quantize_static_int8(fp32_path: Path, tokenizer_path: Path, prefixes: dict[str, str], max_length: int,
                         multilingual: bool, onnxruntime_path: Path | None = None, openvino_path: Path | None = None,
                         keep: tuple[str, ...] = KEEP_FP32) -> StaticInt8:
    """Calibrate once and write the static int8 model in the form each engine runs fast: onnxruntime's
    integer operators at onnxruntime_path (export/static_for_onnxruntime.py), the QDQ model at
    openvino_path."""
    import nncf

    model = onnx.load(os.fspath(fp32_path))
    items = calibration_items(tokenizer_path, calibration_texts(prefixes, multilingual), max_length)
    kept = fp32_nodes(model, keep) + activation_products(model)
    with _quiet_nncf():
        quantized = nncf.quantize(
            model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items),
            ignored_scope=nncf.IgnoredScope(names=kept, validate=False) if kept else None,
        )
    written = StaticInt8()
    if onnxruntime_path is not None:  # (saving with external data empties the saved model's tensors: convert first)
        integer = onnx.ModelProto()
        integer.CopyFrom(quantized)
        integer = integer_operators(integer)
        written = written._replace(onnxruntime=save(integer, onnxruntime_path),
                                   activation_quantizers=activation_quantizers(integer))
    if openvino_path is not None:
        written = written._replace(openvino=save(quantized, openvino_path))
    return written


def activation_products(model: onnx.ModelProto) -> list[str]:
    """MatMuls of two computed tensors (neither a weight nor a constant): attention's products."""
    constant = {t.name for t in model.graph.initializer}
    constant.update(out for node in model.graph.node if node.op_type == "Constant" for out in node.output)
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and not any(name in constant for name in node.input)]


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF draws progress bars and logs at INFO on every call; the export prints its own lines."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
