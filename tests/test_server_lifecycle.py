"""`edge-embed serve` stops cleanly (SIGTERM and Ctrl-C answer every accepted request first), says what to
install when the [server] extra is missing, and the core runtime never imports the server."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from serving import Server, make_texts, sample

from edge_embed import Embedder

pytest.importorskip("fastapi")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_requests_in_flight_answers_them_all_then_exits(bundle, tmp_path, sig):
    v15 = bundle("nomic-v15-tiny")
    model = Embedder(v15, precision="fp32")
    server = Server(str(v15), "--precision", "fp32", "--threads", "1", log_dir=tmp_path)
    bodies = [make_texts(40, seed=i, low=400, high=450) for i in range(8)]  # ~140k tokens: seconds of work
    answers: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        answers[i] = httpx.post(server.url + "/api/embed", json={"input": bodies[i]}, timeout=120)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while True:  # all 8 admitted (queued or answered), some still in flight
            text = server.scrape()
            waiting = sample(text, "edge_embed_queue_requests", model=v15.name)
            answered = sample(text, "edge_embed_requests_total", route="/api/embed", status="200")
            if waiting + answered >= 8:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert waiting >= 1, "every request was answered before the signal: nothing was in flight"
        server.process.send_signal(sig)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.post(server.url + "/api/embed", json={"input": "late"}, timeout=5)
        for thread in threads:
            thread.join(120)
        assert server.process.wait(60) == 0
    finally:
        server.stop()
    for i in range(8):
        assert answers[i].status_code == 200
        np.testing.assert_allclose(answers[i].json()["embeddings"], model.embed(bodies[i]), atol=1e-5)
    assert "Traceback" not in server.log()


def test_missing_server_extra_says_what_to_install(bundle):
    code = ("import sys; sys.modules['fastapi'] = None; from edge_embed.cli import main; "
            f"sys.exit(main(['serve', {str(bundle('nomic-v15-tiny'))!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "pip install 'edge-embed[server]'" in done.stderr and "fastapi" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_runtime_and_cli_never_import_the_server():
    code = ("import sys, edge_embed, edge_embed.cli; edge_embed.cli.parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette', "
            "'prometheus_client') or m.startswith('edge_embed.server')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_bad_bundle_is_a_clear_error_not_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "edge_embed.cli", "serve", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error:") and "Traceback" not in done.stderr
