"""One full-width v2-moe expert layer in onnxruntime: sparse vs dense vs fused, fp32 and int8.

    python bench/moe_layer.py [--quick] [--out build/bench/moe_layer.json] [--threads 2]

The layer is `MoEMLP` at nomic-embed-text-v2-moe's size (hidden 768, 8 experts, inner 3072,
top-2) with random weights ~N(0, 0.02), wrapped to take hidden states [B, S, 768] and the
attention mask [B, S] as the full model gives them. Each MoE mode is exported like
export.onnx_export.export_fp32 (TorchScript, opset 18, constant folding) and quantized with
export.quantize.quantize_int8. The layer is timed at 8 texts x 128 tokens and 2 texts x 512
tokens (every token real), in ORT on CPU; all six sessions alternate within each round (order
rotated every round) and the median round counts, of wall time and of this process's CPU time
(the latter less sensitive to other jobs on the machine). Also reported: each session's
max-abs difference from the eager torch layer (sparse, erf GELU) on the timed inputs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from edge_embed.measure import alternating_rounds  # noqa: E402
from export.nomic_bert import MoEMLP, NomicConfig  # noqa: E402
from export.onnx_export import OPSET, save  # noqa: E402
from export.quantize import quantize_int8  # noqa: E402

MODES = ("sparse", "dense", "fused")
SHAPES = [(8, 128), (2, 512)]  # (texts, tokens per text)
CFG = NomicConfig(
    vocab_size=250048, n_embd=768, n_head=12, n_layer=12, n_inner=3072, type_vocab_size=1,
    layer_norm_epsilon=1e-5, activation="gelu", qkv_bias=True, fc1_bias=True, fc2_bias=True,
    rotary_base=10000.0, rotary_scaling_factor=None, max_trained_positions=2048,
    moe_every_n_layers=2, num_experts=8, moe_top_k=2, pad_token_id=1,
)  # fmt: skip


class Layer(torch.nn.Module):
    """hidden [B, S, H], attention_mask [B, S] int64 -> MoE output [B, S, H] (bias included)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mlp = MoEMLP(CFG, mode)  # named "mlp" so node names read /mlp/... as in the model

    def forward(self, hidden, attention_mask):
        return self.mlp(hidden, attention_mask > 0)


def build_layers() -> dict[str, Layer]:
    torch.manual_seed(0)
    layers = {mode: Layer(mode).eval() for mode in MODES}
    with torch.no_grad():
        for p in layers["sparse"].parameters():
            p.normal_(0, 0.02)
    for mode in MODES[1:]:
        layers[mode].load_state_dict(layers["sparse"].state_dict())
    return layers


def export(layer: Layer, path: Path) -> None:
    """As export_fp32 does: a padded example batch, dynamic batch and sequence axes."""
    hidden = torch.randn(2, 11, CFG.n_embd)
    mask = torch.ones(2, 11, dtype=torch.int64)
    mask[1, 7:] = 0
    names = ["hidden", "attention_mask"]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "out"]}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = Path(tmp) / "layer.onnx"
        with torch.no_grad():
            torch.onnx.export(
                layer, (hidden, mask), os.fspath(traced), dynamo=False, opset_version=OPSET,
                input_names=names, output_names=["out"], dynamic_axes=axes, do_constant_folding=True,
            )  # fmt: skip
        save(onnx.load(os.fspath(traced)), path)


def run(sess: ort.InferenceSession, feeds: dict) -> np.ndarray:
    """The fused graph has no mask input (its kernel routes every token): feed what it takes."""
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # No spin-waiting: CPU time then counts work only, and an idle session does not steal
    # cycles from the one being timed (this layer is GEMM-bound, so spinning buys nothing).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python bench/moe_layer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--out", default="build/bench/moe_layer.json", help="JSON results path")
    p.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, help="timed rounds (default 3 quick, 9 full)")
    p.add_argument("--work", help="folder for the ONNX files (default: a temporary folder)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of modes")
    return p.parse_args(argv)


