"""bench/isa.py: the copy of onnxruntime that takes its AVX2 kernels still computes the same thing."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import isa  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None or os.uname().machine != "x86_64",
                                reason="needs objdump on x86-64")

# An int8 GEMM and an fp32 GEMM: the two kernel families the AVX2 copy switches.
_RUN = r"""
import json, sys
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
rng = np.random.default_rng(0)
a = rng.standard_normal((64, 256), dtype=np.float32)
b = rng.standard_normal((256, 128), dtype=np.float32)
b8 = rng.integers(-64, 64, (256, 128), dtype=np.int8)
nodes = [helper.make_node("MatMul", ["A", "B"], ["Y"]),
         helper.make_node("DynamicQuantizeMatMul", ["A", "B8", "s", "zp"], ["Q"], domain="com.microsoft")]
graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [64, 256])],
    [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [64, 128]),
     helper.make_tensor_value_info("Q", TensorProto.FLOAT, [64, 128])],
    initializer=[numpy_helper.from_array(b, "B"), numpy_helper.from_array(b8, "B8"),
                 numpy_helper.from_array(np.full(128, 0.01, np.float32), "s"),
                 numpy_helper.from_array(np.zeros(128, np.int8), "zp")])
model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18),
                                                                helper.make_opsetid("com.microsoft", 1)])
sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
y, q = sess.run(None, {"A": a})
print(json.dumps({"file": ort.__file__, "y": y.ravel()[:512].tolist(), "q": q.ravel()[:512].tolist()}))
"""


def _run(pythonpath: str | None) -> dict:
    env = {**os.environ}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def avx2_root(tmp_path_factory):
    return isa.avx2_onnxruntime(tmp_path_factory.mktemp("isa") / "ort")


def test_avx2_copy_patches_every_xgetbv_and_computes_the_same(avx2_root):
    root = avx2_root
    libraries = [p for p in (root / "onnxruntime" / "capi").iterdir() if ".so" in p.name]
    assert libraries
    for library in libraries:
        assert isa.xgetbv_offsets(library) == [], library.name  # none left to report AVX-512

    native, avx2 = _run(None), _run(str(root))
    assert avx2["file"].startswith(str(root)) and not native["file"].startswith(str(root))
    np.testing.assert_allclose(avx2["y"], native["y"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(avx2["q"], native["q"], rtol=1e-5, atol=1e-4)


def test_the_copy_is_made_once(avx2_root):
    stamp = next(avx2_root.glob("onnxruntime-*.patched"))
    before = stamp.stat().st_mtime_ns
    assert isa.avx2_onnxruntime(avx2_root) == avx2_root
    assert stamp.stat().st_mtime_ns == before


def test_a_library_without_xgetbv_at_the_listed_offset_is_refused(tmp_path, monkeypatch):
    library = tmp_path / "lib.so"
    library.write_bytes(b"\x90" * 64)
    monkeypatch.setattr(isa, "xgetbv_offsets", lambda _: [8])
    with pytest.raises(RuntimeError, match="no xgetbv at 0x8"):
        isa.hide_avx512(library)
