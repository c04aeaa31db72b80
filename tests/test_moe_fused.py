"""The fused MoE mode: one com.microsoft.MoE node per MoE layer, same function as the sparse path.

Fixture: hidden 32, inter 64, 8 experts, top-2, random weights at unit scale (pre-activations
~N(0, 1), where tanh and erf GELU differ most: up to 4.7e-4 per activation). Exported with the
TorchScript exporter (opset 18) at one shape, run by onnxruntime at token counts never traced.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from edge_embed.session import release_tuple
from export.moe_fused import QMOE_MIN_ONNXRUNTIME, _MoEOp, quantize_moe_node_int8
from export.nomic_bert import MoEMLP, NomicBertModel, NomicConfig

H, INTER, E, TOP_K = 32, 64, 8, 2
EXPORT_SHAPE = (2, 7)  # (batch, seq) traced at export
RUN_SHAPES = [(1, 3), (3, 11), (2, 40)]  # never traced
# fused (tanh GELU) vs sparse (erf GELU): measured max-abs 2.4e-4 .. 3.3e-4 through two MoE layers.
TANH_GELU_ATOL = 1e-3
# fused vs the same math in torch with tanh GELU: only summation order differs (measured 3e-7).
SAME_MATH_ATOL = 1e-5

CFG = NomicConfig(
    vocab_size=64, n_embd=H, n_head=4, n_layer=4, n_inner=INTER, type_vocab_size=2,
    layer_norm_epsilon=1e-12, activation="gelu", qkv_bias=True, fc1_bias=True, fc2_bias=True,
    rotary_base=1000.0, rotary_scaling_factor=None, max_trained_positions=2048,
    moe_every_n_layers=2, num_experts=E, moe_top_k=TOP_K, pad_token_id=1,
)  # fmt: skip


def init_moe(moe: MoEMLP) -> None:
    with torch.no_grad():
        moe.experts.mlp.w1.normal_(0, H**-0.5)
        moe.experts.mlp.w2.normal_(0, INTER**-0.5)
        moe.router.layer.weight.normal_(0, H**-0.5)
        moe.experts.bias.normal_(0, 0.02)


class MoEStack(torch.nn.Module):
    """Two MoE layers with a residual between them: x -> x + moe1(x) -> moe2(.)."""

    def __init__(self, mode: str):
        super().__init__()
        self.moe1, self.moe2 = MoEMLP(CFG, mode), MoEMLP(CFG, mode)

    def forward(self, x):
        real = torch.ones(x.shape[:-1], dtype=torch.bool)
        h = x + self.moe1(x, real)
        return self.moe2(h, real)


def export(
    module: torch.nn.Module, args: tuple, path, input_names: list[str], dims=("batch", "seq")
) -> onnx.ModelProto:
    """TorchScript export, opset 18; the leading `dims` of every input and the output are dynamic."""
    axes = {name: dict(enumerate(dims)) for name in [*input_names, "out"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), args, str(path), dynamo=False, opset_version=18,
            input_names=input_names, output_names=["out"], dynamic_axes=axes,
        )  # fmt: skip
    return onnx.load(str(path))


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def moe_nodes(model: onnx.ModelProto, op_type: str = "MoE") -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type and n.domain == "com.microsoft"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def moe_reference(moe: MoEMLP, tokens: torch.Tensor, gelu: str, renormalise: bool) -> torch.Tensor:
    """Dense top-k mixture with a chosen GELU and optional top-k renormalisation (no shared bias)."""
    probs = (tokens @ moe.router.layer.weight.t()).softmax(-1)
    weights, experts = probs.topk(TOP_K, dim=-1)
    if renormalise:
        weights = weights / weights.sum(-1, keepdim=True)
    w1 = moe.experts.mlp.w1.view(E, INTER, H)
    w2 = moe.experts.mlp.w2.view(E, INTER, H)
    out = torch.zeros_like(tokens)
    for slot in range(TOP_K):
        for e in range(E):
            rows = experts[:, slot] == e
            h = F.gelu(tokens[rows] @ w1[e].t(), approximate=gelu) @ w2[e]
            out[rows] += weights[rows, slot, None] * h
    return out


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """Sparse and fused two-layer stacks with the same weights, and their ONNX exports."""
    torch.manual_seed(0)
    sparse = MoEStack("sparse")
    init_moe(sparse.moe1)
    init_moe(sparse.moe2)
    fused = MoEStack("fused")
    fused.load_state_dict(sparse.state_dict())
    x = torch.randn(*EXPORT_SHAPE, H)
    tmp = tmp_path_factory.mktemp("moe_stack")
    return {
        "torch_sparse": sparse.eval(),
        "torch_fused": fused.eval(),
        "sparse": export(sparse, (x,), tmp / "sparse.onnx", ["x"]),
        "fused": export(fused, (x,), tmp / "fused.onnx", ["x"]),
    }


def test_eager_fused_mode_is_the_sparse_path():
    torch.manual_seed(1)
    sparse = MoEMLP(CFG, "sparse")
    init_moe(sparse)
    fused = MoEMLP(CFG, "fused")
    fused.load_state_dict(sparse.state_dict())
    x = torch.randn(3, 5, H)
    real = torch.ones(3, 5, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(fused(x, real), sparse(x, real))
        # The autograd.Function's own forward (what the exporter traces) is the same function too.
        tokens = x.reshape(-1, H)
        w1, w2 = sparse.experts.mlp.w1, sparse.experts.mlp.w2
        op = _MoEOp.apply(tokens, sparse.router.layer(tokens), w1, w2, sparse)
        assert torch.equal(op, sparse.sparse(tokens, real.reshape(-1)))


def test_fused_export_has_one_moe_node_per_moe_layer(stacks):
    model = stacks["fused"]
    nodes = moe_nodes(model)
    assert len(nodes) == 2
    assert any(op.domain == "com.microsoft" and op.version == 1 for op in model.opset_import)
    producers = {out: n for n in model.graph.node for out in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"k": 2, "activation_type": b"gelu", "normalize_routing_weights": 0}
        _, router, fc1, fc1_bias, fc2 = node.input  # no fc2 bias, no fc3
        assert fc1_bias == ""
        assert producers[router].op_type == "MatMul"  # the router logits, computed in the graph
        assert list(inits[fc1].dims) == [E, INTER, H]
        assert list(inits[fc2].dims) == [E, H, INTER]
    # the shared experts.bias is an Add after each node, never an fc bias
    assert (
        sum(
            n.op_type == "Add" and any("experts.bias" in i for i in n.input)
            for n in model.graph.node
        )
        == 2
    )
    assert not moe_nodes(stacks["sparse"])


@pytest.mark.parametrize("shape", RUN_SHAPES)
def test_fused_onnx_matches_sparse_up_to_tanh_gelu(stacks, shape):
    x = torch.randn(*shape, H, generator=torch.Generator().manual_seed(shape[1]))
    with torch.no_grad():
        expected = stacks["torch_sparse"](x).numpy()
    sparse = session(stacks["sparse"]).run(None, {"x": x.numpy()})[0]
    fused = session(stacks["fused"]).run(None, {"x": x.numpy()})[0]
    assert fused.shape == expected.shape
    np.testing.assert_allclose(sparse, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fused, sparse, rtol=0, atol=TANH_GELU_ATOL)
    assert np.abs(fused - sparse).max() > 1e-6  # the kernel's GELU is not erf


class OneMoE(torch.nn.Module):
    """One MoE layer on flat tokens [T, H], all real."""

    def __init__(self, moe: MoEMLP):
        super().__init__()
        self.moe = moe

    def forward(self, tokens):
        return self.moe(tokens, torch.ones(tokens.shape[0], dtype=torch.bool))


def test_moe_kernel_uses_tanh_gelu_and_does_not_renormalise(tmp_path):
    torch.manual_seed(2)
    moe = MoEMLP(CFG, "fused")
    init_moe(moe)
    tokens = torch.randn(50, H)
    model = export(OneMoE(moe), (tokens[:9],), tmp_path / "one.onnx", ["t"], ("tokens",))
    out = session(model).run(None, {"t": tokens.numpy()})[0]
    out = out - moe.experts.bias.detach().numpy()
    with torch.no_grad():
        tanh_plain = moe_reference(moe, tokens, "tanh", renormalise=False).numpy()
        tanh_renorm = moe_reference(moe, tokens, "tanh", renormalise=True).numpy()
        erf_plain = moe_reference(moe, tokens, "none", renormalise=False).numpy()
    np.testing.assert_allclose(out, tanh_plain, rtol=0, atol=SAME_MATH_ATOL)
    assert np.abs(out - erf_plain).max() > 10 * SAME_MATH_ATOL
    assert np.abs(out - tanh_renorm).max() > 0.05


def test_full_model_fused_matches_sparse_on_real_tokens(tmp_path):
    torch.manual_seed(3)
    sparse = NomicBertModel(CFG, "sparse")
    for layer in sparse.encoder.layers:
        if isinstance(layer.mlp, MoEMLP):
            init_moe(layer.mlp)
    fused = NomicBertModel(CFG, "fused")
    fused.load_state_dict(sparse.state_dict())
    ids = torch.randint(2, CFG.vocab_size, EXPORT_SHAPE)
    mask = torch.ones(EXPORT_SHAPE, dtype=torch.int64)
    names = ["input_ids", "attention_mask"]
    fused_onnx = export(fused, (ids, mask), tmp_path / "fused.onnx", names)
    assert len(moe_nodes(fused_onnx)) == sum(CFG.is_moe_layer(i) for i in range(CFG.n_layer)) == 2
    run = session(fused_onnx)
    for batch, seq in [(1, 5), (3, 13)]:
        ids = torch.randint(2, CFG.vocab_size, (batch, seq))
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[-1, seq // 2 :] = 0  # one padded text: padding must not change real tokens
        with torch.no_grad():
            expected = sparse(ids, mask).numpy()
        got = run.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        real = mask.numpy().astype(bool)
        np.testing.assert_allclose(got[real], expected[real], rtol=0, atol=TANH_GELU_ATOL)


@pytest.mark.skipif(release_tuple(ort.__version__) < release_tuple(QMOE_MIN_ONNXRUNTIME),
                    reason=f"QMoE with router_weights needs onnxruntime >= {QMOE_MIN_ONNXRUNTIME}")
def test_int8_qmoe_rewrite_keeps_cosine_above_0_999(stacks):
    fused = stacks["fused"]
    int8 = quantize_moe_node_int8(fused)
    onnx.checker.check_model(int8)
    assert not moe_nodes(int8)
    qnodes = moe_nodes(int8, "QMoE")
    assert len(qnodes) == 2
    inits = {t.name: t for t in int8.graph.initializer}
    for node in qnodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["expert_weight_bits"] == 8 and attrs["normalize_routing_weights"] == 0
        assert inits[node.input[2]].data_type == onnx.TensorProto.UINT8
        assert list(inits[node.input[3]].dims) == [E, INTER]  # one scale per output channel
        assert node.input[14]  # router_weights given, so the CPU kernel does not renormalise
    assert int8.ByteSize() < 0.5 * fused.ByteSize()
    for shape in RUN_SHAPES:
        x = np.random.default_rng(shape[1]).standard_normal((*shape, H)).astype(np.float32)
        ref = session(fused).run(None, {"x": x})[0]
        got = session(int8).run(None, {"x": x})[0]
        assert cosine(got, ref).min() >= 0.999
