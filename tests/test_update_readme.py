"""scripts/update_readme.py: only the named block changes, each block goes to its page, and
missing markers are an error that names them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "update_readme.py"
PAGE = """# Title
<!-- project-results:start -->
old results
<!-- project-results:end -->
text in between
<!-- experiments:start -->
old experiments
<!-- experiments:end -->
"""


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd)


def test_each_block_is_replaced_alone(tmp_path: Path) -> None:
    page, tables = tmp_path / "accuracy.md", tmp_path / "tables.md"
    page.write_text(PAGE, encoding="utf-8")
    tables.write_text("| new |\n", encoding="utf-8")
    assert run(str(tables), str(page), "--block", "experiments").returncode == 0
    assert page.read_text(encoding="utf-8") == PAGE.replace("old experiments", "| new |")
    assert run(str(tables), str(page)).returncode == 0
    assert page.read_text(encoding="utf-8") == PAGE.replace("old experiments", "| new |").replace("old results", "| new |")


def test_missing_markers_name_the_block_and_leave_the_file_alone(tmp_path: Path) -> None:
    page, tables = tmp_path / "accuracy.md", tmp_path / "tables.md"
    page.write_text(PAGE, encoding="utf-8")
    tables.write_text("| new |\n", encoding="utf-8")
    done = run(str(tables), str(page), "--block", "curve")
    assert done.returncode == 1 and "<!-- curve:start -->" in done.stdout + done.stderr
    assert page.read_text(encoding="utf-8") == PAGE


def test_without_a_page_a_block_goes_to_its_own_page(tmp_path: Path) -> None:
    """The default page of each block is the docs page that holds its markers, and --output
    leaves that page alone (as the smoke run does)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from update_readme import BLOCK_PAGES, markers
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for block, page in BLOCK_PAGES.items():
        text = (REPO / page).read_text(encoding="utf-8")
        start, end = markers(block)
        assert text.count(start) == 1 and text.count(end) == 1, f"{page} lacks the markers of {block}"
    tables = tmp_path / "tables.md"
    tables.write_text("| new |\n", encoding="utf-8")
    before = (REPO / BLOCK_PAGES["experiments"]).read_text(encoding="utf-8")
    done = run(str(tables), "--block", "experiments", "--output", str(tmp_path / "out.md"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| new |" in (tmp_path / "out.md").read_text(encoding="utf-8")
    assert (REPO / BLOCK_PAGES["experiments"]).read_text(encoding="utf-8") == before
    assert "<!-- experiments:start -->" not in (REPO / "README.md").read_text(encoding="utf-8")
