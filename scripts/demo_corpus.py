"""Convert the demo NER corpus (``demo/ner/*.txt``) to ``.spacy`` files, or count what it holds.

The corpus is one sentence per line with entities marked inline as ``[entity text|LABEL]``::

    [Kofi Mensah|PER] scored twice as [Accra Lions|ORG] beat [Tema Harbour|ORG] 3-1.

The markup is removed, the plain sentence is tokenized by spaCy's English tokenizer and each
entity becomes a span at its exact character offsets (``doc.char_span``, strict alignment).
A line whose markup is malformed, whose label is unknown or whose entity does not start and
end on token boundaries stops the conversion with an error naming ``file:line``: nothing is
dropped or moved silently.

    python scripts/demo_corpus.py convert demo/ner corpus/demo      # train.spacy, dev.spacy
    python scripts/demo_corpus.py stats demo/ner                     # Markdown table of counts
"""

import re
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import spacy
import typer
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from wasabi import msg

from spacy_elmo.errors import ElmoError

LABELS = ("PER", "ORG", "LOC", "MISC")
SPLITS = ("train", "dev")
ENTITY = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")
MARKUP_CHARS = "[]|"

Span = Tuple[int, int, str]


class DemoMarkupError(ElmoError, ValueError):
    """A line of the demo corpus is not valid ``[entity text|LABEL]`` markup."""


def parse_line(line: str, where: str, labels: Sequence[str] = LABELS) -> Tuple[str, List[Span]]:
    """The plain text of a marked-up line and its entities as (start, end, label) character offsets."""
    text_parts: List[str] = []
    spans: List[Span] = []
    length = 0
    position = 0
    for match in ENTITY.finditer(line):
        before = line[position : match.start()]
        check_plain(before, where)
        entity, label = match.group(1), match.group(2)
        if label not in labels:
            raise DemoMarkupError(f"{where}: unknown label {label!r} in {match.group(0)!r}; the labels are {', '.join(labels)}")
        if not entity.strip() or entity != entity.strip():
            raise DemoMarkupError(
                f"{where}: entity text {entity!r} in {match.group(0)!r} is empty or starts/ends with whitespace; "
                "put the spaces outside the brackets"
            )
        text_parts.append(before)
        length += len(before)
        spans.append((length, length + len(entity), label))
        text_parts.append(entity)
        length += len(entity)
        position = match.end()
    rest = line[position:]
    check_plain(rest, where)
    text_parts.append(rest)
    return "".join(text_parts), spans


def check_plain(text: str, where: str) -> None:
    """Fail if text outside the entities holds a markup character (an unclosed or broken entity)."""
    columns = [column for column in (text.find(char) for char in MARKUP_CHARS) if column >= 0]
    if columns:
        column = min(columns)
        excerpt = text[max(0, column - 20) : column + 20]
        raise DemoMarkupError(
            f"{where}: stray {text[column]!r} near {excerpt!r}: entities are written [entity text|LABEL] "
            "and the characters [ ] | appear nowhere else"
        )


def make_doc(nlp: Language, text: str, spans: Sequence[Span], where: str) -> Doc:
    """A Doc of ``text`` with ``spans`` as its entities; every span must match token boundaries exactly."""
    doc = nlp.make_doc(text)
    ents = []
    for start, end, label in spans:
        span = doc.char_span(start, end, label=label, alignment_mode="strict")
        if span is None:
            tokens = [token.text for token in doc if token.idx < end and token.idx + len(token) > start]
            raise DemoMarkupError(
                f"{where}: entity {text[start:end]!r} ({label}) does not start and end on token boundaries; "
                f"spaCy's tokenizer splits it as {tokens}: move the brackets to whole tokens"
            )
        ents.append(span)
    doc.ents = ents
    return doc


def to_markup(doc: Doc) -> str:
    """The doc's text with its entities written ``[entity text|LABEL]``, the inverse of :func:`parse_line`."""
    parts = []
    position = 0
    for ent in doc.ents:
        parts += [doc.text[position : ent.start_char], f"[{ent.text}|{ent.label_}]"]
        position = ent.end_char
    parts.append(doc.text[position:])
    return "".join(parts)


def read_corpus(path: Path, nlp: Language, labels: Sequence[str] = LABELS) -> Iterator[Doc]:
    """One Doc per non-blank line of ``path``."""
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        text, spans = parse_line(line, where, labels)
        yield make_doc(nlp, text, spans, where)


def split_paths(corpus_dir: Path) -> Dict[str, Path]:
    """``{split: corpus_dir/split.txt}``; fails with a message if one is missing."""
    paths = {split: corpus_dir / f"{split}.txt" for split in SPLITS}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        msg.fail(
            f"Demo corpus file(s) not found: {', '.join(missing)}",
            "They are part of the repository: run this from its root.",
            exits=1,
        )
    return paths


def load_splits(corpus_dir: Path, lang: str) -> Dict[str, List[Doc]]:
    """The docs of every split, or an error message naming file:line and exit 1."""
    nlp = spacy.blank(lang)
    try:
        return {split: list(read_corpus(path, nlp)) for split, path in split_paths(corpus_dir).items()}
    except DemoMarkupError as error:
        msg.fail(str(error))
        raise typer.Exit(code=1) from None


def stats_table(docs_by_split: Dict[str, List[Doc]]) -> List[str]:
    """A Markdown table: sentences, tokens and entities per label for each split and in total."""
    header = ["split", "sentences", "tokens", *LABELS, "entities"]
    rows = []
    totals: Counter = Counter()
    for split, docs in docs_by_split.items():
        counts: Counter = Counter(ent.label_ for doc in docs for ent in doc.ents)
        row: Counter = Counter(sentences=len(docs), tokens=sum(len(doc) for doc in docs), entities=sum(counts.values()), **counts)
        totals.update(row)
        rows.append([split, *(f"{row[key]:,}" for key in header[1:])])
    rows.append(["total", *(f"{totals[key]:,}" for key in header[1:])])
    rule = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in [header, rule, *rows]]


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def convert(
    corpus_dir: Path = typer.Argument(..., help="Folder with train.txt and dev.txt (inline markup)"),
    output_dir: Path = typer.Argument(..., help="Folder for train.spacy and dev.spacy"),
    lang: str = typer.Option("en", "--lang", help="Language whose tokenizer splits the sentences"),
) -> None:
    """Write ``train.spacy`` and ``dev.spacy`` with one Doc (and its entities) per line."""
    docs_by_split = load_splits(corpus_dir, lang)
    output_dir.mkdir(parents=True, exist_ok=True)
    for split, docs in docs_by_split.items():
        target = output_dir / f"{split}.spacy"
        DocBin(docs=docs, store_user_data=False).to_disk(target)
        n_ents = sum(len(doc.ents) for doc in docs)
        msg.good(f"{split}: {len(docs)} sentences, {sum(len(doc) for doc in docs):,} tokens, {n_ents} entities -> {target}")


@app.command()
def stats(
    corpus_dir: Path = typer.Argument(..., help="Folder with train.txt and dev.txt (inline markup)"),
    lang: str = typer.Option("en", "--lang", help="Language whose tokenizer splits the sentences"),
) -> None:
    """Print sentences, tokens and entities per label of each split (the data card's table)."""
    print("\n".join(stats_table(load_splits(corpus_dir, lang))))


if __name__ == "__main__":
    app()
