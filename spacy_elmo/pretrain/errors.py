"""Errors of biLM pretraining; each message names the file or setting at fault and the fix."""

from ..errors import ElmoError, ElmoOptionsError


class PretrainConfigError(ElmoOptionsError):
    """A pretraining config file or command-line override is missing a value or holds a bad one."""


class PretrainDataError(ElmoError, ValueError):
    """The training or evaluation text cannot be found, read, or yields no sentences."""


class CheckpointError(ElmoError, RuntimeError):
    """A training checkpoint is missing, unreadable, or does not match the run's config."""


class TrainingDivergedError(ElmoError, FloatingPointError):
    """The training loss or gradient became NaN or infinite."""
