"""The training and pretraining configs shipped inside the package (``spacy_elmo/configs/``).

``python -m spacy_elmo config NAME OUT`` writes one out, so a user who installed the wheel
has the same files as a clone of the repository (where ``configs/`` holds them).
"""

import sys
from importlib import resources
from pathlib import Path
from typing import List, Optional

from .errors import ElmoError

DESCRIPTIONS = {
    "ner_elmo": "NER on the frozen ELMo biLM (its own learned layer mix) and spaCy's embeddings",
    "ner_baseline": "the same NER without ELMo (spaCy's CNN tok2vec)",
    "ner_elmo_vectors": "ner_elmo plus floret static vectors (needs --paths.vectors)",
    "ner_baseline_vectors": "ner_baseline plus floret static vectors (needs --paths.vectors)",
    "ner_baseline_pretrain": "ner_baseline started from spacy pretrain weights (needs --paths.init_tok2vec)",
    "textcat_elmo": "exclusive-class textcat on ELMo: bag of words + ELMo tok2vec ensemble",
    "textcat_baseline": "the same textcat without ELMo",
    "pretrain_small": "biLM pretraining, the shipped default biLM's architecture (3.0M parameters)",
    "pretrain_tiny": "biLM pretraining, a tiny architecture for trying the command out",
}


class ElmoConfigNotFoundError(ElmoError):
    """A config name that the package does not ship."""


def config_names() -> List[str]:
    """The names of the shipped configs, without ``.cfg``."""
    folder = resources.files("spacy_elmo") / "configs"
    return sorted(entry.name[: -len(".cfg")] for entry in folder.iterdir() if entry.name.endswith(".cfg"))


def config_text(name: str) -> str:
    """The text of the shipped config ``name`` (``ner_elmo`` or ``ner_elmo.cfg``)."""
    stem = name[: -len(".cfg")] if name.endswith(".cfg") else name
    names = config_names()
    if stem not in names:
        raise ElmoConfigNotFoundError(
            f"No shipped config named {name!r}. Choose one of: {', '.join(names)} "
            f"(python -m spacy_elmo config --list describes them)."
        )
    return (resources.files("spacy_elmo") / "configs" / f"{stem}.cfg").read_text(encoding="utf-8")


def write_config(name: str, output: Path, force: bool = False) -> Path:
    """Write the shipped config ``name`` to ``output`` (a file, or a directory to put ``NAME.cfg`` in)."""
    text = config_text(name)
    stem = name[: -len(".cfg")] if name.endswith(".cfg") else name
    target = output / f"{stem}.cfg" if output.is_dir() else output
    if target.exists() and not force:
        raise ElmoError(f"{target} exists; pass --force to replace it, or choose another file.")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def main(argv: Optional[List[str]] = None, prog: str = "python -m spacy_elmo config") -> int:
    """``config NAME OUT``: write a shipped config; ``config --list``: name and describe them."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a config shipped with spacy-elmo to a file, to train with or to edit.",
    )
    parser.add_argument("name", nargs="?", help="which config: " + ", ".join(config_names()))
    parser.add_argument("output", nargs="?", type=Path, help="the file to write (or a directory: NAME.cfg inside it)")
    parser.add_argument("--list", action="store_true", help="list the shipped configs and exit")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for name in config_names():
            print(f"{name:22} {DESCRIPTIONS[name]}")
        return 0
    if args.output is None:
        parser.error("pass the file to write, e.g. ner_elmo.cfg")
    try:
        target = write_config(args.name, args.output, force=args.force)
    except ElmoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0
