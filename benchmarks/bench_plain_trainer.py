"""Pretraining throughput of our trainer against a plain PyTorch trainer of the same biLM.

The plain trainer is what one writes with stock ``torch.nn`` layers: ``nn.Embedding`` +
``nn.Conv1d`` char CNN run on every token slot of the batch (boundaries and padding
included, 50 characters each, as AllenNLP does), highway layers as ``nn.Linear``, one
``nn.LSTM(proj_size=P)`` per direction and layer (residual connections and input dropout
between layers as ours; no cell or projection clipping, which ``nn.LSTM`` cannot do),
variable lengths through ``pack_padded_sequence``, the backward direction by reversing every
row within its length, ``nn.AdaptiveLogSoftmaxWithLoss`` with the same cutoffs, Adam and the
same global-norm clip. Ours is :class:`spacy_elmo.pretrain.objective.BiLMObjective` with the
optimiser of ``build_optimizer``, stepped as the trainer steps it.

Both see the same batches (``BatchStream`` of the same text, 4,096 token slots each, the
trainer's ``make_batch`` inside the timed step) and the same loss (forward and backward LM,
mean of the two). Every row is one trainer and one precision; rows take turns in
``--rounds`` rounds, so that load from other processes hits all of them alike. Reported:
words per second of wall time and per second of CPU time (``time.process_time``; with one
thread, the better measure on shared cores), and each row against the plain fp32 trainer of
its architecture. The first step of every row is a warm-up and not counted. Data as in
``bench_pretrain.py`` (tokenised Wikipedia, cached in the temporary directory).

    python benchmarks/bench_plain_trainer.py --threads 1                 # 60 s per row
    python benchmarks/bench_plain_trainer.py --threads 1 --archs small-cfg --seconds 30
"""

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench_pretrain import REPO, VOCAB_SIZE, arch_overrides, prepare_data, shared_dir
from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.bilm.training_precision import training_autocast
from spacy_elmo.chars import BOS_TOKEN, EOS_TOKEN, encode_tokens
from spacy_elmo.memory import keep_freed_memory
from spacy_elmo.pretrain.config import load_config
from spacy_elmo.pretrain.data import BatchStream, LmBatch, SentenceReader, make_batch
from spacy_elmo.pretrain.model import build_bilm
from spacy_elmo.pretrain.objective import BiLMObjective, build_softmax
from spacy_elmo.pretrain.optim import build_optimizer
from spacy_elmo.pretrain.vocab import LmVocab

CLIP = 1.0


