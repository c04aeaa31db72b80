"""The peers and load generator of bench/serve.py (its runs are benchmarks, in `make bench`): the infinity
peer's pins, the sitecustomize that gives its ONNX Runtime sessions the same threads as
`edge-embed serve --threads N`, and the clients that drive a server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "bench" / "peers"


def test_infinity_pins_are_exact_and_keep_numpy_below_2():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import infinity_peer
    finally:
        sys.path.remove(str(REPO / "bench"))
    lines = [ln for ln in (PEERS / "infinity.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines and all("==" in ln for ln in lines), [ln for ln in lines if "==" not in ln]
    pins = dict(ln.split("==") for ln in lines)
    assert pins["infinity-emb[server,optimum]"] == infinity_peer.VERSION
    assert int(pins["numpy"].split(".")[0]) < 2  # what infinity-emb requires, hence its own venv
    assert not any(name.startswith("torch") for name in pins)  # installed first, the CPU build
    assert infinity_peer.pinned()["onnxruntime"] == pins["onnxruntime"]


def session_threads(onnx_file: Path, env: dict, code: str = "None") -> list[int]:
    script = ("import onnxruntime as ort, sys\n"
              f"s = ort.InferenceSession(sys.argv[1], {code}, providers=['CPUExecutionProvider'])\n"
              "o = s.get_session_options()\n"
              "print(o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level)\n")
    out = subprocess.run([sys.executable, "-c", script, str(onnx_file)], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120, check=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.parametrize("threads", [1, 3])
def test_ort_threads_shim_sets_every_sessions_threads(bundle, threads):
    b = bundle("nomic-v15-tiny")
    onnx_file = next(b / f for f in json.loads((b / "edge_embed.json").read_text())["models"]["fp32"]
                     if f.endswith(".onnx"))
    shim = {"PYTHONPATH": str(PEERS / "ort_threads"), "EDGE_BENCH_ORT_THREADS": str(threads)}
    assert session_threads(onnx_file, shim)[:2] == [threads, 1]
    # options the caller passes (as optimum does) are kept, only the thread counts are set
    options = "(lambda o: (setattr(o, 'log_severity_level', 3), o)[1])(ort.SessionOptions())"
    assert session_threads(onnx_file, shim, options) == [threads, 1, 3]
    # without the variable the shim leaves ONNX Runtime's default (0: one per physical core)
    assert session_threads(onnx_file, {"PYTHONPATH": str(PEERS / "ort_threads")})[:2] == [0, 0]


def test_every_bench_module_imports():
    # a module of bench/ that no longer matches its neighbours (a name it imports was renamed) fails
    # here, not hours into `make bench`
    names = sorted(p.stem for p in (REPO / "bench").glob("*.py"))
    code = "import importlib, sys\n" f"sys.path[:0] = {[str(REPO / 'bench'), str(REPO / 'tests'), str(REPO)]!r}\n" \
           f"for name in {names!r}: importlib.import_module(name)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]


def test_serve_bench_load_generator_answers_every_request(minilm_bundle, tmp_path):
    """bench/serve.py's clients (aiohttp) against a real server: every request answered, each counted once."""
    import asyncio

    from serving import Server

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import serve
    finally:
        sys.path.remove(str(REPO / "bench"))
    requests = [[f"query number {i}"] * (1 + i % 3) for i in range(24)]
    with Server(str(minilm_bundle), "--threads", "1", log_dir=tmp_path) as server:
        async def drive():
            http = await serve.open_client(server.url)
            try:
                await serve.send_all(http, requests, clients=8)
            finally:
                await http.close()

        asyncio.run(drive())
        assert server.metric("edge_embed_requests_total", route="/v1/embeddings", status="200") == len(requests)
        assert server.metric("edge_embed_tokens_total", model=minilm_bundle.name) > 0
