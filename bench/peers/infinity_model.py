"""Run in infinity's own venv (bench/infinity_peer.py does): give a sentence-transformers checkpoint
folder the ONNX files infinity's `optimum` engine loads, the way the hub's all-MiniLM-L6-v2 repo has them.

    python infinity_model.py CHECKPOINT OUT

OUT gets the checkpoint's files (symlinked), model.onnx (optimum's export, fp32) and
model_quantized.onnx: optimum's dynamic int8 quantization for this CPU's instruction set, with the
settings sentence-transformers' export_dynamic_quantized_onnx_model uses (per-tensor). On a CPU
infinity prefers a file whose name holds "quantize", so it serves the int8 one. The files lie at
OUT's top, not in onnx/: infinity 0.0.78 hands optimum 2.x the file's path as found under the
model folder, and optimum matches it against bare file names (see bench/infinity_peer.py).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def quantization_config():
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    flags = cpu_flags()
    name = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"
    return name, getattr(AutoQuantizationConfig, name)(is_static=False, per_channel=False)


def main(checkpoint: Path, out: Path) -> dict:
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer

    out.mkdir(parents=True, exist_ok=True)
    for item in checkpoint.iterdir():
        link = out / item.name
        if not link.exists():
            link.symlink_to(item.resolve())
    name, config = quantization_config()
    # export and quantize in a scratch folder (optimum also writes config and tokenizer files there,
    # which must not go through OUT's symlinks into the checkpoint), then keep only the graphs
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        if not (out / "model.onnx").exists():
            main_export(str(checkpoint), output=scratch, task="feature-extraction", library_name="transformers")
            shutil.move(Path(scratch) / "model.onnx", out / "model.onnx")
        if not (out / "model_quantized.onnx").exists():
            shutil.copy(out / "model.onnx", Path(scratch) / "model.onnx")
            ORTQuantizer.from_pretrained(scratch, file_name="model.onnx").quantize(save_dir=scratch,
                                                                                   quantization_config=config)
            shutil.move(Path(scratch) / "model_quantized.onnx", out / "model_quantized.onnx")
    return {"onnx_files": sorted(p.name for p in out.glob("*.onnx")), "quantization": name, "per_channel": False}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
