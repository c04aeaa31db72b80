"""tokenizer.json -> tokenizer.unigram.json, the file edge_embed.unigram loads in place of it.

Written only for what edge_embed.unigram reproduces exactly: a Unigram model without byte
fallback, a Metaspace pre-tokenizer that always prepends and splits, special added tokens matched
as they are, and a template post-processor. Anything else keeps tokenizer.json alone. The scores
are taken from the tokenizer tokenizers has loaded (its own float64 values, which the Viterbi
search compares), not re-parsed from the JSON text.
"""
from __future__ import annotations

import base64
import hashlib
import json
import sys
from array import array
from pathlib import Path

from edge_embed.unigram import FORMAT, FORMAT_VERSION, SEPARATOR


def lean_tokenizer_data(path: Path) -> dict | None:
    """The lean file's content for the tokenizer.json at `path`, or None if it does not qualify."""
    from tokenizers import Tokenizer

    data = json.loads(Tokenizer.from_file(str(path)).to_str())
    model, pre, post = data.get("model") or {}, data.get("pre_tokenizer") or {}, data.get("post_processor") or {}
    if model.get("type") != "Unigram" or model.get("byte_fallback") or model.get("unk_id") is None:
        return None
    if pre.get("type") != "Metaspace" or pre.get("prepend_scheme") != "always" or not pre.get("split"):
        return None
    replacement = pre.get("replacement")
    if post.get("type") != "TemplateProcessing":
        return None
    added = data.get("added_tokens") or []
    if not all(token["special"] and not (token["normalized"] or token["lstrip"] or token["rstrip"]
                                         or token["single_word"]) for token in added):
        return None
    pieces = [piece for piece, _ in model["vocab"]]
    contents = [token["content"] for token in added]
    if any(SEPARATOR in piece for piece in pieces) or len(set(pieces)) != len(pieces):
        return None
    if any(not token or replacement in token or " " in token or pieces.index(token) != entry["id"]
           for token, entry in zip(contents, added) if token in pieces) or not set(contents) <= set(pieces):
        return None  # special tokens must be pieces at their own ids, and never look like a word
    for entry in post.get("special_tokens", {}).values():  # the runtime maps the template's ids to its model's
        if any(token not in contents or pieces.index(token) != token_id
               for token, token_id in zip(entry["tokens"], entry["ids"], strict=True)):
            return None
    order = sorted(range(len(pieces)), key=pieces.__getitem__)  # the runtime bisects the sorted pieces
    ids = _little_endian(array("i", order))
    scores = _little_endian(array("d", [float(model["vocab"][i][1]) for i in range(len(pieces))]))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "unk_id": model["unk_id"],
        "replacement": replacement,
        "special_tokens": contents,
        "normalizer": data.get("normalizer"),
        "post_processor": post,
        "longest": max(map(len, pieces)),
        "pieces": SEPARATOR.join(pieces[i] for i in order),  # sorted
        "ids": ids,  # the id of each sorted piece, int32 little-endian
        "scores": scores,  # the score of each id, float64 little-endian
    }


def _little_endian(values: array) -> str:
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def write_lean_tokenizer(path: Path, out: Path) -> bool:
    """Write the lean file for tokenizer.json `path` to `out`; False (nothing written) if it does not qualify."""
    data = lean_tokenizer_data(path)
    if data is None:
        return False
    out.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return True
