"""The bidirectional language-model objective on stateless sentences, and exact perplexity.

Every sentence starts from zero LSTM state, the regime the ``elmo`` component runs at
inference. A sentence ``w1 … wn`` occupies slots ``<S>, w1 … wn, </S>`` (0 … n+1):

* forward: the top forward output at slot ``t`` (0 … n) predicts the token at ``t + 1``,
  i.e. ``w1 … wn, </S>``;
* backward: the top backward output at slot ``t`` (1 … n+1) predicts the token at ``t - 1``,
  i.e. ``<S>, w1 … wn``.

So each direction makes ``n + 1`` predictions per sentence. Both share one softmax (as in
bilm-tf) fed with the top LSTM outputs after dropout. The loss is the mean of the forward
and the backward mean token losses. Perplexity always uses the full softmax: ``exp`` of the
mean negative log-likelihood over exactly those predictions; a target outside the
vocabulary counts as a prediction of ``<UNK>``, and the share of such words among
``w1 … wn`` is reported as ``oov_rate``.
"""

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..bilm.model import ElmoBiLM
from ..bilm.training_precision import training_autocast
from .data import LmBatch

EVAL_CHUNK_ROWS = 2048


class SampledSoftmax(nn.Module):
    """bilm-tf's sampled softmax: shared log-uniform negatives, logQ correction, full softmax in eval.

    Per batch, ``n_samples`` candidates are drawn with replacement from the log-uniform
    (Zipfian) distribution ``Q(k) = log((k + 2) / (k + 1)) / log(V + 1)`` over the
    frequency-sorted vocabulary. Every logit (true and sampled) is corrected by
    ``- log(n_samples · Q(k))``, and a sampled candidate equal to a row's target is removed
    for that row (TensorFlow's ``remove_accidental_hits``).
    """

    def __init__(self, dim: int, n_classes: int, n_samples: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.n_samples = n_samples
        self.weight = nn.Parameter(torch.randn(n_classes, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(n_classes))

    def _log_expected_count(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.to(torch.float64)
        log_q = torch.log(torch.log1p(1.0 / (ids + 1.0)) / math.log(self.n_classes + 1.0))
        return (log_q + math.log(self.n_samples)).to(self.weight.dtype)

    def sample(self) -> torch.Tensor:
        """``n_samples`` candidate ids, drawn with torch's global generator."""
        u = torch.rand(self.n_samples, dtype=torch.float64)
        ids = torch.exp(u * math.log(self.n_classes + 1.0)).floor().long() - 1
        return ids.clamp_(0, self.n_classes - 1).to(self.weight.device)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row negative log-likelihood: sampled while training, exact in eval mode."""
        if not self.training:
            return self.full_nll(hidden, targets)
        samples = self.sample()
        true_logits = (hidden * self.weight[targets]).sum(-1) + self.bias[targets] - self._log_expected_count(targets)
        sampled_logits = torch.addmm(self.bias[samples], hidden, self.weight[samples].t()) - self._log_expected_count(samples)
        sampled_logits = sampled_logits.masked_fill(samples.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        logits = torch.cat([true_logits.unsqueeze(1), sampled_logits], dim=1)
        return torch.logsumexp(logits, dim=1) - true_logits

    def full_nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Exact per-row negative log-likelihood under the full softmax."""
        parts = []
        for start in range(0, hidden.shape[0], EVAL_CHUNK_ROWS):
            logits = torch.addmm(self.bias, hidden[start : start + EVAL_CHUNK_ROWS], self.weight.t())
            parts.append(F.cross_entropy(logits, targets[start : start + EVAL_CHUNK_ROWS], reduction="none"))
        return torch.cat(parts) if parts else hidden.new_zeros((0,))


class AdaptiveSoftmax(nn.Module):
    """``torch.nn.AdaptiveLogSoftmaxWithLoss`` over the frequency-sorted vocabulary (always exact)."""

    def __init__(self, dim: int, n_classes: int, cutoffs: List[int], div_value: float) -> None:
        super().__init__()
        usable = [c for c in cutoffs if c < n_classes - 1] or [max(1, n_classes // 2)]
        self.cutoffs = usable
        self.inner = nn.AdaptiveLogSoftmaxWithLoss(dim, n_classes, usable, div_value=div_value)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -self.inner(hidden, targets).output

    def full_nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        parts = [
            self.loss(hidden[start : start + EVAL_CHUNK_ROWS], targets[start : start + EVAL_CHUNK_ROWS])
            for start in range(0, hidden.shape[0], EVAL_CHUNK_ROWS)
        ]
        return torch.cat(parts) if parts else hidden.new_zeros((0,))


Softmax = Union[SampledSoftmax, AdaptiveSoftmax]
"""The shared output layer: ``loss`` for training, ``full_nll`` for perplexity."""


def build_softmax(kind: str, dim: int, n_classes: int, n_samples: int, cutoffs: List[int], div_value: float) -> Softmax:
    """The shared output layer named by ``[training] softmax``."""
    if kind == "sampled":
        return SampledSoftmax(dim, n_classes, n_samples)
    return AdaptiveSoftmax(dim, n_classes, cutoffs, div_value)


@dataclass
class LossOutput:
    """The batch loss to optimise and its two halves (each a mean over its direction's predictions)."""

    loss: torch.Tensor
    loss_forward: torch.Tensor
    loss_backward: torch.Tensor


class BiLMObjective(nn.Module):
    """biLM + shared softmax → the bidirectional LM loss of one batch.

    ``training_precision`` is that of the training loss's biLM forward pass (:mod:`spacy_elmo.bilm.training_precision`);
    the softmax, the loss and held-out perplexity are always float32.
    """

    def __init__(self, bilm: ElmoBiLM, softmax: Softmax, dropout: float, training_precision: str = "fp32") -> None:
        super().__init__()
        self.bilm = bilm
        self.softmax = softmax
        self.dropout = dropout
        self.training_precision = training_precision

    def predictions(
        self, batch: LmBatch, precision: str = "fp32"
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top outputs (float32) and their targets: ``(h_forward, y_forward, h_backward, y_backward)``."""
        P = self.bilm.options.projection_dim
        with training_autocast(precision, self.bilm.boundary_char_ids.device):
            top = self.bilm(batch.char_ids, batch.token_index, batch.lengths, with_boundaries=True)[-1]  # (B, T+2, 2P)
        top = F.dropout(top.float(), self.dropout, self.training)
        real = batch.word_ids[:, 1:] >= 0  # slot t+1 is real: forward slot t and backward slot t+1 predict
        h_forward = top[:, :-1, :P][real]
        h_backward = top[:, 1:, P:][real]
        return h_forward, batch.word_ids[:, 1:][real], h_backward, batch.word_ids[:, :-1][real]

    def forward(self, batch: LmBatch) -> LossOutput:
        h_f, y_f, h_b, y_b = self.predictions(batch, self.training_precision)
        nll = self.softmax.loss(torch.cat([h_f, h_b]), torch.cat([y_f, y_b]))
        n = y_f.shape[0]
        loss_forward, loss_backward = nll[:n].mean(), nll[n:].mean()
        return LossOutput((loss_forward + loss_backward) / 2, loss_forward, loss_backward)

    @torch.no_grad()
    def evaluation_sums(self, batches: Iterable[LmBatch]) -> torch.Tensor:
        """``[nll_forward, nll_backward, predictions, words, oov_words]`` summed over ``batches`` (float64)."""
        was_training = self.training
        self.eval()
        sums = torch.zeros(5, dtype=torch.float64)
        try:
            for batch in batches:
                h_f, y_f, h_b, y_b = self.predictions(batch)
                sums[0] += self.softmax.full_nll(h_f, y_f).double().sum().item()
                sums[1] += self.softmax.full_nll(h_b, y_b).double().sum().item()
                sums += torch.tensor([0.0, 0.0, y_f.shape[0], batch.n_words, batch.n_oov], dtype=torch.float64)
        finally:
            self.train(was_training)
        return sums


def perplexities(sums: torch.Tensor) -> Dict[str, float]:
    """Forward, backward and average perplexity from :meth:`BiLMObjective.evaluation_sums`."""
    nll_f, nll_b, n, words, oov = (float(v) for v in sums)
    if n == 0:
        return {}
    return {
        "ppl_forward": _exp(nll_f / n),
        "ppl_backward": _exp(nll_b / n),
        "ppl": _exp((nll_f + nll_b) / (2 * n)),
        "nll": (nll_f + nll_b) / (2 * n),
        "predictions_per_direction": int(n),
        "words": int(words),
        "oov_rate": oov / words if words else 0.0,
    }


def _exp(value: float) -> float:
    """``exp`` that saturates to infinity instead of raising (a diverged model's perplexity)."""
    return math.exp(value) if value < 709.0 else math.inf
