"""``python -m spacy_elmo download NAME``: fetch a published biLM into the cache ahead of time
(the ``elmo`` component and ``embed`` otherwise download it on first use). For a cached
``manylangs:CODE`` model it hashes every file against the download's manifest."""

import argparse
import sys
from typing import List, Optional

from .bilm import manylangs_models
from .bilm.pretrained import PUBLISHED_MODELS, download_named
from .errors import ElmoError


def main(argv: Optional[List[str]] = None, prog: str = "python -m spacy_elmo download") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "name",
        nargs="?",
        help=f"a published AllenNLP model ({', '.join(sorted(PUBLISHED_MODELS))}) or an ELMoForManyLangs "
        f"language model, {manylangs_models.PREFIX}CODE (e.g. {manylangs_models.PREFIX}de; --list shows the languages)",
    )
    parser.add_argument("--list", action="store_true", help="list the names that can be downloaded and exit")
    parser.add_argument("--cache-dir", default=None, help="cache directory (default: $SPACY_ELMO_CACHE or ~/.cache/spacy_elmo)")
    args = parser.parse_args(argv)
    if args.list:
        languages = [f"{manylangs_models.PREFIX}{m.code}\t{m.language}" for m in manylangs_models.MODELS.values()]
        print("\n".join([*PUBLISHED_MODELS, *languages]))
        return 0
    if not args.name:
        parser.error("name a model to download (--list shows them)")
    try:
        path = download_named(args.name, cache_dir=args.cache_dir, verify=True)
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0
