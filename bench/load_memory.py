"""Load time, RSS and peak RSS of the int8 bundles in fresh processes, and the tokenizer alone.

For each model (full-size random checkpoints, exported once and cached like bench/run.py does):
- load: imports, `Embedder(bundle, precision="int8", threads=2)` and a first embedding, in a new
  process each time (edge_embed.measure.cold_start, median of --repeats): seconds to the first
  embedding (interpreter start-up included), RSS after load and after the first embedding, peak RSS
  (VmHWM) while loading; with the bundle's lean tokenizer and with tokenizer.json (tokenizers).
- tokenizer alone: load time and RSS growth of TextTokenizer in a new process, both kinds.
- tokenizing N multilingual texts (cold caches, new process, the kinds in alternating processes):
  seconds, CPU seconds, and their ratio lean/tokenizers (the median of the pairs' ratios); also
  against tokenizers with offsets, as the runtime tokenized before it stopped reading them.

    python bench/load_memory.py --work build/bench --out build/bench/load_memory.json [--corpus DIR]

--corpus takes a folder of evaluation data laid out as <lang>/corpus.jsonl, queries.jsonl or
pairs.tsv (xquad-retrieval, stsb-multi-mt); without it the texts are the v2 test fixture's
multilingual sentences, repeated with numbers so they are not all cached words.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from edge_embed.measure import cold_start, peak_rss_mb, rss_mb  # noqa: E402

BENCH = REPO / "bench"
OFFSETS_KIND = "tokenizer.json+offsets"


def embedder(bundle: str, kind: str, threads: int):
    """What the fresh process of `load` builds (measure.cold_start calls it there)."""
    import edge_embed.embedder

    if kind == "tokenizer.json":  # tokenizers' tokenizer.json even where the bundle has a lean file (the old path)
        edge_embed.embedder.lean_tokenizer_file = lambda manifest: None
    return edge_embed.embedder.Embedder(bundle, precision="int8", threads=threads)


def load(bundle: Path, kind: str, threads: int) -> dict:
    return cold_start("load_memory:embedder", {"bundle": str(bundle), "kind": kind, "threads": threads},
                      "a first text to embed, with a few words", path=(str(BENCH),))


def _tokenizer(bundle: Path, kind: str):
    from edge_embed.manifest import TOKENIZER_FILE, lean_tokenizer_file, read_manifest
    from edge_embed.tokenize import TextTokenizer

    manifest = read_manifest(bundle)
    lean = lean_tokenizer_file(manifest) if kind == "lean" else None
    if kind == "lean" and lean is None:
        raise SystemExit(f"{bundle} carries no lean tokenizer")
    return TextTokenizer(bundle / TOKENIZER_FILE, manifest.max_length, lean=bundle / lean if lean else None)


def child_tokenizer(bundle: str, kind: str) -> dict:
    import edge_embed.tokenize  # noqa: F401  (imports are not the tokenizer's cost)

    rss = rss_mb()
    start = time.perf_counter()
    tokenizer = _tokenizer(Path(bundle), kind)
    tokenizer.encode(["warm up"])
    seconds = time.perf_counter() - start
    return {"load_s": seconds, "rss_growth_mb": rss_mb() - rss, "peak_growth_mb": peak_rss_mb() - rss}


def child_tokenize(bundle: str, kind: str, texts_file: str) -> dict:
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    if kind == OFFSETS_KIND:  # tokenizers' encode_batch, offsets and all, as the runtime ran it up to commit 738e3db
        import edge_embed.tokenize

        fast_or_not = edge_embed.tokenize._encode_batches
        edge_embed.tokenize._encode_batches = lambda tokenizer, batches, offsets: fast_or_not(tokenizer, batches, True)
    tokenizer = _tokenizer(Path(bundle), kind)
    start, cpu = time.perf_counter(), time.process_time()
    encoded = tokenizer.encode(texts)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "texts": len(texts),
            "tokens": int(sum(len(s) for s in encoded.sequences)), "peak_rss_mb": peak_rss_mb()}


def corpus_texts(folder: Path | None, n: int, seed: int = 0) -> list[str]:
    texts = []
    if folder is not None:
        for path in sorted(folder.glob("*/*")):
            if path.name in ("corpus.jsonl", "queries.jsonl"):
                for line in path.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    texts.append((record.get("title", "") + " " + record["text"]).strip())
            elif path.name == "pairs.tsv":
                for line in path.read_text(encoding="utf-8").splitlines()[1:]:
                    texts += line.split("\t")[:2]
    if not texts:  # no corpus: the v2 fixture's multilingual sentences, numbered
        base = json.loads((REPO / "tests" / "data" / "nomic-v2moe-tiny" / "texts.json").read_text(encoding="utf-8"))
        texts = [f"{text} ({i})" for i in range(n // len(base) + 1) for text in base]
    random.Random(seed).shuffle(texts)
    return (texts * (n // len(texts) + 1))[:n]


def in_fresh_process(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {"runs": runs}


def measure(bundle: Path, texts_file: Path, repeats: int, threads: int, log=print) -> dict:
    out = {}
    kinds = ("lean", "tokenizer.json")
    for kind in kinds:
        runs = [load(bundle, kind, threads) for _ in range(repeats)]
        out[f"load[{kind}]"] = median_of(runs)
        out[f"tokenizer[{kind}]"] = median_of([in_fresh_process("tokenizer", str(bundle), kind)
                                              for _ in range(repeats)])
        log(f"[load_memory] {bundle.name} {kind}: load to first embedding "
            f"{out[f'load[{kind}]']['load_to_first_embedding_s']:.3f} s, tokenizer alone "
            f"{out[f'tokenizer[{kind}]']['load_s']:.3f} s, {out[f'tokenizer[{kind}]']['rss_growth_mb']:.1f} MB")
    # The tokenizing run: the two kinds in alternating new processes, so that a shared host's load
    # falls on both alike; the ratio of each pair, then their median.
    # Both ways read no offsets (the runtime's path unless it chunks); OFFSETS_KIND is tokenizers as the
    # runtime ran it before it stopped reading them: the speed the issue calls "today".
    runs = {kind: [] for kind in (*kinds, OFFSETS_KIND)}
    for _ in range(repeats):
        for kind in runs:
            runs[kind].append(in_fresh_process("tokenize", str(bundle), kind, str(texts_file)))
    for kind in runs:
        out[f"tokenize[{kind}]"] = median_of(runs[kind])
    for name, other in [("tokenize_lean_over_tokenizers", "tokenizer.json"),
                        ("tokenize_lean_over_tokenizers_with_offsets", OFFSETS_KIND)]:
        out[name] = {key: statistics.median(lean[key] / plain[key] for lean, plain in zip(runs["lean"], runs[other]))
                     for key in ("seconds", "cpu_seconds")}
    log(f"[load_memory] {bundle.name} tokenizing {out['tokenize[lean]']['texts']} texts: lean "
        f"{out['tokenize[lean]']['seconds']:.3f} s, tokenizers {out['tokenize[tokenizer.json]']['seconds']:.3f} s, "
        f"with offsets {out[f'tokenize[{OFFSETS_KIND}]']['seconds']:.3f} s; lean/tokenizers "
        + json.dumps({k: round(v, 3) for k, v in out["tokenize_lean_over_tokenizers"].items()}) + ", lean/with offsets "
        + json.dumps({k: round(v, 3) for k, v in out["tokenize_lean_over_tokenizers_with_offsets"].items()}))
    return out


def _built_bundle(key: str, work: Path, reuse: bool) -> Path:
    import checkpoints

    spec = checkpoints.MODELS[key]
    ckpt = checkpoints.write_checkpoint(spec, work / "checkpoints" / spec.key)
    return Path(checkpoints.ensure_bundle(spec, ckpt, work / "bundles" / spec.key, None, reuse=reuse)["path"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/load_memory.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="build/bench", help="cache folder of bench/run.py (default build/bench)")
    p.add_argument("--out", default=None, help="JSON results (default WORK/load_memory.json)")
    p.add_argument("--model", choices=["v15", "v2moe", "all"], default="all")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (median; default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--texts", type=int, default=10_000, help="texts in the tokenizing run (default 10,000)")
    p.add_argument("--corpus", type=Path, help="folder of multilingual evaluation data (see above)")
    p.add_argument("--quick", action="store_true", help="1 process per figure, 1,000 texts")
    p.add_argument("--reuse-bundles", action="store_true",
                   help="use cached bundles even if export/ changed since they were made")
    p.add_argument("--bundle", type=Path, help="measure this exported bundle (of --model) instead of building one")
    args = p.parse_args(argv)
    if args.bundle and args.model == "all":
        p.error("--bundle needs --model v15 or v2moe")
    if args.quick:
        args.repeats, args.texts = 1, 1_000
    work = Path(args.work)
    texts_file = work / "load_memory_texts.json"
    work.mkdir(parents=True, exist_ok=True)
    texts_file.write_text(json.dumps(corpus_texts(args.corpus, args.texts), ensure_ascii=False), encoding="utf-8")
    results = {"repeats": args.repeats, "threads": args.threads, "texts": args.texts,
               "corpus": str(args.corpus) if args.corpus else "v2 fixture sentences", "models": {}}
    for key in (["v15", "v2moe"] if args.model == "all" else [args.model]):
        bundle = args.bundle or _built_bundle(key, work, args.reuse_bundles)
        from edge_embed.manifest import lean_tokenizer_file, read_manifest

        if lean_tokenizer_file(read_manifest(bundle)) is None:  # WordPiece (v1.5): tokenizer.json only
            runs = [load(bundle, "tokenizer.json", args.threads) for _ in range(args.repeats)]
            results["models"][key] = {"load[tokenizer.json]": median_of(runs)}
            print(f"[load_memory] {key}: " + json.dumps({k: round(v, 3) for k, v in median_of(runs).items()
                                                          if k != "runs"}))
            continue
        results["models"][key] = measure(bundle, texts_file, args.repeats, args.threads)
    out = Path(args.out) if args.out else work / "load_memory.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"[load_memory] wrote {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        what, bundle, kind, *rest = sys.argv[2:]
        if what == "tokenizer":
            result = child_tokenizer(bundle, kind)
        else:
            result = child_tokenize(bundle, kind, rest[0])
        print(json.dumps(result))
    else:
        sys.exit(main())
