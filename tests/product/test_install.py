"""The README's packaging recipe, run verbatim: the plugin's wheel and sdist build and pass
``twine check``, a pipeline packaged as a wheel lies beside the plugin's wheel, ``pip download``
adds the wheels of every requirement to that folder, and ``pip install --no-index
--find-links`` installs from it alone into a fresh virtual environment, where ``spacy.load``
runs the pipeline from the installed files, outside the repository. A requirement missing
from setup.cfg or a file missing from the wheel's package data (the default biLM, the shipped
configs) fails here.

The download runs with this environment's pip settings and its installed versions as
constraints (``pip freeze``), so torch is the CPU build this environment has, taken from the
local wheel folder or pip's cache where the machine has them, and spaCy and the rest come
from PyPI or pip's cache. The install sees no pip configuration and no index: only the folder.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from test_readme import README, REPO, blocks, offline_env, run_block, trained_pipeline

pytestmark = pytest.mark.slow


def copy_sources(target: Path) -> None:
    """The repository's tracked and untracked, not ignored files (links kept as links)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for name in sorted(set(listing.decode("utf-8").split("\0")) - {""}):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            destination.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, destination)


def installed_versions(path: Path) -> Path:
    """A pip constraints file pinning every package of this environment to its installed version."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout
    pins = [line for line in frozen.splitlines() if re.fullmatch(r"[A-Za-z0-9._-]+==\S+", line)]
    path.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return path


def run_script(code: str, folder: Path, env: Dict[str, str], timeout: int) -> str:
    """Run shell commands in ``folder``, stopping at the first failure; their output."""
    script = folder / ".commands.sh"
    script.write_text("set -euo pipefail\n" + code, encoding="utf-8")
    done = subprocess.run(["bash", str(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_the_readme_recipe_installs_the_pipeline_offline_in_a_fresh_venv(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the package extra: pip install '.[package]'")
    pytest.importorskip("twine", reason="the package extra: pip install '.[package]'")
    recipe = [block for block in blocks(README) if block.marker == "install"]
    assert [block.language for block in recipe] == ["bash", "python", "bash", "bash", "bash"]
    build, meta, package, download, install = recipe

    source = tmp_path / "clone"
    copy_sources(source)
    trained_pipeline(source / "training" / "ner-elmo" / "model-best")
    for block in (build, meta, package):
        run_block(block, source)
    dist = source / "packages" / "en_ner_elmo-0.1.0" / "dist"
    assert sorted(path.name for path in dist.iterdir()) == [
        "en_ner_elmo-0.1.0-py3-none-any.whl",
        "spacy_elmo-0.1.0-py3-none-any.whl",
    ]

    env = offline_env(source)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env["PIP_CONSTRAINT"] = str(installed_versions(tmp_path / "installed-versions.txt"))
    run_script(download.code, source, env, timeout=900)
    downloaded = {re.split(r"-\d", path.name, maxsplit=1)[0].lower() for path in dist.glob("*.whl")}
    assert {"torch", "spacy", "thinc", "h5py", "numpy"} <= downloaded, sorted(downloaded)

    machine = tmp_path / "other-machine"
    machine.mkdir()
    shutil.copytree(dist, machine / "dist")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, capture_output=True)
    python = tmp_path / "venv" / "bin" / "python"
    env = {key: value for key, value in offline_env(machine).items() if not key.startswith(("PIP_", "PYTHON"))}
    env.update(
        PATH=str(python.parent) + os.pathsep + env["PATH"], VIRTUAL_ENV=str(python.parent.parent), PIP_CONFIG_FILE=os.devnull
    )
    printed = run_script(install.code, machine, env, timeout=900)
    assert printed.strip().splitlines()[-1] == "['elmo', 'ner']"

    check = """
import spacy, spacy_elmo
from pathlib import Path
from spacy_elmo.shipped_configs import config_names
installed = Path(spacy_elmo.__file__).resolve()
assert "site-packages" in installed.parts and str(installed).startswith(sys.argv[1]), installed
doc = spacy.load("en_ner_elmo")("Kofi Mensah joined Accra Lions.")
print(doc._.elmo_layers.shape, len(config_names()))
nlp = spacy.blank("en")
nlp.add_pipe("elmo")
print(nlp("The shipped default biLM.").tensor.shape)
"""
    checked = subprocess.run(
        [str(python), "-c", "import sys\n" + check, str(python.parent.parent.resolve())],
        cwd=machine,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shipped = len(list((REPO / "configs").glob("*.cfg")))  # every shipped config made it into the wheel
    assert checked.stdout.split("\n")[:2] == [f"(3, 6, 256) {shipped}", "(5, 256)"]
    config = subprocess.run(
        [str(python), "-m", "spacy_elmo", "config", "ner_elmo", "ner_elmo.cfg"],
        cwd=machine,
        env=env,
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0 and (machine / "ner_elmo.cfg").is_file(), config.stderr
