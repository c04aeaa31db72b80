"""OpenVINO as an execution path (optional extra `edge-embed[openvino]`): it replaces only the
onnxruntime session. Tokenizing, batching, pooling, Matryoshka and binary output stay the runtime's own.

OpenVINO's own runtime reads the bundle's ONNX files as they are (no conversion step, no extra file):
- fp32: model.fp32.onnx with INFERENCE_PRECISION_HINT=f32 (OpenVINO's default on CPUs with
  AVX512_BF16 or AMX is bf16, which an fp32 request must never get silently);
- bf16: model.fp32.onnx with the bf16 hint, asked for by name, only on CPUs that have it;
- int8: a bundle's static QDQ int8 model (model.int8.static.onnx of a --int8-scheme both bundle, or
  model.int8.onnx of a static bundle from before the integer-operator form), which OpenVINO runs as
  int8, in batches padded by length buckets (edge_embed.batching: a text's vector does not depend on
  its batch), its float parts (attention, layer norms, activations) in bf16 where the CPU has it and
  the bundle's attention products are float (see inference_precision). onnxruntime's int8 models
  (dynamic, or static in integer operators) it would turn back into float arithmetic (about 0.3x),
  so those stay on onnxruntime.
`openvino` is imported only when this path is used; the core runtime never needs it.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_embed.cpu import cpu_flags
from edge_embed.errors import BundleError, InputError
from edge_embed.manifest import INTEGER_OPERATORS, STATIC_INT8_MODEL

OPENVINO = "OpenVINO"  # what Embedder.providers[0] says when this path runs
INSTALL_HINT = "pip install 'edge-embed[openvino]'"
STATIC_INT8 = "static"  # the int8 scheme (manifest extra.int8.scheme) OpenVINO runs as int8
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def int8_scheme(manifest) -> str:
    return (manifest.extra.get("int8") or {}).get("scheme", "dynamic")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """AVX512_BF16 or AMX-BF16 (Linux /proc/cpuinfo; OpenVINO's own capability list elsewhere)."""
    flags = cpu_flags(cpuinfo)
    if flags is not None:
        return any(flag in flags for flag in BF16_FLAGS)
    if not available():
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def inference_precision(precision: str, manifest) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for this precision of this bundle: "bf16" when asked for by
    name, and for the float parts of a static int8 model exported with its attention products in float
    (float_attention in the manifest's section of that model) on a CPU with bf16: full-size v1.5
    1.14-1.17x the f32 hint, MiniLM STS-B and SciFact unchanged (README). Static int8 bundles from
    before quantized attention's products, which bf16 broke on padded batches (MiniLM min cosine
    0.632): f32 for them. "f32" otherwise."""
    if precision == "bf16":
        return "bf16"
    static = static_int8_model(manifest)
    float_attention = static is not None and (manifest.extra.get(static) or {}).get("float_attention") is True
    if precision == "int8" and float_attention and cpu_has_bf16():
        return "bf16"
    return "f32"


def fused_moe(manifest) -> bool:
    """--moe fused bundles use onnxruntime's com.microsoft.MoE / QMoE, which OpenVINO cannot convert."""
    return (manifest.extra.get("moe") or {}).get("mode") == "fused"


def static_int8_model(manifest) -> str | None:
    """The manifest's models key of the bundle's static int8 QDQ model, which OpenVINO runs as int8:
    "int8_static" (--int8-scheme both), "int8" in a static bundle from before the integer-operator form,
    else None (onnxruntime's integer operators, the dynamic scheme: OpenVINO would run them as float)."""
    if STATIC_INT8_MODEL in manifest.models:
        return STATIC_INT8_MODEL
    section = manifest.extra.get("int8") or {}
    if "int8" in manifest.models and section.get("scheme") == STATIC_INT8 and section.get("form") != INTEGER_OPERATORS:
        return "int8"
    return None


def runs_on_openvino(precision: str, manifest) -> bool:
    """Whether OpenVINO can run this precision of this bundle as it should (see the module doc)."""
    if fused_moe(manifest):
        return False
    return precision in ("fp32", "bf16") or (precision == "int8" and static_int8_model(manifest) is not None)


def auto_takes_openvino(precision: str, manifest) -> bool:
    """providers="auto": OpenVINO for bf16, which only it runs, and for a static bundle from before the
    integer-operator form, whose one (QDQ) int8 model onnxruntime runs at about its fp32 speed (full-size
    v1.5: 0.24x its dynamic int8). Every other int8 model stays on onnxruntime: on varied traffic
    (full-size v1.5, calls of 1-32 texts of 4-200 words) OpenVINO's int8 held 900-1,024 MB of RSS over
    1,000 calls against onnxruntime's flat 401-403 MB, for 0.88 s a call against 0.92 (each new batch
    shape costs it a compilation; with its per-shape cache off: 1.21 s, 880 MB); its speed shows on
    repeated shapes (BENCHMARKS.md). It runs when asked for with providers="openvino", as fp32 does
    (about as fast as onnxruntime, and it grew with the shapes a long-running process met)."""
    if fused_moe(manifest):
        return False
    return precision == "bf16" or (precision == "int8" and static_int8_model(manifest) == "int8")


def check_request(precision: str, manifest, openvino_requested: bool) -> None:
    """Clear errors for what cannot run, before anything is loaded."""
    if precision == "bf16":
        if not available():
            raise InputError(f"precision 'bf16' runs on OpenVINO, which is not installed: {INSTALL_HINT}")
        if not cpu_has_bf16():
            raise InputError("precision 'bf16' needs a CPU with AVX512_BF16 or AMX (Intel Sapphire Rapids and later, "
                             "AMD Zen 4 and later); this one has neither: use 'fp32' or 'int8'")
        if manifest.extra.get("moe"):  # (fused MoE included: OpenVINO cannot convert it either)
            raise InputError("bf16 is not offered for MoE bundles: on the v2-moe test fixture its vectors fall below "
                             "the 0.999 cosine to fp32 that bf16 promises (0.9986); use 'fp32' or 'int8'")
        if "fp32" not in manifest.models:
            raise InputError(f"bf16 runs the bundle's fp32 model, and this bundle has none; it has "
                             f"{sorted(manifest.models)}")
    if openvino_requested:
        if not available():
            raise InputError(f"providers='openvino' needs OpenVINO: {INSTALL_HINT}")
        if precision == "fp16":
            raise InputError("OpenVINO runs fp32, bf16 and static int8 here, not fp16 (a GPU precision)")
        if fused_moe(manifest):
            raise InputError("this bundle was exported with --moe fused (onnxruntime's com.microsoft.MoE), which "
                             "OpenVINO cannot convert: use providers='cpu', or re-export with --moe sparse")
        if not runs_on_openvino(precision, manifest):
            raise InputError("this bundle's int8 model is written for onnxruntime, which OpenVINO runs as float "
                             "(slower than onnxruntime), and it has no int8 model for OpenVINO: re-export it with "
                             "--int8-scheme both, or use providers='cpu'")


@dataclass(frozen=True)
class NodeArg:
    """The two fields of onnxruntime's NodeArg that the runtime reads."""
    name: str
    shape: list


class OpenVINOSession:
    """A compiled OpenVINO model behind the part of onnxruntime's InferenceSession the runtime uses."""

    def __init__(self, path: Path, hint: str = "f32", threads: int | None = None):
        """hint: INFERENCE_PRECISION_HINT, "f32" or "bf16" (inference_precision)."""
        import openvino as ov

        if hint not in ("f32", "bf16"):
            raise ValueError(f"hint must be 'f32' or 'bf16', not {hint!r}")
        config = {"PERFORMANCE_HINT": "LATENCY",  # 1.6-2x THROUGHPUT for one request on 2 cores
                  "INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        try:
            self._compiled = core.compile_model(os.fspath(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise BundleError(f"OpenVINO cannot load {path}: {exc}") from exc
        self._requests = threading.local()  # an InferRequest runs one inference at a time: one per thread
        self.precision_hint = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "f32", "bf16"

    def get_inputs(self) -> list[NodeArg]:
        return [NodeArg(port.any_name, _shape(port)) for port in self._compiled.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg(port.any_name, _shape(port)) for port in self._compiled.outputs]

    def get_providers(self) -> list[str]:
        return [OPENVINO]

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        results = request.infer(feeds)
        by_name = {port.any_name: value for port, value in results.items()}
        return [np.array(by_name[name], dtype=np.float32, copy=True) for name in output_names]


def _shape(port) -> list:
    return [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
