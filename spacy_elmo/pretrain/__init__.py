"""Pretraining and domain fine-tuning of the ELMo biLM (``python -m spacy_elmo pretrain``).

Modules: ``config`` (the config file), ``data`` (streamed batches), ``vocab`` (softmax
vocabulary), ``model`` (trainable biLM and its initialisation), ``objective`` (softmaxes,
loss, perplexity), ``optim`` (optimiser and freeze schedule), ``checkpoint``,
``distributed`` (torchrun data parallelism), ``progress`` (log and progress bar),
``trainer`` (the run) and ``cli``.
"""

from .config import PretrainConfig, load_config
from .errors import (
    CheckpointError,
    OutputDirError,
    PretrainConfigError,
    PretrainDataError,
    TrainingDivergedError,
    TrainingInterrupted,
)
from .trainer import PretrainResult, pretrain

__all__ = [
    "pretrain",
    "PretrainResult",
    "PretrainConfig",
    "load_config",
    "PretrainConfigError",
    "PretrainDataError",
    "CheckpointError",
    "OutputDirError",
    "TrainingDivergedError",
    "TrainingInterrupted",
]
