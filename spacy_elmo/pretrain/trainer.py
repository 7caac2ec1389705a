"""The pretraining run: setup, the training loop, evaluation, checkpoints and exports.

Outputs in OUTPUT_DIR: ``config.cfg`` (the effective config), ``vocab.txt``, ``log.jsonl``,
``checkpoint-<step>/`` (the newest two), ``model-last/`` and ``model-best/`` (``options.json`` +
``weights.hdf5`` in the published layout, loadable by the ``elmo`` component) and
``metrics.json``. A run never deletes or replaces a file it did not write: it refuses a
non-empty OUTPUT_DIR unless told to resume or to overwrite its own outputs.
"""

import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..bilm.options import ElmoOptions
from ..files import PathLike, remove_orphans, write_bytes_atomic, write_text_atomic
from .checkpoint import (
    TrainState,
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    may_hold_checkpoint,
    no_checkpoint_message,
    promote_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import PretrainConfig, load_config
from .data import BatchStream, LmBatch, SentenceReader, expand_text_paths, group_by_length, make_batch, read_eval_sentences
from .distributed import (
    DistContext,
    all_reduce_sum,
    average_gradients,
    barrier,
    broadcast_module,
    gather_objects,
    init_distributed,
    parameter_checksum,
    shutdown,
)
from .errors import (
    CheckpointError,
    OutputDirError,
    PretrainConfigError,
    PretrainDataError,
    TrainingDivergedError,
    TrainingInterrupted,
)
from .interrupt import StopRequest
from .model import build_bilm, load_for_fine_tuning
from .objective import BiLMObjective, build_softmax, perplexities
from .optim import (
    apply_freezing,
    build_optimizer,
    grad_clip,
    optimizer_kind,
    scheduled_learn_rate,
    set_learn_rate,
    trainable_blocks,
)
from .progress import ProgressBar, RunLog
from .vocab import LmVocab

OWN_FILES = ("config.cfg", "vocab.txt", "log.jsonl", "metrics.json")
MODEL_DIRS = ("model-best", "model-last")
MODEL_FILES = ("options.json", "weights.hdf5")
KEPT_CHECKPOINTS = 2
# Settings that fix the data stream and the model a checkpoint belongs to: a resumed run must keep them.
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


@dataclass
class PretrainResult:
    """What :func:`pretrain` hands back (the objective is the in-memory trained model)."""

    output_dir: Path
    objective: BiLMObjective
    vocab: LmVocab
    metrics: Dict[str, Any] = field(default_factory=dict)


def pretrain(
    config_path: PathLike,
    output_dir: PathLike,
    *,
    overrides: Optional[Dict[str, Any]] = None,
    resume: bool = False,
    overwrite: bool = False,
    gpu_id: Optional[int] = None,
    threads: Optional[int] = None,
    progress: bool = True,
) -> PretrainResult:
    """Train a biLM as ``config_path`` (plus dotted ``overrides``) describes, writing into ``output_dir``.

    ``output_dir`` must be empty or missing unless ``resume`` (continue from its newest intact
    checkpoint) or ``overwrite`` (replace this command's own outputs there, keep other files).
    Ctrl-C or SIGTERM stops after the current step with a checkpoint and raises :class:`TrainingInterrupted`.
    """
    config = load_config(config_path, overrides)
    context = init_distributed(gpu_id)
    try:
        trainer = Trainer(
            config, Path(output_dir), context, resume=resume, overwrite=overwrite, threads=threads, progress=progress
        )
        result = trainer.run()
        barrier(context)  # every process done with the group before any tears it down
        return result
    finally:
        shutdown(context)


class Trainer:
    """One process's share of a (possibly distributed) pretraining run."""

    def __init__(
        self,
        config: PretrainConfig,
        output_dir: Path,
        context: DistContext,
        *,
        resume: bool,
        overwrite: bool = False,
        threads: Optional[int],
        progress: bool,
    ) -> None:
        self.config = config
        self.training = config.training
        self.output_dir = output_dir
        self.context = context
        self.resume = resume
        self.overwrite = overwrite
        self.state = TrainState()
        self.checkpoints: List[Path] = []
        """Verified checkpoints of this run, oldest first: the newest ``KEPT_CHECKPOINTS`` stay on disk."""
        self.stop_request = StopRequest(self._acknowledge_stop)
        self.log = RunLog(output_dir / "log.jsonl", enabled=context.is_main, guard=self._writing)
        # Setup messages are plain lines; the bar starts with the training loop (and never outlives a failed setup).
        self.bar = ProgressBar(self.training, enabled=False)
        self.show_progress = progress and context.is_main
        self.trainable: Optional[List[str]] = None
        self._last_lr: Optional[float] = None
        self._last_dev: Optional[tuple] = None
        self._set_threads(threads)
        self._find_text_files()
        self._prepare_output_dir()
        # The order below fixes what every seeded generator draws: keep it.
        _seed_everything(self.training.seed)
        self.reader = SentenceReader(config.data, warn=self.say)
        self.vocab = self._vocabulary()
        self.objective = self._build_objective()
        self.options: ElmoOptions = self.objective.bilm.options
        self.optimizer = build_optimizer(self.objective, self.training)
        # Each process draws its own dropout masks and softmax samples.
        _seed_everything(self.training.seed + 1_000_003 * (context.rank + 1))
        if resume:
            self._restore()
        self.stream = BatchStream(self.train_files, self.reader, self.training.batch_tokens, self.training.seed)
        self.dev_batches = self._eval_batches(self.dev_files)
        self.test_batches = self._eval_batches(self.test_files)
        self.say(
            f"biLM {sum(p.numel() for p in self.objective.bilm.parameters()):,} parameters, softmax "
            f"{sum(p.numel() for p in self.objective.softmax.parameters()):,} ({self.training.softmax}), "
            f"vocab {len(self.vocab):,}, device {context.device}, processes {context.world_size}, "
            f"threads {torch.get_num_threads()}"
        )

    # ------------------------------------------------------------------ setup

    def say(self, message: str) -> None:
        if self.context.is_main:
            self.bar.write(message)

    def _find_text_files(self) -> None:
        paths = self.config.paths
        if not paths.train:
            raise PretrainConfigError(f"{self.config.source}: [paths] train is not set. Pass --paths.train FILE_OR_GLOB.")
        self.train_files, self.dev_files, self.test_files = (
            expand_text_paths(getattr(paths, name), f"[paths] {name}", f"pass --paths.{name} PATH")
            for name in ("train", "dev", "test")
        )

    def _build_objective(self) -> BiLMObjective:
        """The biLM (fresh, or ``init_from`` to fine-tune) and a fresh softmax, on this process's
        device with the main process's initial weights."""
        training = self.training
        if training.init_from:
            bilm = load_for_fine_tuning(training.init_from, training.dropout)
            self.say(f"fine-tuning from {training.init_from} (its options.json replaces [model])")
        else:
            assert self.config.model is not None
            bilm = build_bilm(self.config.model, training.dropout)
        softmax = build_softmax(
            training.softmax,
            bilm.options.projection_dim,
            len(self.vocab),
            training.n_samples,
            training.adaptive_cutoffs,
            training.adaptive_div_value,
        )
        objective = BiLMObjective(bilm, softmax, training.dropout, training.precision).to(self.context.device)
        broadcast_module(self.context, objective)
        return objective

    def _set_threads(self, threads: Optional[int]) -> None:
        if threads is None and self.context.enabled and self.context.device.type == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.context.world_size))
            threads = max(1, (os.cpu_count() or 1) // local)
        if threads is not None:
            torch.set_num_threads(threads)

    def _prepare_output_dir(self) -> None:
        """Check OUTPUT_DIR on every process before any writes, then let the main one set it up."""
        out = self.output_dir
        if out.exists() and not out.is_dir():
            raise OutputDirError(
                f"OUTPUT_DIR {out} is a file, not a directory. Pass the path of a directory (it is created if missing)."
            )
        if self.resume and self.overwrite:
            raise OutputDirError(
                f"--resume and --overwrite contradict each other for {out}: pass --resume to continue the run "
                f"there, or --overwrite to start a new one."
            )
        if self.resume:
            if not list_checkpoints(out):
                raise CheckpointError(no_checkpoint_message(out))
        else:
            self._check_fresh_start()
        barrier(self.context)
        if self.context.is_main:
            try:
                out.mkdir(parents=True, exist_ok=True)
                remove_orphans(out, keep=may_hold_checkpoint)
                if self.overwrite:
                    self._remove_previous_outputs()
                write_text_atomic(out / "config.cfg", self.config.to_config().to_str())
            except OSError as err:
                then = (
                    "then resume again with --resume: its checkpoints are untouched"
                    if self.resume
                    else "or pass another directory"
                )
                raise OutputDirError(
                    f"Cannot write to OUTPUT_DIR {out}: {err}. Check its permissions and free space, {then}."
                ) from None
        barrier(self.context)

    def _check_fresh_start(self) -> None:
        out = self.output_dir
        entries = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
        if entries and not self.overwrite:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            has_checkpoint = bool(list_checkpoints(out))
            raise OutputDirError(
                f"OUTPUT_DIR {out} is not empty ({shown}). "
                + ("It holds a checkpoint: pass --resume to continue that run, or " if has_checkpoint else "Pass ")
                + "--overwrite to start a new run there (it replaces config.cfg, vocab.txt, log.jsonl, metrics.json, "
                "checkpoints and the model files of model-best/ and model-last/, and keeps every other file), "
                "or choose a new OUTPUT_DIR."
            )
        for name in OWN_FILES:
            if (out / name).is_dir():
                raise OutputDirError(
                    f"{out / name} is a directory, but pretraining writes a file there. Move it away or choose a new OUTPUT_DIR."
                )
        for name in MODEL_DIRS:
            if (out / name).exists() and not (out / name).is_dir():
                raise OutputDirError(
                    f"{out / name} is a file, but pretraining writes a model folder there. Move it away or choose a new OUTPUT_DIR."
                )

    def _remove_previous_outputs(self) -> None:
        """--overwrite: delete what an earlier run wrote here (so runs never mix), nothing else."""
        out = self.output_dir
        removed = prune_checkpoints(out, keep=[])
        for name in ("log.jsonl", "metrics.json"):
            (out / name).unlink(missing_ok=True)
        for name in MODEL_DIRS:
            folder = out / name
            if folder.is_dir():
                for file_name in MODEL_FILES:
                    (folder / file_name).unlink(missing_ok=True)
                if not any(folder.iterdir()):
                    folder.rmdir()
        if removed:
            self.say(f"--overwrite: removed the earlier run's checkpoints ({', '.join(path.name for path in removed)})")

    def _vocabulary(self) -> LmVocab:
        path = self.output_dir / "vocab.txt"
        if self.resume:
            if not path.is_file():
                raise CheckpointError(f"Cannot resume: {path} is missing. Start without --resume in a new OUTPUT_DIR.")
            return LmVocab.load(path)
        if self.context.is_main:
            if self.config.vocab.path:
                vocab = LmVocab.load(self.config.vocab.path)
                vocab = LmVocab(vocab.words[: self.config.vocab.size], source=self.config.vocab.path)
            else:
                start = time.perf_counter()
                cfg = self.config.vocab
                vocab = LmVocab.build(self.reader.sentences(self.train_files), cfg.size, cfg.min_count, cfg.max_tokens_for_vocab)
                self.say(f"vocab: {len(vocab):,} words counted in {time.perf_counter() - start:.1f}s")
            with self._writing(path):
                vocab.save(path)
        barrier(self.context)
        return LmVocab.load(path)

    def _eval_batches(self, files: List[Path]) -> List[LmBatch]:
        if not files:
            return []
        sentences = read_eval_sentences(files, self.reader, self.training.eval_max_sentences)
        if not sentences:
            raise PretrainDataError(f"The held-out files {', '.join(map(str, files))} yield no sentences; check [data] format.")
        groups = group_by_length(sentences, self.training.batch_tokens)
        max_chars = self.options.max_characters_per_token
        mine = groups[self.context.rank :: self.context.world_size]
        return [make_batch(group, self.vocab, max_chars).to(self.context.device) for group in mine]

    def run_settings(self) -> Dict[str, Any]:
        """What a checkpoint records so that resuming can refuse a different data stream or model."""
        resolved = self.config.resolved
        settings: Dict[str, Any] = {}
        keys = list(RUN_SETTINGS)
        if self.training.init_from is None:
            keys += [f"model.{block}.{key}" for block in ("lstm", "char_cnn") for key in resolved["model"][block]]
        for dotted in keys:
            node: Any = resolved
            for part in dotted.split("."):
                node = node[part]
            settings[dotted] = node
        settings["paths.train"] = self.config.paths.train
        settings["train_files"] = [[path.name, path.stat().st_size] for path in self.train_files]
        return settings

    def _check_run_settings(self, where: Path, recorded: Any) -> None:
        if not isinstance(recorded, dict):
            raise CheckpointError(
                f'Cannot resume from {where}: its {where / "meta.json"} has no "run" settings to check the data '
                f"stream and the model against (it was not written by this version of spacy-elmo). Start a new run "
                f"in a new OUTPUT_DIR, or here with --overwrite."
            )
        current = self.run_settings()
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
                f"--training.init_from {self.output_dir / 'model-last'}."
            )

    def _restore(self) -> None:
        found = load_latest_checkpoint(self.output_dir)
        for path, reason in found.skipped:
            self.say(f"warning: skipping checkpoint {path.name}: {reason}; resuming from the previous one, {found.path.name}")
        checkpoint, where = found.state, found.path
        self._check_run_settings(where, found.meta.get("run"))
        fix = "Resume with the config of the original run, or start without --resume in a new OUTPUT_DIR."
        if checkpoint["vocab_size"] != len(self.vocab):
            raise CheckpointError(
                f"Cannot resume from {where}: it was trained with a vocabulary of {checkpoint['vocab_size']:,} words and "
                f"{self.output_dir / 'vocab.txt'} has {len(self.vocab):,}. Put back the vocab.txt of that run, or start "
                f"without --resume in a new OUTPUT_DIR."
            )
        stored = optimizer_kind(checkpoint["optimizer"])
        if stored not in (None, self.training.optimizer):
            raise CheckpointError(
                f"Cannot resume from {where}: it was trained with [training] optimizer = {stored!r} and the config "
                f"now says {self.training.optimizer!r}; their states do not carry over. Resume with --training.optimizer "
                f"{stored}, or start a new OUTPUT_DIR with --training.init_from {self.output_dir / 'model-last'}."
            )
        try:
            self.objective.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(
                f"Checkpoint {where} does not match this config (architecture, softmax, vocabulary or "
                f"init_from differ): {str(err).splitlines()[0][:300]}. {fix}"
            ) from None
        self.state = found.counters
        self.state.last_checkpoint_step = self.state.step
        barrier(self.context)  # every process has read it before the main one renames it
        if self.context.is_main:
            where = promote_checkpoint(where, self.state.step)
        self.checkpoints = [where]
        rng_states = checkpoint["rng"]
        if checkpoint["world_size"] == self.context.world_size:
            set_rng_state(rng_states[self.context.rank])
        else:
            self.say(
                f"note: the checkpoint was written by {checkpoint['world_size']} process(es), this run has "
                f"{self.context.world_size}; data position is kept, random streams restart"
            )
        self.log.truncate_after(self.state.step)
        self.log.write("resume", step=self.state.step, tokens=self.state.tokens)
        self.say(f"resumed from {where} at step {self.state.step:,} ({self.state.tokens:,} tokens)")

    # ------------------------------------------------------------------ loop

    def run(self) -> PretrainResult:
        self.bar = ProgressBar(self.training, enabled=self.show_progress)
        try:
            with self.stop_request:
                return self._run()
        finally:
            self.bar.close()

    def _acknowledge_stop(self) -> None:
        by = self.stop_request.by
        self.say(f"{by}: stopping after step {self.state.step + 1:,} with a checkpoint ({by} again aborts without one)")

    def _run(self) -> PretrainResult:
        training = self.training
        if not self.resume and self.dev_batches:
            self._evaluate_dev()
        batches = self.stream.iterate(self.state.epoch, self.state.position, self.context.rank, self.context.world_size)
        session_start = time.perf_counter()
        wall_base = self.state.wall_seconds
        interval = {"loss": 0.0, "loss_forward": 0.0, "loss_backward": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0}
        stop = interrupted = False
        while not stop and not interrupted and not self._budget_reached():
            step_start = time.perf_counter()
            epoch, position, sentences = next(batches)
            if training.max_epochs is not None and epoch >= training.max_epochs:
                break
            stats, stop, interrupted = self._train_step(sentences)
            self.state.epoch, self.state.position = epoch, position
            seconds = time.perf_counter() - step_start
            self.state.train_seconds += seconds
            self.state.wall_seconds = wall_base + time.perf_counter() - session_start
            for key in ("loss", "loss_forward", "loss_backward"):
                interval[key] += stats[key]
            interval["steps"] += 1
            interval["tokens"] += stats["tokens"]
            interval["seconds"] += seconds
            step = self.state.step
            if step % training.log_every == 0:
                self._log_interval(interval)
                interval = {key: type(value)() for key, value in interval.items()}
            if step % training.eval_every == 0 and self.dev_batches:
                self._evaluate_dev()
            if step % training.checkpoint_every == 0:
                self._checkpoint()
        if interval["steps"]:
            self._log_interval(interval)
        self.state.wall_seconds = wall_base + time.perf_counter() - session_start
        if interrupted:
            self._stop_interrupted()
        return self._finish()

    def _stop_interrupted(self) -> None:
        if self.state.last_checkpoint_step != self.state.step:
            self._checkpoint()
        self.log.write("interrupted", step=self.state.step, tokens=self.state.tokens)
        raise TrainingInterrupted(
            f"stopped by {self.stop_request.by or 'Ctrl-C or SIGTERM'} after step {self.state.step:,}; checkpoint {self.checkpoints[-1]} saved, "
            f"continue with the same command plus --resume"
        )

    def _budget_reached(self) -> bool:
        training, state = self.training, self.state
        # The time limit arrives through the per-step vote of rank 0, so that every process stops together.
        return (training.max_steps is not None and state.step >= training.max_steps) or (
            training.max_tokens is not None and state.tokens >= training.max_tokens
        )

    def _train_step(self, sentences: List[List[str]]) -> Tuple[Dict[str, float], bool, bool]:
        """One optimiser step; also returns whether the time limit is reached and whether Ctrl-C or SIGTERM asked to stop.

        Both flags go through the all-reduce with the loss, so that every process stops after the same step.
        """
        step_index = self.state.step
        trainable = trainable_blocks(self.training, self.options.n_layers, step_index)
        if trainable != self.trainable:
            apply_freezing(self.objective, trainable)
            self.trainable = trainable
            self.log.write("trainable", step=step_index, blocks=trainable)
        rate = scheduled_learn_rate(self.training, step_index, self.state.tokens)
        set_learn_rate(self.optimizer, rate)
        batch = make_batch(sentences, self.vocab, self.options.max_characters_per_token).to(self.context.device)
        self.objective.train()
        output = self.objective(batch)
        over_time = (
            self.context.is_main
            and self.training.max_minutes is not None
            and self.state.train_seconds >= 60 * self.training.max_minutes
        )
        totals = torch.tensor(
            [
                output.loss.item(),
                output.loss_forward.item(),
                output.loss_backward.item(),
                batch.n_words,
                float(over_time),
                float(self.stop_request.requested),
            ],
            dtype=torch.float64,
        )
        all_reduce_sum(self.context, totals)
        world = self.context.world_size
        loss = float(totals[0]) / world
        if not math.isfinite(loss):
            self._diverged(f"the loss is {loss}", rate)
        self.optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        params = [p for p in self.objective.parameters() if p.requires_grad]
        average_gradients(self.context, params)
        clip = grad_clip(self.training)
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            if not math.isfinite(norm):
                self._diverged(f"the gradient norm is {norm}", rate)
        self.optimizer.step()
        self.state.step += 1
        self.state.tokens += int(totals[3])
        stats = {
            "loss": loss,
            "loss_forward": float(totals[1]) / world,
            "loss_backward": float(totals[2]) / world,
            "tokens": int(totals[3]),
            "lr": rate,
        }
        self._last_lr = rate
        # A lone process also honours a stop request that arrived after the all-reduce, at the end of this step.
        interrupted = bool(totals[5] > 0) or (world == 1 and self.stop_request.requested)
        return stats, bool(totals[4] > 0), interrupted

    def _diverged(self, what: str, rate: float) -> None:
        last = self.state.last_checkpoint_step
        kept = (
            f"The last good checkpoint ({self.checkpoints[-1]}, step {last}) is kept: resume from it with "
            f"--resume and the lower values."
            if last is not None and self.checkpoints
            else "No checkpoint was written yet: start again with the lower values."
        )
        self.log.write("diverged", step=self.state.step + 1, reason=what)
        raise TrainingDivergedError(
            f"Training diverged at step {self.state.step + 1}: {what}. Lower [training] learn_rate "
            f"(now {rate:g}) or set a lower grad_clip (now {grad_clip(self.training):g}, 0 = off). {kept}"
        )

    def _log_interval(self, interval: Dict[str, float]) -> None:
        steps = max(1, interval["steps"])
        loss = interval["loss"] / steps
        tokens_per_s = interval["tokens"] / interval["seconds"] if interval["seconds"] > 0 else 0.0
        self.log.write(
            "train",
            step=self.state.step,
            epoch=self.state.epoch,
            tokens=self.state.tokens,
            tokens_per_s=tokens_per_s,
            loss=loss,
            loss_forward=interval["loss_forward"] / steps,
            loss_backward=interval["loss_backward"] / steps,
            lr=self._last_lr,
            elapsed=self.state.wall_seconds,
        )
        self.bar.update(self.state.step, self.state.tokens, self.state.train_seconds, tokens_per_s, loss)

    # ------------------------------------------------------------------ evaluation, checkpoints, exports

    def _evaluate(self, batches: List[LmBatch]) -> Dict[str, Any]:
        sums = self.objective.evaluation_sums(batches)
        return perplexities(all_reduce_sum(self.context, sums))

    def _evaluate_dev(self) -> Dict[str, Any]:
        start = time.perf_counter()
        result = self._evaluate(self.dev_batches)
        self.log.write("eval", step=self.state.step, tokens=self.state.tokens, dev=result, seconds=time.perf_counter() - start)
        self.bar.dev_ppl = result.get("ppl")
        self.say(
            f"step {self.state.step:,}: dev ppl {result['ppl']:.2f} (forward {result['ppl_forward']:.2f}, "
            f"backward {result['ppl_backward']:.2f}, oov {result['oov_rate']:.2%})"
        )
        self._last_dev = (self.state.step, result)
        if self.state.step > 0 and (self.state.best_ppl is None or result["ppl"] < self.state.best_ppl):
            self.state.best_ppl, self.state.best_step = result["ppl"], self.state.step
            self._export("model-best")
        return result

    def _export(self, name: str) -> None:
        """Replace options.json and weights.hdf5 of ``OUTPUT_DIR/name``, each atomically; other files there stay."""
        if not self.context.is_main:
            return
        target = self.output_dir / name
        data = self.objective.bilm.to_bytes()
        with self._writing(target):
            target.mkdir(exist_ok=True)
            write_bytes_atomic(target / "weights.hdf5", data["weights"])
            write_bytes_atomic(target / "options.json", data["options"])

    @contextmanager
    def _writing(self, target: Path) -> Iterator[None]:
        """Turn a failed write (disk full, permissions) into an error that names the file and says how to continue."""
        try:
            yield
        except OSError as err:
            if self.checkpoints:
                how = f"the newest complete checkpoint, {self.checkpoints[-1]}, is intact: continue with --resume."
            else:
                how = "no checkpoint was written yet: start again with --overwrite."
            raise OutputDirError(
                f"Cannot write {target}: {err.strerror or err}. Free disk space or fix the permissions of {self.output_dir}; {how}"
            ) from None

    def _checkpoint(self) -> None:
        rng_states = gather_objects(self.context, rng_state())
        self.state.last_checkpoint_step = self.state.step
        path = checkpoint_path(self.output_dir, self.state.step)
        if self.context.is_main:
            with self._writing(path):
                save_checkpoint(
                    self.output_dir,
                    self.state,
                    {
                        "model": self.objective.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "rng": rng_states,
                        "world_size": self.context.world_size,
                        "vocab_size": len(self.vocab),
                    },
                    {
                        "step": self.state.step,
                        "tokens": self.state.tokens,
                        "epoch": self.state.epoch,
                        "batches_consumed_in_epoch": self.state.position,
                        "world_size": self.context.world_size,
                        "best_dev_ppl": self.state.best_ppl,
                        "run": self.run_settings(),
                    },
                )
        self.checkpoints = [*self.checkpoints, path][-KEPT_CHECKPOINTS:]
        if self.context.is_main:
            prune_checkpoints(self.output_dir, keep=self.checkpoints)
        barrier(self.context)

    def _finish(self) -> PretrainResult:
        state = self.state
        dev = None
        if self.dev_batches:
            last = self._last_dev
            dev = last[1] if last is not None and last[0] == state.step else self._evaluate_dev()
        test = self._evaluate(self.test_batches) if self.test_batches else None
        if test is not None:
            self.log.write("eval", step=state.step, tokens=state.tokens, test=test)
            self.say(f"test ppl {test['ppl']:.2f} (forward {test['ppl_forward']:.2f}, backward {test['ppl_backward']:.2f})")
        self._export("model-last")
        if state.best_step is None and self.context.is_main:
            self._export("model-best")
        if state.last_checkpoint_step != state.step:
            self._checkpoint()
        checksums = gather_objects(self.context, parameter_checksum(self.objective))
        self.log.write("replicas", step=state.step, checksums=checksums, identical=len(set(checksums)) == 1)
        metrics = {
            "steps": state.step,
            "tokens": state.tokens,
            "epochs": state.epoch,
            "wall_seconds": state.wall_seconds,
            "train_seconds": state.train_seconds,
            "tokens_per_s": state.tokens / state.train_seconds if state.train_seconds > 0 else 0.0,
            "processes": self.context.world_size,
            "device": str(self.context.device),
            "vocab_size": len(self.vocab),
            "parameters": {
                "bilm": sum(p.numel() for p in self.objective.bilm.parameters()),
                "softmax": sum(p.numel() for p in self.objective.softmax.parameters()),
            },
            "dev": dev,
            "best_dev": {"step": state.best_step, "ppl": state.best_ppl} if state.best_step is not None else None,
            "test": test,
            "perplexity_counts": "per direction, every word plus </S> (forward) or <S> (backward); OOV targets count as <UNK>",
            "options": self.options.to_dict(),
            "config": self.config.resolved,
        }
        if self.context.is_main:
            with self._writing(self.output_dir / "metrics.json"):
                write_text_atomic(self.output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        self.log.write("end", step=state.step, tokens=state.tokens, tokens_per_s=metrics["tokens_per_s"])
        self.say(
            f"done: {state.step:,} steps, {state.tokens:,} tokens, {metrics['tokens_per_s']:,.0f} tokens/s; "
            f"models in {self.output_dir / 'model-last'} and {self.output_dir / 'model-best'}"
        )
        barrier(self.context)
        return PretrainResult(self.output_dir, self.objective, self.vocab, metrics)


def _seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _describe_files(files: List[List[Any]]) -> str:
    shown = ", ".join(f"{name} ({size:,} bytes)" for name, size in files[:3])
    return shown + (f" and {len(files) - 3} more" if len(files) > 3 else "")
