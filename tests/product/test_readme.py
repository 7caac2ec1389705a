"""The README's and docs' examples run as written, offline; their links resolve; what their
comments say a line prints is what it prints; no tracked file holds a machine's paths.

Pages are README.md and docs/*.md. A page with shell blocks runs as one session: every block
in order, in one empty folder, as a user following the page would (``$DATA`` points at a tiny
CoNLL-2003 copy, and the text files the pages name as "your text" are there). Commands that
train are run with a few steps (``OVERRIDES``: the same command with a small budget
appended). A page without shell blocks runs each Python block on its own. A block that cannot
run here is preceded by ``<!-- doc-test: skip: REASON -->`` (the reason shows in the test
report); ``<!-- doc-test: install -->`` marks the README's packaging recipe, which
tests/product/test_install.py runs into a fresh virtual environment.

A ``print(...)`` line whose comment says what it prints (the whole comment, or the part
before the first ``: `` that starts an explanation) is checked when that part holds a number:
the same words, and numbers within ``NUMBER_TOLERANCE``.
"""

import ast
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README] + sorted((REPO / "docs").glob("*.md"))
MARKER = re.compile(r"^<!-- (?:doc|readme)-test: (skip: .*?|install) ?-->$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# Commands that train: the same command with a budget of a few steps appended.
OVERRIDES: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"\bpython -m spacy train\b"), " --training.max_steps 2 --training.eval_frequency 2"),
    (re.compile(r"\bpython -m spacy_elmo pretrain (?!--help)"), " --training.max_steps 2"),
]
# Pages whose session trains or embeds for more than a few seconds: run with -m slow.
SLOW_PAGES = {"training.md", "pretraining.md", "embedding.md", "languages.md"}
NUMBER_TOLERANCE = (0.02, 0.05)  # absolute, relative: printed numbers against the comment's


class Block(NamedTuple):
    page: Path
    index: int
    language: str
    code: str
    marker: Optional[str]  # "skip: REASON", "install" or None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO)} block {self.index} ({self.language})"


def blocks(page: Path) -> List[Block]:
    """Every fenced block of ``page`` with its language and the marker line before it."""
    text = page.read_text(encoding="utf-8")
    found = []
    for index, match in enumerate(FENCE.finditer(text)):
        previous = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.match(previous)
        found.append(Block(page, index, match.group(1), match.group(2), marker.group(1).strip() if marker else None))
    return found


def runnable(block: Block) -> bool:
    return block.language in ("python", "bash") and block.marker is None


def has_shell(page: Path) -> bool:
    return any(runnable(block) and block.language == "bash" for block in blocks(page))


def offline_env(folder: Path) -> Dict[str, str]:
    """The environment of a user without network: an empty model cache, an unreachable mirror,
    one torch thread, and ``DATA`` (a tiny CoNLL-2003) for the pages that name it."""
    env = dict(os.environ)
    env.update(
        SPACY_ELMO_CACHE=str(folder / ".empty-cache"),
        SPACY_ELMO_MIRROR="http://127.0.0.1:9/no-network",
        OMP_NUM_THREADS="1",
        DATA=str(folder / ".data"),
    )
    return env


