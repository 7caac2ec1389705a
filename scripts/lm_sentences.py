"""Tokenise pretraining text once: paragraphs in, one whitespace-tokenised sentence per line out.

Pretraining with ``[data] format = "paragraphs"`` runs spaCy's tokenizer and sentencizer over
the text again in every epoch, in the training process. Writing the sentences out once lets a
run read them with ``--data.format sentences``: the same sentences (the length filter and the
cut into ``max_sentence_length`` pieces happen here and are no-ops when read back), without
spaCy on the training machine and without tokenising in the loop that feeds a GPU.

    python scripts/lm_sentences.py configs/pretrain_small.cfg "DATA/lm/wiki2014-en/*.txt.gz" lm-sentences/

Each input ``NAME.txt.gz`` (or ``NAME.txt``) becomes ``OUT_DIR/NAME.txt``. An existing output
is never replaced: the script stops before writing anything, or with ``--skip-done`` keeps it
and skips its input (outputs are written whole, so an existing one is complete).
"""

from pathlib import Path
from typing import List

import typer
from wasabi import msg

from spacy_elmo.files import write_text_atomic
from spacy_elmo.pretrain.config import load_config
from spacy_elmo.pretrain.data import SentenceReader, expand_text_paths
from spacy_elmo.pretrain.errors import PretrainDataError


def output_name(path: Path) -> str:
    """``train.00.txt.gz`` -> ``train.00.txt``; a name without ``.txt`` gets it."""
    name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    return name if name.endswith(".txt") else name + ".txt"


def main(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Pretraining config whose [data] settings to apply"),
    inputs: str = typer.Argument(..., help="Text files: a path, a glob or a comma-separated list, plain or .gz"),
    out_dir: Path = typer.Argument(..., file_okay=False, help="Where the sentence files go"),
    skip_done: bool = typer.Option(
        False, "--skip-done", help="Keep existing outputs (each is written whole) and skip their inputs"
    ),
) -> None:
    """Write every input's sentences as the paragraphs reader of CONFIG splits them."""
    data = load_config(config).data
    if data.format != "paragraphs":
        msg.fail(f"{config}: [data] format is {data.format!r}; its text is tokenised already.", exits=1)
    try:
        files = expand_text_paths(inputs, "INPUTS", "name existing text files")
    except PretrainDataError as err:
        msg.fail(str(err), exits=1)
    targets: List[Path] = [out_dir / output_name(path) for path in files]
    taken = [str(target) for target in targets if target.exists()]
    if taken and skip_done:
        msg.info(f"Kept from an earlier run: {', '.join(taken)}")
        pending = [(path, target) for path, target in zip(files, targets) if not target.exists()]
        files, targets = [path for path, _ in pending], [target for _, target in pending]
    elif taken:
        msg.fail(f"Not replacing existing files: {', '.join(taken)}. Remove them or choose another OUT_DIR.", exits=1)
    if len(set(targets)) != len(targets):
        msg.fail("Two inputs map to the same output name (e.g. a.txt and a.txt.gz); pass one of them.", exits=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    reader = SentenceReader(data)
    for path, target in zip(files, targets):
        sentences = [" ".join(sentence) for sentence in reader.sentences([path])]
        write_text_atomic(target, "".join(line + "\n" for line in sentences))
        msg.good(f"{target}: {len(sentences):,} sentences, {sum(line.count(' ') + 1 for line in sentences):,} tokens")


if __name__ == "__main__":
    typer.run(main)
