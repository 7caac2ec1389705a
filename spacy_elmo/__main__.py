"""Command line: ``python -m spacy_elmo download NAME``, ``pretrain CONFIG OUTPUT_DIR``, ``embed INPUT OUTPUT``,
``embed-merge OUT SHARD...``, ``embed-seed FILE --weights W``, ``init-config IN OUT`` and ``config NAME OUT``."""

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "download":
        from .download import main as download_main

        return download_main(argv[1:], prog="python -m spacy_elmo download")
    if argv and argv[0] == "pretrain":
        # Config overrides (--section.key VALUE) are free-form, so pretrain parses its own arguments.
        from .pretrain.cli import main as pretrain_main

        return pretrain_main(argv[1:], prog="python -m spacy_elmo pretrain")
    if argv and argv[0] in ("embed", "embed-merge"):
        from .embed.cli import embed_main, merge_main

        run = embed_main if argv[0] == "embed" else merge_main
        return run(argv[1:], prog=f"python -m spacy_elmo {argv[0]}")
    if argv and argv[0] == "embed-seed":
        from .embed.seed_store import seed_main

        return seed_main(argv[1:])
    if argv and argv[0] == "init-config":
        from .init_config import main as init_config_main

        return init_config_main(argv[1:], prog="python -m spacy_elmo init-config")
    if argv and argv[0] == "config":
        from .shipped_configs import main as config_main

        return config_main(argv[1:], prog="python -m spacy_elmo config")
    parser = argparse.ArgumentParser(prog="python -m spacy_elmo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "download", add_help=False, help="Download a published biLM into the cache (python -m spacy_elmo download --help)."
    )
    commands.add_parser(
        "pretrain",
        add_help=False,
        help="Pretrain or fine-tune a biLM from a config file (python -m spacy_elmo pretrain --help).",
    )
    commands.add_parser(
        "embed", add_help=False, help="Embed a corpus into AllenNLP's HDF5 layout (python -m spacy_elmo embed --help)."
    )
    commands.add_parser(
        "embed-merge",
        add_help=False,
        help="Merge the shard files of embed --shard I/N (python -m spacy_elmo embed-merge --help).",
    )
    commands.add_parser(
        "embed-seed",
        add_help=False,
        help="Seed the training layer store from an embed --all file (python -m spacy_elmo embed-seed --help).",
    )
    commands.add_parser(
        "init-config",
        add_help=False,
        help="Rewrite a 'spacy init config' training config to use ELMo (python -m spacy_elmo init-config --help).",
    )
    commands.add_parser(
        "config",
        add_help=False,
        help="Write a shipped config (ner_elmo, textcat_elmo, pretrain_small, ...) to a file (python -m spacy_elmo config --list).",
    )
    parser.parse_args(argv)  # no command matched: argparse prints the usage or the error and exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
