"""The models a server serves (name -> Embedder and its batching worker) and the server's limits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_embed.embedder import Embedder
from edge_embed.errors import EdgeEmbedError
from edge_embed.server.errors import ApiError
from edge_embed.server.worker import BatchWorker


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 2 * 1024 * 1024  # TEI's --payload-limit
    max_texts: int = 2048  # per request (OpenAI's limit)
    max_request_tokens: int = 300_000  # per request (OpenAI's limit)
    max_queue_tokens: int = 1_000_000  # admitted and not yet run, per model; more is 429
    api_key: str | None = None

    def __post_init__(self):
        for name in ("max_body_bytes", "max_texts", "max_request_tokens", "max_queue_tokens"):
            if getattr(self, name) < 1:
                raise EdgeEmbedError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_request_tokens > self.max_queue_tokens:
            raise EdgeEmbedError("--max-request-tokens cannot exceed --max-queue-tokens "
                                 "(a request that big could never be admitted)")


@dataclass
class ServedModel:
    name: str
    bundle: Path
    embedder: Embedder
    worker: BatchWorker
    load_seconds: float = 0.0


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """BUNDLE or NAME=BUNDLE -> (name, bundle path); a bundle's name is its folder's name."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    bundle = Path(path)
    name = name or bundle.resolve().name
    if not name or "/" in name:
        raise EdgeEmbedError(f"cannot name a model {name!r} (from {spec!r}); use NAME=BUNDLE")
    return name, bundle


class Registry:
    """Served models in the order given; the first is the default. A model also answers to its
    family name (e.g. nomic-embed-text-v1.5, what the Nomic client sends) when no other model has it."""

    def __init__(self, models: list[ServedModel]):
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise EdgeEmbedError(f"two models are named {duplicates[0]!r}; name them apart with NAME=BUNDLE")
        self.models = {m.name: m for m in models}
        self.default = models[0]
        families: dict[str, list[ServedModel]] = {}
        for m in models:
            families.setdefault(m.embedder.manifest.family, []).append(m)
        self.aliases = {family: ms[0] for family, ms in families.items() if len(ms) == 1 and family not in self.models}

    def get(self, name: str | None) -> ServedModel:
        if name is None or name == "":
            return self.default
        model = self.models.get(name) or self.aliases.get(name)
        if model is None:
            raise ApiError(404, f"model {name!r} is not served here; use one of {sorted(self.models)} "
                                "(GET /v1/models lists them)", param="model")
        return model

    def __iter__(self):
        return iter(self.models.values())
