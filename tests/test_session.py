"""Provider and precision selection (the CUDA path is decided here, testable on a CPU machine)."""
from __future__ import annotations

import pytest

from edge_embed import InputError
from edge_embed.session import resolve_precision, resolve_providers

CPU_ONLY = ["CPUExecutionProvider"]
WITH_CUDA = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_picks_cuda_when_present_and_keeps_cpu_as_fallback():
    assert resolve_providers("auto", WITH_CUDA) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", CPU_ONLY) == ["CPUExecutionProvider"]


def test_explicit_choices():
    assert resolve_providers("cpu", WITH_CUDA) == ["CPUExecutionProvider"]
    assert resolve_providers("cuda", WITH_CUDA) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["CUDAExecutionProvider"], WITH_CUDA)[0] == "CUDAExecutionProvider"


def test_unavailable_provider_says_how_to_get_it():
    with pytest.raises(InputError, match=r"not available.*edge-embed\[gpu\]"):
        resolve_providers("cuda", CPU_ONLY)
    with pytest.raises(InputError, match="providers must be"):
        resolve_providers(3, CPU_ONLY)


def test_auto_precision_is_int8_on_cpu_and_float_on_gpu():
    cpu, gpu = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_precision("auto", cpu, ["fp32", "int8"]) == "int8"
    assert resolve_precision("auto", gpu, ["fp32", "int8"]) == "fp32"
    assert resolve_precision("auto", gpu, ["fp32", "int8", "fp16"]) == "fp16"
    assert resolve_precision("auto", cpu, ["fp32"]) == "fp32"
    assert resolve_precision("int8", gpu, ["fp32", "int8"]) == "int8"  # explicit wins
