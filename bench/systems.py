"""The systems compared, behind one interface: texts in, unit-norm embeddings out.

Every system is timed end to end on the same texts (tokenization, batching, the model,
pooling), with the same thread count. Heavy imports (onnxruntime, torch, llama_cpp) happen
inside the constructors so that a child process pays only for the system it builds.

    edge-int8, edge-fp32   edge_embed.Embedder on the exported bundle (the public API)
    torch-fp32             export/nomic_bert.py's NomicBertModel, run with the runtime's own
                           tokenizer, length-sorted batching (same BatchLimits) and mean pooling
    llama-F16, llama-Q8_0  llama.cpp through llama-cpp-python on a GGUF of the same checkpoint, in
                           its own venv (bench/deps.py): a RemoteSystem drives it there over a pipe

Run as a script (`PYTHON bench/systems.py SPEC_JSON`), this file is the far end of a RemoteSystem.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partialmethod
from pathlib import Path

import numpy as np

# system name -> which GEMM bound its linear layers are held to
COMPUTE = {"edge-int8": "int8", "edge-fp32": "fp32", "torch-fp32": "fp32",
           "llama-F16": "fp32", "llama-Q8_0": "int8"}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class System:
    name = "?"

    def prepare(self, texts: list[str]) -> None:
        """Per-workload setup outside the timed region (llama.cpp sizes its context here)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def pooled(self, texts: list[str]) -> np.ndarray:
        """Unit-norm mean-pooled states (no Matryoshka step): for the agreement check."""
        return self.embed(texts)

    def close(self) -> None:
        pass


class EdgeSystem(System):
    def __init__(self, bundle: Path, precision: str, threads: int):
        from edge_embed import Embedder

        self.name = f"edge-{precision}"
        self.model = Embedder(bundle, precision=precision, providers="cpu", threads=threads)

    def embed(self, texts):
        return self.model.embed(texts)

    def pooled(self, texts):
        return _unit(self.model.pooled(list(texts), "", "truncate", False))

    def close(self):
        del self.model


class TorchSystem(System):
    name = "torch-fp32"

    def __init__(self, checkpoint: Path, bundle: Path, threads: int):
        import torch

        from edge_embed.batching import BatchLimits
        from edge_embed.manifest import read_manifest
        from edge_embed.tokenize import TextTokenizer
        from export.checkpoint import load_state_dict, read_config
        from export.nomic_bert import build_nomic

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = build_nomic(read_config(checkpoint), load_state_dict(checkpoint))
        manifest = read_manifest(bundle)
        self.tokenizer = TextTokenizer(bundle / "tokenizer.json", manifest.max_length)
        self.pad_id = manifest.pad_token_id
        self.hidden = manifest.hidden_size
        self.limits = BatchLimits.for_provider("CPUExecutionProvider")  # the batches edge-embed makes on CPU

    def embed(self, texts):
        from edge_embed.batching import pad, plan_batches
        from edge_embed.pooling import mean_pool

        encoded = self.tokenizer.encode(list(texts))
        lengths = [len(seq) for seq in encoded.sequences]
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        with self.torch.no_grad():
            for batch in plan_batches(lengths, self.limits):
                ids, mask = pad([encoded.sequences[i] for i in batch], self.pad_id)
                hidden = self.model(self.torch.from_numpy(ids), self.torch.from_numpy(mask)).numpy()
                out[encoded.owner[batch]] = mean_pool(hidden, mask)
        return _unit(out)

    def close(self):
        del self.model


