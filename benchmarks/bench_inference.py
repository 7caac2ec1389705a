"""Inference speed of spacy_elmo against the naive comparator, printed as Markdown tables.

Protocol (see ../shared/bench/README.md): published architectures with synthetic
``make_weights.py`` seed-0 weights, re-written by ``ElmoBiLM.save``; the first 200
sentences of 15–30 tokens from CoNLL-2003 dev; batch 64; ``torch.set_num_threads(2)``;
eval mode, no grad; every layer of every sentence. All implementations are timed in one
process, alternated within each repeat, after one untimed pass each (which is also the pass
that warms the token caches); the median is reported. Peak memory is measured for each
implementation in a fresh subprocess running one full pass.

    python benchmarks/bench_inference.py --archs small,medium,original --repeats 5
"""

import argparse
import datetime
import gc
import hashlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.vocab import Vocab

from docs_block import printed_into_docs
from spacy_elmo.bilm.model import ElmoBiLM
from spacy_elmo.bilm.pretrained import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_CACHE = Path(tempfile.gettempdir()) / "spacy_elmo_bench_weights"
SEED = 0
WARM_CACHE_SIZE = 100_000
MIN_TOKENS, MAX_TOKENS = 15, 30
ATOL, RTOL = 1e-5, 1e-4

Sentences = List[List[str]]
Runner = Callable[[Sentences], List[np.ndarray]]


@dataclass(frozen=True)
class Impl:
    """One benchmarked implementation: a command-line key, a table label, its token cache size."""

    key: str
    label: str
    cache_size: int


IMPLS: Tuple[Impl, ...] = (
    Impl("naive", "comparator `naive_elmo.embed_batch` (≈ AllenNLP)", 0),
    Impl("bilm", "`ElmoBiLM.embed_sentences`, no token cache", 0),
    Impl("bilm-cache", "`ElmoBiLM.embed_sentences`, token cache warm", WARM_CACHE_SIZE),
    Impl("pipe", "`nlp.pipe`, no token cache", 0),
    Impl("pipe-cache", "`nlp.pipe`, token cache warm", WARM_CACHE_SIZE),
)
IMPLS_BY_KEY = {impl.key: impl for impl in IMPLS}


# ---------------------------------------------------------------------------- inputs


def load_module(path: Path) -> ModuleType:
    """Import a Python file from the shared folder without putting it on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_files(shared: Path, arch: str) -> Tuple[Path, Path]:
    """``options.json`` and ``weights.hdf5`` of ``arch``: seed-0 synthetic weights written by
    ``make_weights.py``, loaded and saved again by ``ElmoBiLM.save``; cached under /tmp.
    ``default`` is the biLM shipped in the package, as it is."""
    if arch == DEFAULT_MODEL_NAME:
        return DEFAULT_MODEL_DIR / "options.json", DEFAULT_MODEL_DIR / "weights.hdf5"
    options_source = shared / "bench" / f"{arch}_options.json"
    digest = hashlib.sha256(options_source.read_bytes()).hexdigest()[:10]
    directory = WEIGHTS_CACHE / f"{arch}-seed{SEED}-{digest}"
    options, weights = directory / "options.json", directory / "weights.hdf5"
    if options.is_file() and weights.is_file():
        return options, weights
    WEIGHTS_CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{arch}-", dir=WEIGHTS_CACHE))
    try:
        make_weights = load_module(shared / "bench" / "make_weights.py")
        raw = scratch / "raw.hdf5"
        make_weights.make_weights(str(options_source), str(raw), seed=SEED)
        ElmoBiLM.from_files(options_source, raw, token_cache_size=0).save(scratch / "saved")
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(scratch / "saved", directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return options, weights


def read_sentences(path: Path, count: int) -> Sentences:
    """The first ``count`` sentences of 15–30 tokens of a CoNLL file (first column)."""
    sentences: Sentences = []
    current: List[str] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            if fields and fields[0] != "-DOCSTART-":
                current.append(fields[0])
                continue
            if MIN_TOKENS <= len(current) <= MAX_TOKENS:
                sentences.append(current)
                if len(sentences) == count:
                    return sentences
            current = []
    if MIN_TOKENS <= len(current) <= MAX_TOKENS and len(sentences) < count:
        sentences.append(current)
    return sentences


# ---------------------------------------------------------------------------- implementations


class SpaceTokenizer:
    """Splits on single spaces, so that docs hold exactly the CoNLL tokens."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        return Doc(self.vocab, words=text.split(" "))


