"""Check that the data directory holds the files a workflow reads, before any step runs.

The research data (CoNLL-2003, SST, the Wikipedia text) is never part of the repository:
the user points the project at a directory laid out like ``shared/data``: by default
``$SPACY_ELMO_SHARED/data`` (the variable the tests read too), or ``--vars.data_dir``. The expected files and their md5 checksums are the ``assets`` of
``project.yml``, so this check and ``spacy project assets`` read the same list. A missing
file stops the run with a message that says how to fix it; a checksum mismatch only warns,
because a different copy of the data still works but gives numbers that are not comparable.

``--parts`` limits the check to the parts of the data a workflow reads (``conll2003``,
``textcat``, ``lm``): the workflows that do not pretrain never read the Wikipedia text.
"""

import hashlib
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer
from wasabi import msg
from weasel.util import load_project_config

PROJECT_DIR = Path(__file__).resolve().parents[1]
PARTS = {
    "conll2003": "conll2003/{train,dev,test}.txt",
    "textcat": "textcat/sst/sst{2,5}_{train,dev,test}.tsv",
    "lm": "lm/wiki2014-en/{train.00-04,valid,test}.txt.gz",
}


def md5sum(path: Path) -> str:
    """The md5 of a file, read in chunks (the same checksum weasel writes for assets)."""
    digest = hashlib.md5()
    with path.open("rb") as file_:
        for chunk in iter(lambda: file_.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_files(data_dir: Path, parts: Optional[List[str]] = None) -> List[Tuple[Path, str]]:
    """(path, md5) of the assets in project.yml under ``parts`` (every asset if None), with
    ``vars.data_dir`` set to ``data_dir``."""
    config = load_project_config(PROJECT_DIR, overrides={"vars.data_dir": str(data_dir)})
    files = [(Path(asset["dest"]), asset.get("checksum", "")) for asset in config.get("assets", [])]
    if parts is None:
        return files
    return [(path, checksum) for path, checksum in files if path.relative_to(data_dir).parts[0] in parts]


def layout(parts: List[str]) -> str:
    """The files of ``parts`` as a short pattern list, for messages."""
    return ", ".join(PARTS[part] for part in parts)


def main(
    data_dir: Path = typer.Argument(..., help="The data directory: conll2003/, textcat/sst/ and lm/wiki2014-en/ inside it"),
    parts: str = typer.Option(
        ",".join(PARTS), "--parts", help="Which parts the workflow reads, comma-separated: " + ", ".join(PARTS)
    ),
) -> None:
    """Fail with a clear message if a data file the workflow reads is missing; warn if a checksum differs."""
    chosen = [part.strip() for part in parts.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        msg.fail(f"--parts {parts!r}: choose among {', '.join(PARTS)}", exits=1)
    if not data_dir.is_dir():
        unset = "" if os.environ.get("SPACY_ELMO_SHARED") else " (SPACY_ELMO_SHARED is not set)"
        msg.fail(
            f"Data directory not found: {data_dir}{unset}",
            "The project reads $SPACY_ELMO_SHARED/data: set SPACY_ELMO_SHARED to the folder whose "
            f"data/ holds what this workflow reads ({layout(chosen)}; e.g. `export "
            "SPACY_ELMO_SHARED=../shared`), or pass the data directory itself with --vars.data_dir PATH.",
            exits=1,
        )
    files = expected_files(data_dir, chosen)
    missing = [path for path, _ in files if not path.is_file()]
    if missing:
        msg.fail(f"{len(missing)} of {len(files)} data files are missing from {data_dir}:")
        print("\n".join(f"    {path}" for path in missing))
        msg.text(
            f"This workflow reads {layout(chosen)} under the data directory. Set SPACY_ELMO_SHARED "
            "to the folder that holds it as data/, or pass its location with --vars.data_dir PATH; "
            "the assets in project.yml (`python -m spacy project assets .`) list each file, its "
            "source and its checksum."
        )
        sys.exit(1)
    mismatched = [(path, checksum) for path, checksum in files if checksum and md5sum(path) != checksum]
    for path, checksum in mismatched:
        msg.warn(
            f"Checksum differs from project.yml for {path} (expected md5 {checksum})",
            "This copy will work if it has the same format, but the scores will not be "
            "comparable with results made from the reference files.",
        )
    msg.good(f"Data directory {data_dir}: {len(files)} files present, {len(files) - len(mismatched)} with matching checksums")


if __name__ == "__main__":
    typer.run(main)