class LlamaSystem(System):
    """llama.cpp (llama-cpp-python) embeddings, mean pooling from the GGUF.

    One llama_decode takes up to n_batch tokens of several texts; every text must fit one
    micro-batch (non-causal attention), so n_ctx = n_batch = n_ubatch = max(512, longest text
    rounded up to 256; other sizes trip a GGML_ASSERT in llama.cpp 0.3.36's graph). 512 keeps
    the attention over a packed batch small next to the GEMMs.
    """

    def __init__(self, gguf: Path, outtype: str, threads: int, flash_attn: bool = False):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.name = f"llama-{outtype}"
        self.path, self.threads, self.flash_attn = str(gguf), threads, flash_attn
        self.vocab = llama_cpp.Llama(model_path=self.path, vocab_only=True, verbose=False)
        self.llm = None
        self.size = 0
        self.prepare(["warm up"])

    def token_counts(self, texts) -> list[int]:
        return [len(self.vocab.tokenize(t.encode("utf-8"), add_bos=True, special=False)) for t in texts]

    def prepare(self, texts):
        longest = max(self.token_counts(texts))
        size = max(512, -(-(longest + 8) // 256) * 256)
        if size == self.size:
            return
        if self.llm is not None:
            self.llm.close()
            self.llm = None
        self.llm = self.llama_cpp.Llama(
            model_path=self.path, embedding=True, n_ctx=size, n_batch=size, n_ubatch=size,
            n_threads=self.threads, n_threads_batch=self.threads, flash_attn=self.flash_attn,
            pooling_type=self.llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False,
        )
        self.size = size

    def embed(self, texts):
        return np.asarray(self.llm.embed(list(texts), normalize=True), dtype=np.float32)

    def close(self):
        if self.llm is not None:
            self.llm.close()
        self.vocab.close()


class RemoteSystem(System):
    """A system built by another Python (a peer's own venv) in a child process, called over a pipe
    (embeddings come back as raw float32 bytes)."""

    def __init__(self, python: str, spec: dict):
        self.name = spec["system"]
        self.proc = subprocess.Popen([python, __file__, json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self._reply()  # built, or the child's error (and its exit)

    def _reply(self):
        head = self.proc.stdout.readline()
        head = json.loads(head) if head else {"error": f"exit {self.proc.wait()} (see stderr)"}
        if "error" in head:
            raise RuntimeError(f"{self.name}: {head['error']}")
        if "shape" not in head:
            return head["value"]
        size = int(np.prod(head["shape"])) * 4
        return np.frombuffer(self.proc.stdout.read(size), dtype=np.float32).reshape(head["shape"])

    def _call(self, method: str, texts: list[str]):
        self.proc.stdin.write(json.dumps({"method": method, "texts": list(texts)}).encode() + b"\n")
        self.proc.stdin.flush()
        return self._reply()

    prepare, embed = partialmethod(_call, "prepare"), partialmethod(_call, "embed")
    pooled, token_counts = partialmethod(_call, "pooled"), partialmethod(_call, "token_counts")

    def close(self):
        try:
            self.proc.stdin.close()  # the child closes its system and exits
        except BrokenPipeError:  # it had ended already
            pass
        self.proc.wait(timeout=60)


def serve(spec: dict) -> None:
    """The child of a RemoteSystem: after a first reply (built, or why not), one JSON request per line
    in, one JSON header (+ float32 bytes) out, until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the peer prints goes to stderr, not into the replies

    def reply(head: dict, data: bytes = b"") -> None:
        out.write(json.dumps(head).encode() + b"\n" + data)
        out.flush()

    try:
        system = build(spec)
    except Exception as exc:  # the parent raises it
        return reply({"error": f"{type(exc).__name__}: {exc}"})
    reply({"value": None})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            value = getattr(system, request["method"])(request["texts"])
        except Exception as exc:  # reported to the parent, which records or raises it
            reply({"error": f"{type(exc).__name__}: {exc}"})
            continue
        if isinstance(value, np.ndarray):
            value = np.ascontiguousarray(value, dtype=np.float32)
            reply({"shape": value.shape}, value.tobytes())
        else:
            reply({"value": value})
    system.close()


def build(spec: dict) -> System:
    """spec: {"system", "bundle", "checkpoint", "gguf", "threads", "flash_attn"} (paths as str), and
    "python" for a system built by another Python (a RemoteSystem)."""
    if spec.get("python"):
        return RemoteSystem(spec["python"], {k: v for k, v in spec.items() if k != "python"})
    name, threads = spec["system"], int(spec["threads"])
    if name.startswith("edge-"):
        return EdgeSystem(Path(spec["bundle"]), name.split("-", 1)[1], threads)
    if name == "torch-fp32":
        return TorchSystem(Path(spec["checkpoint"]), Path(spec["bundle"]), threads)
    if name.startswith("llama-"):
        return LlamaSystem(Path(spec["gguf"]), name.split("-", 1)[1], threads, bool(spec.get("flash_attn")))
    raise ValueError(f"unknown system {name!r}")


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
