"""Embedder: the public runtime API. Text -> tokens -> ORT session -> pooled -> post-processed."""
from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path

import numpy as np

from edge_embed import openvino_backend
from edge_embed.batching import ARENA_KEEP_TOKENS, BatchLimits, pad, plan_batches
from edge_embed.errors import (
    BundleError,
    EdgeEmbedError,
    InputError,
    NonFiniteError,
    ProviderWarning,
    TruncationWarning,
    is_int,
)
from edge_embed.int8_saturation import seven_bit_activations
from edge_embed.late_chunking import CHUNK_TOKENS, embed_chunks
from edge_embed.manifest import (
    TASK_ALIASES,
    TOKENIZER_FILE,
    check_model_references,
    lean_tokenizer_file,
    read_manifest,
    verify_files,
)
from edge_embed.pooling import POOLINGS, binarize, matryoshka
from edge_embed.progress import Progress, is_terminal
from edge_embed.session import (
    arena_shrinking_run,
    check_onnxruntime,
    create_session,
    model_key,
    release_freed_heap,
    resolve_path,
    resolve_precision,
)
from edge_embed.streaming import stream_embeddings
from edge_embed.tokenize import TextTokenizer, check_truncation

POSTPROCESS_ROWS = 4096  # rows per Matryoshka block: bounds its float64 temporaries on large jobs


