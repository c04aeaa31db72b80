"""`edge-embed serve` answers the OpenAI, Ollama, Nomic and TEI routes with the Embedder's own vectors,
driven by the real `openai` and `ollama` clients and plain HTTP (fp32: max-abs <= 1e-5)."""
from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest
from serving import Server, make_texts
from tokenizers import Tokenizer

from edge_embed import Embedder
from edge_embed.unigram import UnigramTokenizer

openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")
pytest.importorskip("fastapi")

TOL = 1e-5


@pytest.fixture(scope="module")
def served(bundle, tmp_path_factory):
    """Two models: the tiny v1.5 (default, named by its folder) and the tiny v2-moe as `moe`."""
    v15, moe = bundle("nomic-v15-tiny"), bundle("nomic-v2moe-tiny")
    with Server(str(v15), f"moe={moe}", "--precision", "fp32", "--threads", "1",
                log_dir=tmp_path_factory.mktemp("serve")) as server:
        server.v15 = Embedder(v15, precision="fp32")
        server.moe = Embedder(moe, precision="fp32")
        server.moe_bundle = moe
        server.v15_name = v15.name
        yield server


def test_openai_client_float_and_base64_match_the_embedder(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    texts = make_texts(5, seed=1)
    expected = served.v15.embed(texts, dim=32)
    for fmt in ("float", None):  # None: the client asks for base64 and decodes it
        kwargs = {"encoding_format": fmt} if fmt else {}
        answer = client.embeddings.create(model=served.v15_name, input=texts, dimensions=32, **kwargs)
        got = np.array([item.embedding for item in answer.data], dtype=np.float32)
        assert [item.index for item in answer.data] == list(range(5))
        assert np.abs(got - expected).max() <= TOL
    tokens = sum(len(s) for s in served.v15.tokenizer.encode(texts).sequences)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == tokens
    assert answer.model == served.v15_name


def test_openai_single_string_task_and_token_ids(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    text = "where is the harbor bridge"
    got = client.embeddings.create(model=served.v15_name, input=text, extra_body={"task": "search_query"})
    np.testing.assert_allclose(got.data[0].embedding, served.v15.embed([text], task="search_query")[0], atol=TOL)
    # a text that already carries the prefix is not prefixed twice
    again = client.embeddings.create(model=served.v15_name, input="search_query: " + text,
                                     extra_body={"task": "search_query"})
    np.testing.assert_allclose(again.data[0].embedding, got.data[0].embedding, atol=TOL)
    # token ids of the model's own tokenizer, without special tokens: the server adds them
    ids = served.v15.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
    by_ids = client.embeddings.create(model=served.v15_name, input=[ids, ids[:3]], encoding_format="float")
    np.testing.assert_allclose(by_ids.data[0].embedding, served.v15.embed([text])[0], atol=TOL)
    partial = served.v15.tokenizer.tokenizer.decode(ids[:3])
    np.testing.assert_allclose(by_ids.data[1].embedding, served.v15.embed([partial])[0], atol=TOL)


def test_ollama_client_matches_the_embedder(served):
    client = ollama.Client(host=served.url)
    texts = make_texts(3, seed=2)
    answer = client.embed(model=served.v15_name, input=texts, dimensions=16, keep_alive="5m",
                          options={"num_ctx": 2048})
    np.testing.assert_allclose(np.array(answer.embeddings), served.v15.embed(texts, dim=16), atol=TOL)
    assert answer.prompt_eval_count == sum(len(s) for s in served.v15.tokenizer.encode(texts).sequences)
    assert answer.total_duration > 0
    one = client.embed(model="moe", input=texts[0])
    np.testing.assert_allclose(one.embeddings[0], served.moe.embed(texts[:1])[0], atol=TOL)
    names = [m.model for m in client.list().models]
    assert names == [served.v15_name, "moe"]


def test_nomic_route_defaults_to_search_document_like_the_nomic_client(served):
    texts = make_texts(4, seed=3)
    body = {"model": "nomic-embed-text-v1.5", "texts": texts, "dimensionality": 24}  # the family name works too
    answer = httpx.post(served.url + "/v1/embedding/text", json=body, timeout=60).json()
    np.testing.assert_allclose(answer["embeddings"], served.v15.embed(texts, task="search_document", dim=24),
                               atol=TOL)
    tokens = sum(len(s) for s in served.v15.tokenizer.encode(texts, "search_document: ").sequences)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert answer["model"] == served.v15_name
    query = {**body, "task_type": "search_query", "long_text_mode": "mean"}
    answer = httpx.post(served.url + "/v1/embedding/text", json=query, timeout=60).json()
    np.testing.assert_allclose(answer["embeddings"], served.v15.embed(texts, task="search_query", dim=24),
                               atol=TOL)


def test_tei_routes(served):
    texts = make_texts(3, seed=4)
    answer = httpx.post(served.url + "/embed", json={"inputs": texts, "prompt_name": "query"}, timeout=60)
    np.testing.assert_allclose(answer.json(), served.v15.embed(texts, task="search_query"), atol=TOL)
    one = httpx.post(served.url + "/embed", json={"inputs": texts[0], "dimensions": 16, "model": "moe"}, timeout=60)
    np.testing.assert_allclose(one.json(), served.moe.embed(texts[:1], dim=16), atol=TOL)
    raw = httpx.post(served.url + "/embed", json={"inputs": texts, "normalize": False}, timeout=60).json()
    encoded = served.v15.tokenizer.encode(texts)
    np.testing.assert_allclose(raw, served.v15.pooled(texts, "", "truncate", False), atol=TOL)
    tokens = httpx.post(served.url + "/tokenize", json={"inputs": texts[0]}, timeout=60).json()
    assert [t["id"] for t in tokens[0]] == encoded.sequences[0].tolist()
    assert tokens[0][0]["special"] and not tokens[0][1]["special"]
    # v2-moe's lean tokenizer over the route: tokenizer.json's ids, pieces and offsets (the task prefix included)
    text = "Ein Hafen, 港口 and a harbour"
    reference = Tokenizer.from_file(str(served.moe_bundle / "tokenizer.json")).encode("search_query: " + text)
    assert isinstance(served.moe.tokenizer.tokenizer, UnigramTokenizer)
    body = {"inputs": text, "model": "moe", "prompt_name": "search_query"}
    moe_tokens = httpx.post(served.url + "/tokenize", json=body, timeout=60).json()[0]
    assert [(t["id"], t["text"], t["start"], t["stop"]) for t in moe_tokens] == [
        (i, token, start, stop) for i, token, (start, stop) in zip(reference.ids, reference.tokens, reference.offsets)]
    info = httpx.get(served.url + "/info", timeout=60).json()
    assert info["model_id"] == served.v15_name and info["max_input_length"] == served.v15.max_length
    assert httpx.get(served.url + "/health", timeout=60).status_code == 200


def test_huggingface_inference_client_as_a_tei_client(served, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    # other tests set HF_HUB_OFFLINE=1 for the export; the client refuses every URL in offline mode,
    # our server on 127.0.0.1 included
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pytest.importorskip("huggingface_hub.constants"), "HF_HUB_OFFLINE", False)
    got = hub.InferenceClient(served.url).feature_extraction(
        "a harbor at night", prompt_name="query", normalize=True)
    np.testing.assert_allclose(np.asarray(got).reshape(1, -1),
                               served.v15.embed(["a harbor at night"], task="search_query"), atol=TOL)


def test_binary_output_is_the_embedders_packed_bits(served):
    texts = make_texts(4, seed=5)
    expected = served.v15.embed(texts, dim=32, binary=True)
    ints = served.post("/v1/embeddings", {"input": texts, "dimensions": 32, "encoding_format": "binary"}).json()
    assert np.array([d["embedding"] for d in ints["data"]], dtype=np.uint8).tolist() == expected.tolist()
    packed = served.post("/api/embed", {"input": texts, "dimensions": 32, "encoding_format": "binary_base64"})
    got = [np.frombuffer(base64.b64decode(row), dtype=np.uint8) for row in packed.json()["embeddings"]]
    assert np.array(got).tolist() == expected.tolist()


def test_long_text_chunks_like_the_runtime(bundle, tmp_path):
    """long_text_mode mean = the runtime's truncation="chunk"; a cut text is counted in a header."""
    v15 = bundle("nomic-v15-tiny")
    model = Embedder(v15, precision="fp32", max_length=32)
    texts = [" ".join(make_texts(12, seed=6)), "short one"]
    with Server(str(v15), "--precision", "fp32", "--max-length", "32", log_dir=tmp_path) as server:
        body = {"texts": texts, "long_text_mode": "mean", "task_type": "clustering"}
        answer = server.post("/v1/embedding/text", body)
        np.testing.assert_allclose(answer.json()["embeddings"],
                                   model.embed(texts, task="clustering", truncation="chunk"), atol=TOL)
        cut = server.post("/v1/embeddings", {"input": texts})
        assert cut.headers["x-truncated-texts"] == "1"
        with pytest.warns(UserWarning):
            expected = model.embed(texts)
        np.testing.assert_allclose([d["embedding"] for d in cut.json()["data"]], expected, atol=TOL)


def test_32_concurrent_requests_are_batched_and_exact(served):
    """32 clients at once: the worker pools their texts into shared batches, and every answer is
    still the Embedder's vector for that text (fp32: a text's vector does not depend on its batch-mates).

    Whether requests share a batch depends on their arriving while the worker is busy; on a tiny model a
    slow client may send them one by one. So a long request holds the worker first, the 32 queue behind
    it, and their batches are counted against the same requests sent one at a time."""
    texts = make_texts(32 * 3, seed=7)
    requests = [texts[3 * i: 3 * i + 3] for i in range(32)]
    expected = served.v15.embed(texts, task="search_query", dim=48)
    blocker = make_texts(64, seed=8, low=1500, high=1500)  # each text cut at the max length: long, equal batches
    openai_sync = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    query = {"model": served.v15_name, "dimensions": 48, "extra_body": {"task": "search_query"}}

    def batches_during(send) -> tuple[float, float]:
        count = ("edge_embed_batch_texts_count", "edge_embed_batch_texts_sum")
        before = [served.metric(name, model=served.v15_name) for name in count]
        send()
        return tuple(served.metric(name, model=served.v15_name) - b for name, b in zip(count, before))

    def one_at_a_time():
        for request in requests:
            openai_sync.embeddings.create(input=request, **query)

    def block():
        openai_sync.embeddings.create(model=served.v15_name, input=blocker)

    answers = []

    def blocked_then_concurrent():
        async def run():
            client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
            holder = asyncio.create_task(asyncio.to_thread(block))
            while served.metric("edge_embed_queue_requests", model=served.v15_name) < 1 and not holder.done():
                await asyncio.sleep(0.001)  # the long request is queued or running
            calls = [client.embeddings.create(input=request, **query) for request in requests]
            answers.extend(await asyncio.gather(*calls))
            await holder

        asyncio.run(run())

    alone, alone_texts = batches_during(one_at_a_time)
    blocker_batches, _ = batches_during(block)
    pooled, pooled_texts = batches_during(blocked_then_concurrent)
    got = np.array([item.embedding for answer in answers for item in answer.data])
    assert np.abs(got - expected).max() <= TOL
    assert alone_texts == 96 and pooled_texts == 96 + len(blocker)
    assert pooled - blocker_batches < alone, (pooled, blocker_batches, alone)  # the 32 shared batches


def test_model_lists_and_ollamas_legacy_route(served):
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [served.v15_name, "moe"]
    legacy = httpx.post(served.url + "/api/embeddings", json={"model": "moe", "prompt": "a harbor"}, timeout=60)
    np.testing.assert_allclose(legacy.json()["embedding"], served.moe.embed(["a harbor"])[0], atol=TOL)
    refused = httpx.post(served.url + "/api/embeddings", json={"prompt": ["a", "b"]}, timeout=60)
    assert refused.status_code == 422 and "use /api/embed" in refused.json()["error"]
    tags = httpx.get(served.url + "/api/tags", timeout=60).json()["models"]
    assert [t["name"] for t in tags] == [served.v15_name, "moe"]
    assert tags[0]["details"]["family"] == "nomic-embed-text-v1.5" and tags[0]["size"] > 0
