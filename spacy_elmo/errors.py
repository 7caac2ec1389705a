"""Exceptions with messages a user can act on: each names the file, the field and the fix."""


class ElmoError(Exception):
    """Base class of every error spacy-elmo raises on purpose."""


class ElmoOptionsError(ElmoError, ValueError):
    """An ``options.json`` (or a config value) is missing a field or holds an invalid value."""


class ElmoWeightsError(ElmoError, ValueError):
    """A ``weights.hdf5`` file is unreadable, corrupted, or does not match its options."""


class ElmoModelNotFoundError(ElmoError, LookupError):
    """A model name is unknown, or a model directory lacks its files."""


class ElmoDownloadError(ElmoError, OSError):
    """Downloading a published model failed."""


class ElmoConfigError(ElmoError, ValueError):
    """A spaCy training config cannot be rewritten for ELMo (``init-config``)."""


class ElmoOptionsWarning(UserWarning):
    """An ``options.json`` leaves out a field that changes the numbers, and a default is used."""
