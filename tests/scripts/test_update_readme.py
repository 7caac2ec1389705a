"""scripts/update_readme.py: only the named block changes, each block goes to its page, and
missing markers are an error that names them."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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


def docs_block_module():
    """benchmarks/docs_block.py, which the benchmarks' --write-docs runs through."""
    spec = importlib.util.spec_from_file_location("docs_block", REPO / "benchmarks" / "docs_block.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPEED_PAGE = """# Speed
## Inference
<!-- inference-benchmark:start -->
old table
<!-- inference-benchmark:end -->
notes
"""


def test_a_benchmark_writes_what_it_printed_into_its_block(tmp_path: Path, capsys) -> None:
    docs_block = docs_block_module()
    page = tmp_path / "speed.md"
    page.write_text(SPEED_PAGE, encoding="utf-8")
    with docs_block.printed_into_docs("inference-benchmark", page):
        print("# spacy_elmo inference benchmark\n\nCommand: `x`\n\n## small\n\n| a |\n|---|")
    assert page.read_text(encoding="utf-8") == SPEED_PAGE.replace("old table", "Command: `x`\n\n### small\n\n| a |\n|---|")
    assert "## small" in capsys.readouterr().out  # the terminal still gets everything

    page.write_text(SPEED_PAGE, encoding="utf-8")

    def interrupted_run() -> None:
        with docs_block.printed_into_docs("inference-benchmark", page):
            print("| half a table |")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_run()
    with docs_block.printed_into_docs(None, page):
        print("| without --write-docs |")
    assert page.read_text(encoding="utf-8") == SPEED_PAGE


def test_every_speed_block_is_written_by_a_benchmark() -> None:
    """Each generated block of docs/speed.md has a benchmark that writes it (``--write-docs``)."""
    speed_blocks = {block for block, page in update_readme_module().BLOCK_PAGES.items() if page == "docs/speed.md"}
    written = set()
    for script in (REPO / "benchmarks").glob("bench_*.py"):
        text = script.read_text(encoding="utf-8")
        if "printed_into_docs(" in text:  # the block names it passes, directly or chosen by its options
            written.update(re.findall(r'"([\w-]+-benchmark)"', text))
    assert speed_blocks and speed_blocks <= written
    page = (REPO / "docs" / "speed.md").read_text(encoding="utf-8")
    assert all(page.count(f"<!-- {block}:start -->") == 1 for block in written)


def test_the_training_benchmark_loads_as_spacy_train_code(tmp_path: Path) -> None:
    """bench_train_cli.py is also spacy train's --code, loaded from a process whose sys.path lacks
    benchmarks/: what it imports at the top must not need that folder (docs_block once did)."""
    path = REPO / "benchmarks" / "bench_train_cli.py"
    code = f"import spacy.util; spacy.util.import_file('bench_code', {str(path)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def update_readme_module():
    spec = importlib.util.spec_from_file_location("update_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
