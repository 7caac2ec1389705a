"""``spacy pretrain`` of a config's tok2vec on tokenised text, in resumable chunks.

The second alternative to ELMo that a spaCy user tries: pretraining the CNN tok2vec on raw
text (spaCy's characters or vectors objective), loaded into training with ``[initialize]
init_tok2vec``. The input is the one whitespace-tokenised sentence per line that
``scripts/lm_sentences.py`` writes from the Wikipedia text the default biLM saw, so every
system in the comparison learns from the same text.

    python scripts/tok2vec_pretrain.py "SENTENCES/*.txt" OUT_DIR --config configs/ner_baseline_pretrain.cfg

The text is cut into chunks of ``--chunk-tokens`` tokens (``OUT_DIR/text/chunk-NNN.jsonl``);
each chunk is one ``spacy pretrain`` epoch that starts from the weights the previous chunk
ended with (spaCy's own ``--resume-path``), so an interrupted run loses at most one chunk and a
rerun continues where it stopped. ``--chunks`` sets the budget; raise it and rerun to train
longer. Like spaCy's own resume, each chunk starts a fresh optimizer (the weights carry over,
Adam's moments do not). ``OUT_DIR/model-last.bin`` is what ``--paths.init_tok2vec`` takes;
``OUT_DIR/train.json`` holds the settings, the loss per chunk and the CPU seconds spent.
"""

import glob
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import srsly
import typer
from spacy.util import load_config
from thinc.api import Config
from wasabi import msg

from spacy_elmo.files import write_bytes_atomic, write_text_atomic

SETTINGS_FILE = "train.json"
FINAL_MODEL = "model-last.bin"
OBJECTIVES = {
    "characters": {"@architectures": "spacy.PretrainCharacters.v1", "maxout_pieces": 3, "hidden_size": 300, "n_characters": 4},
    "vectors": {"@architectures": "spacy.PretrainVectors.v1", "maxout_pieces": 3, "hidden_size": 300, "loss": "cosine"},
}


