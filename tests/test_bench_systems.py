"""bench/systems.py's RemoteSystem: a system built by another Python (a peer's own venv) gives what
the same system gives in this process."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import systems  # noqa: E402


def test_a_remote_system_embeds_what_the_same_system_embeds_here(bundle):
    spec = {"system": "edge-int8", "bundle": str(bundle("nomic-v15-tiny")), "threads": 1}
    texts = ["a first text", "and a second, longer one, so that the batch has padding in it"]
    here = systems.build(spec)
    remote = systems.build({**spec, "python": sys.executable})
    try:
        assert isinstance(remote, systems.RemoteSystem)
        got = remote.embed(texts)
        assert got.dtype == np.float32 and got.shape == here.embed(texts).shape
        np.testing.assert_array_equal(got, here.embed(texts))  # float32 bytes over the pipe, unchanged
        np.testing.assert_array_equal(remote.pooled(texts), here.pooled(texts))
    finally:
        remote.close()
    assert remote.proc.returncode == 0


def test_a_remote_system_that_cannot_load_says_why(tmp_path):
    spec = {"system": "edge-int8", "bundle": str(tmp_path / "missing"), "threads": 1, "python": sys.executable}
    with pytest.raises(RuntimeError, match=r"BundleError: .*missing"):
        systems.build(spec)
