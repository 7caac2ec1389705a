"""Pretraining throughput (training tokens/s on the CPU) for biLM architectures, printed as Markdown.

Each row is one real ``python -m spacy_elmo pretrain`` run in a subprocess, stopped by
``--training.max_minutes``; the number reported is ``metrics.json``'s ``tokens_per_s``: corpus
tokens (words, without ``<S>``/``</S>``) per second of training-loop time, which includes
batching and the optimiser but not setup or evaluation; "steady tokens/s" leaves out the first
log interval (start-up: shuffle buffer, allocator warm-up). Data: the English Wikipedia slice
(``shared/data/lm/wiki2014-en``), tokenised once with the same spaCy reader as format
"paragraphs" and cached in ``spacy_elmo_bench_pretrain/`` under the system temporary directory (never in the repository);
vocabulary: the 50,000 most frequent words of that text.

Rows (``--archs``): ``small-cfg`` is ``configs/pretrain_small.cfg`` as shipped; ``published-small``
is the same config with the published *small* architecture (``shared/bench/small_options.json``:
char CNN F = 2048, 1 highway, H = 1024, P = 128). ``--softmax`` runs each row with each softmax;
``--dev`` also reports the exact dev perplexity reached within the time budget (how the
default softmax was chosen).

    python benchmarks/bench_pretrain.py                              # 45 s per row, 2 threads
    python benchmarks/bench_pretrain.py --softmax sampled,adaptive --dev --seconds 120

On shared or busy cores use ``--threads 1``: two OpenMP threads that wait for each other while
another process holds a core made training several times slower than one thread here.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from spacy_elmo.pretrain.config import DataConfig
from spacy_elmo.pretrain.data import SentenceReader
from spacy_elmo.pretrain.vocab import LmVocab

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "spacy_elmo_bench_pretrain"
TRAIN_TOKENS = 1_500_000
DEV_SENTENCES = 500
VOCAB_SIZE = 50_000
LOG_EVERY = 2


def shared_dir(arg: Optional[str]) -> Path:
    return Path(arg or os.environ.get("SPACY_ELMO_SHARED") or REPO.parent / "shared")


def prepare_data(shared: Path) -> Dict[str, Path]:
    """Tokenised train/dev sentences (one per line) and a 50k vocabulary, cached in /tmp."""
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = {"train": CACHE / "train.txt", "dev": CACHE / "dev.txt", "vocab": CACHE / "vocab.txt"}
    if all(p.is_file() for p in paths.values()):
        return paths
    reader = SentenceReader(DataConfig(format="paragraphs", max_sentence_length=100, min_tokens=3, max_tokens=250))
    wiki = shared / "data" / "lm" / "wiki2014-en"
    sentences = []
    count = 0
    for sentence in reader.sentences([wiki / "train.00.txt.gz"]):
        sentences.append(sentence)
        count += len(sentence)
        if count >= TRAIN_TOKENS:
            break
    paths["train"].write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    dev = []
    for sentence in reader.sentences([wiki / "valid.txt.gz"]):
        dev.append(" ".join(sentence) + "\n")
        if len(dev) >= DEV_SENTENCES:
            break
    paths["dev"].write_text("".join(dev), encoding="utf-8")
    LmVocab.build(sentences, VOCAB_SIZE, 1, TRAIN_TOKENS).save(paths["vocab"])
    return paths


def arch_overrides(name: str, shared: Path) -> Dict[str, object]:
    if name == "small-cfg":
        return {}
    options = json.loads((shared / "bench" / "small_options.json").read_text())
    lstm, cnn = options["lstm"], options["char_cnn"]
    return {
        "model.lstm.dim": lstm["dim"],
        "model.lstm.projection_dim": lstm["projection_dim"],
        "model.lstm.n_layers": lstm["n_layers"],
        "model.char_cnn.embedding_dim": cnn["embedding"]["dim"],
        "model.char_cnn.filters": cnn["filters"],
        "model.char_cnn.n_highway": cnn["n_highway"],
    }


def run_row(arch: str, softmax: str, args: argparse.Namespace, data: Dict[str, Path], shared: Path) -> Dict[str, object]:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{arch}-{softmax}-"))
    overrides: Dict[str, object] = {
        "paths.train": str(data["train"]),
        "paths.dev": str(data["dev"]) if args.dev else None,
        "paths.test": None,
        "data.format": "sentences",
        "vocab.path": str(data["vocab"]),
        "vocab.size": VOCAB_SIZE,
        "training.max_minutes": args.seconds / 60,
        "training.max_steps": None,
        "training.max_tokens": None,
        "training.eval_every": 10**9,
        "training.checkpoint_every": 10**9,
        "training.log_every": LOG_EVERY,
        "training.softmax": softmax,
        **arch_overrides(arch, shared),
    }
    command = [
        sys.executable,
        "-m",
        "spacy_elmo",
        "pretrain",
        str(REPO / "configs" / "pretrain_small.cfg"),
        str(out),
        "--no-progress",
        "--threads",
        str(args.threads),
        "--gpu-id",
        "-1",
    ]
    if args.return_memory:
        command.append("--return-memory")
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {arch}/{softmax} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    intervals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    intervals = [r for r in intervals if r["event"] == "train" and r["tokens_per_s"] > 0]
    steady_tokens = sum(r["tokens"] - p["tokens"] for p, r in zip(intervals, intervals[1:]))
    steady_seconds = sum((r["tokens"] - p["tokens"]) / r["tokens_per_s"] for p, r in zip(intervals, intervals[1:]))
    shutil.rmtree(out, ignore_errors=True)
    options = metrics["options"]
    return {
        "arch": arch,
        "shape": f"H={options['lstm']['dim']} P={options['lstm']['projection_dim']} "
        f"F={sum(n for _, n in options['char_cnn']['filters'])} hw={options['char_cnn']['n_highway']}",
        "params": metrics["parameters"]["bilm"],
        "softmax_params": metrics["parameters"]["softmax"],
        "softmax": softmax,
        "batch_tokens": metrics["config"]["training"]["batch_tokens"],
        "steps": metrics["steps"],
        "tokens": metrics["tokens"],
        "tokens_per_s": metrics["tokens_per_s"],
        "steady_tokens_per_s": steady_tokens / steady_seconds if steady_seconds else float("nan"),
        "dev_ppl": (metrics.get("dev") or {}).get("ppl"),
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="small-cfg,published-small", help="rows: small-cfg, published-small")
    parser.add_argument("--softmax", default="adaptive", help="comma-separated: adaptive, sampled")
    parser.add_argument("--seconds", type=float, default=45.0, help="training time per row")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--return-memory", action="store_true", help="pass --return-memory (glibc's default allocator behaviour) for an A/B"
    )
    parser.add_argument("--dev", action="store_true", help="also report the dev perplexity reached (500 sentences)")
    parser.add_argument("--shared", default=None, help="shared data folder (default $SPACY_ELMO_SHARED or ../shared)")
    args = parser.parse_args(argv)
    shared = shared_dir(args.shared)
    data = prepare_data(shared)
    load_before = os.getloadavg()[0]
    rows = [run_row(a, s, args, data, shared) for a in args.archs.split(",") for s in args.softmax.split(",")]

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"# Pretraining throughput ({datetime.date.today()})\n")
    print(
        f"- CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; {args.threads} threads; "
        f"load average (other processes included) before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}"
    )
    print(f"- {args.seconds:.0f} s of training per row; Wikipedia sentences (spaCy-tokenised, cached); vocab {VOCAB_SIZE:,}")
    print(f"- command: python benchmarks/bench_pretrain.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    header = (
        "| row | architecture | biLM params | softmax (params) | batch_tokens | steps | tokens | tokens/s | steady tokens/s |"
    )
    rule = "|---|---|---:|---|---:|---:|---:|---:|---:|"
    if args.dev:
        header += " dev ppl |"
        rule += "---:|"
    print(header)
    print(rule)
    for row in rows:
        line = (
            f"| {row['arch']} | {row['shape']} | {row['params']:,} | {row['softmax']} ({row['softmax_params']:,}) | "
            f"{row['batch_tokens']} | {row['steps']} | {row['tokens']:,} | {row['tokens_per_s']:,.0f} | "
            f"{row['steady_tokens_per_s']:,.0f} |"
        )
        if args.dev:
            line += f" {row['dev_ppl']:.1f} |" if row["dev_ppl"] is not None else " – |"
        print(line)


if __name__ == "__main__":
    main()
