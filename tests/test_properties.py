"""Property-based tests (hypothesis): any text a user can type, through `embed` and the CLI, and
any damage to a manifest. The runtime answers with a result of the right shape (finite, unit norm
or the right packed width) or with its own error (InputError, BundleError), never another
exception, never NaN. 2,000 generated cases per property, on the tiny fixture bundle."""
from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import unicodedata
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import edge_embed
from edge_embed import BundleError, Embedder, InputError
from edge_embed.cli import main as cli_main
from edge_embed.manifest import MANIFEST_NAME

V15 = "nomic-v15-tiny"
MAX_LENGTH = 16  # small: chunking and truncation are exercised by short texts
CASES = settings(max_examples=int(os.environ.get("EDGE_EMBED_EXAMPLES", 2000)), deadline=None,
                 suppress_health_check=list(HealthCheck), derandomize=True)

WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()] + ["\u200b", "\u2060", "\ufeff"]
SPECIAL = (
    [chr(c) for c in range(32)] + ["\x7f", "\x85", "\u0300", "\u0301", "\u036f", "\u20dd", "\u05d0", "\u0627",
                                   "\u200f", "\u202e", "\u2066", "\U0001f600", "\U0001f469\u200d\U0001f4bb",
                                   "\U0001f1fa\U0001f1f3", "\ud800", "\udfff", "\ufffd", "\uffff", "\U0010ffff"]
    + WHITESPACE
)
LONG_WORD = "x" * 50_000
LONG_TEXTS = [LONG_WORD, "\u05e9\u05dc\u05d5\u05dd " * 5000, ("e\u0301" * 25_000), "\U0001f600" * 50_000,
              " " * 50_000 + "a"]

pieces = st.one_of(st.characters(exclude_categories=()), st.sampled_from(SPECIAL))  # emoji sequences: several


def typed(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(pieces, max_size=max_size).map("".join)


text = st.one_of(typed(40), st.sampled_from(LONG_TEXTS))


@pytest.fixture(scope="module")
def models(bundle):
    path = bundle(V15)
    return {precision: Embedder(path, precision=precision, max_length=MAX_LENGTH) for precision in ("fp32", "int8")}


def _check_result(result: np.ndarray, count: int, dim: int, binary: bool) -> None:
    if binary:
        assert result.dtype == np.uint8 and result.shape == (count, dim // 8)
        return
    assert result.dtype == np.float32 and result.shape == (count, dim)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, atol=1e-4)


@CASES
@given(texts=st.lists(text, min_size=0, max_size=4), precision=st.sampled_from(["fp32", "int8"]),
       task=st.sampled_from([None, "search_query", "search_document", "clustering", "classification", "query",
                             "passage", "nonsense"]),
       dim=st.one_of(st.none(), st.integers(0, 80)), binary=st.booleans(),
       truncation=st.sampled_from(["truncate", "error", "chunk", "cut"]))
def test_embed_gives_vectors_or_input_error_for_any_text(models, texts, precision, task, dim, binary, truncation):
    model = models[precision]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TruncationWarning
        try:
            result = model.embed(texts, task=task, dim=dim, binary=binary, truncation=truncation)
        except InputError:
            return
    _check_result(result, len(texts), dim or model.dims[1], binary)
    # what must be refused was refused
    assert all(t.strip() for t in texts) and task != "nonsense" and truncation != "cut"
    assert not any("\ud800" <= c <= "\udfff" for t in texts for c in t)


# ------------------------------------------------------------------------------------------- the CLI

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "shift_jis", "koi8-r"]


def _run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    """edge_embed.cli.main in this process, with stdin, stdout and stderr as a terminal gives them."""
    stdout, stderr = io.BytesIO(), io.StringIO()
    with mock.patch.object(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin))), \
            mock.patch.object(sys, "stdout", io.TextIOWrapper(stdout)), mock.patch.object(sys, "stderr", stderr), \
            warnings.catch_warnings():
        code = cli_main(argv)
        sys.stdout.flush()
        return code, stdout.getvalue(), stderr.getvalue()


