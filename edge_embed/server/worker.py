"""One batching worker per model: a thread that pools the token sequences of every queued request
through the runtime's token-budget batches (length-sorted, little padding).

Requests are tokenized at admission; their sequences wait here. When the thread is idle a request is
taken at once (no fixed wait); while it runs a cycle, new requests pile up and the next cycle takes
them all together, so 32 clients sending one query each cost about what one 32-text call costs.
Each request then post-processes its own rows (Matryoshka dim, binary) in this thread, off the event loop.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_embed.batching import plan_batches
from edge_embed.embedder import Embedder
from edge_embed.errors import NonFiniteError
from edge_embed.server import metrics

CYCLE_BUDGETS = 8  # tokens taken per cycle, in batch budgets: bounds how long a big request holds others up
# After this long with nothing to do, the worker gives back the memory its largest batches left in
# onnxruntime's arena (Embedder.release_memory): a server idles back to the loaded model's RSS
# between bursts, and within a burst nothing is allocated twice.
IDLE_RELEASE_S = 2.0


class QueueFull(Exception):
    """More tokens are waiting than the server's queue allows."""


@dataclass(eq=False)
class Job:
    """One request's sequences, in the order of Encoded.sequences; owner[i] is sequence i's text and
    keep[i] the positions of its states that count (Encoded.keep: windows of a chunked text overlap)."""

    sequences: list[np.ndarray]
    owner: np.ndarray
    keep: np.ndarray
    n_texts: int
    finish: Callable[[np.ndarray], Any]  # pooled [n_texts, hidden] float32 -> the request's result
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)
    next: int = 0  # first sequence not yet handed to a cycle
    unrun_tokens: int = 0  # tokens not yet run (counted in the worker's pending total)
    cancelled: bool = False
    started: bool = False
    pooled: np.ndarray | None = None
    weights: np.ndarray | None = None
    left: int = 0  # sequences not yet pooled

    @property
    def tokens(self) -> int:
        return sum(len(seq) for seq in self.sequences)


