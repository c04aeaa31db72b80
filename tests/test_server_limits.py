"""Every limit of `edge-embed serve` against a running server: the status code, a message that says what
to do, and the server still answering good requests afterwards."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest
from serving import Server, make_texts

from edge_embed import Embedder

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

KEY = "s3cret-key"
ROUTES = {  # path -> how each API shape names its inputs
    "/v1/embeddings": "input",
    "/api/embed": "input",
    "/embed": "inputs",
    "/v1/embedding/text": "texts",
}


@pytest.fixture(scope="module")
def strict(bundle, tmp_path_factory):
    v15 = bundle("nomic-v15-tiny")
    args = ["--precision", "fp32", "--max-body-bytes", "65536", "--max-texts", "16", "--max-request-tokens", "500",
            "--max-length", "64"]
    with Server(str(v15), *args, api_key=KEY, log_dir=tmp_path_factory.mktemp("serve")) as server:
        server.model = Embedder(v15, precision="fp32", max_length=64)
        yield server


def message(response: httpx.Response) -> str:
    """The error message in whichever shape the route answers."""
    body = response.json()
    if "detail" in body:
        return body["detail"]
    error = body["error"]
    return error["message"] if isinstance(error, dict) else error


def assert_still_serving(server: Server) -> None:
    answer = server.post("/v1/embeddings", {"input": ["still here"], "encoding_format": "float"})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["data"][0]["embedding"], server.model.embed(["still here"])[0],
                               atol=1e-5)


def test_api_key_missing_or_wrong_is_401(strict):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}x"},
                    {"X-API-Key": "nope"}):
        answer = httpx.post(strict.url + "/v1/embeddings", json={"input": "x"}, headers=headers, timeout=30)
        assert answer.status_code == 401
        assert "API key" in message(answer) and answer.json()["error"]["code"] == "invalid_api_key"
    assert httpx.post(strict.url + "/api/embed", json={"input": "x"}, timeout=30).status_code == 401
    assert httpx.get(strict.url + "/metrics", timeout=30).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=strict.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="x", input="x")
    assert httpx.get(strict.url + "/health", timeout=30).status_code == 200  # probes need no key
    ok = httpx.post(strict.url + "/api/embed", json={"input": "x"}, headers={"X-API-Key": KEY}, timeout=30)
    assert ok.status_code == 200
    assert_still_serving(strict)


def test_body_over_the_limit_is_413_with_or_without_content_length(strict):
    big = {"input": ["word " * 2000] * 8}  # ~80 kB of JSON
    answer = strict.post("/v1/embeddings", big)
    assert answer.status_code == 413 and "65536 bytes" in message(answer)
    payload = httpx.Request("POST", "/", json=big).content

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for start in range(0, len(payload), 8192):
            yield payload[start:start + 8192]

    streamed = httpx.post(strict.url + "/embed", content=chunks(), timeout=30,
                          headers={**strict.headers, "Content-Type": "application/json"})
    assert streamed.status_code == 413 and "65536 bytes" in message(streamed)
    assert streamed.json()["error_type"] == "Validation"
    assert_still_serving(strict)


@pytest.mark.parametrize("path", ROUTES)
def test_too_many_texts_or_tokens_is_413(strict, path):
    field = ROUTES[path]
    answer = strict.post(path, {field: make_texts(17, seed=1, low=1, high=2)})
    assert answer.status_code == 413 and "limit is 16" in message(answer)
    answer = strict.post(path, {field: make_texts(16, seed=2, low=40, high=50)})  # 16 x ~45 tokens > 500
    assert answer.status_code == 413 and "limit is 500" in message(answer)
    assert_still_serving(strict)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("bad, says", [
    ([], "is empty"), ([""], "[0] is empty"), (["ok", "   "], "[1] is empty"), (["ok", 3.5], "[1] is float"),
    ([None], "[0] is null"), ({"a": 1}, "must be a string"), (None, "must be a string"),
])
def test_empty_or_non_string_inputs_are_422(strict, path, bad, says):
    answer = strict.post(path, {ROUTES[path]: bad})
    assert answer.status_code == 422, answer.text
    assert says in message(answer)


def test_unknown_model_is_404_and_bad_dims_are_422(strict):
    for path, field in ROUTES.items():
        answer = strict.post(path, {field: ["x"], "model": "gpt-9"})
        assert answer.status_code == 404 and "'gpt-9' is not served" in message(answer)
    for dim in (5, 65, 0):
        answer = strict.post("/v1/embeddings", {"input": "x", "dimensions": dim})
        assert answer.status_code == 422 and "from 6 to 64" in message(answer)
    answer = strict.post("/v1/embedding/text", {"texts": ["x"], "dimensionality": 1000})
    assert answer.status_code == 422 and "dimensionality must be an integer from 6 to 64" in message(answer)
    answer = strict.post("/v1/embeddings", {"input": "x", "dimensions": 12, "encoding_format": "binary"})
    assert answer.status_code == 422 and "multiple of 8" in message(answer)
    for body in ({"input": "x", "dimensions": "wide"}, {"input": "x", "task": "search"},
                 {"input": "x", "encoding_format": "float16"}, {"model": "x"}):
        answer = strict.post("/v1/embeddings", body)
        assert answer.status_code == 422, body
    answer = httpx.post(strict.url + "/v1/embeddings", content=b"{not json", headers=strict.headers, timeout=30)
    assert answer.status_code == 400 and "not valid JSON" in message(answer)
    assert_still_serving(strict)


@pytest.mark.parametrize("path", ROUTES)
def test_over_length_is_truncated_and_counted_or_refused(strict, path):
    field = ROUTES[path]
    texts = ["short text", " ".join(make_texts(8, seed=3))]  # the second is far over 64 tokens
    answer = strict.post(path, {field: texts})
    assert answer.status_code == 200 and answer.headers["x-truncated-texts"] == "1"
    refused = strict.post(path, {field: texts, "truncate": False})
    assert refused.status_code == (400 if path == "/api/embed" else 422)  # Ollama's own status for it
    assert f"{field}[1] has" in message(refused) and "max length 64" in message(refused)
    assert '"truncate": true' in message(refused) and "truncation=" not in message(refused)  # HTTP's words
    if path == "/v1/embeddings":  # token ids: the same message
        ids = strict.post(path, {field: [list(range(1000, 1100))], "truncate": False})
        assert ids.status_code == 422 and message(ids) == (f'{field}[0] has 102 tokens, more than the model\'s max '
                                                           'length 64; shorten it, or send "truncate": true to cut it '
                                                           'to 64 tokens')
    assert_still_serving(strict)


def test_token_ids_outside_the_vocabulary_are_422(strict):
    answer = strict.post("/v1/embeddings", {"input": [[1, 2, 10_000_000]]})
    assert answer.status_code == 422 and "vocabulary" in message(answer)


@pytest.fixture(scope="module")
def busy(bundle, tmp_path_factory):
    """A server whose queue takes 300k tokens, and a request of ~280k tokens that keeps it busy for seconds."""
    v15 = bundle("nomic-v15-tiny")
    args = ["--precision", "fp32", "--threads", "1", "--max-queue-tokens", "300000", "--max-request-tokens", "300000",
            "--max-body-bytes", "8000000"]
    with Server(str(v15), *args, log_dir=tmp_path_factory.mktemp("serve")) as server:
        server.model = Embedder(v15, precision="fp32")
        server.name = v15.name
        yield server


def big_request(seed: int) -> dict:
    return {"input": make_texts(280, seed=seed, low=950, high=1000), "encoding_format": "float"}


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_full_queue_is_429_with_retry_after(busy):
    answers = {}
    first = threading.Thread(target=lambda: answers.setdefault("big", busy.post("/v1/embeddings", big_request(1))))
    first.start()
    wait_for(lambda: busy.metric("edge_embed_queue_tokens", model=busy.name) > 250_000)
    extra = {"input": make_texts(150, seed=2, low=950, high=1000)}  # ~150k tokens: more than the queue has room for
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=busy.url + "/v1", api_key="x", max_retries=0).embeddings.create(
            model=busy.name, input=extra["input"])
    refused = busy.post("/v1/embeddings", extra)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1 and "busy" in message(refused)
    small = busy.post("/v1/embeddings", {"input": "a short one fits", "encoding_format": "float"})
    assert small.status_code == 200
    first.join(120)
    assert answers["big"].status_code == 200 and len(answers["big"].json()["data"]) == 280
    assert busy.post("/v1/embeddings", extra).status_code == 200  # the queue has room again


def test_a_client_that_hangs_up_has_its_texts_dropped(busy):
    dropped = busy.metric("edge_embed_dropped_texts_total", model=busy.name)
    tokens = busy.metric("edge_embed_tokens_total", model=busy.name)
    body = httpx.Request("POST", "/", json=big_request(3)).content
    request_tokens = sum(len(s) for s in busy.model.tokenizer.encode(big_request(3)["input"]).sequences)
    with socket.create_connection(("127.0.0.1", busy.port)) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: busy.metric("edge_embed_queue_tokens", model=busy.name) > 0)
    wait_for(lambda: busy.metric("edge_embed_dropped_texts_total", model=busy.name) > dropped)
    wait_for(lambda: busy.metric("edge_embed_queue_requests", model=busy.name) == 0)
    assert busy.metric("edge_embed_tokens_total", model=busy.name) - tokens < request_tokens
    assert_still_serving(busy)
