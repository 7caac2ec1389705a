"""Command line: ``python -m spacy_elmo download NAME``."""

import argparse
import sys
from typing import List, Optional

from .bilm.pretrained import PUBLISHED_MODELS, download_model
from .errors import ElmoError


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spacy_elmo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="Download a published biLM into the cache.")
    download.add_argument("name", choices=sorted(PUBLISHED_MODELS), help="published model name")
    download.add_argument("--cache-dir", default=None, help="cache directory (default: $SPACY_ELMO_CACHE or ~/.cache/spacy_elmo)")
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
