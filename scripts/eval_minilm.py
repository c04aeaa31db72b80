"""`make eval`: STS-B Spearman and SciFact nDCG@10 of the MiniLM bundle: fp32, int8 with the dynamic
scheme (`--int8-scheme dynamic`), the blockwise scheme (`--int8-scheme blockwise`), the static scheme
(the export default for dense models) on onnxruntime and, from a `--int8-scheme both` bundle, on
OpenVINO, and bf16 on OpenVINO (the last two where OpenVINO is installed and, for bf16, the CPU has it).

Full SciFact takes about 15 minutes per model on 2 cores. Data: --data FOLDER (default WORK/eval-data),
or --fetch to download the public test sets there first (scripts/eval_data.py; licences in docs/eval_data.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import DataError, check_data, fetch
from minilm import minilm_bundle

from edge_embed import Embedder
from edge_embed.evaluate import evaluate

# name -> (int8 scheme of the bundle, precision, providers)
MODELS = {
    "fp32": ("dynamic", "fp32", "cpu"),
    "int8": ("dynamic", "int8", "cpu"),
    "int8_blockwise": ("blockwise", "int8", "cpu"),
    "int8_static": ("static", "int8", "cpu"),
    "int8_static_openvino": ("both", "int8", "openvino"),
    "bf16_openvino": ("dynamic", "bf16", "openvino"),
}


def runnable(name: str) -> bool:
    from edge_embed import openvino_backend

    providers, precision = MODELS[name][2], MODELS[name][1]
    return providers != "openvino" or (openvino_backend.available()
                                       and (precision != "bf16" or openvino_backend.cpu_has_bf16()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("build"))
    p.add_argument("--data", type=Path, help="folder with stsb/ and scifact/ (default: WORK/eval-data)")
    p.add_argument("--fetch", action="store_true",
                   help="download the public STS-B and SciFact test sets into --data first (needs a network)")
    p.add_argument("--limit", type=int, help="first N STS pairs / N documents only (quick look)")
    p.add_argument("--threads", type=int)
    p.add_argument("--models", help=f"comma-separated subset of {', '.join(MODELS)} (default: all that can run)")
    args = p.parse_args()
    data = args.data or args.work / "eval-data"
    try:
        args.data = fetch(data) if args.fetch and missing_data(data) else check_data(data)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = args.models.split(",") if args.models else [n for n in MODELS if runnable(n)]
    results = {}
    for name in names:
        scheme, precision, providers = MODELS[name]
        model = Embedder(minilm_bundle(args.work, scheme), precision=precision, providers=providers,
                         threads=args.threads)
        results[name] = evaluate(model, sts=args.data / "stsb" / "pairs.tsv",
                                 retrieval=args.data / "scifact", limit=args.limit)
        print(name, json.dumps(results[name]), flush=True)
    worst = 0.0
    for name in [n for n in names if n != "fp32"]:
        sts = results[name]["sts"]["spearman"] - results["fp32"]["sts"]["spearman"]
        ndcg = results[name]["retrieval"]["ndcg@10"] - results["fp32"]["retrieval"]["ndcg@10"]
        results[f"{name}_minus_fp32"] = {"sts_spearman": sts, "scifact_ndcg@10": ndcg}
        print(f"{name} - fp32: STS-B Spearman {sts:+.4f}, SciFact nDCG@10 {ndcg:+.4f}")
        worst = max(worst, abs(sts), abs(ndcg))
    out = args.work / "eval_minilm.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 0 if worst <= 0.01 else 1


def missing_data(folder: Path) -> bool:
    from eval_data import missing_files

    return bool(missing_files(folder))


if __name__ == "__main__":
    sys.exit(main())
