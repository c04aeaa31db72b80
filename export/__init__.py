"""Checkpoint -> edge-embed bundle (needs the `export` extra: torch, safetensors, onnx)."""
