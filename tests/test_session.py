"""Provider and precision selection (the CUDA path is decided here, testable on a CPU machine)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import texts

from edge_embed import Embedder, InputError, ProviderWarning
from edge_embed.batching import BatchLimits
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


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")  # onnxruntime's own, expected
def test_a_listed_gpu_that_does_not_start_means_cpu_and_int8_under_auto(bundle, monkeypatch):
    # onnxruntime-gpu lists CUDA even where the CUDA libraries are missing, then runs the session on
    # the CPU alone. Here a CPU build lists it (monkeypatched) and drops it the same way.
    name = "nomic-v15-tiny"
    monkeypatch.setattr(ort, "get_available_providers", lambda: WITH_CUDA)
    with pytest.warns(ProviderWarning, match="could not start CUDAExecutionProvider.*running on the CPU"):
        model = Embedder(bundle(name), providers="auto")  # a GPU would have meant fp32
    assert model.providers == model.session.get_providers() == ["CPUExecutionProvider"]
    assert model.precision == "int8" and model.batch_limits == BatchLimits.for_provider("CPUExecutionProvider")
    lines = texts(name)
    np.testing.assert_allclose(model.embed(lines), Embedder(bundle(name), providers="cpu").embed(lines), atol=1e-6)
    with pytest.raises(InputError, match="could not start CUDAExecutionProvider.*or pass providers='cpu'"):
        Embedder(bundle(name), providers="cuda")
