"""Registered callbacks a training config opts into.

``spacy-elmo.keep_freed_memory.v1`` makes the C allocator keep freed memory for reuse
(:mod:`spacy_elmo.bilm.memory`): process-wide, so it is never done on import or when a
pipeline is built, only where a config asks for it, e.g. in ``[initialize.before_init]``,
which ``spacy train`` runs once before training (loading a trained pipeline does not)::

    [initialize.before_init]
    @callbacks = "spacy-elmo.keep_freed_memory.v1"
"""

from typing import Callable

from spacy.language import Language
from spacy.util import registry

from ..bilm.memory import keep_freed_memory


@registry.callbacks("spacy-elmo.keep_freed_memory.v1")
def create_keep_freed_memory() -> Callable[[Language], Language]:
    """A callback that keeps freed memory for reuse (Linux/glibc; elsewhere it does nothing)."""

    def keep_freed_memory_callback(nlp: Language) -> Language:
        keep_freed_memory()
        return nlp

    return keep_freed_memory_callback