def child_cpu_seconds() -> float:
    """User + system CPU time of this process's finished children (the spacy pretrain runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def sentences(files: List[Path]) -> Iterator[List[str]]:
    for path in files:
        with path.open(encoding="utf8") as lines:
            for line in lines:
                tokens = line.split()
                if tokens:
                    yield tokens


def write_chunks(files: List[Path], folder: Path, chunk_tokens: int, chunks: int) -> List[Path]:
    """The first ``chunks`` chunks of ``chunk_tokens`` tokens as JSONL ({"text": ...}, spaCy's raw-text format), written once."""
    done = folder / "chunks.json"
    if done.exists() and json.loads(done.read_text())["chunk_tokens"] == chunk_tokens:
        written = [folder / name for name in json.loads(done.read_text())["files"]]
        if len(written) >= chunks:
            return written[:chunks]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written, batch, count = [], [], 0
    for tokens in sentences(files):
        batch.append({"text": " ".join(tokens)})
        count += len(tokens)
        if count >= chunk_tokens:
            path = folder / f"chunk-{len(written):03d}.jsonl"
            srsly.write_jsonl(path, batch)
            written.append(path)
            batch, count = [], 0
            if len(written) == chunks:
                break
    if len(written) < chunks:
        msg.warn(f"The text holds {len(written)} chunks of {chunk_tokens:,} tokens, not {chunks}; using them all")
    done.write_text(json.dumps({"chunk_tokens": chunk_tokens, "files": [p.name for p in written]}) + "\n")
    return written


def pretrain_config(path: Path, objective: str, dropout: float, seed: int, vectors: str) -> Config:
    """The config at ``path`` (with a ``[pretraining]`` block) set to ``objective``, ``dropout`` and ``seed``."""
    config = load_config(path, interpolate=False)
    if not config.get("pretraining"):
        raise typer.BadParameter(
            f"{path} has no [pretraining] block: use configs/ner_baseline_pretrain.cfg or a config "
            "written by 'spacy init fill-config --pretraining'",
            param_hint="--config",
        )
    config["pretraining"]["dropout"] = dropout
    config["pretraining"]["objective"] = dict(OBJECTIVES[objective])
    config["system"]["seed"] = seed
    # The config's before_init asks training for the weights this run makes.
    config["initialize"]["before_init"] = None
    if vectors:
        config["paths"]["vectors"] = vectors
    return config


def main(
    inputs: str = typer.Argument(..., help="Tokenised sentence files (one sentence per line): a path or a glob"),
    out_dir: Path = typer.Argument(..., file_okay=False, help="Where the chunks, the weights and train.json go"),
    config_path: Path = typer.Option(
        Path("configs/ner_baseline_pretrain.cfg"), "--config", help="Training config with a [pretraining] block"
    ),
    objective: str = typer.Option(
        "characters", help="characters (predict each word's first and last 4 characters) or vectors (needs --vectors)"
    ),
    vectors: str = typer.Option("", help="spaCy vectors directory, for --objective vectors"),
    chunk_tokens: int = typer.Option(1_000_000, help="Tokens per chunk (one spacy pretrain epoch each)"),
    chunks: int = typer.Option(20, help="Chunks to train on: the budget"),
    dropout: float = typer.Option(0.2, help="Dropout during pretraining (spaCy's default)"),
    seed: int = typer.Option(0, help="Random seed"),
) -> None:
    """Pretrain the tok2vec of CONFIG on INPUTS, chunk by chunk, continuing an interrupted run."""
    if objective not in OBJECTIVES:
        msg.fail(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}", exits=1)
    if objective == "vectors" and not vectors:
        msg.fail("--objective vectors predicts static vectors: pass their directory with --vectors", exits=1)
    files = sorted(Path(name) for name in glob.glob(inputs))
    if not files:
        msg.fail(f"INPUTS {inputs!r} matches no file. Write the sentences with scripts/lm_sentences.py first.", exits=1)
    settings: Dict[str, Any] = {
        "config": config_path.name, "objective": objective, "vectors": Path(vectors).name if vectors else None,
        "chunk_tokens": chunk_tokens, "dropout": dropout, "seed": seed, "inputs": [p.name for p in files],
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / SETTINGS_FILE
    try:
        record = json.loads(record_path.read_text()) if record_path.exists() else {**settings, "chunks": [], "cpu_seconds": 0.0}
    except json.JSONDecodeError as err:
        msg.fail(f"{record_path} is not JSON ({err}): delete OUT_DIR {out_dir} to start over.", exits=1)
    changed = sorted(key for key in settings if record.get(key) != settings[key])
    if changed:
        msg.fail(f"{out_dir} holds a run with other settings ({', '.join(changed)}); choose another OUT_DIR.", exits=1)
    chunk_files = write_chunks(files, out_dir / "text", chunk_tokens, chunks)
    config = pretrain_config(config_path, objective, dropout, seed, vectors)
    config_file = out_dir / "pretrain.cfg"
    config.to_disk(config_file)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    # train.json lists the finished chunks: a chunk file it does not list (a run killed before
    # recording it) is trained again, so the record, the chunk files and model-last.bin agree.
    for index in range(len(record["chunks"]), len(chunk_files)):
        scratch = out_dir / "running"
        if scratch.exists():
            shutil.rmtree(scratch)
        # Chunk i is spaCy's epoch i (its --epoch-resume refuses 0), the only epoch of this run.
        command = [sys.executable, "-m", "spacy", "pretrain", str(config_file), str(scratch)]
        command += ["--paths.raw_text", str(chunk_files[index]), "--pretraining.max_epochs", str(index + 1)]
        if index:
            command += ["--resume-path", str(out_dir / f"chunk-{index - 1:03d}.bin"), "--epoch-resume", str(index)]
        started, wall = child_cpu_seconds(), time.time()
        if subprocess.run(command, env=env).returncode != 0:
            msg.fail(f"spacy pretrain failed on chunk {index} ({chunk_files[index]}): {' '.join(command)}", exits=1)
        log = [json.loads(line) for line in (scratch / "log.jsonl").read_text().splitlines()]
        target = out_dir / f"chunk-{index:03d}.bin"
        os.replace(scratch / f"model{index}.bin", target)
        shutil.rmtree(scratch)
        cpu = child_cpu_seconds() - started
        record["chunks"].append({
            "chunk": index, "loss": log[0]["epoch_loss"], "words": log[0]["nr_word"],
            "loss_per_word": round(log[0]["epoch_loss"] / max(1, log[0]["nr_word"]), 4),
            "cpu_seconds": round(cpu, 1), "wall_seconds": round(time.time() - wall, 1),
        })  # fmt: skip
        record["cpu_seconds"] = round(record["cpu_seconds"] + cpu, 1)
        write_bytes_atomic(out_dir / FINAL_MODEL, target.read_bytes())
        write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
        msg.good(
            f"chunk {index}: loss/word {record['chunks'][-1]['loss_per_word']:.3f}, {cpu:.0f} CPU s (total {record['cpu_seconds']:.0f})"
        )
    if record["chunks"]:
        newest = (out_dir / f"chunk-{len(record['chunks']) - 1:03d}.bin").read_bytes()
        final = out_dir / FINAL_MODEL
        if not final.is_file() or final.read_bytes() != newest:
            write_bytes_atomic(final, newest)
    msg.good(f"{out_dir / FINAL_MODEL}: {len(record['chunks'])} chunks, {record['cpu_seconds']:.0f} CPU s")


if __name__ == "__main__":
    typer.run(main)
