"""Regenerate tests/data/<name>/ from reference fixtures (a maintainer's tool: it needs the folder of
reference outputs computed with the upstream model code; the tests never run it).

Copies the small JSON files of each fixture and writes golden.npz, a small extract of
reference.npz: embeddings, token ids, lengths, RoPE bases and (v2) top-2 expert choices.
Hidden states and router probabilities are left out to keep the files small.

    python tests/data/make_goldens.py --shared FIXTURES_DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURES = ("nomic-v15-tiny", "nomic-v15-tiny-longctx", "nomic-v2moe-tiny")
SMALL_FILES = (
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling/config.json",
    "weights_manifest.json",
    "texts.json",
    "truncation_text.json",
)
# Per-task arrays copied as they are (token ids keep int64, as in reference.npz).
TASK_KEYS = (
    "batch_index",
    "seq_len",
    "input_ids",
    "attention_mask",
    "truncation.input_ids",
    "truncation.untruncated_len",
    "rope_base",  # float64: exact upstream base' values, only N numbers
)


def extract(ref: np.lib.npyio.NpzFile) -> dict[str, np.ndarray]:
    out = {k: ref[k] for k in ref.files if k.startswith("meta.")}
    dims = [int(d) for d in ref["meta.matryoshka_dims"]]
    moe_layers = [int(layer) for layer in ref["meta.moe_layers"]] if "meta.moe_layers" in ref else []
    for task in ref["meta.tasks"]:
        for k in TASK_KEYS:
            out[f"{task}.{k}"] = ref[f"{task}.{k}"]
        for d in dims:
            out[f"{task}.embedding_d{d}"] = ref[f"{task}.embedding_d{d}"].astype(np.float32)
            single = ref[f"{task}.single.embedding_d{d}"]
            out[f"{task}.single.embedding_d{d}"] = single.astype(np.float32)
        # Texts missing from the padded batch (long-context fixture: S_i > 64) have token ids
        # only in their single run; keep those so every text's tokenization is checked.
        in_batch = set(ref[f"{task}.batch_index"].tolist())
        for i in range(int(ref["meta.num_texts"])):
            if i not in in_batch:
                key = f"{task}.single.text{i:02d}.input_ids"
                out[key] = ref[key]
        # v2: top-2 experts per token, highest probability first; -1 at padding.
        mask = ref[f"{task}.attention_mask"].astype(bool)
        for layer in moe_layers:
            probs = ref[f"{task}.router_probs.layer{layer}"]
            top2 = np.argsort(-probs, axis=-1, kind="stable")[..., :2].astype(np.int8)
            top2[~mask] = -1
            out[f"{task}.top2.layer{layer}"] = top2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, required=True, help="folder of the reference fixtures, one per name")
    args = ap.parse_args()
    for name in FIXTURES:
        src, dst = args.shared / name, HERE / name
        for rel in SMALL_FILES:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)
        with np.load(src / "reference.npz") as ref:
            arrays = extract(ref)
        np.savez_compressed(dst / "golden.npz", **arrays)
        print(f"{name}: {len(arrays)} arrays, {(dst / 'golden.npz').stat().st_size} bytes")


if __name__ == "__main__":
    main()
