"""Length-sorted token-budget batching: a text's embedding never depends on its batch."""
from __future__ import annotations

import numpy as np

from edge_embed import Embedder
from edge_embed.batching import BatchLimits, pad, plan_batches


def test_batches_are_length_sorted_and_within_budget():
    lengths = [5, 300, 17, 17, 120, 3, 64, 64, 64, 1000]
    limits = BatchLimits(max_tokens=400, max_attention_cells=1 << 30, max_batch_size=3)
    batches = list(plan_batches(lengths, limits))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 400
    assert batches[0] == [9]  # longer than the budget: alone


def padded_tokens(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_batches_cut_where_padding_costs_more_than_another_batch():
    # One batch of four pads three texts by 40 tokens each (120 tokens); splitting off the
    # longest costs one batch (16 tokens) and no padding.
    lengths = [60, 100, 60, 60]
    batches = list(plan_batches(lengths, BatchLimits(max_tokens=1000, batch_cost=16)))
    assert batches == [[1], [0, 2, 3]]
    # Near-equal lengths are not worth a batch each: they stay together.
    lengths = [60, 61, 60, 62]
    assert len(list(plan_batches(lengths, BatchLimits(max_tokens=1000, batch_cost=16)))) == 1


def test_realistic_spread_pads_less_than_two_percent():
    rng = np.random.default_rng(0)
    for target in (32, 128, 512):
        lengths = np.clip(rng.normal(target, 0.12 * target, 200).round(), 4, None).astype(int).tolist()
        batches = list(plan_batches(lengths))
        assert padded_tokens(batches, lengths) <= 1.02 * sum(lengths)
        assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= BatchLimits().max_tokens for b in batches)


def test_dense_models_get_smaller_cpu_batches_than_moe_models(bundle):
    dense = BatchLimits.for_provider("CPUExecutionProvider", "int8")
    moe = BatchLimits.for_provider("CPUExecutionProvider", "int8", moe=True)
    assert (dense.max_tokens, moe.max_tokens) == (1024, 2048)
    assert Embedder(bundle("nomic-v15-tiny"), precision="int8", providers="cpu").batch_limits == dense
    assert Embedder(bundle("nomic-v2moe-tiny"), precision="int8", providers="cpu").batch_limits == moe


def test_gpu_batches_are_longer_than_cpu_batches():
    cpu, gpu = BatchLimits.for_provider("CPUExecutionProvider"), BatchLimits.for_provider("CUDAExecutionProvider")
    assert gpu.max_tokens > cpu.max_tokens and gpu.batch_cost > cpu.batch_cost
    lengths = [40] * 300
    assert len(list(plan_batches(lengths, gpu))) < len(list(plan_batches(lengths, cpu)))


def test_pad_right_pads_with_the_pad_id():
    ids, mask = pad([np.array([7, 8, 9]), np.array([5])], pad_id=1)
    np.testing.assert_array_equal(ids, [[7, 8, 9], [5, 1, 1]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])


def test_length_buckets_pad_a_text_alike_in_any_batch():
    """pad_multiple: a batch holds one rounded length, so a text's padded length is its own length
    rounded up, whatever else is planned with it."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 300, 500).tolist()
    limits = BatchLimits(max_tokens=2048, pad_multiple=16)
    batches = list(plan_batches(lengths, limits))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        rounded = {-(-lengths[i] // 16) * 16 for i in b}
        assert len(rounded) == 1
        assert len(b) == 1 or len(b) * rounded.pop() <= 2048
        ids, mask = pad([np.ones(lengths[i], dtype=np.int64) for i in b], pad_id=0, multiple=16)
        assert ids.shape[1] == -(-max(lengths[i] for i in b) // 16) * 16
        assert mask.sum() == sum(lengths[i] for i in b)
    alone = [pad([np.ones(n, dtype=np.int64)], pad_id=0, multiple=16)[0].shape[1] for n in (1, 16, 17, 299)]
    assert alone == [16, 16, 32, 304]
    # only OpenVINO's int8 gets buckets by default
    assert BatchLimits.for_provider("OpenVINO", "int8").pad_multiple == 16
    assert BatchLimits.for_provider("OpenVINO", "fp32").pad_multiple == 1
    assert BatchLimits.for_provider("CPUExecutionProvider", "int8").pad_multiple == 1


def test_results_come_back_in_input_order_whatever_the_batching(bundle):
    corpus = [("word " * n).strip() for n in (3, 40, 1, 25, 7, 60, 2, 12)]
    batched = Embedder(bundle("nomic-v2moe-tiny"), precision="fp32")
    one_by_one = Embedder(bundle("nomic-v2moe-tiny"), precision="fp32",
                          batch_limits=BatchLimits(max_batch_size=1))
    got = batched.embed(corpus, task="search_document")
    for i, text in enumerate(corpus):
        np.testing.assert_allclose(got[i], one_by_one.embed([text], task="search_document")[0], atol=2e-6)
    np.testing.assert_allclose(got, one_by_one.embed(corpus, task="search_document"), atol=2e-6)
