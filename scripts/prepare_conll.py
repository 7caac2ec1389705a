"""Group CoNLL-2003 sentences into documents of N sentences for ``spacy convert``.

CoNLL-2003 marks each Reuters article with ``-DOCSTART- -X- -X- O``, which is not the
delimiter spaCy's ``conll`` converter looks for (``-DOCSTART- -X- O O``): left as it is, the
marker lines become one-token "sentences" in the corpus. Converting with ``-n 10`` alone
would also glue the end of one article to the start of the next. This script writes each
split with spaCy's delimiter before every block of N sentences *within* an article, so
``spacy convert --converter conll`` yields documents of at most N consecutive sentences of
one article (the usual spaCy setup of 10, without crossing article boundaries).
"""

from pathlib import Path
from typing import Iterator, List

import typer
from wasabi import msg

SPLITS = ("train", "dev", "test")
CONLL_DOCSTART = "-DOCSTART-"
SPACY_DOC_DELIMITER = "-DOCSTART- -X- O O"


def read_articles(path: Path) -> Iterator[List[str]]:
    """Each article as a list of sentences, a sentence being its token lines joined by newlines."""
    article: List[str] = []
    sentence: List[str] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        line = line.strip()
        if line.startswith(CONLL_DOCSTART):
            if sentence:
                article.append("\n".join(sentence))
                sentence = []
            if article:
                yield article
            article = []
        elif line:
            sentence.append(line)
        elif sentence:
            article.append("\n".join(sentence))
            sentence = []
    if article:
        yield article


def group_sentences(path: Path, n_sents: int) -> str:
    """The file's text with spaCy's document delimiter before every ``n_sents`` sentences of an article."""
    blocks = []
    for article in read_articles(path):
        for start in range(0, len(article), n_sents):
            blocks.append(SPACY_DOC_DELIMITER + "\n\n" + "\n\n".join(article[start : start + n_sents]))
    return "\n\n".join(blocks) + "\n"


def main(
    input_dir: Path = typer.Argument(..., help="Folder with CoNLL-2003 train.txt, dev.txt, test.txt"),
    output_dir: Path = typer.Argument(..., help="Folder for train.conll, dev.conll, test.conll"),
    n_sents: int = typer.Option(10, "--n-sents", "-n", min=1, help="Sentences per document"),
) -> None:
    """Write ``{train,dev,test}.conll`` with documents of ``n_sents`` sentences."""
    missing = [input_dir / f"{split}.txt" for split in SPLITS if not (input_dir / f"{split}.txt").is_file()]
    if missing:
        msg.fail(
            f"CoNLL-2003 file(s) not found: {', '.join(map(str, missing))}",
            "Point the project at your data directory with --vars.data_dir PATH; it must "
            "contain conll2003/train.txt, dev.txt and test.txt.",
            exits=1,
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        text = group_sentences(input_dir / f"{split}.txt", n_sents)
        (output_dir / f"{split}.conll").write_text(text, encoding="utf-8")
        msg.good(f"{split}: {text.count(SPACY_DOC_DELIMITER)} documents of up to {n_sents} sentences")


if __name__ == "__main__":
    typer.run(main)
