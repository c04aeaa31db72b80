"""`edge-embed serve` against the bare Embedder in the same run, on the full-size v1.5 int8 bundle.

    python bench/serve.py [--work build/bench] [--threads 2] [--quick] [--out FILE.json]
    python bench/serve.py --peer infinity [...]   (infinity-emb against edge-embed serve on MiniLM:
                                                   bench/serve_peer.py)

- tokens/s with 1, 8 and 32 concurrent clients sending 1-text and 16-text requests of about 24 and 128
  tokens (the openai client's default base64 answers), each as a ratio to the bare Embedder embedding
  the same texts in one call; the two alternate within every round (one connection pool for all
  rounds) and the ratio is the median of the rounds' ratios (target: 32 clients x 1 query of ~24 tokens >= 0.85);
  beside it the ceiling: the bare Embedder in calls of clients x texts-per-request texts, what a server
  whose every batch held one request per client, at no HTTP cost, would reach;
- p50 / p99 latency of one ~24-token query on an idle server against the bare embed([text]) call,
  alternating request by request (target: p50 overhead <= 3 ms);
- the server's RSS after the load (target <= 300 MB).
The bundle is the one bench/run.py exports (bench/checkpoints.py), made here if it is missing.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench", REPO / "tests", REPO / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from edge_embed import Embedder  # noqa: E402
from edge_embed.bench_texts import TextMaker, Workload  # noqa: E402
from edge_embed.measure import alternating_rounds, rss_mb  # noqa: E402
from edge_embed.server.worker import IDLE_RELEASE_S  # noqa: E402

CLIENTS = (1, 8, 32)
TEXTS_PER_REQUEST = (1, 16)
LENGTHS = (24, 128)
# A pause before each timed query: the other side's threads stop spinning, and an idle server sees
# one query at a time (back to back, bare's still-spinning threads would take the server's cores).
SETTLE_S = 0.05


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bundle_path(args) -> Path:
    if args.bundle:
        return Path(args.bundle)
    import checkpoints

    spec = checkpoints.MODELS["v15"]
    work = Path(args.work)
    ckpt = checkpoints.write_checkpoint(spec, work / "checkpoints" / spec.key, log=log)
    info = checkpoints.ensure_bundle(spec, ckpt, work / "bundles" / spec.key, None, reuse=args.reuse_bundles, log=log)
    return Path(info["path"])


def make_texts(bundle: Path, target: int, n: int) -> list[str]:
    maker = TextMaker.seeded(Tokenizer.from_file(str(bundle / "tokenizer.json")), "v15", f"serve-{target}")
    return maker.texts(Workload(f"serve-{target}", target, n, n, 1, 1), n, 8192)


async def open_client(url: str) -> aiohttp.ClientSession:
    """The load generator's connection pool. aiohttp, not httpx: the clients run on the server's 2 cores,
    and httpx's pure-Python HTTP costs them ~1.1 ms of CPU per request against aiohttp's ~0.23 ms
    (BENCHMARKS.md, Serve), which the server's figure would otherwise pay."""
    return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=max(CLIENTS)),
                                 timeout=aiohttp.ClientTimeout(total=600))


async def send_all(http: aiohttp.ClientSession, requests: list[list[str]], clients: int) -> None:
    """Send `requests` from `clients` concurrent clients."""
    queue = list(reversed(requests))

    async def client() -> None:
        while queue:
            texts = queue.pop()
            async with http.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"the server answered {answer.status}: {body[:300]!r}")

    await asyncio.gather(*(client() for _ in range(clients)))


def embed_in_calls(model: Embedder, texts: list[str], size: int) -> None:
    """The bare Embedder in calls of `size` texts: the most a server gets when every batch holds one
    request from each client, with no HTTP cost at all (the ceiling of the server's ratio)."""
    for start in range(0, len(texts), size):
        model.embed(texts[start : start + size])


def throughput(server, model: Embedder, texts: dict[int, list[str]], rounds: int, budget: int) -> list[dict]:
    """Bare embed and the server alternate within each round (edge_embed.measure); one event loop and
    one connection pool serve every round, so a round times the requests, not the client's set-up."""
    rows = []
    loop = asyncio.new_event_loop()
    http = loop.run_until_complete(open_client(server.url))
    try:
        for length, per_request, clients in itertools.product(LENGTHS, TEXTS_PER_REQUEST, CLIENTS):
            per_client = max(1, round(budget / (clients * per_request * length)))
            n = clients * per_request * per_client
            batch = [texts[length][i % len(texts[length])] for i in range(n)]
            tokens = sum(len(s) for s in model.tokenizer.encode(batch).sequences)
            requests = [batch[i:i + per_request] for i in range(0, n, per_request)]
            seconds = alternating_rounds({
                "bare": partial(model.embed, batch),
                "server": lambda r=requests, c=clients: loop.run_until_complete(send_all(http, r, c)),
                "ceiling": partial(embed_in_calls, model, batch, clients * per_request),
            }, rounds)
            rates = {key: [tokens / s for s in values] for key, values in seconds.items()}
            ratios = [s / b for s, b in zip(rates["server"], rates["bare"])]
            row = {"tokens_per_text": length, "texts_per_request": per_request, "clients": clients,
                   "requests": len(requests), "tokens": tokens,
                   "bare_tokens_s": statistics.median(rates["bare"]),
                   "server_tokens_s": statistics.median(rates["server"]),
                   "ratio": statistics.median(ratios), "ratios": ratios,
                   "ceiling": statistics.median(c / b for c, b in zip(rates["ceiling"], rates["bare"]))}
            log(f"[serve-bench] ~{length} tokens, {per_request} text(s)/request, {clients} clients: "
                f"server {row['server_tokens_s']:.0f} tokens/s, bare {row['bare_tokens_s']:.0f}, "
                f"ratio {row['ratio']:.2f} (ceiling {row['ceiling']:.2f})")
            rows.append(row)
    finally:
        loop.run_until_complete(http.close())
        loop.close()
    return rows


