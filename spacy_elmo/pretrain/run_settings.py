"""What a checkpoint records of its run, and the checks resuming makes against it: the data
stream, the model, the vocabulary and the optimiser must be those of the run that wrote it."""

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from .config import PretrainConfig
from .errors import CheckpointError
from .optim import optimizer_kind

RUN_SETTINGS = (
    "data.format",
    "data.lang",
    "data.max_sentence_length",
    "data.min_tokens",
    "data.max_tokens",
    "data.shuffle_buffer",
    "data.sort_pool",
    "vocab.size",
    "vocab.min_count",
    "vocab.max_tokens_for_vocab",
    "vocab.path",
    "training.seed",
    "training.batch_tokens",
    "training.softmax",
    "training.n_samples",
    "training.adaptive_cutoffs",
    "training.adaptive_div_value",
    "training.init_from",
)
"""Settings that fix the data stream and the model a checkpoint belongs to: a resumed run must
keep them (with the ``[model]`` architecture, unless the run fine-tunes ``init_from``)."""


def run_settings(config: PretrainConfig, train_files: Sequence[Path]) -> Dict[str, Any]:
    """What a checkpoint records so that resuming can refuse a different data stream or model."""
    resolved = config.resolved
    settings: Dict[str, Any] = {}
    keys = list(RUN_SETTINGS)
    if config.training.init_from is None:
        keys += [f"model.{block}.{key}" for block in ("lstm", "char_cnn") for key in resolved["model"][block]]
    for dotted in keys:
        node: Any = resolved
        for part in dotted.split("."):
            node = node[part]
        settings[dotted] = node
    settings["paths.train"] = config.paths.train
    settings["train_files"] = [[path.name, path.stat().st_size] for path in train_files]
    return settings


def check_run_settings(where: Path, recorded: Any, current: Dict[str, Any], output_dir: Path) -> None:
    """Refuse to resume from the checkpoint ``where`` when the settings it ``recorded`` differ
    from the ``current`` ones; the error names each difference and the option that restores it."""
    if not isinstance(recorded, dict):
        raise CheckpointError(
            f'Cannot resume from {where}: its {where / "meta.json"} has no "run" settings to check the data '
            f"stream and the model against (it was not written by this version of spacy-elmo). Start a new run "
            f"in a new OUTPUT_DIR, or here with --overwrite."
        )
    differences = []
    for key, before in recorded.items():
        if key == "paths.train" or key not in current or current[key] == before:
            continue
        if key == "train_files":
            differences.append(
                f"[paths] train = {current['paths.train']!r} gives the files {_describe_files(current[key])}, the run was "
                f"trained on {_describe_files(before)} ([paths] train = {recorded.get('paths.train')!r})"
            )
        else:
            section, name = key.rsplit(".", 1)
            differences.append(
                f"[{section}] {name} is {json.dumps(current[key])} now and was {json.dumps(before)} (--{key} {json.dumps(before)})"
            )
    if differences:
        raise CheckpointError(
            f"Cannot resume from {where}: the data stream or the model would differ from the run that wrote it "
            f"({where / 'meta.json'}): {'; '.join(differences)}. Resume with the original settings, or start a new "
            f"run in a new OUTPUT_DIR; to continue training these weights on other data, start a new OUTPUT_DIR with "
            f"--training.init_from {output_dir / 'model-last'}."
        )


def check_vocabulary_and_optimizer(
    where: Path, checkpoint: Dict[str, Any], vocab_size: int, optimizer: str, output_dir: Path
) -> None:
    """Refuse the ``checkpoint`` read from ``where`` when it was trained with another vocabulary
    size than ``vocab_size`` (that of OUTPUT_DIR/vocab.txt) or another ``optimizer``."""
    if checkpoint["vocab_size"] != vocab_size:
        raise CheckpointError(
            f"Cannot resume from {where}: it was trained with a vocabulary of {checkpoint['vocab_size']:,} words and "
            f"{output_dir / 'vocab.txt'} has {vocab_size:,}. Put back the vocab.txt of that run, or start "
            f"without --resume in a new OUTPUT_DIR."
        )
    stored = optimizer_kind(checkpoint["optimizer"])
    if stored not in (None, optimizer):
        raise CheckpointError(
            f"Cannot resume from {where}: it was trained with [training] optimizer = {stored!r} and the config "
            f"now says {optimizer!r}; their states do not carry over. Resume with --training.optimizer "
            f"{stored}, or start a new OUTPUT_DIR with --training.init_from {output_dir / 'model-last'}."
        )


def _describe_files(files: List[List[Any]]) -> str:
    shown = ", ".join(f"{name} ({size:,} bytes)" for name, size in files[:3])
    return shown + (f" and {len(files) - 3} more" if len(files) > 3 else "")
