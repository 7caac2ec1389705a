"""Inference speed (words/s) of trained pipelines, measured the way ``spacy benchmark speed`` does.

It reuses spaCy's own warm-up, batching and bootstrap from ``spacy benchmark speed`` and
writes the numbers to JSON. It is a script rather than the CLI for one reason: a frozen
``elmo`` component keeps computed biLM layers per token sequence (``layer_cache_mb``), and
the benchmark feeds the same dev documents again and again, so through the CLI the ELMo
pipeline would be timed on cache hits. Here the cache is switched off after loading, so
every batch runs the biLM (its context-free token cache stays on, as in normal use).
"""

import json
import platform
from pathlib import Path
from typing import Any, Dict, List

import numpy
import spacy
import torch
import typer
from spacy.cli.benchmark_speed import benchmark, bootstrap, warmup
from spacy.training import Corpus
from thinc.api import require_gpu
from wasabi import msg


def disable_layer_cache(nlp: spacy.Language) -> int:
    """Turn off the per-sequence layer cache of every ``elmo`` component; returns how many were found."""
    found = 0
    for name, component in nlp.pipeline:
        if nlp.get_pipe_meta(name).factory != "elmo":
            continue
        for node in component.model.walk():
            if "layer_cache_mb" in node.attrs:
                node.attrs["layer_cache_mb"] = 0
                found += 1
    return found


def measure(pipeline: Path, corpus: Path, n_batches: int, batch_size: int, warmup_epochs: int) -> Dict[str, Any]:
    """Words per second of one pipeline over ``n_batches`` batches of dev documents (mean, 95% CI)."""
    nlp = spacy.load(pipeline)
    uncached = disable_layer_cache(nlp)
    docs = [eg.predicted for eg in Corpus(corpus)(nlp)]
    if not docs:
        msg.fail(f"Cannot measure speed on an empty corpus: {corpus}", exits=1)
    warmup(nlp, docs, warmup_epochs, batch_size)
    wps = benchmark(nlp, docs, n_batches, batch_size, shuffle=False)
    means = numpy.sort(bootstrap(wps))
    mean = float(numpy.mean(wps))
    return {
        "pipeline": str(pipeline),
        "components": nlp.pipe_names,
        "words_per_second": mean,
        "ci95_low": float(means[int(len(means) * 0.025)]),
        "ci95_high": float(means[int(len(means) * 0.975)]),
        "n_batches": n_batches,
        "batch_size": batch_size,
        "words": int(sum(len(doc) for doc in docs)),
        "elmo_layer_cache_disabled": bool(uncached),
    }


def main(
    corpus: Path = typer.Argument(..., exists=True, help="Documents to annotate (.spacy), e.g. the dev corpus"),
    output: Path = typer.Argument(..., help="JSON file for the results"),
    pipelines: List[Path] = typer.Argument(..., exists=True, help="Trained pipelines to time"),
    n_batches: int = typer.Option(50, "--batches", min=1, help="Batches to time per pipeline"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Documents per batch"),
    warmup_epochs: int = typer.Option(1, "--warmup", min=0, help="Passes over the corpus before timing"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU to use, or -1 for CPU"),
) -> None:
    """Time each pipeline and write the device and ``{name: result}`` to ``output``."""
    if gpu_id >= 0:
        require_gpu(gpu_id)
    threads = torch.get_num_threads()
    device = (
        f"GPU {gpu_id}" if gpu_id >= 0 else f"CPU ({platform.machine()}, {threads} torch thread{'s' if threads != 1 else ''})"
    )
    results: Dict[str, Any] = {}
    for pipeline in pipelines:
        name = pipeline.parent.name if pipeline.name.startswith("model-") else pipeline.name
        result = measure(pipeline, corpus, n_batches, batch_size, warmup_epochs)
        results[name] = result
        msg.good(f"{name}: {result['words_per_second']:.0f} words/s (95% CI {result['ci95_low']:.0f}-{result['ci95_high']:.0f})")
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "corpus": str(corpus), "pipelines": results}
    output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    typer.run(main)
