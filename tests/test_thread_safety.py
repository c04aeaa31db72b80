"""One Embedder shared by 8 threads gives the same fp32 vectors as serial calls."""
from __future__ import annotations

import random
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_embed import Embedder

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def _jobs(count: int) -> list[dict]:
    rng = random.Random(16)
    jobs = []
    for _ in range(count):
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(rng.randint(1, 9))]
        jobs.append({"texts": texts, "task": rng.choice([None, "search_query", "clustering"]),
                     "dim": rng.choice([None, 16, 32]), "truncation": rng.choice(["truncate", "chunk"])})
    return jobs


def test_eight_threads_sharing_one_embedder_get_the_serial_vectors(bundle):
    model = Embedder(bundle("nomic-v15-tiny"), precision="fp32", max_length=32)
    jobs = _jobs(96)  # texts up to 60 words: some are cut or chunked at 32 tokens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TruncationWarning for the long texts
        serial = [model.embed(**job) for job in jobs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            threaded = list(pool.map(lambda job: model.embed(**job), jobs))
    for job, alone, shared in zip(jobs, serial, threaded):
        assert shared.shape == alone.shape
        np.testing.assert_array_equal(shared, alone, err_msg=str(job))
    assert len({round(float(v[0, 0]), 6) for v in serial}) > 50  # the jobs really differ
