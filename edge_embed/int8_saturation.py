"""Static int8 on x86 CPUs without VNNI: 7-bit activations, so that no int16 sum saturates.

onnxruntime's u8 x s8 kernels on x86 without VNNI (AVX2, AVX-512 before Cascade Lake) multiply with
vpmaddubsw, which adds each pair of products in int16: 255 x 127 x 2 overflows it. The dynamic
scheme avoids that with 7-bit weights (export/quantize.py); the static scheme keeps NNCF's 8-bit
weights (all-MiniLM-L6-v2: worst validation text 0.988 against 0.973 with 7-bit ones) and, on such a
CPU, gives every activation quantizer twice its scale and half its zero point instead: activations
in 0..127, the same range of values at half the resolution, and 127 x 127 x 2 fits. The new values
replace the model's initializers when the session is created (onnxruntime's add_initializer); the
bundle's files are not touched. CPUs with VNNI (vpdpbusd sums in int32) and non-x86 CPUs run the
model as written.
"""
from __future__ import annotations

import platform

import numpy as np

from edge_embed.cpu import cpu_flags
from edge_embed.manifest import INTEGER_OPERATORS

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_saturates_u8s8(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """Whether onnxruntime's u8 x s8 kernels on this CPU add products in int16 (x86 without VNNI)."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86:
        return False
    flags = cpu_flags(cpuinfo)
    if flags is not None:
        return not any(flag in flags for flag in VNNI_FLAGS)
    return not _numpy_sees_vnni()  # macOS, Windows: numpy's view of the CPU; unknown -> saturates


def _numpy_sees_vnni() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return False
    return bool(features.get("AVX512VNNI"))


def seven_bit_activations(manifest, precision: str, provider: str, saturates: bool | None = None) -> dict:
    """{initializer name: new value} for this precision of this bundle on this CPU; {} when none is needed."""
    section = manifest.extra.get("int8") or {}
    if precision != "int8" or provider != "CPUExecutionProvider" or section.get("form") != INTEGER_OPERATORS:
        return {}
    if section.get("weight_bits", 8) <= 7 or not (cpu_saturates_u8s8() if saturates is None else saturates):
        return {}
    values = {}
    for scale_name, scale, zero_name, zero in section.get("activation_quantizers") or []:
        values[scale_name] = np.array(2 * scale, dtype=np.float32)
        values[zero_name] = np.array(min(127, (zero + 1) // 2), dtype=np.uint8)
    return values
