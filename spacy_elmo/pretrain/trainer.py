"""The pretraining run: setup, the training loop, evaluation and checkpoints.

Outputs in OUTPUT_DIR (:mod:`.output_dir`): ``config.cfg`` (the effective config),
``vocab.txt``, ``log.jsonl``, ``checkpoint-<step>/`` (the newest two), ``model-last/`` and
``model-best/`` (``options.json`` + ``weights.hdf5`` in the published layout, loadable by the
``elmo`` component) and ``metrics.json``. Resuming checks the run's settings
(:mod:`.run_settings`).
"""

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..bilm.options import ElmoOptions
from ..files import PathLike, write_text_atomic
from .checkpoint import (
    TrainState,
    checkpoint_path,
    load_latest_checkpoint,
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
    scheduled_learn_rate,
    set_learn_rate,
    trainable_blocks,
)
from .output_dir import check_output_dir, export_model, set_up_output_dir, write_errors
from .progress import ProgressBar, RunLog
from .run_settings import check_run_settings, check_vocabulary_and_optimizer, run_settings
from .vocab import LmVocab

KEPT_CHECKPOINTS = 2


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
        check_output_dir(self.output_dir, resume=self.resume, overwrite=self.overwrite)
        barrier(self.context)
        if self.context.is_main:
            set_up_output_dir(
                self.output_dir,
                self.config.to_config().to_str(),
                resume=self.resume,
                overwrite=self.overwrite,
                say=self.say,
            )
        barrier(self.context)

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
        return run_settings(self.config, self.train_files)

    def _restore(self) -> None:
        found = load_latest_checkpoint(self.output_dir)
        for path, reason in found.skipped:
            self.say(f"warning: skipping checkpoint {path.name}: {reason}; resuming from the previous one, {found.path.name}")
        checkpoint, where = found.state, found.path
        check_run_settings(where, found.meta.get("run"), self.run_settings(), self.output_dir)
        check_vocabulary_and_optimizer(where, checkpoint, len(self.vocab), self.training.optimizer, self.output_dir)
        fix = "Resume with the config of the original run, or start without --resume in a new OUTPUT_DIR."
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
        """Write the biLM to ``OUTPUT_DIR/name`` (:func:`.output_dir.export_model`), on the main process."""
        if not self.context.is_main:
            return
        target = self.output_dir / name
        with self._writing(target):
            export_model(target, self.objective.bilm)

    def _writing(self, target: Path) -> ContextManager[None]:
        """Turn a failed write of ``target`` into an error that says how to continue (see :func:`.output_dir.write_errors`)."""
        return write_errors(target, self.output_dir, self.checkpoints[-1] if self.checkpoints else None)

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
