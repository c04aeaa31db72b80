"""The v2-moe expert layer as one onnxruntime `com.microsoft.MoE` node ("fused" MoE mode).

`fused_moe(tokens, moe)` is what `MoEMLP` calls in mode "fused". In eager torch it runs the
sparse path itself (`moe.sparse` with every token counted as real), so the torch model computes
the same function in every mode. Under the TorchScript ONNX exporter
(`torch.onnx.export(..., dynamo=False)`) it becomes

    logits = MatMul(tokens, router.T)                                   # [T, E], fp32
    out    = com.microsoft.MoE(tokens, logits, fc1, , fc2)              # [T, H]
             k=top_k, activation_type="gelu", normalize_routing_weights=0

and the caller adds the shared `experts.bias` after it (an fc2 bias inside the node would be
scaled by the routing weights). Layout for onnxruntime 1.32 (the operator schema's shapes,
confirmed against a numpy reference and by tests/test_moe_fused.py; the swapped layout is off
by O(1)):

    fc1_experts_weights  [E, F, H] = w1.view(E, F, H)                   # h = x @ fc1[e].T
    fc2_experts_weights  [E, H, F] = w2.view(E, F, H).transpose(1, 2)   # y = g @ fc2[e].T

What the CPU kernel does differently from the reference (measured, onnxruntime 1.32.0):
- its "gelu" is the tanh approximation, not erf (at most 4.7e-4 per activation): one MoE layer
  differs from the sparse path by 1e-4 to 4e-4 max-abs on unit-scale random weights, at the
  tiny test size and at 768/3072/8 experts alike;
- it routes padding tokens too, where the sparse path leaves them zero; padded rows never reach
  a real token (attention masks them, pooling skips them);
- with normalize_routing_weights=0 it does NOT renormalise the top-k weights, as Nomic wants.

`quantize_moe_node_int8` rewrites each MoE node into a `com.microsoft.QMoE` with int8 symmetric
per-output-channel expert weights. The CPU QMoE kernel renormalises the top-k weights whatever
normalize_routing_weights says, unless the optional `router_weights` input is given; the rewrite
therefore adds Softmax(logits) as `router_weights`, whose gathered top-k values are used as is.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
# The QMoE node with `router_weights` (its 15th input) runs from onnxruntime 1.28.0: 1.23.1-1.27.0
# reject it ("input size 15 not in range [min=7, max=11]"; tested 1.23.1, 1.24.4, 1.26.0, 1.27.0),
# and 1.27.1 is also where a QMoE CPU livelock was fixed (microsoft/onnxruntime#29081).
QMOE_MIN_ONNXRUNTIME = "1.28.0"


class _MoEOp(torch.autograd.Function):
    """One `com.microsoft.MoE` node when traced by the TorchScript exporter.

    forward: the function the node stands for (erf GELU, like torch's sparse path), from the
    router logits it is given, written like `MoEMLP.sparse` on all tokens. It runs only while
    tracing, where calling a submodule (`moe.sparse` calls the router Linear) inside a Function
    breaks the tracer's module map.
    symbolic: the contrib op. `moe` is a non-tensor argument, read for its sizes and `expert`.
    """

    @staticmethod
    def forward(ctx, tokens, logits, w1, w2, moe):
        weights, experts = logits.float().softmax(dim=-1).topk(moe.top_k, dim=-1)
        out = torch.zeros_like(tokens)
        for e in range(moe.num_experts):
            token_idx, slot = (experts == e).nonzero(as_tuple=True)
            routed = moe.expert(e, tokens[token_idx]) * weights[token_idx, slot][:, None]
            out = out.index_add(0, token_idx, routed)
        return out

    @staticmethod
    def symbolic(g, tokens, logits, w1, w2, moe):
        e, f, h = moe.num_experts, moe.n_inner, moe.n_embd
        shape = g.op("Constant", value_t=torch.tensor([e, f, h], dtype=torch.int64))
        fc1 = g.op("Reshape", w1, shape)  # [E, F, H], folded into an initializer on export
        fc2 = g.op("Transpose", g.op("Reshape", w2, shape), perm_i=[0, 2, 1])  # [E, H, F]
        no_bias = g.op("prim::Constant")  # an absent optional input ("" in the ONNX node)
        no_bias.setType(torch._C.OptionalType.ofTensor())
        out = g.op(
            f"{MS_DOMAIN}::MoE",
            tokens,
            logits,
            fc1,
            no_bias,
            fc2,
            k_i=moe.top_k,
            activation_type_s="gelu",
            normalize_routing_weights_i=0,
        )
        out.setType(tokens.type())
        return out


def fused_moe(tokens: torch.Tensor, moe) -> torch.Tensor:
    """Top-k expert mixture of `tokens` [T, H] float32 -> [T, H] float32, without experts.bias.

    `moe` is an `export.nomic_bert.MoEMLP`. Eager: exactly `moe.sparse(tokens, all real)`.
    During `torch.onnx.export(..., dynamo=False)`: a router MatMul and one com.microsoft.MoE node
    (opset domain com.microsoft version 1). The dynamo exporter does not use this symbolic.
    """
    if not torch.onnx.is_in_onnx_export():
        return moe.sparse(
            tokens, torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        )
    logits = moe.router(tokens)  # a MatMul in the graph; the kernel applies the softmax
    return _MoEOp.apply(tokens, logits, moe.experts.mlp.w1, moe.experts.mlp.w2, moe)


# --- int8 experts: MoE -> QMoE ------------------------------------------------------------------

# QMoE input slots (onnxruntime 1.32 schema); MoE has slots 0-7 with the same meaning minus scales.
_MOE_IN = {"input": 0, "router_probs": 1, "fc1": 2, "fc1_bias": 3, "fc2": 4, "fc2_bias": 5}
_QMOE_IN = {
    "input": 0, "router_probs": 1, "fc1": 2, "fc1_scales": 3, "fc1_bias": 4,
    "fc2": 5, "fc2_scales": 6, "fc2_bias": 7, "router_weights": 14,
}  # fmt: skip
_QMOE_KEEP_ATTRS = {"k", "activation_type", "normalize_routing_weights"}


def quantize_int8_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[E, N, K] float -> (uint8 [E, N, K], float32 scales [E, N]), symmetric per output row.

    QMoE's default int8 zero point is 128: dequantized = (q - 128) * scale, q in [1, 255].
    """
    w = weight.astype(np.float32)
    scale = np.abs(w).max(axis=-1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scale


def quantize_moe_node_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every com.microsoft.MoE node replaced by an int8 QMoE node.

    Expert weights must be initializers (the TorchScript export with constant folding gives
    that). Each becomes uint8 [E, N, K] (zero point 128, symmetric) with float32 scales [E, N],
    one per output channel, as onnxruntime's `quantize_matmul_8bits` lays them out
    (weights_prepacked=0, no block_size). Biases, k and activation_type carry over.

    Routing: with normalize_routing_weights=0 a Softmax(router_probs) node is added and passed as
    QMoE's `router_weights` input; without it the CPU kernel renormalises the top-k weights.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumed: set[str] = set()
    nodes = []
    for node in graph.node:
        if node.op_type != "MoE" or node.domain != MS_DOMAIN:
            nodes.append(node)
            continue
        nodes.extend(_moe_to_qmoe(node, inits, graph, consumed))
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = {name for n in graph.node for name in n.input}
    keep = [t for t in graph.initializer if t.name not in consumed or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def _moe_to_qmoe(node, inits, graph, consumed) -> list[onnx.NodeProto]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    ins = list(node.input) + [""] * (8 - len(node.input))
    if (
        any(ins[6:])
        or attrs.get("use_sparse_mixer", 0)
        or attrs.get("activation_type") == b"swiglu"
    ):
        raise NotImplementedError(
            f"{node.name}: fc3 / swiglu / sparse mixer MoE nodes are not handled"
        )
    extra = set(attrs) - _QMOE_KEEP_ATTRS
    if extra:
        raise NotImplementedError(f"{node.name}: MoE attributes {sorted(extra)} are not handled")
    name = node.name or node.output[0]
    q_ins = [""] * 15
    for key in ("input", "router_probs", "fc1_bias", "fc2_bias"):
        q_ins[_QMOE_IN[key]] = ins[_MOE_IN[key]]
    new_inits = []
    for fc in ("fc1", "fc2"):
        src = ins[_MOE_IN[fc]]
        if src not in inits:
            raise ValueError(
                f"{name}: {fc} weight {src!r} is not an initializer; export with constant folding"
            )
        q, scale = quantize_int8_per_channel(numpy_helper.to_array(inits[src]))
        consumed.add(src)
        q_ins[_QMOE_IN[fc]] = f"{name}/{fc}_int8"
        q_ins[_QMOE_IN[f"{fc}_scales"]] = f"{name}/{fc}_scales"
        new_inits.append(numpy_helper.from_array(q, q_ins[_QMOE_IN[fc]]))
        new_inits.append(numpy_helper.from_array(scale, q_ins[_QMOE_IN[f"{fc}_scales"]]))
    graph.initializer.extend(new_inits)
    out = []
    if not attrs.get("normalize_routing_weights", 0):
        probs = f"{name}/router_softmax"
        out.append(helper.make_node("Softmax", [ins[1]], [probs], name=probs, axis=-1))
        q_ins[_QMOE_IN["router_weights"]] = probs
    while q_ins[-1] == "":
        q_ins.pop()
    q_attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    q_attrs.update(expert_weight_bits=8, weights_prepacked=0)
    out.append(
        helper.make_node(
            "QMoE", q_ins, list(node.output), name=f"{name}/int8", domain=MS_DOMAIN, **q_attrs
        )
    )
    return out
