"""The README's Python examples run as written, offline; no tracked file holds a machine's paths.

A block that cannot run on its own (it needs a cluster, or a file a shell command above it
writes) is preceded by a line ``<!-- readme-test: skip: REASON -->``; the reason shows in the
test report.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


SKIP_MARKER = "<!-- readme-test: skip: "


def python_blocks(markdown: str) -> List[Tuple[str, Optional[str]]]:
    """(code, skip reason or None) of every ```python fenced block, in order."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", markdown, re.S | re.M):
        previous = markdown[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = previous[len(SKIP_MARKER) :].removesuffix("-->").strip() if previous.startswith(SKIP_MARKER) else None
        blocks.append((match.group(1), reason))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def offline_env(tmp_path: Path) -> dict:
    """The environment of a user without network: an empty model cache and an unreachable mirror."""
    env = dict(os.environ)
    env.update(
        SPACY_ELMO_CACHE=str(tmp_path / "empty-cache"),
        SPACY_ELMO_MIRROR="http://127.0.0.1:9/no-network",
        OMP_NUM_THREADS="1",
    )
    return env


def trained_pipeline(path: Path) -> None:
    """An initialised (untrained) pipeline from configs/ner_elmo.cfg at ``path``, for examples that load one."""
    import spacy
    from spacy.training import Example
    from spacy.util import load_config, load_model_from_config

    config = load_config(REPO / "configs" / "ner_elmo.cfg")
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    doc = nlp.make_doc("Kofi Mensah joined Accra Lions.")
    example = Example.from_dict(doc, {"entities": [(0, 11, "PER"), (19, 30, "ORG")]})
    nlp.initialize(lambda: [example])
    path.parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(path)
    assert spacy.load(path).pipe_names == ["elmo", "ner"]


def test_readme_has_python_examples():
    assert len([code for code, reason in BLOCKS if reason is None]) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, tmp_path):
    """Each block runs as a script in an empty folder; a block that loads the demo's trained
    pipeline finds one there, made from the same config."""
    code, skip_reason = BLOCKS[index]
    if skip_reason is not None:
        pytest.skip(f"README python block {index}: {skip_reason}")
    if "training/demo/ner-elmo/model-best" in code:
        trained_pipeline(tmp_path / "training" / "demo" / "ner-elmo" / "model-best")
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, script.name], cwd=tmp_path, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README python block {index}:\n{code}\n--- output ---\n{result.stdout}{result.stderr}"
    assert result.stdout.strip(), f"README python block {index} prints nothing; examples show their results"


# Written in pieces so that this file does not match its own patterns.
MACHINE_PATHS = re.compile(
    "|".join(
        [
            r"(?<![\w.~$-])/" + "work/",
            r"(?<![\w.~$-])/" + "root/",
            r"(?<![\w.~$-])/" + r"home/[A-Za-z_][\w.-]*",
            r"(?<![\w.~$-])/" + r"Users/[A-Za-z_][\w.-]*",
            r"[A-Za-z]:\\" + r"\\?Users\\",
            r"/tmp/" + r"pytest-of-",
            r"/tmp/" + r"tmp[a-z0-9_]{6,}",
        ]
    )
)


def tracked_files() -> List[Path]:
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [REPO / name for name in listing.decode("utf-8").split("\0") if name]


def test_no_tracked_file_holds_machine_paths():
    found = []
    for path in tracked_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        for line_no, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            match = MACHINE_PATHS.search(line)
            if match:
                found.append(f"{path.relative_to(REPO)}:{line_no}: {match.group(0)!r} in {line.strip()[:120]!r}")
    assert found == [], "machine paths in tracked files (use repo-relative paths, $DATA or ~):\n" + "\n".join(found)


def test_machine_path_pattern_catches_what_it_should():
    for text in (
        "/" + "work/main/x",
        "see /" + "root/runs",
        "/" + "home/alice/data",
        "C:" + "\\Users\\bob",
        "/tmp/" + "pytest-of-root/x",
    ):
        assert MACHINE_PATHS.search(text), text
    for text in ("~/.cache/spacy_elmo", "$DATA/conll2003", "spacy_elmo/default_model", "https://example.org/home/page"):
        assert not MACHINE_PATHS.search(text), text


def first_bash_block() -> List[str]:
    """The commands of the README's first ```bash block, comments removed."""
    block = re.search(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_first_block_installs_runs_the_demo_and_the_tests_as_ci_does():
    """The README's first block: installs whose extras exist, a workflow that exists, and the
    test command that CI (.ci/run) runs."""
    import configparser

    from weasel.util import load_project_config

    commands = first_bash_block()
    extras = configparser.ConfigParser()
    extras.read(REPO / "setup.cfg")
    for command in commands:
        installed = re.fullmatch(r'pip install "\.\[([\w,]+)\]"', command)
        if installed:
            assert set(installed.group(1).split(",")) <= set(extras["options.extras_require"]), command
    workflows = load_project_config(REPO)["workflows"]
    runs = [re.fullmatch(r"python -m spacy project run (\S+)", command) for command in commands]
    assert [match.group(1) for match in runs if match] == ["demo"] and "demo" in workflows
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    test_command = commands[-1]
    assert test_command.startswith("python -m pytest")
    assert re.search(r"^" + re.escape(test_command) + r"$", ci, re.M), f".ci/run does not run {test_command!r}"
    assert re.search(r"^(OMP_NUM_THREADS=1 )?python -m spacy project run demo$", ci, re.M)