class Embedder:
    """Embeds texts with an edge-embed bundle.

    >>> m = Embedder("bundle/", precision="int8")
    >>> m.embed(["search me"], task="search_query", dim=256).shape
    (1, 256)
    """

    def __init__(
        self,
        bundle: str | Path,
        precision: str = "auto",
        providers: str | list[str] = "auto",
        threads: int | None = None,
        max_length: int | None = None,
        batch_limits: BatchLimits | None = None,
        verify: bool = True,
    ):
        if not isinstance(bundle, (str, PathLike)):
            raise InputError(f"bundle must be a directory path (str or Path), not {type(bundle).__name__}")
        if threads is not None and not (is_int(threads) and threads >= 1):
            raise InputError(f"threads must be a positive int or None (onnxruntime's default), not {threads!r}")
        threads = None if threads is None else int(threads)
        if batch_limits is not None and not isinstance(batch_limits, BatchLimits):
            raise InputError("batch_limits must be an edge_embed.BatchLimits, e.g. BatchLimits(max_tokens=4096), "
                             f"not {type(batch_limits).__name__}")
        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)
        self.max_length = self._check_max_length(max_length)
        self.providers, self.precision = resolve_path(providers, precision, self.manifest)
        self._load(threads, verify)
        if self.providers[0] not in self.session.get_providers():
            self._continue_on_cpu(providers, precision, threads, verify)
        self.batch_limits = batch_limits or BatchLimits.for_provider(self.providers[0], self.precision,
                                                                     moe=bool(self.manifest.extra.get("moe")))
        self._shrink_arena = arena_shrinking_run()

    def _load(self, threads: int | None, verify: bool) -> None:
        """Tokenizer and session for self.precision on self.providers.

        The checksums (0.17 s for the v1.5 int8 bundle) are computed while onnxruntime builds the
        session; a missing or corrupted file is reported as such, whatever else failed meanwhile."""
        check_onnxruntime(self.manifest.requires_onnxruntime.get(self.precision), self.precision)
        stored = model_key(self.manifest, self.precision, self.providers[0])
        files = self.manifest.models[stored]
        check_model_references(self.bundle, self.manifest, stored)  # before onnxruntime opens it
        lean = lean_tokenizer_file(self.manifest)
        checked_files = [TOKENIZER_FILE, *([lean] if lean else []), *files]
        with ThreadPoolExecutor(max_workers=1) as pool:
            checked = pool.submit(verify_files, self.bundle, self.manifest, checked_files) if verify else None
            try:
                self.tokenizer = TextTokenizer(self.bundle / TOKENIZER_FILE, self.max_length,
                                               lean=self.bundle / lean if lean else None)
                seven_bit = seven_bit_activations(self.manifest, self.precision, self.providers[0])
                self.session = create_session(self.bundle / files[0], self.providers, threads,
                                              openvino_backend.inference_precision(self.precision, self.manifest),
                                              initializers=seven_bit)
                self.int8_activation_bits = 7 if seven_bit else None  # (no VNNI: int8_saturation.py)
            finally:
                if checked is not None:
                    checked.result()
        self._check_io(files[0])

    def _check_io(self, onnx_file: str) -> None:
        """The model must take the inputs and give the states the manifest describes; an edited
        manifest would otherwise fail inside onnxruntime or numpy, or not at all."""
        inputs = sorted(i.name for i in self.session.get_inputs())
        if inputs != sorted(self.manifest.input_names) or inputs != ["attention_mask", "input_ids"]:
            raise BundleError(f"{onnx_file} takes inputs {inputs}, the manifest says "
                              f"{list(self.manifest.input_names)}; the manifest does not belong to this model, "
                              "re-export the bundle")
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        shape = outputs.get(self.manifest.output_name)
        if shape is None:
            raise BundleError(f"{onnx_file} has no output {self.manifest.output_name!r} (it has {sorted(outputs)}); "
                              "the manifest does not belong to this model, re-export the bundle")
        if isinstance(shape[-1], int) and shape[-1] != self.manifest.hidden_size:
            raise BundleError(f"{onnx_file} gives {shape[-1]}-wide states but the manifest says hidden size "
                              f"{self.manifest.hidden_size}; the manifest does not belong to this model, re-export")
        vocabulary = self.tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
        if self.manifest.pad_token_id >= vocabulary:  # it would fail inside onnxruntime on the first padded batch
            raise BundleError(f"the manifest's pad_token_id {self.manifest.pad_token_id} is not in the tokenizer's "
                              f"{vocabulary} tokens; the manifest was edited or damaged, re-export the bundle")

    def _continue_on_cpu(self, requested, precision: str, threads: int | None, verify: bool) -> None:
        """onnxruntime-gpu lists CUDA even where it cannot start it (CUDA or cuDNN libraries missing or
        of another version); it then prints an error and runs the session on the CPU alone. A GPU the
        caller asked for is an error; with providers="auto" the model runs on the CPU, in the
        precision chosen for the CPU (int8 rather than fp16), with a warning."""
        gpu = self.providers[0]
        why = (f"onnxruntime could not start {gpu} (its own message above says why; usually the CUDA or cuDNN "
               "libraries that onnxruntime-gpu needs are missing or of another version)")
        if requested != "auto":
            raise InputError(f"{why}; install them, or pass providers='cpu'")
        warnings.warn(ProviderWarning(f"{why}; running on the CPU instead"), stacklevel=3)
        self.providers = ["CPUExecutionProvider"]
        self.precision = resolve_precision(precision, self.providers, list(self.manifest.models))
        self._load(threads, verify)  # CPU session options and the CPU's precision

    def _check_max_length(self, max_length: int | None) -> int:
        limit = self.manifest.max_length
        if max_length is None:
            return limit
        if not (is_int(max_length) and 8 <= max_length <= limit):
            raise InputError(f"max_length must be an int from 8 to {limit} for this model, not {max_length!r}")
        return int(max_length)

    @property
    def dims(self) -> tuple[int, int]:
        """(smallest, largest) Matryoshka dimension this model allows."""
        return self.manifest.matryoshka.min_dim, self.manifest.matryoshka.max_dim

    @property
    def tasks(self) -> list[str]:
        return sorted(self.manifest.prefixes)

    def prefix(self, task: str | None) -> str:
        if task is None:
            return ""
        if not isinstance(task, str):
            raise InputError(f"task must be a string or None, not {type(task).__name__}")
        name = TASK_ALIASES.get(task, task)
        if name not in self.manifest.prefixes:
            raise InputError(f"unknown task {task!r}; use one of {self.tasks} or None for raw text")
        return self.manifest.prefixes[name]

    def _check_dim(self, dim: int | None, binary: bool) -> int:
        low, high = self.dims
        if dim is None:
            dim = high
        if not (is_int(dim) and low <= dim <= high):
            raise InputError(f"dim must be an int from {low} to {high} for this model, not {dim!r}")
        if binary and dim % 8:
            raise InputError(f"binary embeddings need dim to be a multiple of 8, not {dim}")
        return int(dim)

    @staticmethod
    def _check_texts(texts: Sequence[str], start: int = 0) -> list[str]:
        if isinstance(texts, str):
            raise InputError("texts must be a list of strings; wrap a single text as [text]")
        if isinstance(texts, (Mapping, Set)):  # their order is not the caller's rows
            raise InputError(f"texts must be a list of strings, not a {type(texts).__name__}; pass list(...) of "
                             "the texts in the order you want the rows")
        try:
            texts = list(texts)
        except TypeError:
            raise InputError(f"texts must be a list of strings, not {type(texts).__name__}") from None
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"texts[{start + index}] is a {type(text).__name__}, not a string")
            if not text.strip():
                raise InputError(f"texts[{start + index}] is empty; remove empty texts before embedding")
        return texts

    def embed(
        self,
        texts: Sequence[str],
        task: str | None = None,
        dim: int | None = None,
        binary: bool = False,
        truncation: str = "truncate",
        progress: bool | None = None,
    ) -> np.ndarray:
        """Embed texts (in input order).

        Returns float32 [n, dim] with unit L2 norm, or with binary=True, uint8 [n, dim / 8]
        (packed sign bits, numpy.packbits order). texts longer than the max length are cut
        (truncation="truncate", with a TruncationWarning), rejected ("error"), or split into
        windows whose mean-pooled states are averaged ("chunk").
        """
        texts = self._check_texts(texts)
        prefix = self.prefix(task)
        if not isinstance(binary, (bool, np.bool_)):
            raise InputError(f"binary must be True or False, not {binary!r}")
        if progress is not None and not isinstance(progress, (bool, np.bool_)):
            raise InputError(f"progress must be True, False or None (a bar for long jobs on a terminal), "
                             f"not {progress!r}")
        check_truncation(truncation)  # here too: an empty list never reaches the tokenizer
        dim = self._check_dim(dim, binary)
        width = dim // 8 if binary else dim
        if not texts:
            return np.zeros((0, width), dtype=np.uint8 if binary else np.float32)
        return self.postprocess(self.pooled(texts, prefix, truncation, progress), dim, binary)

    def embed_stream(
        self,
        texts: Iterable[str],
        task: str | None = None,
        dim: int | None = None,
        binary: bool = False,
        truncation: str = "truncate",
        progress: Callable[[int, int | None], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[np.ndarray]:
        """Embed any iterable of texts, yielding float32 [k, dim] (or uint8 [k, dim / 8]) arrays of
        consecutive rows in input order; np.concatenate of them equals embed() on the same texts.

        Texts are read STREAM_BLOCK at a time, so memory is bounded by a block, not the corpus.
        progress(done_tokens, total_tokens) is called after every batch (total_tokens is None when
        `texts` has no len(); with a len() the texts are tokenized once more up front to count).
        Breaking out of the loop, or setting `cancel` (a threading.Event), stops between batches;
        the rows of a block that was not finished are not yielded."""
        return stream_embeddings(self, texts, self.prefix(task), self._check_dim(dim, binary), binary,
                                 truncation, progress, cancel)

    def embed_chunks(
        self,
        documents: Sequence[str],
        spans: Sequence[Sequence[tuple[int, int]]] | None = None,
        task: str | None = "search_document",
        dim: int | None = None,
        binary: bool = False,
        chunk_tokens: int = CHUNK_TOKENS,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[tuple[list[tuple[int, int]], np.ndarray]]:
        """Late chunking: per document, (spans, vectors) with vectors float32 [len(spans), dim] (or
        uint8 [len(spans), dim / 8]). Each document runs through the model once (overlapping windows
        beyond the max length); a chunk's vector is the mean of the states of the tokens whose
        characters lie inside its (start, end) span, then the Matryoshka recipe. spans=None: chunks of
        at most chunk_tokens tokens cut at sentence ends or whitespace, returned with the vectors.
        progress(done_tokens, total_tokens) after every batch; setting `cancel` stops between batches
        and returns the documents finished so far (a shorter list, in order)."""
        if not isinstance(binary, (bool, np.bool_)):
            raise InputError(f"binary must be True or False, not {binary!r}")
        return embed_chunks(self, documents, spans, self.prefix(task), self._check_dim(dim, binary), binary,
                            chunk_tokens, progress, cancel)

    def postprocess(self, pooled: np.ndarray, dim: int, binary: bool) -> np.ndarray:
        """Pooled states [n, hidden] -> the bundle's Matryoshka recipe at `dim` (float32), or packed bits."""
        mat = self.manifest.matryoshka
        out = np.empty((len(pooled), dim // 8 if binary else dim), dtype=np.uint8 if binary else np.float32)
        for start in range(0, len(pooled), POSTPROCESS_ROWS):  # float64 temporaries for a block, not all rows
            rows = slice(start, start + POSTPROCESS_ROWS)
            block = matryoshka(pooled[rows], dim, mat.layer_norm, mat.layer_norm_eps)
            out[rows] = binarize(block) if binary else block
        return out

    def pooled(
        self,
        texts: list[str],
        prefix: str,
        truncation: str,
        progress: bool | None,
        on_batch: Callable[[int], bool] | None = None,
    ) -> np.ndarray | None:
        """Pooled token states [n, hidden] (float32), in input order. on_batch(tokens) is called after
        each batch with the tokens it ran; when it returns False the rest is skipped and None returned."""
        encoded = self.tokenizer.encode(texts, prefix, truncation)
        if encoded.truncated:
            message = (
                f"{len(encoded.truncated)} of {len(texts)} texts were longer than {self.max_length} "
                "tokens and were truncated; pass truncation='chunk' to embed them whole"
            )
            warnings.warn(TruncationWarning(message, len(encoded.truncated)), stacklevel=3)
        lengths = [len(seq) for seq in encoded.sequences]
        out = np.empty((len(texts), self.manifest.hidden_size), dtype=np.float32)
        # A chunked text's windows share tokens; each token's state is taken once (edge_embed/windows.py):
        # with mean pooling the text's vector is the mean over its whole token sequence, as if the model
        # had seen it at once; with cls pooling it is the first window's [CLS]. Only chunked texts need
        # a float64 accumulator.
        slot = np.full(len(texts), -1, dtype=np.int64)
        slot[encoded.chunked] = np.arange(len(encoded.chunked))
        sums = np.zeros((len(encoded.chunked), self.manifest.hidden_size), dtype=np.float64)
        counts = np.zeros(len(encoded.chunked), dtype=np.float64)
        # A library stays quiet unless asked: by default the bar is drawn only for long jobs
        # (100k tokens, about a minute on a laptop CPU) and only on a terminal. It counts tokens,
        # not texts: the longest texts run first, so a count of texts would give a wrong ETA.
        total = sum(lengths)
        enabled = progress if progress is not None else (total > 100_000 and is_terminal(sys.stderr))
        with Progress(total, "embedding (tokens)", enabled=enabled) as bar:
            for batch in plan_batches(lengths, self.batch_limits):
                vectors, weights = self.pool_batch([encoded.sequences[i] for i in batch], encoded.keep[batch])
                owners, slots = encoded.owner[batch], slot[encoded.owner[batch]]
                whole = slots < 0
                out[owners[whole]] = vectors[whole]
                np.add.at(sums, slots[~whole], vectors[~whole] * weights[~whole, None])
                np.add.at(counts, slots[~whole], weights[~whole])
                tokens = int(sum(lengths[i] for i in batch))
                bar.update(tokens)
                if on_batch is not None and not on_batch(tokens):
                    return None
        out[encoded.chunked] = sums / counts[:, None]
        if self._long_text(max(lengths, default=0)):
            release_freed_heap()  # a long text's temporaries (tokens, offsets, its states' float64 sum)
        broken = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if broken.size:  # e.g. an fp16 overflow on a GPU: never hand back NaN vectors as embeddings
            raise NonFiniteError(
                f"the {self.precision} model gave NaN or infinite states for {broken.size} of {len(texts)} texts "
                f"(first: texts[{broken[0]}]); "
                + ("re-export the bundle" if self.precision == "fp32" else "use precision='fp32'")
            )
        return out

    def pool_batch(self, sequences: list[np.ndarray], keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Already-encoded int64 id sequences (TextTokenizer.encode) run as one padded batch, for callers
        that tokenize and batch themselves (the server's worker pools the texts of many requests).

        Returns (vectors float32 [n, hidden], weights float64 [n]): a whole sequence's pooled state, or for a
        window of a chunked text (keep[i] = its positions [from, to) that belong to the text, Encoded.keep)
        what chunk mode counts of it: the mean of those states weighted by their number (mean pooling), or
        the first window's [CLS] with weight 1 (cls pooling). A text's vector is the weighted mean of its
        sequences' (how `pooled` combines them)."""
        ids, mask = self.pad(sequences)
        hidden = self._run(ids, mask)
        vectors = POOLINGS[self.manifest.pooling](hidden, mask)
        weights = mask.sum(axis=1).astype(np.float64)
        for row, (keep_from, keep_to) in enumerate(np.asarray(keep, dtype=np.int64).reshape(-1, 2)):
            if keep_from == 0 and keep_to == len(sequences[row]):
                continue  # the whole sequence
            if self.manifest.pooling == "mean":
                vectors[row] = hidden[row, keep_from:keep_to].mean(axis=0, dtype=np.float64)
                weights[row] = keep_to - keep_from
            else:
                weights[row] = 1.0 if keep_from == 0 else 0.0
        return vectors, weights

    def pad(self, sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids, attention_mask for one batch, padded as the batch limits say (BatchLimits.pad_multiple)."""
        return pad(sequences, self.manifest.pad_token_id, self.batch_limits.pad_multiple)

    def release_memory(self) -> None:
        """Give back what the largest batches left allocated: onnxruntime keeps their buffers in its arena
        for the next batch of that size (v1.5 int8 after 64 texts of 128 tokens: ~100 MB over the loaded
        model). Costs one tiny forward pass; the next big batch allocates again. For long-running processes
        between bursts of work (the server calls it when idle)."""
        sequence = np.asarray(self.tokenizer.encode(["."], "", "truncate").sequences[0], dtype=np.int64)
        ids, mask = self.pad([sequence])
        self._run(ids, mask, release=True)
        release_freed_heap()

    def _long_text(self, tokens: int) -> bool:
        """A batch (one text) over the budget and over ARENA_KEEP_TOKENS: its buffers are given back after it."""
        return tokens > max(self.batch_limits.max_tokens, ARENA_KEEP_TOKENS)

    def _run(self, ids: np.ndarray, mask: np.ndarray, release: bool = False) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}  # by name: _check_io made sure the model has these
        release = release or self._long_text(ids.size)
        try:
            return self.session.run([self.manifest.output_name], feeds, self._shrink_arena if release else None)[0]
        except Exception as exc:  # an ORT (or OpenVINO) failure deep inside: say what was being run
            raise EdgeEmbedError(
                f"the model failed on a batch of {ids.shape[0]} x {ids.shape[1]} tokens "
                f"({self.precision}, {self.providers[0]}): {exc}"
            ) from exc

    def __repr__(self) -> str:
        hint = getattr(self.session, "precision_hint", None)  # OpenVINO's: "bf16" float parts in int8
        return (
            f"Embedder({str(self.bundle)!r}, family={self.manifest.family!r}, "
            f"precision={self.precision!r}, provider={self.providers[0]!r}"
            + (f", inference_precision={hint!r}" if hint else "")
            + (", activations='7-bit (no VNNI)'" if self.int8_activation_bits else "") + ")"
        )
