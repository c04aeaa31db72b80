"""`make eval` on a user's machine: data from --data, a clear error without it, --fetch that fails
clearly offline, and a fetched layout the evaluator reads."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from eval_data import HUB_FILES, DataError, check_data, fetch  # noqa: E402


def test_no_data_is_a_clear_error_naming_what_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"no evaluation data in .*missing: stsb/pairs.tsv, scifact/corpus.jsonl.*"
                                        r"Pass --data FOLDER.*or add --fetch"):
        check_data(tmp_path)


def test_make_eval_without_data_exits_with_the_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "scripts/eval_minilm.py", "--work", str(tmp_path), "--data",
                             str(tmp_path / "none")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no evaluation data in") and "Traceback" not in result.stderr


def test_fetch_offline_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    with pytest.raises(DataError, match=r"could not fetch .* \(HF_HUB_OFFLINE is set\).*pass --data FOLDER"):
        fetch(tmp_path / "data")


def test_fetched_files_are_written_in_the_layout_the_evaluator_reads(tmp_path, monkeypatch):
    """The hub's file formats (gzipped JSON lines, BEIR tsv), served from local files."""
    import huggingface_hub

    from edge_embed.evaluate import load_retrieval, load_sts_pairs

    hub = tmp_path / "hub"
    hub.mkdir()
    sts = [{"sentence1": "A man\tplays.", "sentence2": "A man is playing.", "score": 4.2},
           {"sentence1": "A cat.", "sentence2": "Stocks fell.", "score": 0.0}]
    files = {"test.jsonl.gz": sts,
             "corpus.jsonl.gz": [{"_id": "d1", "title": "T", "text": "doc one", "metadata": {}},
                                 {"_id": "d2", "title": "", "text": "doc two"}],
             "queries.jsonl.gz": [{"_id": "q1", "text": "query one"}, {"_id": "q9", "text": "not in qrels"}]}
    for name, records in files.items():
        with gzip.open(hub / name, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    (hub / "test.tsv").write_text("query-id\tcorpus-id\tscore\r\nq1\td2\t1\r\n", encoding="utf-8")
    assert sorted(name for _, name in HUB_FILES.values()) == sorted([*files, "test.tsv"])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, repo_type: str(hub / name))
    folder = fetch(tmp_path / "data")
    first, second, scores = load_sts_pairs(folder / "stsb" / "pairs.tsv")
    assert first == ["A man plays.", "A cat."] and second[1] == "Stocks fell." and list(scores) == [4.2, 0.0]
    retrieval = load_retrieval(folder / "scifact")
    assert retrieval is not None
    assert "q9" not in (folder / "scifact" / "queries.jsonl").read_text()
