"""The evaluation data of `make eval` on a user's machine: a folder given with --data, or the public
datasets fetched from the Hugging Face hub (`--fetch`, needs huggingface_hub and a network).

The folder holds
    stsb/pairs.tsv                      STS Benchmark test split: sentence1<TAB>sentence2<TAB>score (0-5)
    scifact/corpus.jsonl                BEIR SciFact: {"_id", "title", "text"} per line
    scifact/queries.jsonl               {"_id", "text"} per line
    scifact/qrels.tsv                   query-id<TAB>corpus-id<TAB>score, test split
Licences (docs/eval_data.md): STS-B scores CC BY-SA 4.0, its sentences under their sources'
terms; SciFact CC BY-NC 2.0, non-commercial: evaluation only, never ship it.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from edge_embed.errors import EdgeEmbedError

STS = Path("stsb") / "pairs.tsv"
RETRIEVAL = Path("scifact")
RETRIEVAL_FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv")
# Where --fetch takes the public copies from (dataset repos on the Hugging Face hub)
HUB_FILES = {
    "sts": ("mteb/stsbenchmark-sts", "test.jsonl.gz"),
    "corpus": ("BeIR/scifact", "corpus.jsonl.gz"),
    "queries": ("BeIR/scifact", "queries.jsonl.gz"),
    "qrels": ("BeIR/scifact-qrels", "test.tsv"),
}


class DataError(EdgeEmbedError):
    """The evaluation data is missing or cannot be fetched."""


def missing_files(folder: Path) -> list[str]:
    wanted = [STS, *(RETRIEVAL / name for name in RETRIEVAL_FILES)]
    return [str(path) for path in wanted if not (folder / path).is_file()]


def check_data(folder: Path) -> Path:
    """The folder, if it holds every file; else DataError saying what is missing and what to do."""
    missing = missing_files(folder)
    if missing:
        raise DataError(
            f"no evaluation data in {folder} (missing: {', '.join(missing)}). Pass --data FOLDER with "
            "stsb/pairs.tsv and scifact/{corpus.jsonl,queries.jsonl,qrels.tsv} (layout: scripts/eval_data.py), "
            "or add --fetch to download the public STS-B and SciFact test sets into it (needs "
            "`pip install huggingface_hub` and a network; SciFact is CC BY-NC: evaluation only)"
        )
    return folder


def fetch(folder: Path) -> Path:
    """Download the public test sets into FOLDER in the layout above; DataError when offline."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DataError("--fetch needs huggingface_hub: pip install 'edge-embed[export]' or huggingface_hub; "
                        "or download the data yourself and pass --data") from None
    paths = {}
    for key, (repo, name) in HUB_FILES.items():
        try:
            paths[key] = Path(hf_hub_download(repo, name, repo_type="dataset"))
        except Exception as exc:  # noqa: BLE001 - offline, moved, gated: all end the same way
            offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
            raise DataError(f"could not fetch {name} of the dataset {repo} from the Hugging Face hub{offline}: "
                            f"{exc.__class__.__name__}. Without a network, copy the data to a folder and pass "
                            "--data FOLDER") from None
    (folder / STS).parent.mkdir(parents=True, exist_ok=True)
    (folder / RETRIEVAL).mkdir(parents=True, exist_ok=True)
    rows = ["sentence1\tsentence2\tscore"]
    for record in _jsonl(paths["sts"]):
        rows.append(f"{_one_line(record['sentence1'])}\t{_one_line(record['sentence2'])}\t{float(record['score']):.3f}")
    (folder / STS).write_text("\n".join(rows) + "\n", encoding="utf-8")
    qrels = paths["qrels"].read_text(encoding="utf-8").replace("\r\n", "\n")
    (folder / RETRIEVAL / "qrels.tsv").write_text(qrels, encoding="utf-8")
    wanted = {line.split("\t")[0] for line in qrels.splitlines()[1:] if line.strip()}
    for key in ("corpus", "queries"):
        with open(folder / RETRIEVAL / f"{key}.jsonl", "w", encoding="utf-8") as out:
            for record in _jsonl(paths[key]):
                if key == "queries" and record["_id"] not in wanted:
                    continue
                fields = ("_id", "title", "text") if key == "corpus" else ("_id", "text")
                kept = {name: record.get(name, "") for name in fields}
                out.write(json.dumps(kept, ensure_ascii=False) + "\n")
    return check_data(folder)


def _jsonl(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())  # pairs.tsv has no quoting: no tab or newline inside a field
