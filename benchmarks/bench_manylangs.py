"""Speed of ELMoForManyLangs models: spacy_elmo against the reference package's ``sents2elmo``.

The reference (``elmoformanylangs``) lives in its own environment, so the script runs in two
interpreters: this project's for spacy_elmo, and ``--reference-python`` for the reference.

    python benchmarks/bench_manylangs.py make ../manylangs-bench          # random model, published shape
    python benchmarks/bench_manylangs.py compare ../manylangs-bench --reference-python ../efml/bin/python

    python benchmarks/bench_manylangs.py make ../manylangs-cjk --script cjk   # a CJK-sized character lexicon
    python benchmarks/bench_manylangs.py compare ../manylangs-cjk --script cjk --reference-python ../efml/bin/python

Protocol: the published network (LSTM 4096, projection 512, char CNN with 2048 filters,
word_dim 100, char_dim 50) with random weights (normal, scaled by 1/sqrt(fan-in)); a word
lexicon of the synthetic corpus's words; ``--sentences`` synthetic sentences of 15-30 tokens;
batch 64; one torch thread; every layer of every sentence (``output_layer=-2``). Each
implementation runs in a fresh process: one untimed pass, then ``--repeats`` timed passes;
the median is reported as words/s. spacy_elmo's token cache is emptied before every timed
pass ("cold"), so repeated passes over the same sentences gain nothing the reference could not.

``--script latin`` (the default): German-like words, a character lexicon of the corpus's few
dozen characters, so spacy_elmo's char CNN looks its windows up in a table.
``--script cjk``: words of 1-4 CJK ideographs (segmented text, as the Chinese and Japanese
models read it) and a character lexicon of ``--chars`` ideographs (7,000 by default, the size
of a Chinese character inventory in common use), whose lookup table would exceed
``LOOKUP_TABLE_MAX_FLOATS``, so the char CNN pools by one matmul. ``compare`` says which path ran.
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
SCRIPTS = ("latin", "cjk")
CJK_CHARS = 7000
"""Default size of the ``cjk`` character lexicon: a Chinese character inventory in common use."""
CJK_FIRST = 0x4E00
"""The first CJK Unified Ideograph; the lexicon takes ``--chars`` code points from here on."""


def ideographs(n_chars: int) -> List[str]:
    """The ``cjk`` character lexicon: ``n_chars`` consecutive CJK Unified Ideographs."""
    return [chr(CJK_FIRST + i) for i in range(n_chars)]


def corpus(n_sentences: int, script: str = "latin", n_chars: int = CJK_CHARS, seed: int = SEED) -> List[List[str]]:
    """Synthetic sentences of 15-30 tokens drawn from a Zipf-like vocabulary of made-up words:
    German-like ones (``latin``) or 1-4 ideographs drawn Zipf-like from ``n_chars`` (``cjk``)."""
    rng = random.Random(seed)
    if script == "cjk":
        pool = ideographs(n_chars)
        rng.shuffle(pool)
        char_weights = [1.0 / (rank + 1) for rank in range(len(pool))]
        words = sorted({"".join(rng.choices(pool, char_weights, k=rng.choice((1, 2, 2, 2, 3, 4)))) for _ in range(6000)})
        end = "。"
    else:
        words = sorted({"".join(rng.choices(SYLLABLES, k=rng.randint(1, 5))) for _ in range(6000)})
        end = "."
    rng.shuffle(words)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return [rng.choices(words, weights, k=rng.randint(15, 30)) + [end] for _ in range(n_sentences)]


def make(directory: str, n_sentences: int, script: str, n_chars: int) -> None:
    """Write a random model of the published shape whose lexicons cover the benchmark corpus
    (for ``cjk``, the character lexicon holds all ``n_chars`` ideographs)."""
    import torch

    from spacy_elmo.bilm.manylangs_io import CHAR_SPECIALS, PUBLISHED_NETWORK, ManyLangsNetwork, write_model

    sentences = corpus(n_sentences, script, n_chars)
    network = ManyLangsNetwork.from_dict(PUBLISHED_NETWORK, "published network", file_name="cnn_50_100_512_4096_sample.json")
    lexicon = {c for s in sentences for t in s for c in t} | (set(ideographs(n_chars)) if script == "cjk" else set())
    chars = {c: i for i, c in enumerate([*sorted(lexicon), *CHAR_SPECIALS])}
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


def run(directory: str, implementation: str, precision: str, n_sentences: int, repeats: int, script: str, n_chars: int) -> None:
    """Time one implementation in this process and print its words/s (and, for spacy_elmo,
    which char CNN path ran) as JSON."""
    import torch

    torch.set_num_threads(1)
    sentences = corpus(n_sentences, script, n_chars)
    char_cnn = None
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
        encoder = bilm.token_encoder
        table_mib = encoder.lookup_table_floats() * 4 / 2**20
        path = "lookup table" if encoder.pools_by_lookup() else "one matmul (the lookup table would be too large)"
        char_cnn = f"{path}: {encoder.char_embedding.shape[0]:,} characters, table {table_mib:,.0f} MiB"

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
    print(
        json.dumps(
            {"words_per_s": statistics.median(rates), "min": rates[0], "max": rates[-1], "words": n_words, "char_cnn": char_cnn}
        )
    )


def compare(
    directory: str, reference_python: str, precisions: List[str], n_sentences: int, repeats: int, script: str, n_chars: int
) -> None:
    """Run every implementation in a fresh process and print a Markdown table."""
    rows = [("elmoformanylangs sents2elmo", reference_python, "reference", "fp32")]
    rows += [(f"spacy_elmo {p}", sys.executable, "ours", p) for p in precisions]
    results = []
    for label, python, implementation, precision in rows:
        command = [python, __file__, "run", directory, "--implementation", implementation, "--precision", precision]
        command += ["--sentences", str(n_sentences), "--repeats", str(repeats), "--script", script, "--chars", str(n_chars)]
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
    words = next((result["words"] for _, result in results if result), None)
    paths = sorted({result["char_cnn"] for _, result in results if result and result.get("char_cnn")})
    print(f"\n{n_sentences} sentences ({script}), {words} words; spacy_elmo's char CNN: {'; '.join(paths) or 'n/a'}")


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
    parser.add_argument(
        "--script", choices=SCRIPTS, default="latin", help="the corpus and character lexicon (same for make and compare)"
    )
    parser.add_argument("--chars", type=int, default=CJK_CHARS, help="cjk: ideographs in the character lexicon")
    args = parser.parse_args()
    if args.command == "make":
        make(args.directory, args.sentences, args.script, args.chars)
    elif args.command == "run":
        run(args.directory, args.implementation, args.precision, args.sentences, args.repeats, args.script, args.chars)
    else:
        compare(
            args.directory,
            args.reference_python,
            args.precisions.split(","),
            args.sentences,
            args.repeats,
            args.script,
            args.chars,
        )


if __name__ == "__main__":
    main()
