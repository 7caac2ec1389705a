"""ELMo contextual embeddings for spaCy v3.

``ElmoBiLM`` is the framework-free biLM; the ``elmo`` spaCy factory is registered through
an entry point (``spacy_elmo.pipeline``) and needs no import.
"""

from .bilm.model import ElmoBiLM
from .bilm.options import ElmoOptions
from .chars import batch_to_ids
from .errors import (
    ElmoConfigError,
    ElmoDownloadError,
    ElmoError,
    ElmoModelNotFoundError,
    ElmoOptionsError,
    ElmoOptionsWarning,
    ElmoWeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "ElmoBiLM",
    "ElmoOptions",
    "batch_to_ids",
    "ElmoError",
    "ElmoOptionsError",
    "ElmoWeightsError",
    "ElmoModelNotFoundError",
    "ElmoDownloadError",
    "ElmoConfigError",
    "ElmoOptionsWarning",
]