def elmo_pipeline(options: Path, weights: Path, cache_size: int) -> Language:
    """A blank English pipeline with the ``elmo`` component, its biLM loaded.

    The component's per-sentence layer cache is turned off: every timed pass reads the same
    sentences, so with it on the passes after the first would not run the biLM at all.
    """
    nlp = spacy.blank("en")
    nlp.tokenizer = SpaceTokenizer(nlp.vocab)
    model = {"weights": str(weights), "options": str(options), "token_cache_size": cache_size, "layer_cache_mb": 0}
    config = {"model": model}
    nlp.add_pipe("elmo", config=config)
    nlp.initialize()
    return nlp


def load_runner(impl: Impl, shared: Path, options: Path, weights: Path, batch_size: int) -> Runner:
    """Load ``impl``'s model; return a function embedding sentences with it (all layers)."""
    if impl.key == "naive":
        naive = load_module(shared / "bench" / "naive_elmo.py")
        comparator = naive.load(str(options), str(weights))

        def run_naive(sentences: Sentences) -> List[np.ndarray]:
            return [
                array
                for start in range(0, len(sentences), batch_size)
                for array in naive.embed_batch(comparator, sentences[start : start + batch_size])
            ]

        return run_naive
    if impl.key.startswith("bilm"):
        bilm = ElmoBiLM.from_files(options, weights, token_cache_size=impl.cache_size).eval()
        return lambda sentences: bilm.embed_sentences(sentences, batch_size=batch_size)
    nlp = elmo_pipeline(options, weights, impl.cache_size)

    def run_pipe(sentences: Sentences) -> List[np.ndarray]:
        texts = [" ".join(sentence) for sentence in sentences]
        return [doc._.elmo_layers for doc in nlp.pipe(texts, batch_size=batch_size)]

    return run_pipe


# ---------------------------------------------------------------------------- measurements


def proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in KiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{field} not found in /proc/self/status")
    return int(match.group(1))


def measure_rss_child(args: argparse.Namespace) -> None:
    """Subprocess side of the memory measurement: load, one full pass, print RSS as JSON.

    The peak is VmHWM, this process's own high-water mark: ``ru_maxrss`` of a freshly
    exec'ed child also counts the pre-exec address space, i.e. the parent's peak.
    """
    key, arch = args._measure_rss
    torch.set_num_threads(args.threads)
    options, weights = model_files(args.shared, arch)
    sentences = read_sentences(args.shared / "data" / "conll2003" / "dev.txt", args.sentences)
    with torch.no_grad():
        run = load_runner(IMPLS_BY_KEY[key], args.shared, options, weights, args.batch_size)
        gc.collect()
        loaded = proc_status_kib("VmRSS")
        run(sentences)
    print(json.dumps({"loaded_kib": loaded, "peak_kib": proc_status_kib("VmHWM")}))


def measure_rss(impl: Impl, arch: str, args: argparse.Namespace) -> Dict[str, int]:
    """Loaded and peak RSS (KiB) of ``impl`` in a fresh subprocess."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_measure-rss",
        impl.key,
        arch,
        "--shared",
        str(args.shared),
        "--sentences",
        str(args.sentences),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_impls(
    runners: Dict[str, Runner], sentences: Sentences, repeats: int
) -> Tuple[Dict[str, List[float]], Dict[str, List[np.ndarray]]]:
    """One untimed pass per implementation, then ``repeats`` rounds timing each in turn.

    Returns the seconds of every timed pass and the outputs of the last one.
    """
    outputs: Dict[str, List[np.ndarray]] = {}
    seconds: Dict[str, List[float]] = {key: [] for key in runners}
    with torch.no_grad():
        for key, run in runners.items():
            outputs[key] = run(sentences)
        for _ in range(repeats):
            for key, run in runners.items():
                outputs[key] = []
                gc.collect()
                start = time.perf_counter()
                outputs[key] = run(sentences)
                seconds[key].append(time.perf_counter() - start)
    return seconds, outputs


def max_abs_diff(ours: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Largest |ours − reference| over every layer, token and dimension of every sentence."""
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ours, reference))


