"""Command line: ``python -m spacy_elmo download NAME`` and ``python -m spacy_elmo pretrain CONFIG OUTPUT_DIR``."""

import argparse
import sys
from typing import List, Optional

from .bilm.pretrained import PUBLISHED_MODELS, download_model
from .errors import ElmoError


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "pretrain":
        # Config overrides (--section.key VALUE) are free-form, so pretrain parses its own arguments.
        from .pretrain.cli import main as pretrain_main

        return pretrain_main(argv[1:], prog="python -m spacy_elmo pretrain")
    parser = argparse.ArgumentParser(prog="python -m spacy_elmo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="Download a published biLM into the cache.")
    download.add_argument("name", choices=sorted(PUBLISHED_MODELS), help="published model name")
    download.add_argument("--cache-dir", default=None, help="cache directory (default: $SPACY_ELMO_CACHE or ~/.cache/spacy_elmo)")
    commands.add_parser(
        "pretrain",
        add_help=False,
        help="Pretrain or fine-tune a biLM from a config file (python -m spacy_elmo pretrain --help).",
    )
    args = parser.parse_args(argv)
    try:
        path = download_model(args.name, cache_dir=args.cache_dir)
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