class PlainBiLM(nn.Module):
    """The biLM and its loss from stock layers (see the module docstring)."""

    def __init__(self, options: ElmoOptions, n_words: int, cutoffs: List[int], div_value: float, dropout: float) -> None:
        super().__init__()
        n_filters, P, H = options.n_filters, options.projection_dim, options.lstm_dim
        self.embedding = nn.Embedding(262, options.char_embedding_dim)
        self.convolutions = nn.ModuleList(nn.Conv1d(options.char_embedding_dim, n, w) for w, n in options.filters)
        self.highways = nn.ModuleList(nn.Linear(n_filters, 2 * n_filters) for _ in range(options.n_highway))
        self.projection = nn.Linear(n_filters, P)
        self.forward_lstms = nn.ModuleList(nn.LSTM(P, H, proj_size=P, batch_first=True) for _ in range(options.n_layers))
        self.backward_lstms = nn.ModuleList(nn.LSTM(P, H, proj_size=P, batch_first=True) for _ in range(options.n_layers))
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(P, n_words, cutoffs, div_value=div_value)
        self.dropout = dropout
        self.register_buffer(
            "boundaries", torch.from_numpy(encode_tokens([BOS_TOKEN, EOS_TOKEN], options.max_characters_per_token))
        )

    def token_vectors(self, chars: torch.Tensor) -> torch.Tensor:
        B, S, C = chars.shape
        x = self.embedding(chars.reshape(B * S, C)).transpose(1, 2)
        x = torch.cat([torch.relu(conv(x).max(dim=2).values) for conv in self.convolutions], dim=1)
        for highway in self.highways:
            gate, transform = highway(x).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            x = gate * torch.relu(transform) + (1 - gate) * x
        return self.projection(x).view(B, S, -1)

    def stack(self, lstms: nn.ModuleList, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        for index, lstm in enumerate(lstms):
            layer_input = F.dropout(x, self.dropout, self.training)
            packed = pack_padded_sequence(layer_input, lengths, batch_first=True, enforce_sorted=False)
            output, _ = lstm(packed)
            output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
            x = output + x if index > 0 else output
        return x

    def forward(self, chars: torch.Tensor, lengths: torch.Tensor, word_ids: torch.Tensor, precision: str) -> torch.Tensor:
        S = chars.shape[1]
        steps = torch.arange(S).unsqueeze(0)
        reverse = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)  # an involution
        with training_autocast(precision, chars.device):
            x = self.token_vectors(chars)
            forward_top = self.stack(self.forward_lstms, x, lengths)
            reversed_x = x.gather(1, reverse.unsqueeze(-1).expand_as(x))
            backward_top = self.stack(self.backward_lstms, reversed_x, lengths)
            backward_top = backward_top.gather(1, reverse.unsqueeze(-1).expand_as(backward_top))
        forward_top = F.dropout(forward_top.float(), self.dropout, self.training)
        backward_top = F.dropout(backward_top.float(), self.dropout, self.training)
        real = word_ids[:, 1:] >= 0
        hidden = torch.cat([forward_top[:, :-1][real], backward_top[:, 1:][real]])
        targets = torch.cat([word_ids[:, 1:][real], word_ids[:, :-1][real]])
        nll = -self.softmax(hidden, targets).output
        n = int(real.sum())
        return (nll[:n].mean() + nll[n:].mean()) / 2


def plain_inputs(batch: LmBatch, boundaries: torch.Tensor) -> torch.Tensor:
    """Character ids of every slot ``(B, T + 2, C)``: ``<S>``, the tokens, ``</S>``, padding (zeros)."""
    B, T = batch.token_index.shape
    table = torch.cat([boundaries, batch.char_ids, torch.zeros_like(boundaries[:1])])
    slots = torch.full((B, T + 2), table.shape[0] - 1, dtype=torch.long)
    slots[:, 1 : T + 1] = batch.token_index + 2
    slots[:, 0] = 0
    slots[torch.arange(B), batch.lengths + 1] = 1
    positions = torch.arange(T + 2)
    slots = torch.where(positions.unsqueeze(0) > (batch.lengths + 1).unsqueeze(1), table.shape[0] - 1, slots)
    return table[slots]


class Row:
    """One trainer at one precision: a step function and its counters."""

    def __init__(self, arch: str, trainer: str, precision: str, step: Callable[[List[List[str]]], int]) -> None:
        self.arch, self.trainer, self.precision, self.step = arch, trainer, precision, step
        self.position = 0
        self.steps = self.words = 0
        self.wall = self.cpu = 0.0
        self.warm = False


def build_rows(
    arch: str, precisions: List[str], plain_precisions: List[str], data: Dict[str, Path], shared: Path, vocab: LmVocab
) -> List[Row]:
    overrides = {
        "paths.train": str(data["train"]),
        "data.format": "sentences",
        "vocab.path": str(data["vocab"]),
        **arch_overrides(arch, shared),
    }
    config = load_config(REPO / "configs" / "pretrain_small.cfg", overrides)
    training, options = config.training, config.model
    assert options is not None
    rows = []
    for precision in precisions:
        torch.manual_seed(0)
        softmax = build_softmax(
            training.softmax,
            options.projection_dim,
            len(vocab),
            training.n_samples,
            training.adaptive_cutoffs,
            training.adaptive_div_value,
        )
        objective = BiLMObjective(build_bilm(options, training.dropout), softmax, training.dropout, precision).train()
        optimizer = build_optimizer(objective, training)

        def ours(sentences, objective=objective, optimizer=optimizer):
            batch = make_batch(sentences, vocab, options.max_characters_per_token)
            output = objective(batch)
            if not np.isfinite(output.loss.item()):
                raise SystemExit("ours: the loss is not finite")
            optimizer.zero_grad(set_to_none=True)
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in objective.parameters() if p.requires_grad], CLIP)
            optimizer.step()
            return batch.n_words

        rows.append(Row(arch, "ours", precision, ours))
    for precision in plain_precisions:
        torch.manual_seed(0)
        model = PlainBiLM(options, len(vocab), training.adaptive_cutoffs, training.adaptive_div_value, training.dropout).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=training.learn_rate or 1e-3)

        def plain(sentences, model=model, optimizer=optimizer, precision=precision):
            batch = make_batch(sentences, vocab, options.max_characters_per_token)
            loss = model(plain_inputs(batch, model.boundaries), batch.lengths + 2, batch.word_ids, precision)
            if not np.isfinite(loss.item()):
                raise SystemExit("plain: the loss is not finite")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            return batch.n_words

        rows.append(Row(arch, "plain", precision, plain))
    return rows


