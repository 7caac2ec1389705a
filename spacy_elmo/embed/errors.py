"""Errors and warnings of corpus embedding; each message names the file or option at fault and the fix."""

from ..errors import ElmoError, ElmoOptionsError


class EmbedSettingsError(ElmoOptionsError):
    """A command-line option (or the matching keyword argument) holds an invalid value."""


class EmbedInputError(ElmoError, ValueError):
    """The input corpus is missing, unreadable, or holds bytes that are not UTF-8."""


class EmbedOutputError(ElmoError, OSError):
    """The output file exists, cannot be written, or is being written by another run."""


class EmbedResumeError(ElmoError, ValueError):
    """An unfinished run's ``OUTPUT.partial`` was started with other settings, model or input."""


class EmbedMergeError(ElmoError, ValueError):
    """Shard files do not come from one run, overlap, or leave lines out."""


class EmbedWarning(UserWarning):
    """Something in the corpus was handled in a way the user should know about (empty, long or
    undecodable lines), reported once per run with a count."""
