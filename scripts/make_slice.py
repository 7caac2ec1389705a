"""Cut a tiny copy of the data directory for the ``smoke`` workflow.

The slice has the same layout and formats as the full data directory, so the smoke steps
run exactly the converters, trainers and reports of the real ones, only on a few hundred
sentences. CoNLL-2003 keeps its first N sentences per split (article markers included);
the SST files are ordered by label, so they are sampled with a fixed seed instead; the
Wikipedia slice keeps the first paragraphs of the first training shard, valid and test.
The slice lives under the (git-ignored) corpus folder and is derived research data: it
must not be committed either.
"""

import gzip
import random
from pathlib import Path
from typing import List

import typer
from wasabi import msg

CONLL_SPLITS = ("train", "dev", "test")
SST_FILES = [f"{task}_{split}.tsv" for task in ("sst5", "sst2") for split in ("train", "dev", "test")]
# Every file the pretrain step reads, so that the smoke run can run that very step: the training
# paragraphs are spread over the five shards.
LM_FILES = {**{f"train.0{i}.txt.gz": 0.2 for i in range(5)}, "valid.txt.gz": 0.1, "test.txt.gz": 0.1}


def require(path: Path) -> Path:
    """``path`` if it is a file, else stop with a message that says how to point at the data."""
    if not path.is_file():
        msg.fail(
            f"Data file not found: {path}",
            "Point the project at your data directory with --vars.data_dir PATH "
            "(laid out like shared/data: conll2003/, textcat/sst/, lm/wiki2014-en/).",
            exits=1,
        )
    return path


def head_conll(path: Path, n_sents: int) -> str:
    """The lines of a CoNLL file up to the end of its ``n_sents``-th sentence (marker lines don't count)."""
    kept: List[str] = []
    sentences = 0
    in_sentence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        kept.append(line)
        if line.strip() and not line.startswith("-DOCSTART-"):
            in_sentence = True
        elif not line.strip() and in_sentence:
            in_sentence = False
            sentences += 1
            if sentences >= n_sents:
                break
    return "\n".join(kept) + "\n"


def sample_lines(path: Path, n_lines: int, seed: int) -> str:
    """``n_lines`` lines drawn with a fixed seed, kept in file order."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = sorted(random.Random(seed).sample(range(len(lines)), min(n_lines, len(lines))))
    return "\n".join(lines[i] for i in rows) + "\n"


def head_paragraphs(path: Path, n_paragraphs: int) -> str:
    """The lines of a gzipped text file up to its ``n_paragraphs``-th non-empty line."""
    kept: List[str] = []
    paragraphs = 0
    with gzip.open(path, "rt", encoding="utf-8") as file_:
        for line in file_:
            kept.append(line)
            paragraphs += bool(line.strip())
            if paragraphs >= n_paragraphs:
                break
    return "".join(kept)


def main(
    data_dir: Path = typer.Argument(..., help="The full data directory"),
    output_dir: Path = typer.Argument(..., help="Where to write the slice (same layout)"),
    conll_sents: int = typer.Option(200, "--conll-sents", min=1, help="CoNLL-2003 sentences per split"),
    sst_sents: int = typer.Option(200, "--sst-sents", min=1, help="SST sentences per file"),
    lm_lines: int = typer.Option(1000, "--lm-lines", min=10, help="Wikipedia paragraphs for training (valid/test get a tenth)"),
    seed: int = typer.Option(0, "--seed", help="Seed of the SST sample"),
) -> None:
    """Write the slice of CoNLL-2003, SST-5/SST-2 and the Wikipedia text."""
    for split in CONLL_SPLITS:
        target = output_dir / "conll2003" / f"{split}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(head_conll(require(data_dir / "conll2003" / f"{split}.txt"), conll_sents), encoding="utf-8")
    for name in SST_FILES:
        target = output_dir / "textcat" / "sst" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(sample_lines(require(data_dir / "textcat" / "sst" / name), sst_sents, seed), encoding="utf-8")
    for name, share in LM_FILES.items():
        target = output_dir / "lm" / "wiki2014-en" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = head_paragraphs(require(data_dir / "lm" / "wiki2014-en" / name), max(1, int(lm_lines * share)))
        with gzip.GzipFile(target, "wb", mtime=0) as file_:
            file_.write(text.encode("utf-8"))
    msg.good(
        f"Slice written to {output_dir}: {conll_sents} CoNLL sentences and {sst_sents} SST sentences per split, {lm_lines} Wikipedia paragraphs"
    )


if __name__ == "__main__":
    typer.run(main)
