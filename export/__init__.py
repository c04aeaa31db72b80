"""Checkpoint -> edge-embed bundle (needs the `export` extra: torch, safetensors, onnx)."""

MOE_MODES = ("sparse", "fused", "dense")  # graph forms of the v2-moe expert layer
# int8 forms of the weight MatMuls (export/quantize.py; static: export/static_int8.py)
# auto: static for dense models, dynamic for MoE; both: the int8 model and a static QDQ one for OpenVINO
INT8_SCHEMES = ("auto", "dynamic", "blockwise", "static", "both")
