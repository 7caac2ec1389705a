"""Inference speed and accuracy of ``ElmoBiLM`` per precision (fp32, bf16, int8), as Markdown tables.

Same inputs as bench_inference.py: the first N sentences of 15–30 tokens of CoNLL-2003 dev,
batch 64, eval mode, no grad, every layer, no token cache (every pass runs the char CNN).
Each precision is loaded once; after one untimed pass each, the timed passes alternate
between precisions so that load changes on a shared machine hit all of them alike. Accuracy
is against the fp32 outputs of the same model: per layer, the cosine between each token's
fp32 and low-precision vectors (mean over tokens, and the worst token), and the largest
absolute difference over every layer.

``--per-matrix-int8`` adds a row for int8 with one activation scale per matrix (PyTorch's
dynamic quantization as it comes, whose results depend on the batch), the comparator for the
per-row scales that int8 uses.

``--write-docs`` also writes the table into docs/speed.md (``docs_block.py``): into the
``precision-benchmark`` block, or with ``--per-matrix-int8`` into ``int8-scheme-benchmark``.

``small``/``medium``/``original`` use synthetic ``make_weights.py`` seed-0 weights (right
shapes and cost, unrealistic activations); ``default`` is the trained biLM shipped in the
package, the one whose accuracy numbers mean something.

    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --archs default,small,original --threads 1
"""

import argparse
import gc
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import REPO, model_files, print_run_header, read_sentences
from docs_block import printed_into_docs
from spacy_elmo.bilm import inference_precision
from spacy_elmo.bilm.inference_precision import INFERENCE_PRECISIONS, check_precision
from spacy_elmo.bilm.model import ElmoBiLM
from spacy_elmo.bilm.pretrained import DEFAULT_MODEL_NAME
from spacy_elmo.memory import keep_freed_memory

Sentences = List[List[str]]

PER_MATRIX_INT8 = "int8/matrix"
"""The comparator row: int8 with PyTorch's per-matrix dynamic activation scale."""


def _per_matrix_linear_int8(x: torch.Tensor, weight: inference_precision.Int8Weight) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x.float().contiguous(), weight.packed, False).add_(weight.offsets[1])


@contextmanager
def int8_scheme(name: str) -> Iterator[None]:
    """Run the int8 matmuls with the comparator's per-matrix scale while ``name`` is the comparator."""
    if name != PER_MATRIX_INT8:
        yield
        return
    original = inference_precision._linear_int8
    inference_precision._linear_int8 = _per_matrix_linear_int8
    try:
        yield
    finally:
        inference_precision._linear_int8 = original


