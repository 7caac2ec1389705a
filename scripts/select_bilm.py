"""Resolve the project's ``bilm`` setting into one directory that the ELMo configs read.

``bilm`` may be a published model name (``small``, ``medium``, ``original``,
``original-5.5b``; downloaded once into spacy-elmo's cache), a directory holding
``options.json`` + ``weights.hdf5``, or ``pretrained``: this project's own biLM from the
``pretrain`` step. Whatever the choice, the files are linked (or copied where links are not
possible) into OUTPUT_DIR together with ``source.json``, which records what was chosen. The
training commands always pass OUTPUT_DIR as ``--components.elmo.model.weights`` and list its
files as dependencies, so a different biLM, or a re-trained one, re-runs them.
"""

import json
import shutil
from pathlib import Path

import typer
from wasabi import msg

from check_data import md5sum
from spacy_elmo.bilm.pretrained import OPTIONS_FILE, PUBLISHED_MODELS, WEIGHTS_FILE, resolve_model
from spacy_elmo.errors import ElmoError

PRETRAINED = "pretrained"


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` a symlink to ``source``, or a copy where symlinks are not allowed."""
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copy2(source, target)


def main(
    bilm: str = typer.Argument(
        ...,
        help=f"'default' (shipped with spacy-elmo), a published name ({', '.join(PUBLISHED_MODELS)}), a model directory, or '{PRETRAINED}'",
    ),
    output_dir: Path = typer.Argument(..., help="Directory the ELMo training commands read"),
    pretrained_dir: Path = typer.Option(..., "--pretrained-dir", help="Where the pretrain step writes its best model"),
) -> None:
    """Link the chosen biLM's options.json and weights.hdf5 into ``output_dir``."""
    if bilm == PRETRAINED:
        if not (pretrained_dir / WEIGHTS_FILE).is_file() or not (pretrained_dir / OPTIONS_FILE).is_file():
            msg.fail(
                f"bilm = {PRETRAINED}, but {pretrained_dir} has no {OPTIONS_FILE} + {WEIGHTS_FILE}",
                "Run the pretraining step first (`python -m spacy project run pretrain .`, or "
                "the smoke workflow for the smoke run), or choose another biLM with --vars.bilm "
                "(a published name such as small, or a model directory).",
                exits=1,
            )
        options_path, weights_path = pretrained_dir / OPTIONS_FILE, pretrained_dir / WEIGHTS_FILE
    else:
        try:
            options_path, weights_path = resolve_model(bilm)
        except ElmoError as err:
            msg.fail(
                f"Cannot use bilm = {bilm!r}: {err}",
                f"Set --vars.bilm to a published name, a model directory or '{PRETRAINED}'.",
                exits=1,
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    link_or_copy(options_path, output_dir / OPTIONS_FILE)
    link_or_copy(weights_path, output_dir / WEIGHTS_FILE)
    source = {
        "bilm": bilm,
        "options": str(options_path.resolve()),
        "weights": str(weights_path.resolve()),
        "weights_md5": md5sum(weights_path),
    }
    (output_dir / "source.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    msg.good(f"biLM {bilm!r} -> {output_dir} (weights {source['weights']}, md5 {source['weights_md5']})")


if __name__ == "__main__":
    typer.run(main)
