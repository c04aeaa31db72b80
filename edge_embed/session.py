"""The one place that creates ONNX Runtime sessions: providers, precision, threads, options."""
from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path

import onnxruntime as ort

from edge_embed import openvino_backend
from edge_embed.errors import BundleError, InputError
from edge_embed.manifest import MODEL_PRECISIONS

GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider")
PRECISIONS = ("auto", "int8", "fp32", "fp16", "bf16")  # bf16: the fp32 model on OpenVINO, by name only


def resolve_providers(providers: str | list[str] = "auto", available: list[str] | None = None) -> list[str]:
    """"auto" -> the first GPU provider present, then CPU; an explicit list is checked.

    CPU is always appended last so nodes a GPU provider lacks still run.
    """
    available = list(ort.get_available_providers() if available is None else available)
    if providers == "auto":
        chosen = [p for p in GPU_PROVIDERS if p in available][:1]
    elif providers == "cpu":
        chosen = []
    elif providers in ("cuda", "gpu"):
        chosen = ["CUDAExecutionProvider"]
    elif isinstance(providers, (list, tuple)) and all(isinstance(p, str) for p in providers):
        chosen = [p for p in providers if p != "CPUExecutionProvider"]
    else:
        raise InputError("providers must be 'auto', 'cpu', 'cuda', 'openvino' or a list of provider names, "
                         f"not {providers!r}")
    missing = [p for p in chosen if p not in available]
    if missing:
        hint = " (pip install edge-embed[gpu] for CUDA)" if "CUDAExecutionProvider" in missing else ""
        raise InputError(
            f"execution provider(s) {missing} are not available in this onnxruntime; "
            f"available: {available}{hint}"
        )
    return chosen + ["CPUExecutionProvider"]


def resolve_path(providers: str | list[str], precision: str, manifest) -> tuple[list[str], str]:
    """(providers, precision) that run: onnxruntime's providers, or [OPENVINO] for OpenVINO.

    providers="openvino" asks for OpenVINO; "auto" takes it where it is installed, no GPU provider
    was chosen and the precision is bf16 or a static int8 (openvino_backend.auto_takes_openvino)."""
    wants_openvino = providers == "openvino"
    chosen = [openvino_backend.OPENVINO] if wants_openvino else resolve_providers(providers)
    if wants_openvino and precision == "auto":  # its fastest: static int8, else fp32
        precision = "int8" if openvino_backend.static_int8_model(manifest) else "fp32"
    precision = resolve_precision(precision, chosen, [key for key in manifest.models if key in MODEL_PRECISIONS])
    openvino_backend.check_request(precision, manifest, wants_openvino)
    on_cpu = chosen[0] == "CPUExecutionProvider"
    if precision == "bf16" and providers not in ("auto", "openvino"):
        raise InputError(f"precision 'bf16' runs on OpenVINO; pass providers='auto' or 'openvino', not {providers!r}")
    if (providers == "auto" and on_cpu and openvino_backend.available()
            and openvino_backend.auto_takes_openvino(precision, manifest)):
        chosen = [openvino_backend.OPENVINO]
    return chosen, precision


def model_key(manifest, precision: str, provider: str) -> str:
    """The manifest's models key of what a precision runs on a provider: bf16 computes with the fp32
    model; int8 on OpenVINO is the static model (a dynamic one OpenVINO would run as float)."""
    if precision == "bf16":
        return "fp32"
    if precision == "int8" and provider == openvino_backend.OPENVINO:
        return openvino_backend.static_int8_model(manifest) or precision
    return precision