def layer_cosines(ours: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Per layer, the cosine of every token's vector with its reference (tokens of all sentences)."""
    result = []
    for layer in range(reference[0].shape[0]):
        a = np.concatenate([array[layer] for array in ours]).astype(np.float64)
        b = np.concatenate([array[layer] for array in reference]).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        result.append(np.sum(a * b, axis=1) / np.maximum(norms, 1e-30))
    return result


def max_abs_diff(ours: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    return max(float(np.max(np.abs(a - b))) for a, b in zip(ours, reference))


TABLE_HEADER = (
    "| model | precision | words/s (median, min–max) | × fp32 | words per CPU-s (× fp32) | max \\|Δ\\| | "
    "mean cosine per layer | worst-token cosine per layer |\n"
    "|---|---|---:|---:|---:|---:|---|---|"
)
"""One table for every architecture of a run: a row per precision, the model named on its first row."""

PRECISION_LABELS = {PER_MATRIX_INT8: "int8, one scale per matrix"}


def bench_arch(arch: str, args: argparse.Namespace, sentences: Sentences, words: int) -> None:
    """Time and compare every precision of ``arch``; print its rows of :data:`TABLE_HEADER`'s table."""
    options, weights = model_files(args.shared, arch)
    models = {p: ElmoBiLM.from_files(options, weights, token_cache_size=0, precision=p) for p in args.precision_list}
    if args.per_matrix_int8:
        models[PER_MATRIX_INT8] = ElmoBiLM.from_files(options, weights, token_cache_size=0, precision="int8")
    seconds: Dict[str, List[float]] = {p: [] for p in models}
    cpu_seconds: Dict[str, List[float]] = {p: [] for p in models}
    outputs = {}
    with torch.no_grad():
        for precision, model in models.items():
            with int8_scheme(precision):
                outputs[precision] = model.embed_sentences(sentences, batch_size=args.batch_size)
        for _ in range(args.repeats):
            for precision, model in models.items():
                gc.collect()
                with int8_scheme(precision):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    model.embed_sentences(sentences, batch_size=args.batch_size)
                    seconds[precision].append(time.perf_counter() - start)
                    cpu_seconds[precision].append(time.process_time() - cpu_start)
    lstm = models[args.precision_list[0]].options
    kind = "**trained**" if arch == DEFAULT_MODEL_NAME else "synthetic"
    model_cell = f"{arch} ({lstm.n_layers}×{lstm.lstm_dim}, P {lstm.projection_dim}), {kind}"
    reference = outputs.get("fp32")
    baseline = words / statistics.median(seconds["fp32"]) if "fp32" in seconds else None
    cpu_baseline = words / statistics.median(cpu_seconds["fp32"]) if "fp32" in seconds else None
    for precision in models:
        rates = [words / s for s in seconds[precision]]
        median = statistics.median(rates)
        ratio = f"{median / baseline:.2f}" if baseline else "–"
        cpu_rate = words / statistics.median(cpu_seconds[precision])
        cpu_ratio = f"{cpu_rate / cpu_baseline:.2f}" if cpu_baseline else "–"
        if reference is None or precision == "fp32":
            delta, means, worst = "0", "1", "1"
        else:
            cosines = layer_cosines(outputs[precision], reference)
            delta = f"{max_abs_diff(outputs[precision], reference):.1e}".replace("e-0", "e-")
            means = " / ".join(f"{c.mean():.5f}" for c in cosines)
            worst = " / ".join(f"{c.min():.5f}" for c in cosines)
        print(
            f"| {model_cell} | {PRECISION_LABELS.get(precision, precision)} | {median:,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | "
            f"{ratio} | {cpu_rate:,.0f} ({cpu_ratio}) | {delta} | {means} | {worst} |"
        )
        model_cell = ""
    sys.stdout.flush()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    default_shared = os.environ.get("SPACY_ELMO_SHARED") or str(REPO.parent / "shared")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--archs", default="default,small", help="comma-separated: default (the shipped biLM), small, medium, original"
    )
    parser.add_argument(
        "--precisions", default=",".join(INFERENCE_PRECISIONS), help="comma-separated, fp32 first for the ratios and the accuracy"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per precision (median reported)")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--per-matrix-int8", action="store_true", help="add int8 with one activation scale per matrix, for comparison"
    )
    parser.add_argument("--shared", type=Path, default=Path(default_shared), help="the shared folder (bench/, data/)")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also write the printed table into docs/speed.md: the precision-benchmark block, or with "
        "--per-matrix-int8 the int8-scheme-benchmark block",
    )
    args = parser.parse_args(argv)
    args.arch_list = [arch.strip() for arch in args.archs.split(",") if arch.strip()]
    return checked_precisions_and_repeats(parser, args)


def checked_precisions_and_repeats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``precision_list`` parsed from ``--precisions``; exits on ``--repeats`` < 1."""
    args.precision_list = [check_precision(p.strip(), "--precisions") for p in args.precisions.split(",") if p.strip()]
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def docs_block(args: argparse.Namespace) -> Optional[str]:
    """The block of docs/speed.md that ``--write-docs`` writes: the per-row against per-matrix
    int8 comparison is a run of its own (``--per-matrix-int8``), the precision table another."""
    if not args.write_docs:
        return None
    return "int8-scheme-benchmark" if args.per_matrix_int8 else "precision-benchmark"


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()
    sentences = read_sentences(args.shared / "data" / "conll2003" / "dev.txt", args.sentences)
    words = sum(len(sentence) for sentence in sentences)
    with printed_into_docs(docs_block(args)):
        print_run_header("spacy_elmo precision benchmark", args.threads)
        print(
            f"Data: the first {len(sentences)} sentences of 15–30 tokens of CoNLL-2003 dev, {words:,} words; "
            f"batch {args.batch_size}; no token cache; median of {args.repeats} timed passes per precision, "
            f"alternated, after one untimed pass each. 'words per CPU-s' divides by the process's CPU "
            f"time instead of wall time (less sensitive to other jobs on the machine). Accuracy against "
            f"the same model in fp32, over every token, per layer (0 = token layer, then each LSTM layer): "
            f"mean and worst-token cosine, and max |Δ| over all layers. `synthetic`: `make_weights.py` "
            f"seed-0 weights (right cost, unrealistic activations); **trained**: the shipped biLM, whose "
            f"accuracy numbers mean something. Freed memory kept for reuse as the `elmo` component does "
            f"by default: {kept}.\n"
        )
        print(TABLE_HEADER)
        for arch in args.arch_list:
            bench_arch(arch, args, sentences, words)
            gc.collect()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
