"""Print what a trained NER pipeline finds in a few sentences, entities written ``[text|LABEL]``.

python scripts/demo_show.py training/demo/ner-elmo/model-best "Amara Okafor joined Northfield Rovers."
"""

from pathlib import Path
from typing import List

import spacy
import typer
from wasabi import msg

from demo_corpus import to_markup


def main(
    pipeline: Path = typer.Argument(..., exists=True, file_okay=False, help="A trained pipeline directory"),
    texts: List[str] = typer.Argument(..., help="Sentences to annotate"),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads; 0 = torch's default"),
) -> None:
    """Annotate ``texts`` with ``pipeline`` and print each with its entities marked up."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    nlp = spacy.load(pipeline)
    msg.divider(f"Entities found by {pipeline}")
    for doc in nlp.pipe(texts):
        print(to_markup(doc))


if __name__ == "__main__":
    typer.run(main)
