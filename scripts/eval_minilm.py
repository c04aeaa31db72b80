"""`make eval`: STS-B Spearman and SciFact nDCG@10 of the MiniLM bundle, fp32 vs int8.

Full SciFact takes about 15 minutes per precision on 2 cores. Data: ../shared/data (or --data).
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
    bundle = minilm_bundle(args.work)
    results = {}
    for precision in ("fp32", "int8"):
        model = Embedder(bundle, precision=precision, threads=args.threads)
        results[precision] = evaluate(model, sts=args.data / "stsb" / "pairs.tsv",
                                      retrieval=args.data / "scifact", limit=args.limit)
        print(precision, json.dumps(results[precision]), flush=True)
    sts = results["int8"]["sts"]["spearman"] - results["fp32"]["sts"]["spearman"]
    ndcg = results["int8"]["retrieval"]["ndcg@10"] - results["fp32"]["retrieval"]["ndcg@10"]
    results["int8_minus_fp32"] = {"sts_spearman": sts, "scifact_ndcg@10": ndcg}
    out = args.work / "eval_minilm.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"int8 - fp32: STS-B Spearman {sts:+.4f}, SciFact nDCG@10 {ndcg:+.4f} (written to {out})")
    return 0 if abs(sts) <= 0.01 and abs(ndcg) <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
