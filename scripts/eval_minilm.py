"""`make eval`: STS-B Spearman and SciFact nDCG@10 of the MiniLM bundle: fp32, int8 (the default
dynamic scheme) and int8 with the blockwise scheme (`--int8-scheme blockwise`).

Full SciFact takes about 15 minutes per model on 2 cores. Data: ../shared/data (or --data).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minilm import minilm_bundle

from edge_embed import Embedder
from edge_embed.evaluate import evaluate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("build"))
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    p.add_argument("--limit", type=int, help="first N STS pairs / N documents only (quick look)")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    models = {"fp32": (minilm_bundle(args.work), "fp32"), "int8": (minilm_bundle(args.work), "int8"),
              "int8_blockwise": (minilm_bundle(args.work, "blockwise"), "int8")}
    results = {}
    for name, (bundle, precision) in models.items():
        model = Embedder(bundle, precision=precision, threads=args.threads)
        results[name] = evaluate(model, sts=args.data / "stsb" / "pairs.tsv",
                                 retrieval=args.data / "scifact", limit=args.limit)
        print(name, json.dumps(results[name]), flush=True)
    worst = 0.0
    for name in ("int8", "int8_blockwise"):
        sts = results[name]["sts"]["spearman"] - results["fp32"]["sts"]["spearman"]
        ndcg = results[name]["retrieval"]["ndcg@10"] - results["fp32"]["retrieval"]["ndcg@10"]
        results[f"{name}_minus_fp32"] = {"sts_spearman": sts, "scifact_ndcg@10": ndcg}
        print(f"{name} - fp32: STS-B Spearman {sts:+.4f}, SciFact nDCG@10 {ndcg:+.4f}")
        worst = max(worst, abs(sts), abs(ndcg))
    out = args.work / "eval_minilm.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
