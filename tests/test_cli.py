"""The edge-embed and python -m export commands, run as a user runs them (subprocesses)."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
from conftest import texts

from edge_embed import Embedder

V2 = "nomic-v2moe-tiny"


def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin.encode() if stdin else None,
                          capture_output=True, timeout=300)


def test_embed_multilingual_texts_from_stdin_as_npy(bundle):
    lines = texts(V2)
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle(V2)), "--task", "search_document",
                 "--dim", "16", "--precision", "fp32", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr.decode()
    got = np.load(io.BytesIO(result.stdout))
    want = Embedder(bundle(V2), precision="fp32").embed(lines, task="search_document", dim=16)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert b"embedded 10 texts" in result.stderr


def test_embed_binary_jsonl_from_a_file(bundle, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("first line\n\nsecond line\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")), "--input",
                 str(source), "--output", str(out), "--format", "jsonl", "--binary", "--dim", "32")
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(len(r) == 4 for r in rows)  # blank line skipped; 32 bits = 4 bytes


def test_bad_arguments_give_one_line_errors(bundle, tmp_path):
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")),
                 "--task", "summarize", stdin="hello\n")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("error: unknown task 'summarize'")
    result = run("-m", "edge_embed.cli", "embed", "--model", str(tmp_path), stdin="hello\n")
    assert result.returncode == 1 and b"Traceback" not in result.stderr


def test_info(bundle):
    result = run("-m", "edge_embed.cli", "info", str(bundle(V2)))
    assert result.returncode == 0
    out = result.stdout.decode()
    assert "nomic-embed-text-v2-moe" in out and "11..32" in out and "validation   fp32" in out
    assert re.search(r"model        int8: model.int8.onnx \([\d.]+ MB, dynamic scheme\)", out), out


def test_python_m_export_writes_a_working_bundle(checkpoint, tmp_path):
    out = tmp_path / "bundle"
    result = run("-m", "export", str(checkpoint("nomic-v15-tiny")), "--out", str(out), "--no-int8")
    assert result.returncode == 0, result.stderr.decode()
    assert b"[validate] fp32: max-abs" in result.stdout + result.stderr
    assert Embedder(out, precision="fp32").embed(["hello"]).shape == (1, 64)


def test_runtime_never_imports_torch(bundle):
    code = (
        "import sys; from edge_embed import Embedder; import edge_embed.cli, edge_embed.evaluate; "
        f"Embedder({str(bundle('nomic-v15-tiny'))!r}).embed(['x']); "
        "edge_embed.cli.parser(); assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = run("-c", code)
    assert result.returncode == 0, result.stderr.decode()
