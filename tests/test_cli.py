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
    source.write_text("first line\nsecond line\n\n\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")), "--input",
                 str(source), "--output", str(out), "--format", "jsonl", "--binary", "--dim", "32")
    assert result.returncode == 0, result.stderr.decode()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # trailing blank lines ignored; 32 bits = 4 bytes, the packed sign bits of each line's own embedding
    want = Embedder(bundle("nomic-v15-tiny"), precision="int8").embed(["first line", "second line"], dim=32,
                                                                      binary=True)
    assert rows == want.tolist()


def test_rows_are_lines_whatever_else_the_lines_hold(bundle):
    """Only newlines end a text: form feeds (pdftotext page breaks), U+2028 and a lone CR do not."""
    lines = ["first line", "second\x0cpage two", "third \u2028 sep", "fourth\rcarriage", "fifth\x1ddoc"]
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")),
                 stdin="\r\n".join(lines) + "\r\n")
    assert result.returncode == 0, result.stderr.decode()
    want = Embedder(bundle("nomic-v15-tiny")).embed(lines)
    np.testing.assert_allclose(np.load(io.BytesIO(result.stdout)), want, atol=1e-6)


def test_classic_mac_line_ends_are_lines(bundle):
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")), stdin="one\rtwo\rthree\r")
    assert result.returncode == 0, result.stderr.decode()
    want = Embedder(bundle("nomic-v15-tiny")).embed(["one", "two", "three"])
    np.testing.assert_allclose(np.load(io.BytesIO(result.stdout)), want, atol=1e-6)


def test_npy_goes_to_exactly_the_file_named(bundle, tmp_path):
    out = tmp_path / "vectors.bin"
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")), "--output", str(out),
                 stdin="one\ntwo\nthree\n")
    assert result.returncode == 0, result.stderr.decode()
    assert np.load(out).shape == (3, 64) and not (tmp_path / "vectors.bin.npy").exists()


def test_input_problems_are_one_line_errors_before_any_work(bundle, tmp_path):
    model = str(bundle("nomic-v15-tiny"))
    cases = [
        ({"stdin": "first\n\nthird\n"}, [], "error: line 2 of standard input is blank"),
        ({}, ["--input", str(tmp_path / "latin1.txt")], "is not UTF-8 (line 2)"),
        ({"stdin": "x\n"}, ["--output", str(tmp_path / "no" / "such" / "dir.npy")], "does not exist"),
        ({"stdin": "x\n"}, ["--output", str(tmp_path)], "is a directory"),
        ({"stdin": "\n\n"}, [], "error: no texts in standard input"),
        ({"stdin": "word " * 8300}, ["--truncation", "error"], "--truncation truncate|chunk"),
    ]
    (tmp_path / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    for kwargs, extra, message in cases:
        result = run("-m", "edge_embed.cli", "embed", "--model", model, *extra, **kwargs)
        stderr = result.stderr.decode()
        assert result.returncode == 1 and message in stderr and "Traceback" not in stderr, (extra, stderr)


def test_truncation_warning_is_one_line(bundle):
    result = run("-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")), "--format", "jsonl",
                 stdin="short\n" + "word " * 8300 + "\n")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert stderr.startswith("warning: 1 of 2 texts were longer than") and "TruncationWarning" not in stderr, stderr


def test_a_closed_pipe_ends_quietly(bundle):
    proc = subprocess.Popen([sys.executable, "-m", "edge_embed.cli", "embed", "--model", str(bundle("nomic-v15-tiny")),
                             "--format", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(("".join(f"text number {i}\n" for i in range(3000))).encode())  # ~4 MB of JSON out
    proc.stdin.close()
    assert proc.stdout.readline().startswith(b"[")
    proc.stdout.close()  # like `| head -1`
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in stderr, stderr


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
    assert "moe          sparse: top-2 of 8 experts" in out


def test_info_flags_a_missing_model_file(copy_bundle):
    target = copy_bundle()
    (target / "model.int8.onnx").unlink()
    result = run("-m", "edge_embed.cli", "info", str(target))
    assert result.returncode == 0
    out = result.stdout.decode()
    assert re.search(r"model        int8: model.int8.onnx \(0.0 MB, .*MISSING: model.int8.onnx\)", out), out


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


def test_eval_without_data_or_with_an_empty_folder_says_so(bundle, tmp_path):
    model = str(bundle("nomic-v15-tiny"))
    result = run("-m", "edge_embed.cli", "eval", "--model", model)
    assert result.returncode == 1 and b"nothing to evaluate: pass --sts" in result.stderr
    result = run("-m", "edge_embed.cli", "eval", "--model", model, "--retrieval", str(tmp_path))
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "cannot read" in stderr and "corpus.jsonl" in stderr, stderr
    assert "Traceback" not in stderr
