"""Cold-process measurements: load time to first embedding, RSS after load, peak RSS.

Each measurement is a fresh `python -c` process that builds one system and embeds one
text. Load time runs from just before the parent starts the process (interpreter start-up
and imports included) to the moment the child has the first embedding. Memory is the
child's own: VmRSS after the model is loaded and after the embedding, and its peak VmHWM,
read inside the child. (resource.getrusage's ru_maxrss is recorded too, but Linux carries it
over fork + exec, so in a child of a large parent it reports the parent's size; VmHWM
belongs to the new address space and starts from zero at exec.)
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

_PRELUDE = r"""
import json, resource, sys, time
from edge_embed.measure import peak_rss_mb, rss_mb
text = open(sys.argv[2], encoding="utf-8").read()
spec = json.loads(sys.argv[1])
"""

# edge-embed: exactly what a user writes
_EDGE = _PRELUDE + r"""
from edge_embed import Embedder
t_import = time.time()
m = Embedder(spec["bundle"], precision=spec["system"].split("-", 1)[1], providers="cpu",
             threads=spec["threads"])
t_load = time.time(); rss_load = rss_mb()
vec = m.embed([text])
"""

# peers: through bench/systems.py (which imports only numpy until a system is built)
_PEER = _PRELUDE + r"""
sys.path.insert(0, spec["bench"])
import systems
t_import = time.time()
s = systems.build(spec)
t_load = time.time(); rss_load = rss_mb()
s.prepare([text])
vec = s.embed([text])
"""

_REPORT = r"""
t_first = time.time()
print("BENCH_PROBE " + json.dumps({
    "t_import": t_import, "t_load": t_load, "t_first": t_first, "rss_after_load_mb": rss_load,
    "rss_after_embed_mb": rss_mb(),
    "peak_rss_mb": peak_rss_mb(),
    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "dim": int(vec.shape[-1])}))
"""


def probe(spec: dict, text_file: Path, timeout: float = 900) -> dict:
    """Run one cold process for spec["system"]; returns times (s) and memory (MB)."""
    code = (_EDGE if spec["system"].startswith("edge-") else _PEER) + _REPORT
    spec = {**spec, "bench": str(BENCH)}
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec), str(text_file)],
                          capture_output=True, text=True, timeout=timeout)
    wall = time.time() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_PROBE ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    got = json.loads(lines[-1][len("BENCH_PROBE "):])
    return {
        "load_to_first_embedding_s": got["t_first"] - start,
        "imports_s": got["t_import"] - start,
        "construct_s": got["t_load"] - got["t_import"],
        "first_embedding_s": got["t_first"] - got["t_load"],
        "process_wall_s": wall,
        "rss_after_load_mb": got["rss_after_load_mb"],
        "rss_after_embed_mb": got["rss_after_embed_mb"],
        "peak_rss_mb": got["peak_rss_mb"],
        "ru_maxrss_mb": got["ru_maxrss_mb"],
    }
