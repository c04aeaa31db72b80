"""infinity-emb, the Python embedding server a user would otherwise pick, as a peer for bench/serve.py.

It pins numpy < 2, so it runs from a venv of its own (WORK/venvs/infinity, exact pins in
bench/peers/infinity.txt), built here on first use and never installed into the running env.
Its fastest CPU engine is `optimum` (ONNX Runtime) with an int8 ONNX file: bench/peers/infinity_model.py
gives the checkpoint folder one (optimum's export + dynamic int8 quantization), and infinity picks the
"quantize" file on a CPU. Threads: infinity has no flag for them, so the server process gets a
sitecustomize (bench/peers/ort_threads) that sets every ONNX Runtime session's intra-op threads to N
(inter-op 1, as the runtime's) and OMP/MKL_NUM_THREADS=N for torch, which optimum imports.

Two version quirks of the pinned set, both worked around here (SETUP, recorded in the result):
- infinity 0.0.78 passes optimum 2.x the ONNX file's path as found under the model folder, and
  optimum matches it against bare file names: an absolute folder fails with FileNotFoundError. So the
  server runs from inside the folder (`--model-id .`), with the ONNX files at its top.
- infinity's own ONNX graph optimization (ORTOptimizer) fails with optimum 2.x
  (`OptimizationConfig` lost `optimize_with_onnxruntime_only`); infinity then loads the
  unoptimized file, as it does for a user with this set. ONNX Runtime's own graph fusions still run.
And one default that is not a quirk of the pins: with the optimum engine infinity's `--pooling-method
auto` means CLS pooling, whatever the checkpoint's 1_Pooling says; all-MiniLM-L6-v2 is mean-pooled, and
its CLS vectors have a mean cosine of about 0.36 with the right ones (measured here). So the server is
started with `--pooling-method mean`, as a user who checked would.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import deps
from serving import ServerProcess  # tests/serving.py: the same lifecycle as the edge-embed server

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "peers" / "infinity.txt"
TORCH = "torch==2.13.0"  # the CPU build, installed first as the Makefile does
VERSION = "0.0.78"
SETUP = ["optimum engine, int8 ONNX (optimum dynamic quantization, per-tensor) unless --peer-onnx fp32",
         "--pooling-method mean: its default (auto) is CLS pooling with the optimum engine",
         "run from inside the model folder with --model-id . (infinity 0.0.78 + optimum 2.x reject an absolute one)",
         "its ORTOptimizer step fails with optimum 2.x: it serves the unoptimized ONNX file, as for a user",
         "threads: ONNX Runtime intra-op N / inter-op 1 through bench/peers/ort_threads, OMP/MKL_NUM_THREADS=N"]


def pinned() -> dict[str, str]:
    """The versions that matter to the result, from the pins."""
    pins = dict(line.split("==") for line in REQUIREMENTS.read_text().splitlines() if "==" in line)
    return {"infinity-emb": VERSION, "torch": TORCH.split("==")[1],
            **{name: pins[name] for name in ("onnxruntime", "optimum", "transformers", "numpy")}}


def _pip(python: Path, args: list[str], timeout: float) -> tuple[bool, str]:
    return deps._run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], timeout)


def ensure_venv(work: Path, timeout: float = 1200, log=print) -> dict:
    """{"available", "python", "version", "message"}: WORK/venvs/infinity at the pinned versions, built
    (or rebuilt when the pins change) here; on failure the reason, and the peer is skipped."""
    venv = work / "venvs" / "infinity"
    python = venv / "bin" / "python"
    stamp = venv / ".pins-installed"
    pins = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == pins:
        return {"available": True, "python": str(python), "versions": pinned(), "message": "already installed"}
    log(f"[serve-bench] building infinity-emb's venv at {venv} (limit {timeout:.0f} s) ...")
    start = time.perf_counter()
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            return {"available": False, "message": f"python -m venv failed: {made.stderr[-300:]}"}
    for args in ([TORCH], ["-r", str(REQUIREMENTS)]):
        ok, message = _pip(python, args, timeout - (time.perf_counter() - start))
        if not ok:
            reason = f"infinity SKIPPED: pip install {' '.join(args)} failed ({message})"
            log(f"[serve-bench] {reason}")
            return {"available": False, "message": reason}
    stamp.write_text(pins)
    return {"available": True, "python": str(python), "versions": pinned(),
            "message": f"installed in {time.perf_counter() - start:.0f} s"}


def prepare_model(python: str, checkpoint: Path, out: Path, log=print) -> dict:
    """The checkpoint folder with infinity's ONNX files (made once, in infinity's venv)."""
    done = out / "infinity_model.json"
    if done.exists():
        return json.loads(done.read_text())
    log(f"[serve-bench] exporting {checkpoint.name} to ONNX + int8 for infinity at {out} ...")
    made = subprocess.run([python, str(HERE / "peers" / "infinity_model.py"), str(checkpoint), str(out)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if made.returncode != 0:
        raise RuntimeError(f"infinity's model export failed: {made.stdout[-500:]} {made.stderr[-1500:]}")
    info = json.loads(made.stdout.strip().splitlines()[-1])
    done.write_text(json.dumps(info))
    return info


class InfinityServer(ServerProcess):
    """`infinity_emb v2` on 127.0.0.1 with the optimum engine, OpenAI routes under /v1."""

    def __init__(self, python: str, model_dir: Path, port: int, threads: int, log_dir: Path, onnx: str = "int8",
                 warmup: bool = True):
        super().__init__("infinity", port, log_dir)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(model_dir.parent / "infinity-hf"),
               "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
               "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "EDGE_BENCH_ORT_THREADS": str(threads), "PYTHONPATH": str(HERE / "peers" / "ort_threads")}
        argv = [str(Path(python).with_name("infinity_emb")), "v2", "--model-id", ".",
                "--served-model-name", model_dir.name, "--engine", "optimum", "--device", "cpu",
                "--pooling-method", "mean",
                "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1", "--log-level", "warning"]
        if not warmup:  # its warm-up (batches of 32 at the longest length) leaves ONNX Runtime's arena large
            argv.append("--no-model-warmup")
        if onnx == "fp32":  # model.onnx rather than the int8 file infinity prefers on a CPU
            argv.append("--onnx-do-not-prefer-quantized")
        self.start(argv, env, timeout=300, cwd=model_dir)
