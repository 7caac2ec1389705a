"""``--write-docs`` for the benchmarks: what a run prints also goes into its block on the docs
page the block belongs to (``BLOCK_PAGES`` of ``scripts/update_readme.py``), so a table on
that page is always a benchmark's own output, written by the run that measured it.

The block is written only when the run finishes: an interrupted or failed run leaves the page
as it was. The replacement is the one ``scripts/update_readme.py`` does (between the block's
markers, atomically). The blocks sit under a section of their page, so the printed title
(``# ...``) is left out there and the other headings go one level down.
"""

import contextlib
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]


def update_readme() -> ModuleType:
    """scripts/update_readme.py as a module (the benchmarks run with benchmarks/ on the path, not scripts/)."""
    spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit_headings(text: str) -> str:
    """``text`` without its top-level title, every other Markdown heading one level lower."""
    lines = [line for line in text.splitlines() if not line.startswith("# ")]
    return "\n".join("#" + line if line.startswith("##") else line for line in lines).strip() + "\n"


def write_block(block: str, text: str, page: Optional[Path] = None) -> Path:
    """Put ``text`` (headings fitted to the page) between ``block``'s markers on ``page``
    (default: the block's page); the page."""
    tool = update_readme()
    target = page or REPO / tool.BLOCK_PAGES[block]
    updated = tool.replace_block(target.read_text(encoding="utf-8"), fit_headings(text), block)
    if updated is None:
        start, end = tool.markers(block)
        raise SystemExit(f"{target} needs exactly one '{start}' line followed by one '{end}' line; the page is unchanged")
    tool.write_text_atomic(target, updated)
    return target


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def printed_into_docs(block: Optional[str], page: Optional[Path] = None) -> Iterator[None]:
    """Inside, print as usual; on a clean exit, what was printed becomes ``block``'s text on
    its docs page. ``block=None`` (no ``--write-docs``) changes nothing."""
    if block is None:
        yield
        return
    tee = _Tee(sys.stdout)  # type: ignore[arg-type]
    with contextlib.redirect_stdout(tee):
        yield
    written = write_block(block, tee.copy.getvalue(), page)
    print(f"Written into the {block} block of {written.relative_to(REPO) if written.is_relative_to(REPO) else written}")
