"""Training throughput of NER on ELMo: frozen with the layer store (a fresh one in the
temporary directory, pre-filled by ``initialize``, so the timed epochs read it), with the
memory cache alone and with neither, fine-tuned, and the baseline without ELMo, printed as a
Markdown table. ``initialize`` is not timed: see ``bench_train_cli.py`` for whole runs.

Each setting trains the repo's config (``configs/ner_elmo.cfg``, fine-tuned with
``components.elmo.frozen = false``, or ``ner_baseline.cfg``) with a hand-written ``nlp.update``
loop over the first N sentences of CoNLL-2003 train (converted with ``spacy convert``) for a few
epochs, and reports words/s per epoch. The biLM is the published *small* architecture with synthetic weights
(``../shared/bench/make_weights.py`` seed 0), as in ``bench_inference.py``.

    python benchmarks/bench_training.py --sentences 1000 --epochs 3
"""

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed

from docs_block import printed_into_docs
from spacy_elmo import ElmoBiLM

REPO = Path(__file__).resolve().parents[1]

STORE_OFF = {"components.elmo.model.layer_store": "off"}
SETTINGS = {
    "stored": ("frozen biLM, layer store pre-filled by initialize + layer cache (default)", "ner_elmo.cfg", {}),
    "cached": ("frozen biLM, layer cache on, store off", "ner_elmo.cfg", STORE_OFF),
    "uncached": (
        "frozen biLM, layer cache and store off",
        "ner_elmo.cfg",
        {"components.elmo.model.layer_cache_mb": 0, **STORE_OFF},
    ),
    "finetune": ("fine-tuned biLM", "ner_elmo.cfg", {"components.elmo.frozen": False}),
    "baseline": ("baseline, no ELMo", "ner_baseline.cfg", {}),
}


def small_weights(shared: Path, workdir: Path) -> Path:
    """Synthetic weights of the published small architecture, re-written by our own writer."""
    raw = workdir / "raw.hdf5"
    options = shared / "bench" / "small_options.json"
    subprocess.run(
        [sys.executable, str(shared / "bench" / "make_weights.py"), str(options), str(raw), "--seed", "0"],
        check=True,
        capture_output=True,
    )
    ElmoBiLM.from_files(options, raw).save(workdir / "small")
    return workdir / "small"


def conll_corpus(shared: Path, workdir: Path, n_sentences: int) -> Path:
    """The first ``n_sentences`` of CoNLL-2003 train as a .spacy file (one sentence per doc)."""
    lines = (shared / "data" / "conll2003" / "train.txt").read_text(encoding="utf-8").split("\n")
    kept, sentences = [], 0
    for line in lines:
        kept.append(line)
        if not line.strip() and kept[-2:-1] and kept[-2].strip() and not kept[-2].startswith("-DOCSTART-"):
            sentences += 1
            if sentences >= n_sentences:
                break
    (workdir / "train.iob").write_text("\n".join(kept) + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "spacy", "convert", str(workdir / "train.iob"), str(workdir), "--converter", "conll", "-n", "1"],
        check=True,
        capture_output=True,
    )
    return workdir / "train.spacy"


def words_per_second(
    config_name: str, overrides: Dict, model_dir: Path, corpus: Path, epochs: int, batch_words: int
) -> List[float]:
    config = spacy.util.load_config(REPO / "configs" / config_name)
    if "elmo" in config["nlp"]["pipeline"]:
        store = {"components.elmo.model.layer_store_dir": str(model_dir.parent / "layer-store")}
        overrides = {"components.elmo.model.weights": str(model_dir), **store, **overrides}
    nlp = spacy.util.load_model_from_config(config.merge(spacy.util.dot_to_dict(overrides)), auto_fill=True)
    docs = list(DocBin().from_disk(corpus).get_docs(nlp.vocab))
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    batches, batch, size = [], [], 0
    for eg in examples:
        batch.append(eg)
        size += len(eg)
        if size >= batch_words:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    n_words = sum(len(eg) for eg in examples)
    speeds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in batches:
            nlp.update(batch, sgd=optimizer, drop=0.1)
        speeds.append(n_words / (time.perf_counter() - start))
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-words", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("SPACY_ELMO_SHARED") or REPO.parent / "shared"))
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also write the printed tables into the training-benchmark block of docs/speed.md",
    )
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of: " + ",".join(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = small_weights(args.shared, workdir)
        corpus = conll_corpus(args.shared, workdir, args.sentences)
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        with printed_into_docs("training-benchmark" if args.write_docs else None):
            print(
                f"{datetime.date.today()} · {cpu} · {args.threads} threads · torch {torch.__version__} · spaCy {spacy.__version__}"
            )
            print(
                f"`{shlex.join(['python', *sys.argv])}` — {args.sentences} CoNLL-2003 train sentences, batches of ~{args.batch_words} words, small biLM architecture\n"
            )
            header = "| setting | " + " | ".join(f"epoch {i + 1} words/s" for i in range(args.epochs)) + " |"
            print(header)
            print("|" + "---|" * (args.epochs + 1))
            for name in args.settings.split(","):
                label, config_name, overrides = SETTINGS[name]
                speeds = words_per_second(config_name, overrides, model_dir, corpus, args.epochs, args.batch_words)
                print(f"| {label} | " + " | ".join(f"{s:,.0f}" for s in speeds) + " |", flush=True)


if __name__ == "__main__":
    main()
