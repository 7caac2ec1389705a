"""Put the latest generated tables into the README, between a block's markers.

Only the text between ``<!-- BLOCK:start -->`` and ``<!-- BLOCK:end -->`` is replaced (BLOCK is
``project-results`` for the comparison tables, ``experiments`` for the multi-seed ones), so
the rest of the README stays hand-written. With ``--output`` the result is
written to another file and the README is left alone (the smoke workflow uses this to test
the step without touching the committed README). The file is replaced atomically: a crash
never leaves half a README.
"""

from pathlib import Path
from typing import Optional, Tuple

import typer
from wasabi import msg

from spacy_elmo.files import write_text_atomic

DEFAULT_BLOCK = "project-results"


def markers(block: str) -> Tuple[str, str]:
    """The start and end marker lines of ``block``."""
    return f"<!-- {block}:start -->", f"<!-- {block}:end -->"


def replace_block(readme: str, results: str, block: str = DEFAULT_BLOCK) -> Optional[str]:
    """``readme`` with the marked block replaced by ``results``, or None if the markers are missing or out of order."""
    start_marker, end_marker = markers(block)
    start, end = readme.find(start_marker), readme.find(end_marker)
    if start < 0 or end < start or readme.count(start_marker) != 1 or readme.count(end_marker) != 1:
        return None
    return readme[: start + len(start_marker)] + "\n" + results.strip() + "\n" + readme[end:]


def main(
    results: Path = typer.Argument(..., exists=True, dir_okay=False, help="The Markdown to insert (metrics/comparison.md)"),
    readme: Path = typer.Argument(Path("README.md"), help="The README with the results markers"),
    output: Optional[Path] = typer.Option(None, "--output", help="Write here instead of updating the README in place"),
    block: str = typer.Option(DEFAULT_BLOCK, "--block", help="Which marked block to replace"),
) -> None:
    """Replace the README's ``block`` with ``results``."""
    if not readme.is_file():
        msg.fail(f"README not found: {readme}", exits=1)
    updated = replace_block(readme.read_text(encoding="utf-8"), results.read_text(encoding="utf-8"), block)
    if updated is None:
        start, end = markers(block)
        msg.fail(
            f"{readme} needs exactly one '{start}' line followed by one '{end}' line",
            f"Add both markers where the results should go; everything between them is replaced by {results}.",
            exits=1,
        )
    target = output or readme
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, updated)
    msg.good(f"Results from {results} written into {target}")


if __name__ == "__main__":
    typer.run(main)