def demo_sentences() -> List[List[Tuple[str, str]]]:
    """The demo corpus's training sentences as (word, IOB tag) pairs."""
    sentences = []
    for line in (REPO / "demo" / "ner" / "train.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tokens: List[Tuple[str, str]] = []
        for entity, label, plain in re.findall(r"\[([^|\]]+)\|([A-Z]+)\]|(\S+)", line):
            if plain:
                tokens.append((plain, "O"))
            else:
                words = entity.split()
                tokens += [(word, ("B-" if i == 0 else "I-") + label) for i, word in enumerate(words)]
        sentences.append(tokens)
    return sentences


def make_user_files(folder: Path) -> None:
    """What the pages call the user's own files: ``$DATA/conll2003/*.txt``, training and
    held-out text, and files of sentences to embed."""
    sentences = demo_sentences()
    conll = folder / ".data" / "conll2003"
    conll.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", sentences[:40]), ("dev", sentences[40:60]), ("test", sentences[60:80])):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for sentence in part:
            lines += [f"{word} NN O {tag}" for word, tag in sentence] + [""]
        (conll / f"{split}.txt").write_text("\n".join(lines), encoding="utf-8")
    text = [" ".join(word for word, _ in sentence) for sentence in sentences]
    (folder / "corpus").mkdir(exist_ok=True)
    with gzip.open(folder / "corpus" / "news.txt.gz", "wt", encoding="utf-8") as file_:
        file_.write("\n".join(text[:300]) + "\n")
    with gzip.open(folder / "held-out.txt.gz", "wt", encoding="utf-8") as file_:
        file_.write("\n".join(text[300:400]) + "\n")
    with gzip.open(folder / "raw.txt.gz", "wt", encoding="utf-8") as file_:
        file_.write("\n".join(text[400:420]) + "\n")
    (folder / "sentences.txt").write_text("\n".join(text[:20]) + "\n", encoding="utf-8")
    (folder / "corpus.txt").write_text("\n".join(text[20:60]) + "\n", encoding="utf-8")


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


def shell_script(code: str) -> str:
    """A block's commands as a bash script: continuation lines joined, trailing comments
    dropped, ``OVERRIDES`` appended, stopping at the first failure."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        command = re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()
        for pattern, extra in OVERRIDES:
            if pattern.search(command):
                command += extra
        if command:
            lines.append(command)
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def split_number_words(text: str) -> List[str]:
    return re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?|[^\s\d,()\[\]{}:'\"]+", text)


def matches(printed: str, expected: str) -> bool:
    """Whether ``printed`` says what ``expected`` says: the same words, numbers within tolerance."""
    got, want = split_number_words(printed), split_number_words(expected)
    if len(got) != len(want):
        return False
    absolute, relative = NUMBER_TOLERANCE
    for a, b in zip(got, want):
        if re.fullmatch(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", b):
            try:
                if abs(float(a) - float(b)) > max(absolute, relative * abs(float(b))):
                    return False
            except ValueError:
                return False
        elif a != b:
            return False
    return True


def printed_comments(code: str) -> List[Tuple[str, Optional[str]]]:
    """(line, what its comment says it prints or None) of every top-level print line."""
    found = []
    for line in code.splitlines():
        if not line.startswith("print("):
            continue
        comment = line.split("  # ", 1)[1] if "  # " in line else None
        found.append((line, comment.strip() if comment else None))
    return found


def claim(comment: Optional[str]) -> Optional[str]:
    """What a print line's comment says it prints: the part before an explanation, if it holds
    a number (a comment without numbers explains; it does not quote output)."""
    said = comment.split(": ", 1)[0] if comment else ""
    return said if re.search(r"\d", said) else None


def check_output(block: Block, stdout: str) -> None:
    """The block printed something, and what its comments say it prints."""
    assert stdout.strip(), f"{block.name} prints nothing; examples show their results"
    prints = printed_comments(block.code)
    output = stdout.rstrip("\n").splitlines()
    if len(output) != len(prints):
        assert all(claim(comment) is None for _, comment in prints), (
            f"{block.name}: {len(prints)} print lines but {len(output)} output lines; cannot check the comments"
        )
        return
    for (line, comment), printed in zip(prints, output):
        said = claim(comment)
        if said is not None and comment is not None:
            assert matches(printed, comment) or matches(printed, said), (
                f"{block.name}: {line!r} printed {printed!r}, its comment says {said!r}"
            )


def run_block(block: Block, folder: Path) -> None:
    """Run one block in ``folder`` and check what it printed."""
    if block.language == "python":
        for model in set(re.findall(r"training/[\w./-]+/model-best", block.code)):
            if not (folder / model).exists():
                trained_pipeline(folder / model)
        script = folder / f".block_{block.index}.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, script.name]
    else:
        script = folder / f".block_{block.index}.sh"
        script.write_text(shell_script(block.code), encoding="utf-8")
        command = ["bash", script.name]
    env = offline_env(folder)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{block.name}:\n{block.code}\n--- output ---\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
    if block.language == "python":
        check_output(block, result.stdout)


def page_params() -> List:
    params = []
    for page in PAGES:
        if not has_shell(page):
            continue
        marks = [pytest.mark.slow] if page.name in SLOW_PAGES else []
        params.append(pytest.param(page, id=str(page.relative_to(REPO)), marks=marks))
    return params


def python_block_params() -> List:
    return [
        pytest.param(block, id=block.name)
        for page in PAGES
        if not has_shell(page)
        for block in blocks(page)
        if block.language == "python"
    ]


def test_readme_and_docs_have_examples():
    assert len([block for block in blocks(README) if runnable(block)]) >= 1
    assert sum(runnable(block) for page in PAGES for block in blocks(page)) >= 15


@pytest.mark.parametrize("block", python_block_params())
def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    """Each Python block of a page without shell blocks runs on its own, in an empty folder."""
    if block.marker is not None:
        pytest.skip(f"{block.name}: {block.marker}")
    run_block(block, tmp_path)


@pytest.mark.parametrize("page", page_params())
def test_page_runs_as_a_session(page: Path, tmp_path: Path) -> None:
    """Every block of a page with shell commands, in order, in one folder."""
    make_user_files(tmp_path)
    skipped = []
    for block in blocks(page):
        if block.language not in ("python", "bash"):
            continue
        if block.marker is not None:
            skipped.append(f"{block.name}: {block.marker}")
            continue
        run_block(block, tmp_path)
    for reason in skipped:
        print(f"not run: {reason}")


def test_every_shell_block_runs_somewhere():
    """A shell or Python block is either run here, run by tests/product/test_install.py, or says why not."""
    install = [block for page in PAGES for block in blocks(page) if block.marker == "install"]
    assert install and all(block.page == README for block in install)
    for page in PAGES:
        for block in blocks(page):
            if block.language in ("sh", "shell", "console"):
                pytest.fail(f"{block.name}: write shell blocks as ```bash so that they are run")


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO)) for page in PAGES])
def test_code_fences_pair_up(page: Path) -> None:
    """Every fence that opens a block is closed by a bare one: a stray fence would turn prose
    into code and code into prose, and its examples would silently stop running."""
    opened = None
    for line_no, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith("```"):
            continue
        if opened is None:
            opened = line_no
        else:
            assert line == "```", f"{page.name}:{line_no}: {line!r} closes the block opened on line {opened}"
            opened = None
    assert opened is None, f"{page.name}:{opened}: a block is never closed"


def test_value_comments_are_checked_as_intended():
    assert matches("(3, 7, 256)", "(3, 7, 256)")
    assert matches("0.941", "0.94")
    assert not matches("0.8", "0.94")
    assert matches("float32 (3, 6, 256)", "float32 (3, 6, 256)")
    assert not matches("float64 (3, 6, 256)", "float32 (3, 6, 256)")
    assert printed_comments("print(x)  # 0.94: explanation\nprint(y)\n") == [
        ("print(x)  # 0.94: explanation", "0.94: explanation"),
        ("print(y)", None),
    ]
    assert shell_script("python -m spacy train a.cfg \\\n    --x 1  # note\n").endswith(
        "python -m spacy train a.cfg      --x 1 --training.max_steps 2 --training.eval_frequency 2\n"
    )


def test_readme_is_a_door():
    """The README stays short: the rest lives in docs/."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


# Links -------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found: set = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base, n = slug(heading), 0
        while (f"{base}-{n}" if n else base) in found:
            n += 1
        found.add(f"{base}-{n}" if n else base)
    return found


def links(page: Path) -> List[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO)) for page in PAGES])
def test_internal_links_and_anchors_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved.relative_to(REPO) if REPO in resolved.parents else resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert broken == [], f"broken links in {page.relative_to(REPO)}:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def test_slugs_follow_github():
    assert slug("Install a trained pipeline on another machine") == "install-a-trained-pipeline-on-another-machine"
    assert slug("Using the `elmo` component") == "using-the-elmo-component"
    assert slug("Does it pay, and what does it cost?") == "does-it-pay-and-what-does-it-cost"


