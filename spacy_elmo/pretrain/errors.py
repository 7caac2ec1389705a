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


class OutputDirError(ElmoError, ValueError):
    """OUTPUT_DIR is a file, holds another run's or the user's files, or cannot be written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after a step; the message says where the checkpoint to resume from is."""