def resolve_precision(precision: str, providers: list[str], bundled: list[str]) -> str:
    """"auto" -> int8 on CPU (dynamic int8 is a CPU optimisation), fp16 then fp32 on a GPU."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "bf16":
        return precision  # needs the fp32 model and OpenVINO: openvino_backend.check_request
    if precision == "auto":
        on_gpu = providers[0] not in ("CPUExecutionProvider", openvino_backend.OPENVINO)
        preference = ("fp16", "fp32", "int8") if on_gpu else ("int8", "fp32", "fp16")
        for candidate in preference:
            if candidate in bundled:
                return candidate
    if precision not in bundled:
        raise InputError(f"this bundle has no {precision} model; it has {sorted(bundled)}")
    return precision


def release_tuple(version: str) -> tuple[int, ...]:
    """"1.28.0" -> (1, 28, 0); "1.25.0.dev20260417008" -> (1, 25, 0)."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def check_onnxruntime(requirement: dict[str, str] | None, precision: str, installed: str | None = None) -> None:
    """A bundle's model that needs a newer onnxruntime than this one fails here, with what to do,
    rather than deep inside onnxruntime's graph checks."""
    installed = installed or ort.__version__
    if requirement and release_tuple(installed) < release_tuple(requirement["version"]):
        why = f" ({requirement['why']})" if requirement.get("why") else ""
        raise BundleError(
            f"this bundle's {precision} model needs onnxruntime >= {requirement['version']}{why}, and this is "
            f"onnxruntime {installed}: pip install -U 'onnxruntime>={requirement['version']}', or pick "
            "another precision"
        )


# Graph fusions that make our models slower on CPU. SkipLayerNormFusion turns Add +
# LayerNormalization into SkipLayerNormalization, whose CPU kernel (onnxruntime 1.32, fp32) is a
# scalar loop: 4x the time of the pair it replaces (v1.5 int8: ~5% of a 128-token batch), with a
# one-pass variance, less exact than LayerNormalization's. Only CPU sessions drop it (the CUDA
# kernel was not measured).
CPU_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def create_session(path: Path, providers: list[str], threads: int | None = None,
                   openvino_hint: str = "f32", initializers: dict | None = None) -> ort.InferenceSession:
    """onnxruntime's session, or OpenVINO's behind the same interface (openvino_hint: its precision hint).
    initializers: {name: array} that replace the model's (edge_embed/int8_saturation.py)."""
    if providers[0] == openvino_backend.OPENVINO:
        return openvino_backend.OpenVINOSession(path, openvino_hint, threads)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT warnings about unused initializers are noise to users
    replaced = [ort.OrtValue.ortvalue_from_numpy(value) for value in (initializers or {}).values()]
    for name, value in zip(initializers or {}, replaced):
        options.add_initializer(name, value)  # (the values must outlive the session: kept on it below)
    # Memory: the CPU arena stays on. For one 8192-token v1.5 text the peak RSS is ~0.7 GB with
    # it and ~0.9 GB without (malloc keeps freed blocks too); the attention itself is bounded
    # by the exporter (flash attention, export/attention_fused.py), not by session options.
    disabled = CPU_DISABLED_OPTIMIZERS if providers[0] == "CPUExecutionProvider" else []
    try:
        session = ort.InferenceSession(
            os.fspath(path), sess_options=options, providers=providers, disabled_optimizers=disabled
        )
    except Exception as exc:
        raise BundleError(f"onnxruntime cannot load {path}: {exc}") from exc
    session.replaced_initializers = replaced
    release_freed_heap()
    return session


def arena_shrinking_run() -> ort.RunOptions:
    """RunOptions that give the CPU arena's free chunks back to the OS at the end of the run.

    onnxruntime's arena keeps the largest buffers it ever allocated. Batches are planned within a
    token budget, so the arena settles at the size of the largest batch; one text longer than the
    budget would raise that size for the life of the process (v1.5 int8: one 8192-token text leaves
    a process at 690 MB instead of 400 MB). Used only for such batches: shrinking after every batch
    would make the next one allocate again."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def release_freed_heap() -> None:
    """Give the heap that loading freed back to the OS.

    Loading parses the whole model file into memory and frees it once the weights are in place,
    but glibc keeps freed blocks mapped: the v1.5 int8 bundle's process stays 80 MB larger (270 vs
    190 MB RSS) until malloc_trim returns them. Other C libraries (macOS, Windows, musl) have no
    malloc_trim; there the call is skipped."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
