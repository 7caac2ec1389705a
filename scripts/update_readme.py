"""Put the latest generated tables into the docs page they belong to, between a block's markers.

Only the text between ``<!-- BLOCK:start -->`` and ``<!-- BLOCK:end -->`` is replaced, so the
rest of the page stays hand-written. Each block lives on one page (``BLOCK_PAGES``):
``project-results`` (the project's comparison tables) and ``experiments`` (the multi-seed
tables) on docs/accuracy.md, the ``…-benchmark`` blocks (what the benchmarks print) on
docs/speed.md; the page is that one unless another is named. With
``--output`` the result is written to another file and the page is left alone (the smoke
workflow uses this to test the step without touching the committed docs). The file is
replaced atomically: a crash never leaves half a page.
"""

from pathlib import Path
from typing import Dict, Optional, Tuple

import typer
from wasabi import msg

from spacy_elmo.files import write_text_atomic

DEFAULT_BLOCK = "project-results"
BLOCK_PAGES: Dict[str, str] = {
    "project-results": "docs/accuracy.md",
    "experiments": "docs/accuracy.md",
    "inference-benchmark": "docs/speed.md",
    "training-benchmark": "docs/speed.md",
    "train-cli-benchmark": "docs/speed.md",
    "precision-benchmark": "docs/speed.md",
    "int8-scheme-benchmark": "docs/speed.md",
    "precision-ner-benchmark": "docs/speed.md",
}
"""The page of each generated block, relative to the repository root."""


def markers(block: str) -> Tuple[str, str]:
    """The start and end marker lines of ``block``."""
    return f"<!-- {block}:start -->", f"<!-- {block}:end -->"


def replace_block(page: str, results: str, block: str = DEFAULT_BLOCK) -> Optional[str]:
    """``page`` with the marked block replaced by ``results``, or None if the markers are missing or out of order."""
    start_marker, end_marker = markers(block)
    start, end = page.find(start_marker), page.find(end_marker)
    if start < 0 or end < start or page.count(start_marker) != 1 or page.count(end_marker) != 1:
        return None
    return page[: start + len(start_marker)] + "\n" + results.strip() + "\n" + page[end:]


def main(
    results: Path = typer.Argument(..., exists=True, dir_okay=False, help="The Markdown to insert (e.g. metrics/comparison.md)"),
    page: Optional[Path] = typer.Argument(
        None, help="The page with the block's markers (default: the block's page, BLOCK_PAGES)"
    ),
    output: Optional[Path] = typer.Option(None, "--output", help="Write here instead of updating the page in place"),
    block: str = typer.Option(DEFAULT_BLOCK, "--block", help="Which marked block to replace: " + ", ".join(BLOCK_PAGES)),
) -> None:
    """Replace the page's ``block`` with ``results``."""
    if page is None:
        if block not in BLOCK_PAGES:
            msg.fail(
                f"No page is known for block {block!r}",
                f"Name the page: update_readme.py {results} PAGE --block {block}",
                exits=1,
            )
        page = Path(BLOCK_PAGES[block])
    if not page.is_file():
        msg.fail(f"Page not found: {page}", exits=1)
    updated = replace_block(page.read_text(encoding="utf-8"), results.read_text(encoding="utf-8"), block)
    if updated is None:
        start, end = markers(block)
        msg.fail(
            f"{page} needs exactly one '{start}' line followed by one '{end}' line",
            f"Add both markers where the results should go; everything between them is replaced by {results}.",
            exits=1,
        )
    target = output or page
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, updated)
    msg.good(f"Results from {results} written into {target}")


if __name__ == "__main__":
    typer.run(main)
