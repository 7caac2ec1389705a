"""scripts/update_readme.py: only the named block changes, and missing markers are an error that names them."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_readme.py"
README = """# Title
<!-- project-results:start -->
old results
<!-- project-results:end -->
text in between
<!-- experiments:start -->
old experiments
<!-- experiments:end -->
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_each_block_is_replaced_alone(tmp_path: Path) -> None:
    readme, tables = tmp_path / "README.md", tmp_path / "tables.md"
    readme.write_text(README, encoding="utf-8")
    tables.write_text("| new |\n", encoding="utf-8")
    assert run(str(tables), str(readme), "--block", "experiments").returncode == 0
    assert readme.read_text(encoding="utf-8") == README.replace("old experiments", "| new |")
    assert run(str(tables), str(readme)).returncode == 0
    assert readme.read_text(encoding="utf-8") == README.replace("old experiments", "| new |").replace("old results", "| new |")


def test_missing_markers_name_the_block_and_leave_the_file_alone(tmp_path: Path) -> None:
    readme, tables = tmp_path / "README.md", tmp_path / "tables.md"
    readme.write_text(README, encoding="utf-8")
    tables.write_text("| new |\n", encoding="utf-8")
    done = run(str(tables), str(readme), "--block", "curve")
    assert done.returncode == 1 and "<!-- curve:start -->" in done.stdout + done.stderr
    assert readme.read_text(encoding="utf-8") == README
