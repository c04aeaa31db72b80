"""torch model -> fp32 ONNX with dynamic batch and sequence axes, then int8."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

OPSET = 18
INPUTS = ["input_ids", "attention_mask"]
OUTPUT = "last_hidden_state"
TWO_GB = 2**31
# Weights from this size on go to `<name>.data`: onnxruntime memory-maps external data, so the
# embedding table stays on disk except the rows in use and the file is not parsed into a second
# copy while loading (v2-moe int8: RSS after load 533 -> 350 MB, peak 714 -> 353 MB, session
# 2.6 -> 1.3 s; BENCHMARKS.md). Small models stay one file.
EXTERNAL_DATA_BYTES = 64 << 20


def example_inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two: the trace must see padding so masking is part of the graph."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(vocab_size, 1000), (2, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids, mask


def needs_external_data(model: onnx.ModelProto) -> bool:
    """True when the weights come to EXTERNAL_DATA_BYTES (and always within 64 MB of protobuf's 2 GB limit)."""
    weights = sum(tensor.ByteSize() for tensor in model.graph.initializer)
    return weights >= min(EXTERNAL_DATA_BYTES, TWO_GB - (64 << 20))


def save(model: onnx.ModelProto, path: Path) -> list[str]:
    """Save, with weights in `<name>.data` (a relative name, beside the model) for large models.
    Returns the file names written (model first)."""
    if not needs_external_data(model):
        onnx.save_model(model, os.fspath(path))
        return [path.name]
    data = path.name + ".data"
    onnx.save_model(model, os.fspath(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data, size_threshold=1024)
    # onnx creates the data file owner-only (0600); give it the model file's mode, so whoever can
    # read the model (a bundle shared between users) can read its weights.
    os.chmod(path.parent / data, path.stat().st_mode & 0o777)
    return [path.name, data]


def export_fp32(model: torch.nn.Module, path: Path, vocab_size: int) -> list[str]:
    """Trace `model(input_ids, attention_mask) -> last_hidden_state` to ONNX at `path`."""
    ids, mask = example_inputs(vocab_size)
    axes = {"batch": 0, "sequence": 1}
    dynamic = {name: {i: n for n, i in axes.items()} for name in [*INPUTS, OUTPUT]}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes are expected here
        traced = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                model, (ids, mask), os.fspath(traced), dynamo=False, opset_version=OPSET,
                input_names=INPUTS, output_names=[OUTPUT], dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        graph = onnx.load(os.fspath(traced))  # pulls external data in, if the exporter wrote any
    return save(graph, path)