def all_close(ours: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> bool:
    """``numpy.allclose(ours, reference, atol=1e-5, rtol=1e-4)`` for every sentence."""
    return all(a.shape == b.shape and np.allclose(a, b, atol=ATOL, rtol=RTOL) for a, b in zip(ours, reference))


# ---------------------------------------------------------------------------- report


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """Short commit of the repository (read-only query), or "unknown"."""
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


def print_run_header(title: str, threads: int) -> None:
    """The title, when, on what (CPU, versions, threads, commit) and the command line."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {title}\n")
    print(
        f"{now} · CPU: {cpu_model()} ({os.cpu_count()} logical cores) · Python {platform.python_version()} · "
        f"torch {torch.__version__} · spaCy {spacy.__version__} · {threads} threads · commit {git_commit()}\n"
    )
    print(f"Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`\n")


def print_header(args: argparse.Namespace, words: int, sentences: int) -> None:
    print_run_header("spacy_elmo inference benchmark", args.threads)
    print(
        f"Data: the first {sentences} sentences of {MIN_TOKENS}–{MAX_TOKENS} tokens of CoNLL-2003 dev, "
        f"{words:,} words; batch {args.batch_size}; eval mode, no grad; all layers. "
        f"Weights: `make_weights.py` seed {SEED}, re-written by `ElmoBiLM.save`. "
        f"Median of {args.repeats} timed passes per implementation, alternated, each after one "
        f"untimed pass (which warms the token cache, size {WARM_CACHE_SIZE:,}). "
        f"`nlp.pipe` with the component's per-sentence layer cache off (`layer_cache_mb = 0`). "
        f"RSS: one full pass in a fresh process; 'loaded' = after imports and loading.\n"
    )


def print_arch(
    arch: str,
    options: Path,
    weights: Path,
    words: int,
    seconds: Dict[str, List[float]],
    rss: Dict[str, Dict[str, int]],
    outputs: Dict[str, List[np.ndarray]],
) -> None:
    lstm = json.loads(options.read_text())["lstm"]
    print(f"## {arch} (LSTM {lstm['n_layers']}×{lstm['dim']}, projection {lstm['projection_dim']})\n")
    print(f"Weights: `{weights.parent.name}/{weights.name}` ({weights.stat().st_size / 2**20:,.0f} MiB)\n")
    print("| implementation | words/s (median) | words/s (min–max) | × comparator | peak RSS (MiB) | peak − loaded (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline = words / statistics.median(seconds["naive"])
    for impl in IMPLS:
        rates = [words / s for s in seconds[impl.key]]
        median = statistics.median(rates)
        peak, loaded = rss[impl.key]["peak_kib"] / 1024, rss[impl.key]["loaded_kib"] / 1024
        print(
            f"| {impl.label} | {median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | "
            f"{median / baseline:.2f} | {peak:,.0f} | {peak - loaded:,.0f} |"
        )
    naive, ours = outputs["naive"], outputs["bilm"]
    print()
    print(
        f"- `embed_sentences` vs comparator: max |Δ| = {max_abs_diff(ours, naive):.2e} over all layers; "
        f"`allclose(atol={ATOL:g}, rtol={RTOL:g})` for every sentence: {all_close(ours, naive)}"
    )
    print(f"- `embed_sentences`, warm token cache vs none: max |Δ| = {max_abs_diff(outputs['bilm-cache'], ours):.2e}")
    print(f"- `nlp.pipe` `doc._.elmo_layers` vs `embed_sentences`: max |Δ| = {max_abs_diff(outputs['pipe'], ours):.2e}")
    print(f"- `nlp.pipe`, warm token cache vs `embed_sentences`: max |Δ| = {max_abs_diff(outputs['pipe-cache'], ours):.2e}\n")


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    default_shared = os.environ.get("SPACY_ELMO_SHARED") or str(REPO.parent / "shared")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", default="small", help="comma-separated: small, medium, original, default (the shipped biLM)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per implementation (median reported)")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=Path(default_shared), help="the shared folder (bench/, data/)")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also write the printed tables into the inference-benchmark block of docs/speed.md",
    )
    parser.add_argument("--_measure-rss", nargs=2, metavar=("IMPL", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    archs = [arch.strip() for arch in args.archs.split(",") if arch.strip()]
    for arch in archs:
        if arch != DEFAULT_MODEL_NAME and not (args.shared / "bench" / f"{arch}_options.json").is_file():
            parser.error(f"no options for architecture {arch!r} in {args.shared / 'bench'}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    args.arch_list = archs
    return args


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    if args._measure_rss:
        measure_rss_child(args)
        return
    torch.set_num_threads(args.threads)
    sentences = read_sentences(args.shared / "data" / "conll2003" / "dev.txt", args.sentences)
    words = sum(len(sentence) for sentence in sentences)
    with printed_into_docs("inference-benchmark" if args.write_docs else None):
        print_header(args, words, len(sentences))
        for arch in args.arch_list:
            options, weights = model_files(args.shared, arch)
            rss = {impl.key: measure_rss(impl, arch, args) for impl in IMPLS}
            runners = {impl.key: load_runner(impl, args.shared, options, weights, args.batch_size) for impl in IMPLS}
            seconds, outputs = time_impls(runners, sentences, args.repeats)
            print_arch(arch, options, weights, words, seconds, rss, outputs)
            del runners, outputs
            gc.collect()
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
