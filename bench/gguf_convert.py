"""HF Nomic checkpoint -> GGUF (F16 or Q8_0) for llama.cpp, with the `gguf` package's writer.

Follows llama.cpp's convert_hf_to_gguf.py `NomicBertModel` (conversion/bert.py in recent
llama.cpp): arch nomic-bert (v1.5) or nomic-bert-moe (v2-moe); tensor names from gguf's
TensorNameMap; experts w1 viewed [E, F, H], w2 viewed [E, F, H] and transposed to [E, H, F];
`mlp.experts.bias` dropped (as upstream does; it is zero in the bench checkpoints); context
length 2048 for v1.5 and 512 for v2-moe (upstream's rule); mean pooling from 1_Pooling;
WordPiece vocab written as llama.cpp's "bert" phantom-space vocab, XLM-R Unigram as "t5".
Tensors that upstream keeps in F32 (1-D, norms, router, token types) stay F32; every other
weight is F16 or Q8_0 (token embeddings included, as `--outtype q8_0` does).
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np


def _vocab_wordpiece(writer, gguf, tok: dict, vocab_size: int, type_vocab: int) -> None:
    reverse = {i: t for t, i in tok["model"]["vocab"].items()}
    special = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if i in special:
            tokens.append(token)  # control tokens keep their text
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_type_count(type_vocab)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)


def _vocab_unigram(writer, gguf, tok: dict, vocab_size: int, type_vocab: int) -> None:
    pieces = tok["model"]["vocab"]
    unk = tok["model"].get("unk_id", 3)
    special = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
    size = max(vocab_size, len(pieces))
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    scores = [-10000.0] * size
    types = [gguf.TokenType.UNUSED] * size
    for i, (piece, score) in enumerate(pieces):
        tokens[i] = piece.encode("utf-8")
        scores[i] = float(score)
        types[i] = (gguf.TokenType.UNKNOWN if i == unk else
                    gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    norm = tok.get("normalizer") or {}
    parts = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    charsmap = next((p["precompiled_charsmap"] for p in parts if p.get("type") == "Precompiled"), None)
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(True)
    writer.add_token_type_count(type_vocab)
    writer.add_remove_extra_whitespaces(True)
    if charsmap:
        writer.add_precompiled_charsmap(base64.b64decode(charsmap))


def _pooling(src: Path, gguf):
    modules = src / "modules.json"
    if not modules.exists():
        return None
    for module in json.loads(modules.read_text(encoding="utf-8")):
        if module["type"].endswith("Pooling"):
            cfg = json.loads((src / module["path"] / "config.json").read_text(encoding="utf-8"))
            if cfg.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if cfg.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
    return None


def convert(src: Path, out: Path, outtype: str, log=print) -> Path:
    """Write SRC (HF directory) as a GGUF at OUT; outtype "F16" or "Q8_0"."""
    import gguf
    from safetensors.numpy import load_file

    start = time.perf_counter()
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    moe = bool(config.get("moe_every_n_layers"))
    arch = gguf.MODEL_ARCH.NOMIC_BERT_MOE if moe else gguf.MODEL_ARCH.NOMIC_BERT
    qtype = {"F16": gguf.GGMLQuantizationType.F16, "Q8_0": gguf.GGMLQuantizationType.Q8_0}[outtype]
    ftype = {"F16": gguf.LlamaFileType.MOSTLY_F16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    n_layer, n_embd, n_inner = config["n_layer"], config["n_embd"], config["n_inner"]
    npos, trained = config["n_positions"], config.get("max_trained_positions", 2048)
    context = {(8192, 2048): 2048, (2048, 2048): 512}.get((npos, trained), npos)
    multiple = config.get("pad_vocab_size_multiple", 1) or 1
    vocab_size = -(-config["vocab_size"] // multiple) * multiple

    tmp = out.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(config.get("_name_or_path", src.name))
    writer.add_block_count(n_layer)
    writer.add_context_length(context)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_inner)
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config.get("layer_norm_epsilon", 1e-12))
    writer.add_causal_attention(False)
    rope = (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rotary_emb_base", 10000)
    writer.add_rope_freq_base(float(rope))
    pooling = _pooling(src, gguf)
    if pooling is not None:
        writer.add_pooling_type(pooling)
    if moe:
        writer.add_expert_count(config["num_experts"])
        writer.add_expert_used_count(config.get("moe_top_k", 2))
        writer.add_moe_every_n_layers(config["moe_every_n_layers"])
    writer.add_file_type(ftype)
    type_vocab = config.get("type_vocab_size", 1)
    if tok["model"]["type"] == "WordPiece":
        _vocab_wordpiece(writer, gguf, tok, vocab_size, type_vocab)
    else:
        _vocab_unigram(writer, gguf, tok, vocab_size, type_vocab)
    gguf.SpecialVocab(src, n_vocab=vocab_size).add_to_gguf(writer)

    names = gguf.get_tensor_name_map(arch, n_layer)
    keep_f32 = (gguf.MODEL_TENSOR.FFN_GATE_INP, gguf.MODEL_TENSOR.TOKEN_TYPES, gguf.MODEL_TENSOR.POS_EMBD)
    tensors = load_file(str(src / "model.safetensors"))
    for key in sorted(tensors):
        data = tensors.pop(key)
        if "mlp.experts.bias" in key:
            continue
        if key.endswith(("mlp.experts.mlp.w1", "mlp.experts.mlp.w2")):
            data = data.reshape(config["num_experts"], n_inner, n_embd)
            if key.endswith("w2"):
                data = np.ascontiguousarray(data.transpose(0, 2, 1))
            key += ".weight"
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for {key}")
        bid = next((int(p) for p in name.split(".") if p.isdecimal()), None)
        f32 = data.ndim <= 1 or name.endswith("_norm.weight") or any(
            name == gguf.TENSOR_NAMES[t].format(bid=bid) + ".weight" for t in keep_f32)
        if f32:
            writer.add_tensor(name, data.astype(np.float32))
            continue
        try:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        except gguf.QuantError:  # rows not a multiple of the block size
            writer.add_tensor(name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16),
                              raw_dtype=gguf.GGMLQuantizationType.F16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    log(f"[bench] GGUF {outtype} written: {out} ({out.stat().st_size / 1e6:.0f} MB, "
        f"{time.perf_counter() - start:.0f} s)")
    return out
