"""Put the latest comparison tables into the README, between its results markers.

Only the text between ``<!-- project-results:start -->`` and ``<!-- project-results:end -->``
is replaced, so the rest of the README stays hand-written. With ``--output`` the result is
written to another file and the README is left alone (the smoke workflow uses this to test
the step without touching the committed README). The file is replaced atomically: a crash
never leaves half a README.
"""

from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from spacy_elmo.files import write_text_atomic

START = "<!-- project-results:start -->"
END = "<!-- project-results:end -->"


def replace_block(readme: str, results: str) -> Optional[str]:
    """``readme`` with the marked block replaced by ``results``, or None if the markers are missing or out of order."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start or readme.count(START) != 1 or readme.count(END) != 1:
        return None
    return readme[: start + len(START)] + "\n" + results.strip() + "\n" + readme[end:]


def main(
    results: Path = typer.Argument(..., exists=True, dir_okay=False, help="The Markdown to insert (metrics/comparison.md)"),
    readme: Path = typer.Argument(Path("README.md"), help="The README with the results markers"),
    output: Optional[Path] = typer.Option(None, "--output", help="Write here instead of updating the README in place"),
) -> None:
    """Replace the README's results block with ``results``."""
    if not readme.is_file():
        msg.fail(f"README not found: {readme}", exits=1)
    updated = replace_block(readme.read_text(encoding="utf-8"), results.read_text(encoding="utf-8"))
    if updated is None:
        msg.fail(
            f"{readme} needs exactly one '{START}' line followed by one '{END}' line",
            f"Add both markers where the results should go; everything between them is replaced by {results}.",
            exits=1,
        )
    target = output or readme
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, updated)
    msg.good(f"Results from {results} written into {target}")


if __name__ == "__main__":
    typer.run(main)
