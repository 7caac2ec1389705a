"""What low precision costs a downstream task: a trained NER pipeline's dev F1 and speed per precision.

Each pipeline (trained in fp32, e.g. the ``model-best`` of the ``seeds`` workflow) is loaded once
per precision with ``[components.elmo.model] precision`` overridden, its biLM layer cache off
(``layer_cache_mb = 0``) so every pass runs the biLM, and evaluated on the same corpus with
spaCy's scorer. Rows: entity F1 and its difference to fp32, words/s of ``nlp.evaluate`` (median of
the timed passes, alternated between precisions after one untimed pass each). ``--write-docs``
also writes the tables into the ``precision-ner-benchmark`` block of docs/speed.md
(``docs_block.py``), once the run has finished.

    OMP_NUM_THREADS=1 python benchmarks/bench_precision_ner.py corpus/conll2003/dev.spacy \\
        training/runs/ner/ner-elmo-f1-seed0/model-best --threads 1
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import spacy
import torch
from spacy.training import Corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import print_run_header
from bench_precision import checked_precisions_and_repeats
from docs_block import printed_into_docs
from spacy_elmo.bilm.inference_precision import INFERENCE_PRECISIONS


def load(pipeline: Path, precision: str) -> spacy.Language:
    """``pipeline`` with its biLM at ``precision`` and the layer cache off."""
    overrides = {"components": {"elmo": {"model": {"precision": precision, "layer_cache_mb": 0}}}}
    return spacy.load(pipeline, config=overrides)


def bench(pipeline: Path, corpus: Path, precisions: Sequence[str], repeats: int) -> None:
    nlps = {p: load(pipeline, p) for p in precisions}
    examples = list(Corpus(str(corpus))(nlps[precisions[0]]))
    words = sum(len(eg.reference) for eg in examples)
    scores: Dict[str, float] = {}
    seconds: Dict[str, List[float]] = {p: [] for p in precisions}
    for precision, nlp in nlps.items():
        scores[precision] = 100 * nlp.evaluate(examples)["ents_f"]
    for _ in range(repeats):
        for precision, nlp in nlps.items():
            start = time.perf_counter()
            nlp.evaluate(examples)
            seconds[precision].append(time.perf_counter() - start)
    print(f"## `{pipeline.as_posix()}` on `{corpus.as_posix()}` ({len(examples):,} docs, {words:,} words)\n")
    print("| precision | entity F1 | Δ F1 vs fp32 | words/s (median) | words/s (min–max) | × fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    reference = precisions[0]
    base_rate = words / statistics.median(seconds[reference])
    for precision in precisions:
        rates = [words / s for s in seconds[precision]]
        median = statistics.median(rates)
        print(
            f"| {precision} | {scores[precision]:.2f} | {scores[precision] - scores[reference]:+.2f} | "
            f"{median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | {median / base_rate:.2f} |"
        )
    print()
    sys.stdout.flush()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path, help="a .spacy corpus with entities (e.g. CoNLL-2003 dev)")
    parser.add_argument("pipelines", type=Path, nargs="+", help="trained pipelines with an elmo component")
    parser.add_argument(
        "--precisions", default=",".join(INFERENCE_PRECISIONS), help="comma-separated, the first is the reference"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per precision (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="also write the printed tables into the precision-ner-benchmark block of docs/speed.md",
    )
    return checked_precisions_and_repeats(parser, parser.parse_args(argv))


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with printed_into_docs("precision-ner-benchmark" if args.write_docs else None):
        print_run_header("spacy_elmo: NER accuracy per inference precision", args.threads)
        for pipeline in args.pipelines:
            bench(pipeline, args.corpus, args.precision_list, args.repeats)


if __name__ == "__main__":
    main(sys.argv[1:])
