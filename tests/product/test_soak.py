"""Soak test: 20,000 short docs through one pipeline from a pool of four threads, from the
main thread and with n_process=2. Memory must stop growing once warmed up, and every run
must give the sequential run's vectors (up to the rounding bound in docs/guarantees.md). A tiny random
biLM keeps it near a minute on two busy cores (the shipped one took over five)."""

import os
import random
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import spacy

from test_batch_invariance import FP32_BOUND

N_DOCS = 20_000
WARM_UP = 2_000
FINGERPRINT = 16
LAYER_CACHE_MB = 4
"""A small layer cache, as a memory-conscious deployment would set it."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)"),
]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def children_rss_bytes() -> int:
    """The summed RSS of this process's child processes (the n_process workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


class PeakChildrenRss:
    """Samples :func:`children_rss_bytes` every 0.2 s while the block runs; ``peak`` is the largest sum."""

    def __enter__(self) -> "PeakChildrenRss":
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, children_rss_bytes())
            time.sleep(0.2)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def short_texts(n: int, seed: int = 0):
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(1500)]
    return [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def fingerprint(doc) -> np.ndarray:
    """A few numbers per doc (the mix summed over tokens) instead of keeping 20,000 docs alive."""
    return doc.tensor.sum(axis=0)[:FINGERPRINT]


def test_soak_memory_is_flat_and_results_match_a_sequential_run(tiny_model):
    """RSS is measured after a warm-up of every mode (glibc gives each new thread its own
    malloc arena, a one-off cost) and must then grow by at most 5 % over 20,000 docs in each."""
    texts = short_texts(N_DOCS)
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(tiny_model[1].parent), "layer_cache_mb": LAYER_CACHE_MB}})
    sequential = np.zeros((N_DOCS, FINGERPRINT), dtype=np.float32)
    threaded = np.zeros_like(sequential)
    processes = np.zeros_like(sequential)

    def in_threads(pool: ThreadPoolExecutor, n_docs: int) -> None:
        def work(k: int) -> None:
            for i, doc in zip(range(k, n_docs, 4), nlp.pipe(texts[k:n_docs:4], batch_size=128)):
                threaded[i] = fingerprint(doc)

        list(pool.map(work, range(4)))

    def in_main(n_docs: int) -> None:
        for i, doc in enumerate(nlp.pipe(texts[:n_docs], batch_size=128)):
            sequential[i] = fingerprint(doc)

    def in_processes(n_docs: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # W109: user hooks do not cross processes
            for i, doc in enumerate(nlp.pipe(texts[:n_docs], batch_size=128, n_process=2)):
                processes[i] = fingerprint(doc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        in_threads(pool, WARM_UP)
        in_main(WARM_UP)
        with PeakChildrenRss() as warm_children:
            in_processes(WARM_UP)
        warm = rss_bytes()
        in_threads(pool, N_DOCS)
        after_threads = rss_bytes()
    in_main(N_DOCS)
    after_sequential = rss_bytes()
    with PeakChildrenRss() as children:
        in_processes(N_DOCS)
    after_processes = rss_bytes()

    growth = max(after_threads, after_sequential, after_processes) / warm - 1
    children_growth = children.peak / warm_children.peak - 1
    print(
        f"RSS after warm-up {warm / 2**20:.0f} MiB; after threads, sequential, processes: "
        f"{after_threads / 2**20:.0f}, {after_sequential / 2**20:.0f}, {after_processes / 2**20:.0f} MiB; "
        f"n_process workers' peak: {warm_children.peak / 2**20:.0f} MiB over {WARM_UP:,} docs, "
        f"{children.peak / 2**20:.0f} MiB over {N_DOCS:,}",
        file=sys.stderr,
    )
    assert growth <= 0.05
    # The workers start afresh for each call: a leak in them shows as a higher peak over 10x the docs.
    assert warm_children.peak > 0 and children_growth <= 0.05
    # Sums over at most 4 tokens of values that may each differ by the stated float32 bound.
    np.testing.assert_allclose(threaded, sequential, rtol=0, atol=4 * FP32_BOUND)
    np.testing.assert_allclose(processes, sequential, rtol=0, atol=4 * FP32_BOUND)
    assert np.abs(sequential).sum(axis=1).min() > 0