def _expected_lines(data: bytes) -> list[str] | None:
    """The texts the CLI should embed, worked out here from its documented rules; None if it must refuse."""
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\n" not in decoded:
        decoded = decoded.replace("\r", "\n")
    lines = [line.removesuffix("\r") for line in decoded.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines if lines and all(line.strip() for line in lines) else None


@pytest.fixture(scope="module")
def shared_embedder(bundle):
    """Every in-process CLI call gets the same real Embedder (loading one per case would take most of the time)."""
    real, loaded = edge_embed.Embedder, {}

    def embedder(path, **options):
        key = (str(path), tuple(sorted(options.items())))
        if key not in loaded:
            loaded[key] = real(path, **options)
        return loaded[key]

    with mock.patch.object(edge_embed, "Embedder", embedder):
        yield bundle(V15)


@CASES
@given(lines=st.lists(typed(30), min_size=0, max_size=4),
       encoding=st.sampled_from(ENCODINGS), ending=st.sampled_from(["\n", "\r\n", "\r"]),
       from_file=st.booleans(), dim=st.sampled_from([None, 8, 16, 7]), binary=st.booleans(),
       truncation=st.sampled_from(["truncate", "chunk", "error"]))
def test_the_cli_embeds_any_lines_or_says_why_not(shared_embedder, tmp_path_factory, lines, encoding, ending,
                                                 from_file, dim, binary, truncation):
    data = ending.join(lines).encode(encoding, errors="surrogatepass" if encoding.startswith("utf-8") else "replace")
    argv = ["embed", "--model", str(shared_embedder), "--precision", "fp32", "--truncation", truncation]
    argv += ["--dim", str(dim)] * (dim is not None) + ["--binary"] * binary
    if from_file:
        path = tmp_path_factory.mktemp("lines") / "texts.txt"
        path.write_bytes(data)
        argv += ["--input", str(path)]
    code, out, err = _run_cli(argv, b"" if from_file else data)
    expected = _expected_lines(data)
    assert code in (0, 1) and "Traceback" not in err, err
    if expected is None or (binary and dim == 7):  # not UTF-8, a blank line, no text, or a bad dim
        assert code == 1 and err.startswith("error: "), err
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            assert "is not UTF-8" in err, err
        return
    assert code == 0, err
    _check_result(np.load(io.BytesIO(out)), len(expected), dim or 64, binary)


def test_the_cli_refuses_other_encodings_in_a_real_process(bundle, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me\nna\u00efve\n".encode("latin-1"))
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("hello\nworld\n".encode("utf-16"))
    for source, line in ((path, 1), (utf16, 1)):
        result = subprocess.run([sys.executable, "-m", "edge_embed.cli", "embed", "--model", str(bundle(V15)),
                                 "--input", str(source)], capture_output=True, timeout=300)
        assert result.returncode == 1
        assert f"{source} is not UTF-8 (line {line}); convert it first".encode() in result.stderr
        assert b"Traceback" not in result.stderr


def test_the_cli_embeds_hostile_stdin_in_a_real_process(bundle):
    lines = ["nul\x00inside", "\u202eright-to-left override", "e\u0301\u0301\u0301 combining", "\U0001f600 emoji",
             "\x1b[31mterminal escape\x1b[0m", "x" * 50_000]
    result = subprocess.run([sys.executable, "-m", "edge_embed.cli", "embed", "--model", str(bundle(V15)),
                             "--truncation", "chunk", "--dim", "16"],
                            input="\n".join(lines).encode(), capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    vectors = np.load(io.BytesIO(result.stdout))
    _check_result(vectors, len(lines), 16, False)
    surrogate = subprocess.run([sys.executable, "-m", "edge_embed.cli", "embed", "--model", str(bundle(V15))],
                               input="ok\nlone \ud800 surrogate\n".encode("utf-8", "surrogatepass"),
                               capture_output=True, timeout=300)
    assert surrogate.returncode == 1 and b"is not UTF-8 (line 2)" in surrogate.stderr


# -------------------------------------------------------------------------------- damaged manifests

HUGE_STRING = "x" * 100_000
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.integers(-3, 100_000),
              st.sampled_from([0, 1, -1, 7, 8, 64, 2**31, 2**63, 10**400]),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
              st.sampled_from(["model.fp32.onnx", "../model.fp32.onnx", "/etc/passwd", "C:\\x", "fp32", "int8",
                               "mean", "cls", HUGE_STRING])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _paths(value, prefix=()):
    """Every (key path) inside a JSON value, the value itself included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def mutated(draw, original: dict):
    data = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "remove", "replace", "huge"]))
        if action == "remove":
            del parent[path[-1]]
        elif action == "huge":
            parent[path[-1]] = draw(st.sampled_from([10**400, 2**62, 1e308, float("inf"), HUGE_STRING,
                                                     list(range(1000))]))
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return data


@pytest.fixture(scope="module")
def damaged_bundle(bundle, tmp_path_factory):
    target = tmp_path_factory.mktemp("damaged") / "bundle"
    shutil.copytree(bundle(V15), target)
    return target, json.loads((target / MANIFEST_NAME).read_text())


@CASES
@given(data=st.data())
def test_a_damaged_manifest_gives_bundle_error_only(damaged_bundle, data):
    target, original = damaged_bundle
    manifest = data.draw(mutated(original))
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    try:
        model = Embedder(target)
        vectors = model.embed(["short", "a somewhat longer text that needs padding"])
    except BundleError:
        event("BundleError")
        return
    event("loaded and embedded")
    assert np.isfinite(vectors).all()


def test_the_special_characters_cover_what_the_issue_lists():
    categories = {unicodedata.category(c) for piece in SPECIAL for c in piece}
    assert {"Cc", "Mn", "Cs", "So", "Zs", "Zl", "Zp", "Cf"} <= categories
    assert "\x00" in SPECIAL and len(LONG_WORD) == 50_000 and " " not in LONG_WORD
