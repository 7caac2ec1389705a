"""Check that the data directory holds every file this project reads, before any step runs.

The research data (CoNLL-2003, SST, the Wikipedia text) is never part of the repository:
the user points the project at a directory laid out like ``shared/data``: by default
``$SPACY_ELMO_SHARED/data`` (the variable the tests read too), or ``--vars.data_dir``. The expected files and their md5 checksums are the ``assets`` of
``project.yml``, so this check and ``spacy project assets`` read the same list. A missing
file stops the run with a message that says how to fix it; a checksum mismatch only warns,
because a different copy of the data still works but gives numbers that are not comparable.
"""

import hashlib
import os
import sys
from pathlib import Path
from typing import List, Tuple

import typer
from wasabi import msg
from weasel.util import load_project_config

PROJECT_DIR = Path(__file__).resolve().parents[1]


def md5sum(path: Path) -> str:
    """The md5 of a file, read in chunks (the same checksum weasel writes for assets)."""
    digest = hashlib.md5()
    with path.open("rb") as file_:
        for chunk in iter(lambda: file_.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_files(data_dir: Path) -> List[Tuple[Path, str]]:
    """(path, md5) of every asset in project.yml, with ``vars.data_dir`` set to ``data_dir``."""
    config = load_project_config(PROJECT_DIR, overrides={"vars.data_dir": str(data_dir)})
    return [(Path(asset["dest"]), asset.get("checksum", "")) for asset in config.get("assets", [])]


def main(data_dir: Path = typer.Argument(..., help="Directory laid out like shared/data")) -> None:
    """Fail with a clear message if a data file is missing; warn if a checksum differs."""
    if not data_dir.is_dir():
        unset = "" if os.environ.get("SPACY_ELMO_SHARED") else " (SPACY_ELMO_SHARED is not set)"
        msg.fail(
            f"Data directory not found: {data_dir}{unset}",
            "The project reads $SPACY_ELMO_SHARED/data: set SPACY_ELMO_SHARED to the folder whose "
            "data/ holds conll2003/, textcat/sst/ and lm/wiki2014-en/ (e.g. `export "
            "SPACY_ELMO_SHARED=../shared`), or pass the data directory itself with --vars.data_dir PATH.",
            exits=1,
        )
    files = expected_files(data_dir)
    missing = [path for path, _ in files if not path.is_file()]
    if missing:
        msg.fail(f"{len(missing)} of {len(files)} data files are missing from {data_dir}:")
        print("\n".join(f"    {path}" for path in missing))
        msg.text(
            "The data directory must follow the layout of shared/data/README.md "
            "(conll2003/{train,dev,test}.txt, textcat/sst/sst{2,5}_{train,dev,test}.tsv, "
            "lm/wiki2014-en/{train.00-04,valid,test}.txt.gz). Set SPACY_ELMO_SHARED to the folder "
            "that holds it as data/, or pass its location with --vars.data_dir PATH; `python -m spacy project assets .` lists the files too."
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