class BatchWorker:
    def __init__(self, name: str, embedder: Embedder, max_queue_tokens: int):
        self.name = name
        self.embedder = embedder
        self.max_queue_tokens = max_queue_tokens
        self.cycle_tokens = CYCLE_BUDGETS * embedder.batch_limits.max_tokens
        self._queue: deque[Job] = deque()
        self._pending_tokens = 0  # admitted, not yet run: what the queue limit counts
        self._pending_jobs = 0
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"edge-embed worker {name}", daemon=True)
        self._rate = 2000.0  # tokens/s of the recent batches, for Retry-After
        self._ran_since_release = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every queued job, then end the thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's tokens at the rate the last cycles ran."""
        return max(1, min(30, round(self._pending_tokens / max(self._rate, 1.0))))

    def submit(self, sequences: list[np.ndarray], owner: np.ndarray, keep: np.ndarray, n_texts: int,
               finish: Callable[[np.ndarray], Any]) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(sequences, owner, keep, n_texts, finish, loop.create_future(), loop)
        job.unrun_tokens = job.tokens
        job.left = len(sequences)
        with self._lock:
            if self._pending_tokens and self._pending_tokens + job.unrun_tokens > self.max_queue_tokens:
                raise QueueFull(f"{self._pending_tokens} tokens are waiting, the queue takes {self.max_queue_tokens}")
            self._queue.append(job)
            self._pending_tokens += job.unrun_tokens
            self._pending_jobs += 1
            self._gauges()
            self._lock.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: drop the sequences not yet run."""
        with self._lock:
            if job.cancelled or job.future.done():
                return
            job.cancelled = True
            dropped = int(np.unique(job.owner[job.next:]).size) if job.next < len(job.sequences) else 0
            self._pending_tokens -= job.unrun_tokens
            job.unrun_tokens = 0
            self._pending_jobs -= 1
            self._gauges()
        metrics.DROPPED_TEXTS.labels(self.name).inc(dropped)
        if not job.future.done():
            job.loop.call_soon_threadsafe(_settle, job.future, None, asyncio.CancelledError())

    def _gauges(self) -> None:
        metrics.QUEUE_TOKENS.labels(self.name).set(self._pending_tokens)
        metrics.QUEUE_REQUESTS.labels(self.name).set(self._pending_jobs)

    def _take(self) -> list[tuple[Job, int]] | None:
        """(job, sequence index) pairs for one cycle; None when stopping with nothing left; [] when the
        worker has been idle for IDLE_RELEASE_S since its last batch."""
        with self._lock:
            while not self._queue and not self._stopping:
                timeout = IDLE_RELEASE_S if self._ran_since_release else None
                if not self._lock.wait(timeout) and not self._queue and not self._stopping:
                    return []
            if not self._queue:
                return None
            taken, budget = [], self.cycle_tokens
            while self._queue and budget > 0:
                job = self._queue[0]
                if job.cancelled:
                    self._queue.popleft()
                    continue
                if not job.started:
                    job.started = True
                    metrics.QUEUE_SECONDS.labels(self.name).observe(time.perf_counter() - job.enqueued)
                while job.next < len(job.sequences) and budget > 0:
                    taken.append((job, job.next))
                    budget -= len(job.sequences[job.next])
                    job.next += 1
                if job.next == len(job.sequences):
                    self._queue.popleft()
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            self._ran_since_release = bool(taken)
            if not taken:
                self.embedder.release_memory()
                continue
            lengths = [len(job.sequences[i]) for job, i in taken]
            for batch in plan_batches(lengths, self.embedder.batch_limits):
                live = [taken[k] for k in batch if not taken[k][0].cancelled]
                if live:
                    self._run(live)

    def _run(self, live: list[tuple[Job, int]]) -> None:
        sequences = [job.sequences[i] for job, i in live]
        tokens = sum(len(seq) for seq in sequences)
        start = time.perf_counter()
        try:
            pooled, weights = self.embedder.pool_batch(sequences, np.array([job.keep[i] for job, i in live]))
            error = None
        except Exception as exc:  # an ORT failure: the requests in this batch get it, the worker goes on
            pooled, weights, error = None, None, exc
        took = time.perf_counter() - start
        self._rate = 0.8 * self._rate + 0.2 * tokens / max(took, 1e-6)
        metrics.INFERENCE_SECONDS.labels(self.name).observe(took)
        metrics.BATCH_TEXTS.labels(self.name).observe(len(sequences))
        metrics.BATCH_TOKENS.labels(self.name).observe(tokens)
        metrics.TOKENS.labels(self.name).inc(tokens)
        done = []
        with self._lock:
            for row, (job, i) in enumerate(live):
                if job.cancelled:
                    continue
                job.unrun_tokens -= len(job.sequences[i])
                self._pending_tokens -= len(job.sequences[i])
                if error is not None:
                    job.cancelled = True  # its other sequences are skipped
                    self._pending_tokens -= job.unrun_tokens
                    job.unrun_tokens = 0
                    self._pending_jobs -= 1
                    job.loop.call_soon_threadsafe(_settle, job.future, None, error)
                    continue
                if job.pooled is None:
                    job.pooled = np.empty((len(job.sequences), pooled.shape[1]), dtype=np.float32)
                    job.weights = np.empty(len(job.sequences), dtype=np.float64)
                job.pooled[i], job.weights[i] = pooled[row], weights[row]
                job.left -= 1
                if job.left == 0:
                    self._pending_jobs -= 1
                    done.append(job)
            self._gauges()
        for job in done:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        try:
            result, error = job.finish(per_text(job)), None
        except Exception as exc:
            result, error = None, exc
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def per_text(job: Job) -> np.ndarray:
    """Pooled states [n_texts, hidden]: a chunked text's windows combined with the weights pool_batch
    gave them (each token's state once), as the runtime's chunk mode does."""
    pooled = job.pooled
    if len(job.sequences) != job.n_texts:
        sums = np.zeros((job.n_texts, pooled.shape[1]), dtype=np.float64)
        np.add.at(sums, job.owner, pooled * job.weights[:, None])
        counts = np.bincount(job.owner, weights=job.weights, minlength=job.n_texts)
        single = np.bincount(job.owner, minlength=job.n_texts) == 1
        out = (sums / counts[:, None]).astype(np.float32)
        out[job.owner[single[job.owner]]] = pooled[single[job.owner]]  # whole texts exactly as pooled
        pooled = out
    broken = np.flatnonzero(~np.isfinite(pooled).all(axis=1))
    if broken.size:
        raise NonFiniteError(f"the model gave NaN or infinite states for {broken.size} of {job.n_texts} texts "
                             f"(first: input {broken[0]}); serve the bundle with --precision fp32")
    return pooled


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
