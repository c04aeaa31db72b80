"""Expected values for long-text tests, computed from the fp32 model's token states with a session
and windows of the test's own (never through the runtime's pooling)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_embed.tokenize import CHUNK_OVERLAP

_sessions: dict[Path, ort.InferenceSession] = {}


def states(bundle_dir: Path, ids: list[int]) -> np.ndarray:
    """float64 [len(ids), hidden]: the fp32 model's token states for one sequence."""
    if bundle_dir not in _sessions:
        _sessions[bundle_dir] = ort.InferenceSession(str(bundle_dir / "model.fp32.onnx"),
                                                     providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    return _sessions[bundle_dir].run(["last_hidden_state"], feeds)[0][0].astype(np.float64)


def v15_recipe(pooled: np.ndarray, dim: int) -> np.ndarray:
    """v1.5's Matryoshka recipe written out: layer norm without affine, truncate, L2 (rows)."""
    pooled = np.atleast_2d(pooled)
    x = (pooled - pooled.mean(axis=1, keepdims=True)) / np.sqrt(pooled.var(axis=1, keepdims=True) + 1e-5)
    return x[:, :dim] / np.linalg.norm(x[:, :dim], axis=1, keepdims=True)


def whole_document_states(bundle_dir: Path, ids: list[int], lead: int, max_length: int) -> tuple[np.ndarray, list]:
    """One state per token of ids = [CLS] + prefix + text + [SEP] (lead = 1 + prefix tokens), through
    windows built here: [CLS] + prefix + a run of text tokens + [SEP], neighbours sharing the overlap.
    A shared token's state comes from the window where it has more context on its nearer side (ties:
    the later window); [CLS] and the prefix from the first window, [SEP] from the last.
    Returns (states [len(ids), hidden], each window's own states)."""
    text, room = ids[lead:-1], max_length - lead - 1
    if len(ids) <= max_length:
        whole = states(bundle_dir, ids)
        return whole, [whole]
    overlap = min(CHUNK_OVERLAP, room // 4)
    starts = list(range(0, len(text) - overlap, room - overlap))
    assert starts[-1] + room >= len(text) and starts[-1] < len(text)
    windows = [states(bundle_dir, [*ids[:lead], *text[s : s + room], ids[-1]]) for s in starts]
    chosen = []
    for j in range(len(text)):
        context = [(min(j - s, s + room - 1 - j), w) for w, s in enumerate(starts) if s <= j < s + room]
        _, w = max(context)  # ties go to the later window (larger w)
        chosen.append(windows[w][lead + j - starts[w]])
    return np.vstack([windows[0][:lead], np.stack(chosen), windows[-1][-1:]]), windows
