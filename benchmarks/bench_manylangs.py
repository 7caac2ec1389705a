"""Speed of ELMoForManyLangs models: spacy_elmo against the reference package's ``sents2elmo``.

The reference (``elmoformanylangs``) lives in its own environment, so the script runs in two
interpreters: this project's for spacy_elmo, and ``--reference-python`` for the reference.

    python benchmarks/bench_manylangs.py make ../manylangs-bench          # random model, published shape
    python benchmarks/bench_manylangs.py compare ../manylangs-bench --reference-python ../efml/bin/python

Protocol: the published network (LSTM 4096, projection 512, char CNN with 2048 filters,
word_dim 100, char_dim 50) with random weights (normal, scaled by 1/sqrt(fan-in)); lexicons
of the synthetic corpus's characters (a few hundred, so the char CNN can use its lookup
table) and words; ``--sentences`` synthetic German-like sentences of 15-30 tokens; batch 64;
one torch thread; every layer of every sentence (``output_layer=-2``). Each implementation
runs in a fresh process: one untimed pass, then ``--repeats`` timed passes; the median is
reported as words/s. spacy_elmo's token cache is emptied before every timed pass ("cold"),
so repeated passes over the same sentences gain nothing the reference could not.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Dict, List

SEED = 0
BATCH_SIZE = 64
SYLLABLES = ["ge", "sch", "ver", "ung", "ä", "ö", "ü", "ß", "ein", "ber", "st", "lich", "keit", "an", "ten", "ie", "au", "é"]


def corpus(n_sentences: int, seed: int = SEED) -> List[List[str]]:
    """Synthetic sentences of 15-30 tokens drawn from a Zipf-like vocabulary of made-up words."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(1, 5))) for _ in range(6000)})
    rng.shuffle(words)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return [rng.choices(words, weights, k=rng.randint(15, 30)) + ["."] for _ in range(n_sentences)]


def make(directory: str, n_sentences: int) -> None:
    """Write a random model of the published shape whose lexicons cover the benchmark corpus."""
    import torch

    from spacy_elmo.bilm.manylangs_io import CHAR_SPECIALS, PUBLISHED_NETWORK, ManyLangsNetwork, write_model

    sentences = corpus(n_sentences)
    network = ManyLangsNetwork.from_dict(PUBLISHED_NETWORK, "published network", file_name="cnn_50_100_512_4096_sample.json")
    chars = {c: i for i, c in enumerate([*sorted({c for s in sentences for t in s for c in t}), *CHAR_SPECIALS])}
    words = {w: i for i, w in enumerate(["<oov>", "<bos>", "<eos>", "<pad>", *sorted({t for s in sentences for t in s})])}
    generator = torch.Generator().manual_seed(SEED)

    def random_state(shapes: Dict[str, tuple]) -> Dict[str, torch.Tensor]:
        state = {}
        for name, shape in shapes.items():
            fan_in = shape[-1] if len(shape) == 2 else (shape[1] * shape[2] if len(shape) == 3 else 1)
            scale = 1.0 / fan_in**0.5 if len(shape) > 1 else 0.1
            state[name] = torch.randn(shape, generator=generator) * scale
        return state

    token = random_state(network.token_embedder_shapes(len(chars), len(words)))
    encoder = random_state(network.encoder_shapes())
    write_model(directory, network, chars, words, token, encoder)
    print(f"wrote {directory}: {len(chars)} characters, {len(words)} words")


def run(directory: str, implementation: str, precision: str, n_sentences: int, repeats: int) -> None:
    """Time one implementation in this process and print its words/s as JSON."""
    import torch

    torch.set_num_threads(1)
    sentences = corpus(n_sentences)
    n_words = sum(len(s) for s in sentences)
    if implementation == "reference":
        from elmoformanylangs import Embedder

        embedder = Embedder(directory, batch_size=BATCH_SIZE)

        def one_pass() -> None:
            with torch.no_grad():
                embedder.sents2elmo(sentences, output_layer=-2)
    else:
        from spacy_elmo import ElmoBiLM

        bilm = ElmoBiLM.from_pretrained(directory, precision=precision)

        def one_pass() -> None:
            bilm.token_cache.clear()
            bilm.embed_sentences(sentences, batch_size=BATCH_SIZE)

    one_pass()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - start)
    rates = sorted(n_words / t for t in times)
    print(json.dumps({"words_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "words": n_words}))


def compare(directory: str, reference_python: str, precisions: List[str], n_sentences: int, repeats: int) -> None:
    """Run every implementation in a fresh process and print a Markdown table."""
    rows = [("elmoformanylangs sents2elmo", reference_python, "reference", "fp32")]
    rows += [(f"spacy_elmo {p}", sys.executable, "ours", p) for p in precisions]
    results = []
    for label, python, implementation, precision in rows:
        command = [python, __file__, "run", directory, "--implementation", implementation, "--precision", precision]
        command += ["--sentences", str(n_sentences), "--repeats", str(repeats)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            results.append((label, None))
            print(f"{label} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        results.append((label, json.loads(done.stdout.strip().splitlines()[-1])))
    base = results[0][1]["words_per_s"] if results[0][1] else None
    print("| implementation | words/s (median) | range | × reference |")
    print("| --- | ---: | --- | ---: |")
    for label, result in results:
        if result is None:
            print(f"| {label} | failed | | |")
            continue
        ratio = f"{result['words_per_s'] / base:.2f}" if base else "n/a"
        print(f"| {label} | {result['words_per_s']:.1f} | {result['min']:.1f}–{result['max']:.1f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["make", "run", "compare"])
    parser.add_argument("directory")
    parser.add_argument("--implementation", choices=["ours", "reference"], default="ours")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--precisions", default="fp32,int8", help="compare: spacy_elmo precisions, comma-separated")
    parser.add_argument("--reference-python", default=sys.executable)
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.command == "make":
        make(args.directory, args.sentences)
    elif args.command == "run":
        run(args.directory, args.implementation, args.precision, args.sentences, args.repeats)
    else:
        compare(args.directory, args.reference_python, args.precisions.split(","), args.sentences, args.repeats)


if __name__ == "__main__":
    main()
