"""scripts/package_meta.py: a packaged pipeline carries the licence of its biLM's weights."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "package_meta.py"


def run(pipeline: Path, output: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(pipeline), str(output), *args], capture_output=True, text=True)


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "model-best"
    folder.mkdir()
    (folder / "meta.json").write_text(
        json.dumps({"lang": "en", "name": "pipeline", "license": "", "version": "0.0.0"}), encoding="utf-8"
    )
    return folder


@pytest.mark.parametrize(
    "bilm,license_",
    [("default", "CC BY-SA 3.0"), ("pretrained", "CC BY-SA 3.0"), ("small", "Apache-2.0"), ("original", "Apache-2.0")],
)
def test_licence_follows_the_bilm(pipeline, tmp_path, bilm, license_):
    result = run(pipeline, tmp_path / "out" / "meta.json", "--bilm", bilm)
    assert result.returncode == 0, result.stdout + result.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text(encoding="utf-8"))
    assert meta["license"] == license_
    assert [source["license"] for source in meta["sources"]] == [license_]
    assert meta["name"] == "pipeline"
    assert json.loads((pipeline / "meta.json").read_text(encoding="utf-8"))["license"] == ""


def test_unknown_bilm_needs_an_explicit_licence(pipeline, tmp_path):
    result = run(pipeline, tmp_path / "meta.json", "--bilm", str(tmp_path / "my-bilm"))
    assert result.returncode == 1
    assert "--license" in result.stdout + result.stderr
    assert not (tmp_path / "meta.json").exists()
    assert run(pipeline, tmp_path / "meta.json", "--bilm", str(tmp_path / "my-bilm"), "--license", "MIT").returncode == 0
    assert json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))["license"] == "MIT"
