"""Run ``spacy train`` and record how long it took and how many words it trained on per second.

The same training as ``python -m spacy train CONFIG --output OUTPUT_DIR [overrides]`` (spaCy's
own ``init_nlp`` and training loop, its log on stdout), with two additions for the demo:

* ``--threads N`` sets torch's intra-op threads before anything runs (one is fastest on a
  machine shared with other jobs, see docs/speed.md, "Threads");
* ``OUTPUT_DIR/timing.json`` records the wall time of the whole command, the words the
  updates saw and the seconds spent in ``nlp.update``, so the demo's report can print
  training words/s beside the scores.

    python scripts/demo_train.py configs/ner_elmo.cfg training/demo/ner-elmo --threads 1 \\
        --paths.train corpus/demo/train.spacy --paths.dev corpus/demo/dev.spacy --training.max_steps 300
"""

import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict

import srsly
import typer
from spacy import util
from spacy.cli._util import parse_config_overrides, setup_gpu, show_validation_error
from spacy.language import Language
from spacy.training.initialize import init_nlp
from spacy.training.loop import train as train_nlp
from wasabi import msg


class UpdateTimer:
    """Wraps one pipeline's ``update``: counts the words of every batch and the seconds spent updating."""

    def __init__(self, nlp: Language) -> None:
        self.words = 0
        self.seconds = 0.0
        self._update = nlp.update
        nlp.update = self.update  # type: ignore[method-assign]

    def update(self, examples: Any, *args: Any, **kwargs: Any) -> Any:
        examples = list(examples)
        start = time.perf_counter()
        result = self._update(examples, *args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.words += sum(len(example) for example in examples)
        return result


def set_threads(threads: int) -> None:
    """Use ``threads`` torch intra-op threads (0 leaves torch's default: one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def main(
    ctx: typer.Context,
    config_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training config (.cfg)"),
    output_dir: Path = typer.Argument(..., help="Where spaCy writes model-best/ and model-last/, and timing.json goes"),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads; 0 = torch's default"),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU id, or -1 for the CPU"),
) -> None:
    """Train like ``spacy train`` (extra ``--section.key value`` options override the config) and time it."""
    start = time.perf_counter()
    set_threads(threads)
    overrides = parse_config_overrides(ctx.args)
    output_dir.mkdir(parents=True, exist_ok=True)
    setup_gpu(gpu_id)
    with show_validation_error(config_path):
        config = util.load_config(config_path, overrides=overrides, interpolate=False)
    msg.divider("Initializing pipeline")
    with show_validation_error(config_path, hint_fill=False):
        nlp = init_nlp(config, use_gpu=gpu_id)
    msg.good("Initialized pipeline")
    msg.divider("Training pipeline")
    timer = UpdateTimer(nlp)
    train_start = time.perf_counter()
    train_nlp(nlp, output_dir, use_gpu=gpu_id, stdout=sys.stdout, stderr=sys.stderr)
    end = time.perf_counter()
    timing: Dict[str, Any] = {
        "config": config_path.as_posix(),
        "wall_seconds": round(end - start, 2),
        "training_loop_seconds": round(end - train_start, 2),
        "update_seconds": round(timer.seconds, 2),
        "words": timer.words,
        "words_per_second": round(timer.words / timer.seconds, 1) if timer.seconds else None,
        "threads": threads,
        "platform": f"{platform.machine()}, Python {platform.python_version()}",
    }
    srsly.write_json(output_dir / "timing.json", timing)
    msg.good(
        f"Trained {config_path.name} in {timing['wall_seconds']:.0f} s: {timer.words:,} words, "
        f"{timing['words_per_second'] or 0:,.0f} words/s in updates ({threads} torch thread(s))"
    )


if __name__ == "__main__":
    app = typer.Typer(add_completion=False)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(main)
    app()
