"""Optimiser, learning-rate schedule and the fine-tuning freeze schedule, all functions of the step.

Parameters form blocks, top to bottom: ``softmax``, ``lstm.{L-1}`` … ``lstm.0``,
``token_encoder``. Each block is one optimiser parameter group whose learning rate is
``learn_rate × layer_lr_decay ** depth`` (depth 0 for the softmax and the top LSTM layer,
``L`` for the token encoder): discriminative fine-tuning. Freezing only clears
``requires_grad``, so a frozen block gets no gradient and the optimiser leaves it (and its
state) exactly unchanged.
"""

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .config import TrainingConfig
from .objective import BiLMObjective

DEFAULT_LEARN_RATE = {"adam": 1e-3, "adagrad": 0.2}
DEFAULT_GRAD_CLIP = {"adam": 1.0, "adagrad": 10.0}
ADAGRAD_INITIAL_ACCUMULATOR = 1.0


def parameter_blocks(objective: BiLMObjective) -> List[Tuple[str, List[nn.Parameter]]]:
    """``(name, parameters)`` from the softmax down to the token encoder."""
    layers = list(objective.bilm.lstm.layers)
    blocks = [("softmax", list(objective.softmax.parameters()))]
    blocks += [(f"lstm.{i}", list(layers[i].parameters())) for i in reversed(range(len(layers)))]
    blocks.append(("token_encoder", list(objective.bilm.token_encoder.parameters())))
    return blocks


def learn_rate(config: TrainingConfig) -> float:
    return config.learn_rate if config.learn_rate is not None else DEFAULT_LEARN_RATE[config.optimizer]


def grad_clip(config: TrainingConfig) -> float:
    """The global-norm clip in use (0 means off)."""
    return config.grad_clip if config.grad_clip is not None else DEFAULT_GRAD_CLIP[config.optimizer]


def build_optimizer(objective: BiLMObjective, config: TrainingConfig) -> torch.optim.Optimizer:
    """One parameter group per block, with its discriminative learning-rate scale."""
    groups = []
    for depth, (name, params) in enumerate(parameter_blocks(objective)):
        scale = config.layer_lr_decay ** max(0, depth - 1)
        groups.append({"params": params, "name": name, "lr_scale": scale, "lr": learn_rate(config) * scale})
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=learn_rate(config), initial_accumulator_value=ADAGRAD_INITIAL_ACCUMULATOR)
    return torch.optim.Adam(groups, lr=learn_rate(config))


def optimizer_kind(state: Dict[str, Any]) -> Optional[str]:
    """Which optimizer wrote ``state`` (an ``optimizer.state_dict()``): "adam", "adagrad", or
    None before its first step, when it holds no per-parameter state yet."""
    for parameter_state in state.get("state", {}).values():
        if "sum" in parameter_state:
            return "adagrad"
        if "exp_avg" in parameter_state:
            return "adam"
    return None


def scheduled_learn_rate(config: TrainingConfig, step: int, tokens: int = 0) -> float:
    """The base learning rate for (0-based) ``step`` after ``tokens`` training tokens: linear
    warm-up, then constant or (``lr_decay``) decaying to 0 at the end of the budget."""
    base = learn_rate(config)
    if config.lr_warmup_steps and step < config.lr_warmup_steps:
        return base * (step + 1) / config.lr_warmup_steps
    progress = config.budget_spent(step, tokens) if config.lr_decay != "none" else None
    if progress is None:
        return base
    if config.lr_decay == "linear":
        return base * (1.0 - progress)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learn_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate * group["lr_scale"]


def trainable_blocks(config: TrainingConfig, n_layers: int, step: int) -> List[str]:
    """Names of the blocks that train at (0-based) ``step``."""
    order = [f"lstm.{i}" for i in reversed(range(n_layers))] + ["token_encoder"]
    if step < config.warmup_softmax_steps:
        return ["softmax"]
    if config.unfreeze == "all":
        return ["softmax", *order]
    unfrozen = 1 + (step - config.warmup_softmax_steps) // config.unfreeze_interval
    return ["softmax", *order[:unfrozen]]


def apply_freezing(objective: BiLMObjective, trainable: List[str]) -> None:
    """Set ``requires_grad`` of every block: true for the blocks named in ``trainable``."""
    for name, params in parameter_blocks(objective):
        for param in params:
            param.requires_grad_(name in trainable)
