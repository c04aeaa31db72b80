"""Check a freshly written bundle against the torch model it came from.

The bundle is run through the real runtime (`edge_embed.Embedder`), so validation covers
tokenization, batching, pooling and the Matryoshka recipe exactly as users run them.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edge_embed import Embedder
from edge_embed.batching import pad
from edge_embed.errors import EdgeEmbedError, NonFiniteError
from edge_embed.manifest import STATIC_INT8_MODEL, read_manifest
from edge_embed.pooling import POOLINGS, matryoshka
from edge_embed.session import create_session
from export.st_reference import ST_MIN_COSINE, sentence_transformers_figures

FP32_MAX_ABS = 1e-4  # on unit-norm full-width embeddings
INT8_MIN_COSINE = 0.98  # the default gate: int8's worst text against fp32

TEXTS = [
    "Hello!",
    "search_query: what is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "¡Hola! ¿Cómo estás? Hoy hace un día precioso en Madrid.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "今天天气很好，我们一起去公园散步吧。",
    "مرحبا بالعالم! كيف حالك اليوم؟",
    "नमस्ते, आप कैसे हैं? मैं ठीक हूँ, धन्यवाद।",
    "Invoice #4711 totals €1,234.56 and is due on 2024-03-15 (net 30 days).",
    "Mixture-of-experts layers send each token to the two experts with the highest router "
    "probability, so only a fraction of the parameters is used for any given token. " * 3,
]


class ValidationError(EdgeEmbedError):
    """The exported ONNX does not reproduce the torch model."""


def validation_texts(config: dict, max_length: int) -> list[str]:
    """The fixed set, plus one text past max_trained_positions when dynamic NTK applies."""
    texts = list(TEXTS)
    trained = config.get("max_trained_positions")
    if config.get("rotary_scaling_factor") and trained and trained < max_length:
        words = min(trained + 64, max_length - 8)
        texts.append(" ".join(f"word{i % 97}" for i in range(words)))
    return texts


def torch_pooled(model, embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, list]:
    """Pooled states of the torch model (the bundle's pooling), one text at a time, with the runtime's tokens.
    Also returns the routed experts per MoE layer (real tokens) for routing agreement."""
    encoded = embedder.tokenizer.encode(texts)
    routes: list[list[np.ndarray]] = []
    pooled = []
    for seq in encoded.sequences:
        ids, mask = pad([seq], embedder.manifest.pad_token_id)
        captured = []
        hooks = [
            module.register_forward_hook(_capture_routes(captured))
            for module in model.modules() if module.__class__.__name__ == "MoEMLP"
        ]
        with torch.no_grad():
            hidden = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        for hook in hooks:
            hook.remove()
        routes.append(captured)
        pooled.append(POOLINGS[embedder.manifest.pooling](hidden, mask)[0])
    return np.stack(pooled), routes


def _capture_routes(store: list):
    def hook(module, inputs, output):
        tokens = inputs[0].reshape(-1, module.n_embd)
        _, _, experts = module.route(tokens)
        store.append(np.sort(experts.numpy(), axis=-1))

    return hook


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    cos = (reference * candidate).sum(axis=1)
    return {
        "max_abs": float(np.abs(reference - candidate).max()),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
    }


def onnx_routes(path, embedder: Embedder, texts: list[str]) -> list[list[np.ndarray]]:
    """Expert choices of an ONNX MoE graph: expose every TopK's indices as extra outputs."""
    model = onnx.load(str(path))
    topk = [node.output[1] for node in model.graph.node if node.op_type == "TopK"]
    if not topk:
        return []
    for name in topk:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    encoded = embedder.tokenizer.encode(texts)
    routes = []
    for seq in encoded.sequences:
        ids, mask = pad([seq], embedder.manifest.pad_token_id)
        outputs = session.run(topk, {"input_ids": ids, "attention_mask": mask})
        routes.append([np.sort(out.reshape(-1, out.shape[-1]), axis=-1) for out in outputs])
    return routes


def routing_agreement(reference: list, candidate: list) -> dict:
    """Fraction of (token, MoE layer) pairs whose chosen expert set is the same."""
    same = total = k = 0
    per_layer: dict[int, list[int]] = {}
    for ref_layers, cand_layers in zip(reference, candidate):
        for layer, (ref, cand) in enumerate(zip(ref_layers, cand_layers)):
            k = ref.shape[-1]
            equal = (ref == cand).all(axis=-1)
            counts = per_layer.setdefault(layer, [0, 0])
            counts[0] += int(equal.sum())
            counts[1] += equal.size
            same += int(equal.sum())
            total += equal.size
    return {
        "top_k": k,
        "top2_agreement": same / total if total else None,  # the key predates top_k: same chosen set, any k
        "per_layer": [s / t for s, t in per_layer.values()],
        "tokens": total // max(len(per_layer), 1),
    }


def validate_bundle(model, bundle, config: dict, source=None, int8_min_cosine: float = INT8_MIN_COSINE) -> dict:
    """Run every precision of the bundle on the validation texts; fail loudly on fp32 drift.

    report["failed"] says why no bundle may be written; report["int8_failed"] why the int8 model
    may not (its min cosine to fp32 below int8_min_cosine). With `source` (the checkpoint folder),
    fp32 is also compared with sentence-transformers where it can run the checkpoint."""
    report: dict = {"texts": 0, "precisions": {}, "int8_min_cosine": int8_min_cosine}
    reference_routes = None
    manifest = read_manifest(bundle)
    for precision in [p for p in ("fp32", "int8", STATIC_INT8_MODEL, "fp16") if p in manifest.models]:  # fp16 on CPU
        try:
            embedder = _embedder(bundle, precision)
        except EdgeEmbedError as exc:
            if precision not in manifest.requires_onnxruntime:  # a model the exporter got wrong
                raise ValidationError(f"the {precision} model written cannot be loaded: {exc}") from exc
            # written for a newer onnxruntime than this one (--moe fused's QMoE): not loadable here
            report["precisions"][precision] = {"not_validated": str(exc)}
            print(f"[validate] {precision}: NOT VALIDATED: {exc}", flush=True)
            continue
        texts = validation_texts(config, embedder.max_length)
        report["texts"] = len(texts)
        mat = embedder.manifest.matryoshka
        if reference_routes is None:
            pooled_ref, reference_routes = torch_pooled(model, embedder, texts)
            expected = matryoshka(pooled_ref, mat.max_dim, mat.layer_norm, mat.layer_norm_eps)
        try:
            got = embedder.embed(texts)
        except NonFiniteError as exc:  # the runtime refuses to return NaN states: report them as NaN
            print(f"[validate] {precision}: {exc}", flush=True)
            got = np.full_like(expected, np.nan)
        figures = compare(expected, got)
        routes = onnx_routes(bundle / embedder.manifest.models[precision][0], embedder, texts)
        if any(reference_routes) and routes:  # fused MoE nodes route internally: nothing to read
            figures["routing"] = routing_agreement(reference_routes, routes)
        report["precisions"][precision] = figures
        print(f"[validate] {precision}: " + _line(figures), flush=True)
        if precision == "fp32" and source is not None:
            report["sentence_transformers"] = sentence_transformers_figures(source, embedder, texts)
            print(f"[validate] fp32 vs sentence-transformers: {_st_line(report['sentence_transformers'])}", flush=True)
    failed = verdict(report["precisions"]) or st_verdict(report.get("sentence_transformers", {}))
    if failed:
        report["failed"] = failed
    for key in ("int8", STATIC_INT8_MODEL):
        int8 = report["precisions"].get(key, {})
        if "min_cosine" in int8 and not int8["min_cosine"] >= int8_min_cosine:
            report[f"{key}_failed"] = (f"{key}'s min cosine to fp32 is {int8['min_cosine']:.4f}, below the "
                                       f"{int8_min_cosine} required")
    return report


def _embedder(bundle, key: str) -> Embedder:
    """The bundle's model under this models key on onnxruntime's CPU provider. The QDQ model beside
    onnxruntime's int8 one (--int8-scheme both) is what OpenVINO runs; onnxruntime runs its arithmetic
    too (token states within cosine 0.999 of the integer-operator form, tests/test_static_int8.py), and
    is there wherever the export runs."""
    if key != STATIC_INT8_MODEL:
        return Embedder(bundle, precision=key, providers="cpu", verify=False)
    embedder = Embedder(bundle, precision="int8", providers="cpu", verify=False)
    embedder.session = create_session(bundle / embedder.manifest.models[key][0], embedder.providers)
    return embedder


def st_verdict(figures: dict) -> str | None:
    if "min_cosine" in figures and not figures["min_cosine"] >= ST_MIN_COSINE:
        return (f"fp32 differs from sentence-transformers {figures['version']} (min cosine "
                f"{figures['min_cosine']:.6f} < {ST_MIN_COSINE}): the tokenizer, pooling or normalization differs")
    return None


def _st_line(figures: dict) -> str:
    if "skipped" in figures:
        return f"not compared: {figures['skipped']}"
    return f"max-abs {figures['max_abs']:.2e}, min cosine {figures['min_cosine']:.6f}"


def verdict(precisions: dict[str, dict]) -> str | None:
    """Why the bundle must not be written, or None. NaN compares false with everything, so
    non-finite figures are looked for first."""
    fp32 = precisions.get("fp32", {})
    non_finite = [name for name, figures in precisions.items() if "max_abs" in figures
                  and not np.isfinite([figures["max_abs"], figures["min_cosine"]]).all()]
    if "max_abs" not in fp32:
        return f"fp32 could not be run: {fp32.get('not_validated', 'no fp32 model')}"
    if non_finite:
        return f"{', '.join(non_finite)} gave NaN or infinite embeddings"
    if not fp32["max_abs"] <= FP32_MAX_ABS:
        return f"fp32 max-abs {fp32['max_abs']:.3g} > {FP32_MAX_ABS}"
    return None


def _line(figures: dict) -> str:
    text = (f"max-abs {figures['max_abs']:.2e}, min cosine {figures['min_cosine']:.6f}, "
            f"mean cosine {figures['mean_cosine']:.6f}")
    if "routing" in figures:
        routing = figures["routing"]
        text += f", top-{routing.get('top_k', 2)} routing agreement {routing['top2_agreement']:.4f}"
    return text