def batches(data: Dict[str, Path]) -> Iterator[List[List[str]]]:
    config = load_config(REPO / "configs" / "pretrain_small.cfg", {"paths.train": str(data["train"]), "data.format": "sentences"})
    stream = BatchStream([data["train"]], SentenceReader(config.data), config.training.batch_tokens, config.training.seed)
    for _, _, sentences in stream.iterate(0, 0):
        yield sentences


def run_turn(row: Row, seconds: float, pool: List[List[List[str]]], source: Iterator[List[List[str]]]) -> None:
    """Train ``row`` for about ``seconds`` of wall time (at least one step) on its next batches."""
    start = time.perf_counter()
    while True:
        while row.position >= len(pool):
            pool.append(next(source))
        sentences = pool[row.position]
        row.position += 1
        wall, cpu = time.perf_counter(), time.process_time()
        words = row.step(sentences)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if row.warm:
            row.steps, row.words, row.wall, row.cpu = row.steps + 1, row.words + words, row.wall + wall, row.cpu + cpu
        row.warm = True
        if time.perf_counter() - start >= seconds:
            return


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--archs", default="small-cfg,published-small", help="small-cfg (configs/pretrain_small.cfg) and/or published-small"
    )
    parser.add_argument("--precisions", default="fp32,bf16", help="our trainer's precisions")
    parser.add_argument("--plain-precisions", default="fp32", help="the plain trainer's precisions (fp32, bf16)")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per row, all rounds together")
    parser.add_argument("--rounds", type=int, default=3, help="turns per row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--shared", default=None, help="shared data folder (default $SPACY_ELMO_SHARED or ../shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    shared = shared_dir(args.shared)
    data = prepare_data(shared)
    vocab = LmVocab.load(data["vocab"])
    load_before = os.getloadavg()[0]
    source = batches(data)
    pool: List[List[List[str]]] = []
    rows: List[Row] = []
    for arch in args.archs.split(","):
        arch_rows = build_rows(arch, args.precisions.split(","), args.plain_precisions.split(","), data, shared, vocab)
        for _ in range(args.rounds):
            for row in arch_rows:
                run_turn(row, args.seconds / args.rounds, pool, source)
        rows += arch_rows

    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "unknown CPU"
    print(f"# Pretraining throughput: ours against a plain PyTorch trainer ({datetime.date.today()})\n")
    print(f"- machine: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; {args.threads} thread(s); commit {commit()}")
    print(f"- load average (other processes included) before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}")
    print(
        f"- about {args.seconds:.0f} s of training per row in {args.rounds} turns; batches of 4,096 token slots; vocabulary {VOCAB_SIZE:,}; adaptive softmax"
    )
    print(f"- command: python benchmarks/bench_plain_trainer.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| architecture | trainer | precision | steps | words | words/s (wall) | words/s (CPU) | × plain fp32 (CPU) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        base = next((r for r in rows if r.arch == row.arch and r.trainer == "plain" and r.precision == "fp32"), None)
        rate = row.words / row.cpu if row.cpu else float("nan")
        ratio = f"{rate / (base.words / base.cpu):.2f}" if base is not None and base.cpu else "–"
        print(
            f"| {row.arch} | {row.trainer} | {row.precision} | {row.steps} | {row.words:,} | "
            f"{row.words / row.wall if row.wall else float('nan'):,.0f} | {rate:,.0f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