def latency(server, model: Embedder, queries: list[str], n: int) -> dict:
    bare, served = [], []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for i in range(n + 5):
            text = queries[i % len(queries)]
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            model.embed([text])
            bare_s = time.perf_counter() - start
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            answer = http.post("/v1/embeddings", json={"input": [text], "encoding_format": "base64"})
            served_s = time.perf_counter() - start
            if answer.status_code != 200:
                raise RuntimeError(f"the server answered {answer.status_code}: {answer.text[:300]}")
            if i >= 5:  # the first few warm both up
                bare.append(bare_s)
                served.append(served_s)

    def pct(values, q):
        return float(np.percentile(np.array(values) * 1000, q))

    result = {"requests": n, "bare_p50_ms": pct(bare, 50), "bare_p99_ms": pct(bare, 99),
              "server_p50_ms": pct(served, 50), "server_p99_ms": pct(served, 99)}
    result["p50_overhead_ms"] = result["server_p50_ms"] - result["bare_p50_ms"]
    log(f"[serve-bench] one query: bare p50 {result['bare_p50_ms']:.1f} ms p99 {result['bare_p99_ms']:.1f}, "
        f"server p50 {result['server_p50_ms']:.1f} ms p99 {result['server_p99_ms']:.1f} "
        f"(overhead {result['p50_overhead_ms']:.1f} ms)")
    return result


def memory_mb(pid: int) -> dict:
    return {key: rss_mb(key, pid) for key in ("VmRSS", "VmHWM")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="build/bench")
    p.add_argument("--bundle", help="an int8 bundle to use instead of the benchmark's v1.5 export")
    p.add_argument("--reuse-bundles", action="store_true", help="use the cached bundle even if export/ changed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="one round, fewer tokens: a rough figure in minutes")
    p.add_argument("--batch-tokens", type=int, help="the server's --batch-tokens (default: the runtime's)")
    p.add_argument("--peer", choices=["infinity"],
                   help="instead: that server against edge-embed serve, both on MiniLM (bench/serve_peer.py)")
    p.add_argument("--peer-onnx", choices=["int8", "fp32"], default="int8",
                   help="the ONNX file infinity serves (int8: its fastest CPU engine, what it picks on a CPU)")
    p.add_argument("--peer-no-warmup", action="store_true", help="start infinity with --no-model-warmup")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    if args.peer:
        import serve_peer

        return serve_peer.run(args)

    from serving import Server  # the tests' helper: `edge-embed serve` as a user starts it

    bundle = bundle_path(args)
    rounds, budget, queries = (1, 1500, 20) if args.quick else (3, 12000, 300)
    texts = {length: make_texts(bundle, length, 512) for length in LENGTHS}
    model = Embedder(bundle, precision="int8", providers="cpu", threads=args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    server = Server(str(bundle), "--precision", "int8", "--threads", str(args.threads), "--providers", "cpu",
                    "--max-queue-tokens", "10000000", "--max-request-tokens", "1000000",
                    *(["--batch-tokens", str(args.batch_tokens)] if args.batch_tokens else []), log_dir=work)
    try:
        log(f"[serve-bench] server up at {server.url}: {memory_mb(server.process.pid)['VmRSS']:.0f} MB RSS")
        result = {"bundle": str(bundle), "threads": args.threads, "quick": args.quick, "rounds": rounds,
                  "batch_tokens": args.batch_tokens,
                  "latency": latency(server, model, texts[24], queries),
                  "throughput": throughput(server, model, texts, rounds, budget)}
        result["server_memory_mb_after_load"] = memory_mb(server.process.pid)
        time.sleep(IDLE_RELEASE_S + 1)  # the worker gives the arena back once idle
        result["server_memory_mb_idle"] = memory_mb(server.process.pid)
        log(f"[serve-bench] server memory right after the load: {result['server_memory_mb_after_load']}, "
            f"idle: {result['server_memory_mb_idle']}")
    finally:
        server.stop()
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def report(result: dict) -> str:
    lines = ["| tokens/text | texts/request | clients | server tokens/s | bare tokens/s | ratio | ceiling |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["throughput"]:
        lines.append(f"| ~{row['tokens_per_text']} | {row['texts_per_request']} | {row['clients']} | "
                     f"{row['server_tokens_s']:,.0f} | {row['bare_tokens_s']:,.0f} | {row['ratio']:.2f} | "
                     f"{row['ceiling']:.2f} |")
    lat = result["latency"]
    lines.append("")
    lines.append(f"one ~24-token query, idle server: p50 {lat['server_p50_ms']:.1f} ms "
                 f"(bare {lat['bare_p50_ms']:.1f}), "
                 f"p99 {lat['server_p99_ms']:.1f} ms (bare {lat['bare_p99_ms']:.1f}); "
                 f"p50 overhead {lat['p50_overhead_ms']:.1f} ms")
    mem = result["server_memory_mb_after_load"]
    lines.append(f"server RSS right after the load: {mem['VmRSS']:.0f} MB (peak {mem['VmHWM']:.0f} MB), "
                 f"idle {IDLE_RELEASE_S + 1:.0f} s later: {result['server_memory_mb_idle']['VmRSS']:.0f} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
