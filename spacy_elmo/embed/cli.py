"""``python -m spacy_elmo embed INPUT OUTPUT`` and ``python -m spacy_elmo embed-merge OUT SHARD...``."""

import argparse
import sys
import warnings
from typing import List

from ..bilm.pretrained import PUBLISHED_MODELS
from ..errors import ElmoError
from .run import EmbedSettings

DEFAULTS = EmbedSettings()

EMBED_DESCRIPTION = """\
Embed a corpus with one sentence per line into an HDF5 file in the layout of AllenNLP's
`allennlp elmo` command: one float32 dataset per line, named by its 0-based line index
((L+1, n, 2P) with --all, (n, 2P) with --top or --average), plus `sentence_to_index`
(JSON: line text -> index). Tokens are whitespace-separated words (--spacy-tokenizer LANG
uses spaCy's tokenizer). Empty lines get 0-token arrays. A killed run resumes where it
stopped when the same command is run again (progress is kept in OUTPUT.partial/; OUTPUT
appears only when complete). --shard I/N embeds lines i with i % N == I; combine the N
files with `python -m spacy_elmo embed-merge`."""

MERGE_DESCRIPTION = """\
Merge the files written by `embed ... --shard I/N` (I = 0..N-1) into one file in the full
layout, after checking that they come from one run, are complete, disjoint and cover
every line of the input."""


def build_embed_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=EMBED_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="text file (or .gz), one sentence per line, UTF-8")
    parser.add_argument("output", help="HDF5 file to write")
    parser.add_argument(
        "--weights",
        default="default",
        help=f"'default' (shipped), a published name ({', '.join(PUBLISHED_MODELS)}, or manylangs:CODE for an "
        "ELMoForManyLangs language), a model directory, or a weights.hdf5 file (default: %(default)s)",
    )
    parser.add_argument("--options", default=None, help="options.json, when --weights is a file without one beside it")
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument(
        "--all", dest="output_format", action="store_const", const="all", help="every layer, (L+1, n, 2P) per line (the default)"
    )
    layers.add_argument("--top", dest="output_format", action="store_const", const="top", help="the top LSTM layer, (n, 2P)")
    layers.add_argument(
        "--average", dest="output_format", action="store_const", const="average", help="the mean of the layers, (n, 2P)"
    )
    parser.set_defaults(output_format="all")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="sentences per biLM call (default: %(default)s)"
    )
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="embed only lines i with i %% N == I (default: all lines)")
    parser.add_argument("--gpu-id", type=int, default=None, help="CUDA device to run on (default: the CPU)")
    parser.add_argument(
        "--spacy-tokenizer",
        default=None,
        metavar="LANG",
        help="tokenize with spacy.blank(LANG)'s tokenizer instead of splitting on whitespace",
    )
    parser.add_argument(
        "--max-piece-length",
        type=int,
        default=DEFAULTS.max_piece_length,
        help="longer lines are read in consecutive pieces of this many tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk-lines",
        type=int,
        default=DEFAULTS.chunk_lines,
        help="lines sorted and batched together and kept as one unit of progress (default: %(default)s)",
    )
    parser.add_argument(
        "--encoding-errors",
        choices=("strict", "replace"),
        default="strict",
        help="bytes that are not UTF-8: stop with the line number (strict, default) or read them as U+FFFD (replace)",
    )
    parser.add_argument(
        "--forget-sentences",
        action="store_true",
        help="leave out the sentence_to_index dataset (it holds the text of every line)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--precision",
        default="fp32",
        help="fp32 (exact, the default), or bf16 / int8 matmuls: faster, approximate; bf16 needs a CPU with AVX512-BF16 or AMX, "
        "or a CUDA GPU; int8 runs on CPUs only",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing OUTPUT, and discard an unfinished run started with other settings",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def build_merge_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=MERGE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", metavar="OUT", help="merged HDF5 file to write")
    parser.add_argument("shards", metavar="SHARD", nargs="+", help="the shard files, in any order")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    return parser


def embed_main(argv: List[str], prog: str = "python -m spacy_elmo embed") -> int:
    """Run the embed command; 0 on success, 1 on a reported error."""
    args = build_embed_parser(prog).parse_args(argv)
    try:
        import torch

        from .corpus import Shard
        from .embedder import load_embedding_bilm, resolve_device
        from .run import embed_corpus

        settings = EmbedSettings(
            output_format=args.output_format,
            batch_size=args.batch_size,
            chunk_lines=args.chunk_lines,
            max_piece_length=args.max_piece_length,
            spacy_lang=args.spacy_tokenizer,
            shard=Shard.parse(args.shard),
            encoding_errors=args.encoding_errors,
            keep_sentences=not args.forget_sentences,
        )
        settings.validate()
        device = resolve_device(args.gpu_id)
        if args.threads is not None:
            torch.set_num_threads(max(1, args.threads))
        bilm = load_embedding_bilm(args.weights, args.options).to(device).to_precision(args.precision, setting="--precision")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = embed_corpus(args.input, args.output, bilm, settings, force=args.force, progress=not args.no_progress)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    resumed = f" ({summary.n_resumed:,} done by an earlier run)" if summary.n_resumed else ""
    print(f"{summary.output}: {summary.n_shard_lines:,} lines{resumed}", file=sys.stderr)
    return 0


def merge_main(argv: List[str], prog: str = "python -m spacy_elmo embed-merge") -> int:
    """Run the embed-merge command; 0 on success, 1 on a reported error."""
    args = build_merge_parser(prog).parse_args(argv)
    try:
        from .merge import merge_shards

        output = merge_shards(args.output, args.shards, force=args.force)
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(output, file=sys.stderr)
    return 0