def time_sessions(sessions: dict, feeds: dict, rounds: int) -> dict:
    """Median wall and CPU ms per session over alternating rounds (edge_embed.measure)."""
    cpu = {k: [] for k in sessions}

    def call(k: str) -> None:
        start = time.process_time()
        run(sessions[k], feeds)
        cpu[k].append(time.process_time() - start)

    wall = alternating_rounds({k: partial(call, k) for k in sessions}, rounds)
    return {k: {"ms": 1e3 * statistics.median(wall[k]), "cpu_ms": 1e3 * statistics.median(cpu[k])} for k in sessions}


def main(argv=None) -> int:
    args = parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    modes = args.modes.split(",")
    layers = build_layers()
    results = {"threads": args.threads, "rounds": rounds, "onnxruntime": ort.__version__,
               "load_avg_start": os.getloadavg()[0], "shapes": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        sessions = {}
        for mode in modes:
            fp32, int8 = work / f"{mode}.fp32.onnx", work / f"{mode}.int8.onnx"
            export(layers[mode], fp32)
            quantize_int8(fp32, int8)
            sessions[f"{mode}/fp32"] = session(fp32, args.threads)
            sessions[f"{mode}/int8"] = session(int8, args.threads)
            print(f"[moe_layer] exported {mode}: fp32 {fp32.stat().st_size >> 20} MiB, "
                  f"int8 {int8.stat().st_size >> 20} MiB", file=sys.stderr, flush=True)
        for batch, seq in SHAPES:
            rng = np.random.default_rng(seq)
            feeds = {"hidden": rng.standard_normal((batch, seq, CFG.n_embd), dtype=np.float32),
                     "attention_mask": np.ones((batch, seq), dtype=np.int64)}  # fmt: skip
            with torch.no_grad():
                ref = layers["sparse"](*(torch.from_numpy(v) for v in feeds.values())).numpy()
            err = {k: float(np.abs(run(s, feeds) - ref).max()) for k, s in sessions.items()}  # and warm-up
            row = time_sessions(sessions, feeds, rounds)
            for key, cell in row.items():
                dense = row.get("dense/" + key.split("/")[1])
                cell["max_abs"] = err[key]
                if dense:
                    cell["vs_dense"] = cell["ms"] / dense["ms"]
                    cell["cpu_vs_dense"] = cell["cpu_ms"] / dense["cpu_ms"]
            results["shapes"][f"{batch}x{seq}"] = row
    results["load_avg_end"] = os.getloadavg()[0]  # other jobs on the machine inflate wall times
    print(table(results, modes))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"[moe_layer] wrote {out}", file=sys.stderr)
    return 0


def table(results: dict, modes: list[str]) -> str:
    """ms: median wall time; X/dense: wall-time ratio (CPU-time ratio, less sensitive to other load)."""
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    vs = [m for m in ("sparse", "fused") if m in modes]
    lines = ["| texts x tokens | precision | " + " | ".join(f"{m} ms" for m in modes)
             + "".join(f" | {m}/dense wall (cpu)" for m in vs) + " | max-abs vs torch (" + ", ".join(modes) + ") |",
             "|---" * (len(modes) + len(vs) + 3) + "|"]  # fmt: skip
    for shape, row in results["shapes"].items():
        for p in ("fp32", "int8"):
            cell = {m: row.get(f"{m}/{p}", {}) for m in modes}
            ratios = [f"{fmt(cell[m].get('vs_dense'), '.2f')} ({fmt(cell[m].get('cpu_vs_dense'), '.2f')})" for m in vs]
            lines.append(f"| {shape} | {p} | " + " | ".join(fmt(cell[m].get("ms"), ".1f") for m in modes)
                         + "".join(f" | {r}" for r in ratios) + " | "
                         + ", ".join(fmt(cell[m].get("max_abs"), ".1e") for m in modes) + " |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