def test_every_guarantee_names_a_test_that_exists():
    """docs/guarantees.md backs each promise with a test: each named test is defined."""
    text = (REPO / "docs" / "guarantees.md").read_text(encoding="utf-8")
    promises = text.split("## What we guarantee", 1)[1]
    named = re.findall(r"`(?:(tests/[\w/]+\.py)::)?(test_\w+)`", promises)
    assert len(named) >= 10
    missing = []
    for file_, test in named:
        source = (REPO / (file_ or "tests/product/test_reliability.py")).read_text(encoding="utf-8")
        if not re.search(rf"^def {test}\(", source, re.M):
            missing.append(f"{file_ or 'tests/product/test_reliability.py'}::{test}")
    assert missing == [], "docs/guarantees.md names tests that do not exist"


# Generated blocks and messages -------------------------------------------------------------


def test_configuration_reference_is_current():
    """docs/configuration.md's defaults block is what scripts/config_reference.py writes now."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import config_reference
    finally:
        sys.path.remove(str(REPO / "scripts"))
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- elmo-defaults:start -->\n(.*?)\n<!-- elmo-defaults:end -->", page, re.S)
    assert block is not None
    assert block.group(1).strip() == config_reference.render().strip(), "run python scripts/config_reference.py"
    defaults: Dict[str, str] = {}
    for section in config_reference.component_defaults().split("\n\n"):
        prefix = "model." if section.startswith("[components.elmo.model]") else ""
        for key, value in re.findall(r"^(\w+) = (.*)$", section, re.M):
            defaults[prefix + key] = value
    table = re.findall(r"^\| `((?:model\.)?\w+)` \| `([^`]*)` \|", page, re.M)
    assert len(table) >= 10
    assert [(key, value) for key, value in table if defaults.get(key) != value] == [], "the settings table's defaults differ"


# Files a clone has and an installed wheel does not (the package's own configs/ and
# default_model/README are shipped, so a path inside spacy_elmo/ does not count).
REPO_ONLY = re.compile(r"(?<![\w/])(?:docs|configs|shared|scripts|benchmarks)/|\bREADME\b|project\.yml")


@pytest.mark.parametrize("command", [[], ["pretrain"], ["embed"], ["embed-merge"], ["init-config"], ["config"]])
def test_help_names_what_a_wheel_user_has(command: List[str]) -> None:
    """Help texts never send an installed user to files only a clone has."""
    result = subprocess.run(
        [sys.executable, "-m", "spacy_elmo", *command, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO.parent
    )
    assert result.returncode == 0, result.stderr
    found = REPO_ONLY.search(result.stdout)
    assert found is None, f"{' '.join(command)} --help mentions {found.group(0)!r}"


def runtime_strings(path: Path) -> List[Tuple[int, str]]:
    """(line, text) of the string constants in a module that its code uses: help, error and
    log texts, without docstrings and other bare string statements."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare
    ]


def test_messages_name_what_a_wheel_user_has() -> None:
    """No help, error or log text of the package names a file only a clone has; they name
    commands (``python -m spacy_elmo config NAME OUT``, ``--help``) instead."""
    found = [
        f"{path.relative_to(REPO)}:{line}: {text[:100]!r}"
        for path in sorted((REPO / "spacy_elmo").rglob("*.py"))
        for line, text in runtime_strings(path)
        if REPO_ONLY.search(text)
    ]
    assert found == []


# Machine paths ------------------------------------------------------------------------------

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
        if not path.is_file() or path.is_symlink():
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


# The first block ----------------------------------------------------------------------------


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
