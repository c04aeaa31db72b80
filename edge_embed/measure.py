"""One way to measure, for `edge-embed bench`, bench/ and the tests: a process's resident memory, timed
rounds that alternate the systems being compared, and load time in a fresh process (stdlib only, so a
peer's own venv can run this file as the fresh process)."""
from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def rss_mb(field: str = "VmRSS", pid: int | str = "self") -> float | None:
    """A process's resident memory in MB (this one's by default): "VmRSS" now, "VmHWM" its peak
    (Linux /proc).

    Elsewhere this process's peak falls back to ru_maxrss (macOS: bytes; other Unixes: KB) and the
    current size is None. Linux's ru_maxrss is never used: a child started by fork + exec inherits
    the parent's peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field != "VmHWM" or pid != "self":
        return None
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def peak_rss_mb() -> float | None:
    return rss_mb("VmHWM")


def one_round(calls: dict[str, Callable[[], object]], index: int, settle_s: float = 0.0) -> dict[str, float]:
    """Wall seconds of each call, run once in an order rotated by `index` (so no system always runs
    first or right after the same neighbour); garbage collected and `settle_s` idle before each."""
    names = list(calls)
    shift = index % len(names) if names else 0
    seconds = {}
    for name in names[shift:] + names[:shift]:
        gc.collect()
        if settle_s:
            time.sleep(settle_s)
        start = time.perf_counter()
        calls[name]()
        seconds[name] = time.perf_counter() - start
    return seconds


def alternating_rounds(calls: dict[str, Callable[[], object]], rounds: int, settle_s: float = 0.0,
                       until: Callable[[int, dict[str, float]], bool] | None = None) -> dict[str, list[float]]:
    """{name: [seconds per round]} over `rounds` rounds of one_round. `until(index, that round's
    seconds)`, called after each round, ends the rounds early by returning True (bench/run.py stops
    once enough rounds were undisturbed by other processes)."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(rounds):
        got = one_round(calls, index, settle_s)
        for name, value in got.items():
            seconds[name].append(value)
        if until is not None and until(index, got):
            break
    return seconds


class ColdStartError(RuntimeError):
    """The fresh process of cold_start failed; the message ends with its last lines of output."""


def cold_start(factory: str, kwargs: dict, first_text: str, long_text: str | None = None,
               python: str = sys.executable, path: tuple[str, ...] = (), timeout: float = 1800) -> dict:
    """Load time and memory of a model built in a fresh `python` process: `factory` ("module:name",
    importable from `path` + the usual sys.path) called with `kwargs`, then one embed([first_text])
    and, if given, one embed([long_text]). A model's `prepare(texts)`, where it has one (a peer sizing
    its context), runs before each and counts as part of first_embedding_s.

    Seconds (imports_s from before the process starts: interpreter and imports included):
    load_to_first_embedding_s = imports_s + construct_s + first_embedding_s, and long_text_s; MB:
    rss_after_load_mb, rss_after_embed_mb and the new process's own peak_rss_mb."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec = {"factory": factory, "kwargs": kwargs, "path": list(path), "first_text": first_text,
                "long_text": long_text}
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        # This file by path, not `-m edge_embed.measure`: a peer's venv has no edge_embed to import.
        code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('measure', sys.argv[1]); "
                "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); m._cold_child(sys.argv[2])")
        start = time.time()
        proc = subprocess.run([python, "-c", code, __file__, str(spec_file)], capture_output=True, text=True,
                              timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("COLD_START ")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ColdStartError(f"exit {proc.returncode}: {tail}")
    got = json.loads(lines[-1][len("COLD_START "):])
    t_import, t_load, t_first = got.pop("t_import"), got.pop("t_load"), got.pop("t_first")
    return {"load_to_first_embedding_s": t_first - start, "imports_s": t_import - start,
            "construct_s": t_load - t_import, "first_embedding_s": t_first - t_load, **got}


def _cold_child(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    sys.path[:0] = spec["path"]
    module, _, name = spec["factory"].partition(":")
    factory = getattr(importlib.import_module(module), name)
    t_import = time.time()
    model = factory(**spec["kwargs"])
    t_load, rss_load = time.time(), rss_mb()
    if hasattr(model, "prepare"):  # a peer sizing its context for the text
        model.prepare([spec["first_text"]])
    model.embed([spec["first_text"]])
    out = {"t_import": t_import, "t_load": t_load, "t_first": time.time(), "rss_after_load_mb": rss_load,
           "rss_after_embed_mb": rss_mb()}
    if spec["long_text"]:
        if hasattr(model, "prepare"):
            model.prepare([spec["long_text"]])
        start = time.perf_counter()
        model.embed([spec["long_text"]])
        out["long_text_s"] = time.perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()  # this process's own peak
    print("COLD_START " + json.dumps(out), flush=True)
