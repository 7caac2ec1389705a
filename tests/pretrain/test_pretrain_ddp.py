"""Data-parallel pretraining (torchrun, gloo on CPU) learns like a single process with the same global batch."""

import json
import subprocess
from pathlib import Path

import pytest

from pretrain_helpers import cli_args, one_thread_env, pretrain_command, synthetic_sentences, tiny_config, write_lines
from spacy_elmo.pretrain import pretrain

CONFIG = tiny_config(
    {
        "optimizer": "adagrad",
        "learn_rate": 0.2,
        "grad_clip": 0,
        "dropout": 0.0,
        "softmax": "adaptive",
        "adaptive_cutoffs": [50, 150],
        "batch_tokens": 512,
        "max_steps": 30,
        "log_every": 1,
        "eval_every": 30,
        "checkpoint_every": 1000,
    }
)
STEPS = 30


def _overrides(folder: Path, batch_tokens: int, **extra):
    return {
        "paths.train": str(folder / "train.txt"),
        "paths.dev": str(folder / "dev.txt"),
        "training.batch_tokens": batch_tokens,
        **{key.replace("__", "."): value for key, value in extra.items()},
    }


def _curve(folder: Path):
    """Mean training loss over each third of the run, and the final held-out perplexity."""
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert len(losses) == STEPS
    third = STEPS // 3
    windows = [sum(losses[i : i + third]) / third for i in range(0, STEPS, third)]
    final_ppl = [r["dev"]["ppl"] for r in records if r["event"] == "eval"][-1]
    return windows, final_ppl


def _close(a, b, loss_tolerance=0.02, ppl_tolerance=0.05) -> bool:
    (loss_a, ppl_a), (loss_b, ppl_b) = a, b
    return all(abs(x - y) <= loss_tolerance * y for x, y in zip(loss_a, loss_b)) and abs(ppl_a - ppl_b) <= ppl_tolerance * ppl_b


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_process_gloo_run_follows_the_single_process_loss(tmp_path):
    """Two processes with ``batch_tokens`` 256 each against one process with 512.

    Both runs start from the same weights (seed 0; under torchrun rank 0's weights are
    broadcast) and read the same shuffled stream: the single process takes one batch of
    up to 512 padded token slots per step, the two processes take two consecutive batches
    of up to 256 each and average their gradients, so every step sees the same global
    budget of the same text (the small batches pad less, so they hold somewhat more real
    tokens). Dropout is off and the adaptive softmax is exact, so the only differences are
    which sentences share a batch and that a mean of two batch means weighs tokens slightly
    differently from one mean: the loss curves agree to well under 1% (mean loss over each
    third of 30 steps) and the final held-out perplexity to about 2%. The tolerances (2%,
    5%) are checked to be tight enough to see a real fault: Adagrad with bilm-tf's initial
    accumulator makes the step size follow the gradient's scale, and a single process with
    a doubled learning rate (what summing the replicas' gradients instead of averaging them
    would do) falls outside them.
    """
    (tmp_path / "tiny.cfg").write_text(CONFIG, encoding="utf-8")
    write_lines(tmp_path / "train.txt", synthetic_sentences(2000, seed=1))
    write_lines(tmp_path / "dev.txt", synthetic_sentences(100, seed=2))
    pretrain(tmp_path / "tiny.cfg", tmp_path / "single", overrides=_overrides(tmp_path, 512), progress=False)
    pretrain(
        tmp_path / "tiny.cfg",
        tmp_path / "double-step",
        overrides=_overrides(tmp_path, 512, training__learn_rate=0.4),
        progress=False,
    )
    command = pretrain_command(tmp_path / "tiny.cfg", tmp_path / "ddp", *cli_args(_overrides(tmp_path, 256)), processes=2)
    done = subprocess.run(command, env=one_thread_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["processes"] == 2

    single, ddp, double_step = (_curve(tmp_path / name) for name in ("single", "ddp", "double-step"))
    assert single[0][-1] < single[0][0] - 0.2, f"the reference run did not learn: {single}"
    assert _close(ddp, single), f"2 processes {ddp} vs 1 process {single}"
    assert not _close(double_step, single), f"the tolerance cannot see a doubled step: {double_step} vs {single}"
