"""The demo corpus converter (scripts/demo_corpus.py): exact entity offsets, errors naming file:line, the data card."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


@pytest.fixture(scope="module")
def demo_corpus():
    """The script as a module (scripts/ is not a package; the scripts import each other by name)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import demo_corpus

        yield demo_corpus
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def test_markup_becomes_entities_at_exact_offsets(demo_corpus, nlp):
    line = '"We lost," said [Hanne Lindqvist|PER] of [Real Cordoba|ORG] in [Gothenburg|LOC]\'s [Nya Ullevi|LOC].'
    text, spans = demo_corpus.parse_line(line, "x.txt:1")
    assert text == '"We lost," said Hanne Lindqvist of Real Cordoba in Gothenburg\'s Nya Ullevi.'
    doc = demo_corpus.make_doc(nlp, text, spans, "x.txt:1")
    assert [(ent.text, ent.label_) for ent in doc.ents] == [
        ("Hanne Lindqvist", "PER"),
        ("Real Cordoba", "ORG"),
        ("Gothenburg", "LOC"),
        ("Nya Ullevi", "LOC"),
    ]
    assert [(ent.start_char, ent.end_char) for ent in doc.ents] == [(start, end) for start, end, _ in spans]
    assert demo_corpus.to_markup(doc) == line


@pytest.mark.parametrize(
    "line,message",
    [
        (
            "A reign that ended with [Elizabeth I|PER].",
            r"'Elizabeth I' \(PER\) does not start and end on token boundaries.*'I\.'",
        ),
        ("The [Dutch|NAT] team won.", r"unknown label 'NAT'"),
        ("The [Dutch|MISC team won.", r"stray '\['"),
        ("The Dutch|MISC] team won.", r"stray '\|'"),
        ("The [ Dutch|MISC] team won.", r"starts/ends with whitespace"),
        ("The [|MISC] team won.", r"empty"),
    ],
)
def test_bad_line_is_an_error_naming_file_and_line(demo_corpus, nlp, tmp_path, line, message):
    path = tmp_path / "train.txt"
    path.write_text("[Kofi Mensah|PER] scored twice.\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(demo_corpus.DemoMarkupError, match=re.escape(f"{path}:3: ") + ".*" + message):
        list(demo_corpus.read_corpus(path, nlp))


def test_convert_writes_docbins_and_fails_loudly(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("[Kofi Mensah|PER] joined [Accra Lions|ORG].\nNo entities here.\n", encoding="utf-8")
    (corpus / "dev.txt").write_text("Rain in [Gothenburg|LOC].\n", encoding="utf-8")
    run = [sys.executable, str(SCRIPTS / "demo_corpus.py"), "convert", str(corpus), str(tmp_path / "out")]
    result = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nlp = spacy.blank("en")
    train = list(DocBin().from_disk(tmp_path / "out" / "train.spacy").get_docs(nlp.vocab))
    assert [[(ent.text, ent.label_) for ent in doc.ents] for doc in train] == [
        [("Kofi Mensah", "PER"), ("Accra Lions", "ORG")],
        [],
    ]

    (corpus / "dev.txt").write_text("Rain in [Gothenburg|LOC].\nSnow in [Oslo|LCO].\n", encoding="utf-8")
    result = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{corpus / 'dev.txt'}:2: unknown label 'LCO'" in " ".join((result.stdout + result.stderr).split())


def test_data_card_counts_match_the_corpus(demo_corpus):
    card = (REPO / "demo" / "ner" / "README.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- demo-corpus-stats:start -->\n(.*?)\n<!-- demo-corpus-stats:end -->", card, re.S)
    assert table is not None
    expected = demo_corpus.stats_table(demo_corpus.load_splits(REPO / "demo" / "ner", "en"))
    assert table.group(1).splitlines() == expected


def test_demo_workflow_needs_only_the_repository(monkeypatch):
    """Every input of the demo's steps is a file of the repository or an output of an earlier
    demo step: no data directory, no download, no absolute path."""
    from weasel.util import load_project_config

    monkeypatch.delenv("SPACY_ELMO_SHARED", raising=False)
    config = load_project_config(REPO, overrides={"vars.data_dir": "/no-data-here"})
    commands = {command["name"]: command for command in config["commands"]}
    produced = set()
    for name in config["workflows"]["demo"]:
        command = commands[name]
        for dep in command.get("deps", []):
            assert dep in produced or (REPO / dep).is_file(), (
                f"{name}: {dep} is neither in the repository nor made by an earlier demo step"
            )
        for line in command["script"]:
            assert "/no-data-here" not in line and " /" not in line, f"{name}: {line}"
            for script in re.findall(r"scripts/\w+\.py", line):
                assert (REPO / script).is_file(), f"{name}: {script} is missing"
        produced.update(command.get("outputs", []))
