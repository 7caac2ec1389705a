"""Train floret static vectors on tokenised text and turn them into a spaCy vectors directory.

The alternative to ELMo that a spaCy user tries first: subword-hashed static vectors (floret),
used through ``MultiHashEmbed``'s ``include_static_vectors``. The input is the one
whitespace-tokenised sentence per line that ``scripts/lm_sentences.py`` writes from the same
Wikipedia text the default biLM saw, so the comparison is from the same text.

    python scripts/train_floret.py "SENTENCES/*.txt" OUT_DIR --dim 100 --bucket 50000

OUT_DIR gets ``vectors.floret`` (floret's table), ``vectors/`` (``spacy init vectors --mode
floret``, what ``[paths] vectors`` names) and ``train.json`` (settings, CPU seconds). A finished
OUT_DIR (``train.json`` present) is left alone, so a rerun skips it; a different setting for a
finished OUT_DIR is an error rather than a silent reuse.
"""

import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import typer
from wasabi import msg

SETTINGS_FILE = "train.json"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def concatenate(files: List[Path], target: Path) -> int:
    """Write every file's lines into ``target`` (floret reads one file); return the token count."""
    tokens = 0
    with target.open("w", encoding="utf8") as out:
        for path in files:
            with path.open(encoding="utf8") as lines:
                for line in lines:
                    tokens += line.count(" ") + 1
                    out.write(line)
    return tokens


def main(
    inputs: str = typer.Argument(..., help="Tokenised sentence files (one sentence per line): a path or a glob"),
    out_dir: Path = typer.Argument(..., file_okay=False, help="Where vectors.floret, vectors/ and train.json go"),
    lang: str = typer.Option("en", help="spaCy language code for the vectors"),
    model: str = typer.Option("cbow", help="cbow or skipgram"),
    dim: int = typer.Option(100, help="Vector width"),
    bucket: int = typer.Option(50000, help="Rows of the hashed table (floret's bucket)"),
    epoch: int = typer.Option(5, help="Passes over the text"),
    minn: int = typer.Option(4, help="Shortest character n-gram"),
    maxn: int = typer.Option(5, help="Longest character n-gram"),
    hash_count: int = typer.Option(2, help="Hashes per word and n-gram (floret's hashCount)"),
    min_count: int = typer.Option(5, help="Words seen fewer times are left out of training"),
    threads: int = typer.Option(1, help="floret's training threads (1 gives the same vectors on every run)"),
) -> None:
    """Train floret vectors on INPUTS and write a spaCy vectors directory into OUT_DIR."""
    import floret

    files = sorted(Path(name) for name in glob.glob(inputs))
    if not files:
        msg.fail(f"INPUTS {inputs!r} matches no file. Write the sentences with scripts/lm_sentences.py first.", exits=1)
    settings: Dict[str, Any] = {
        "model": model, "dim": dim, "bucket": bucket, "epoch": epoch, "minn": minn, "maxn": maxn,
        "hash_count": hash_count, "min_count": min_count, "lang": lang,
        "inputs": [path.name for path in files],
    }  # fmt: skip
    done = out_dir / SETTINGS_FILE
    if done.exists():
        earlier = json.loads(done.read_text(encoding="utf8"))
        changed = sorted(key for key in settings if earlier.get(key) != settings[key])
        if changed:
            msg.fail(
                f"{out_dir} holds vectors trained with other settings ({', '.join(changed)}); choose another OUT_DIR.", exits=1
            )
        msg.info(f"{out_dir}: finished earlier ({earlier['cpu_seconds']:.0f} CPU s); skipping")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    started, wall = cpu_seconds(), time.time()
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        text = Path(scratch) / "text.txt"
        tokens = concatenate(files, text)
        msg.info(f"Training floret {model} dim={dim} bucket={bucket} epoch={epoch} on {tokens:,} tokens, {threads} thread(s)")
        trained = floret.train_unsupervised(
            str(text), model=model, dim=dim, bucket=bucket, epoch=epoch, minn=minn, maxn=maxn, hashCount=hash_count,
            minCount=min_count, mode="floret", thread=threads, verbose=0,
        )  # fmt: skip
        table = out_dir / "vectors.floret"
        trained.save_floret_vectors(str(table))
    vectors_dir = out_dir / "vectors"
    if vectors_dir.exists():
        shutil.rmtree(vectors_dir)
    command = [sys.executable, "-m", "spacy", "init", "vectors", lang, str(table), str(vectors_dir), "--mode", "floret"]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    settings.update(tokens=tokens, cpu_seconds=round(cpu_seconds() - started, 1), wall_seconds=round(time.time() - wall, 1))
    done.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf8")
    msg.good(f"{vectors_dir}: {settings['cpu_seconds']:.0f} CPU s, {tokens:,} tokens")


if __name__ == "__main__":
    typer.run(main)
