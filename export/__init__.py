"""Checkpoint -> edge-embed bundle (needs the `export` extra: torch, safetensors, onnx)."""

MOE_MODES = ("sparse", "fused", "dense")  # graph forms of the v2-moe expert layer
# int8 forms of the weight MatMuls (export/quantize.py; static: export/static_int8.py)
INT8_SCHEMES = ("dynamic", "blockwise", "static", "both")  # both: dynamic, plus static for OpenVINO where it can
