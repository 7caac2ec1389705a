"""The README's packaging recipe, run verbatim: the plugin's wheel and sdist build and pass
``twine check``, a pipeline packaged as a wheel lies beside the plugin's wheel, and both
install offline (``pip install --no-index --find-links``) into a fresh virtual environment,
where ``spacy.load`` runs the pipeline from the installed files, outside the repository. A
file missing from the wheel's package data (the default biLM, the shipped configs) fails here.

The fresh environment gets spaCy, torch and spacy-elmo's other requirements by a ``.pth``
file pointing at a folder of links to this environment's installed packages (spacy-elmo's
own editable install left out), so that ``--no-index`` finds them installed, as on a machine
where they were installed first, without copying gigabytes of wheels.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from test_readme import README, REPO, blocks, offline_env, run_block, trained_pipeline

pytestmark = pytest.mark.slow

# Installed entries of this environment that the fresh one must not see: spacy-elmo itself
# (an editable install of the repository) and pip, which the fresh environment has its own of.
LEFT_OUT = ("spacy_elmo", "__editable__", "pip", "distutils-precedence.pth", "__pycache__")


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


def fresh_venv(folder: Path) -> Path:
    """A new virtual environment whose only view of the installed requirements is a folder of links."""
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True, capture_output=True)
    deps = folder / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(LEFT_OUT):
            (deps / entry.name).symlink_to(entry)
    python = folder / "venv" / "bin" / "python"
    # Python < 3.12 puts an old setuptools into a new venv, which would hide the one torch needs.
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=False, capture_output=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "requirements-installed-first.pth").write_text(str(deps) + "\n", encoding="utf-8")
    return python


def test_the_readme_recipe_installs_the_pipeline_offline_in_a_fresh_venv(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the package extra: pip install '.[package]'")
    pytest.importorskip("twine", reason="the package extra: pip install '.[package]'")
    recipe = [block for block in blocks(README) if block.marker == "install"]
    assert [block.language for block in recipe] == ["bash", "python", "bash", "bash"]
    build, meta, package, install = recipe

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

    machine = tmp_path / "other-machine"
    machine.mkdir()
    shutil.copytree(dist, machine / "dist")
    python = fresh_venv(tmp_path)
    env = offline_env(machine)
    env["PATH"] = str(python.parent) + os.pathsep + env["PATH"]
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    env.pop("PYTHONPATH", None)
    script = machine / "install.sh"
    script.write_text("set -euo pipefail\n" + install.code, encoding="utf-8")
    done = subprocess.run(["bash", str(script)], cwd=machine, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "['elmo', 'ner']"

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
