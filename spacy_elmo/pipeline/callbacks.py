"""Registered callbacks a training config opts into.

``spacy-elmo.require_vectors.v1`` (``[initialize.before_init]``) stops a config that uses static
vectors when none were given, with the setting to pass, instead of an IndexError deep in spaCy;
``spacy-elmo.require_init_tok2vec.v1`` stops a config meant for ``spacy pretrain`` weights when
none were given, instead of training from random weights as if nothing were missing.

``spacy-elmo.atomic_saves.v1`` makes ``spacy train``'s saves survive ``kill -9``: see
:func:`create_atomic_saves`.

``spacy-elmo.keep_freed_memory.v1`` makes the C allocator keep freed memory for reuse
(:mod:`spacy_elmo.memory`): process-wide, so it is never done on import or when a
pipeline is built, only where a config asks for it, e.g. in ``[initialize.before_init]``,
which ``spacy train`` runs once before training (loading a trained pipeline does not)::

    [initialize.before_init]
    @callbacks = "spacy-elmo.keep_freed_memory.v1"
"""

import shutil
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

from spacy.language import Language
from spacy.util import registry

from ..errors import ElmoConfigError
from ..files import remove_orphans, replace_directory, restore_directory, temporary_name
from ..memory import keep_freed_memory

BEST, LAST = "model-best", "model-last"


@registry.callbacks("spacy-elmo.keep_freed_memory.v1")
def create_keep_freed_memory() -> Callable[[Language], Language]:
    """A callback that keeps freed memory for reuse (Linux/glibc; elsewhere it does nothing)."""

    def keep_freed_memory_callback(nlp: Language) -> Language:
        keep_freed_memory()
        return nlp

    return keep_freed_memory_callback


@registry.callbacks("spacy-elmo.atomic_saves.v1")
def create_atomic_saves() -> Callable[[Language], Language]:
    """A ``[training.before_to_disk]`` callback after which ``kill -9`` during ``spacy train``
    never loses ``model-best`` nor leaves a ``model-last`` whose ``meta.json`` scores belong
    to other weights::

        [training.before_to_disk]
        @callbacks = "spacy-elmo.atomic_saves.v1"

    spaCy writes ``model-last`` file by file into the existing folder, then deletes
    ``model-best`` and copies ``model-last`` over it. With this callback the pipeline is
    written into a temporary folder and swapped in whole (:func:`replace_directory`), and
    spaCy's delete-then-copy of ``model-best`` becomes a copy into a temporary folder swapped
    in whole. A killed run leaves each folder as its last complete save. The second part
    replaces the ``shutil`` that spaCy's training loop uses with one that does this for
    ``model-best`` and delegates everything else: a process-wide change, made only when a
    config asks for this callback.
    """

    def atomic_saves(nlp: Language) -> Language:
        if nlp.__dict__.get("to_disk") is None:
            nlp.to_disk = types.MethodType(_to_disk_atomically, nlp)  # type: ignore[method-assign]
        _swap_best_copies_in_training_loop()
        return nlp

    return atomic_saves


def _to_disk_atomically(nlp: Language, path: Union[str, Path], **kwargs: Any) -> None:
    """``Language.to_disk`` into a temporary sibling of ``path``, swapped in when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in (LAST, BEST):
        restore_directory(path.parent / name)
    remove_orphans(path.parent)
    tmp = temporary_name(path)
    try:
        Language.to_disk(nlp, tmp, **kwargs)
        replace_directory(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _TrainingLoopShutil(types.ModuleType):
    """``shutil`` for spaCy's training loop: deleting ``model-best`` is left to the copy that
    follows it, which fills a temporary folder and swaps it in whole."""

    def __init__(self) -> None:
        super().__init__("shutil")
        self.__dict__.update({name: value for name, value in vars(shutil).items() if name not in ("rmtree", "copytree")})

    @staticmethod
    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name != BEST:
            shutil.rmtree(path, *args, **kwargs)

    @staticmethod
    def copytree(source: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        target = Path(target)
        if target.name != BEST:
            return shutil.copytree(source, target, *args, **kwargs)
        tmp = temporary_name(target)
        try:
            shutil.copytree(source, tmp, *args, **kwargs)
            replace_directory(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target


def _swap_best_copies_in_training_loop() -> None:
    from spacy.training import loop

    current = getattr(loop, "shutil", None)
    if isinstance(current, _TrainingLoopShutil):
        return
    if current is not shutil:
        warnings.warn(
            "spacy-elmo.atomic_saves.v1: this spaCy version's training loop does not copy model-best with "
            "shutil, so only model-last is saved atomically.",
            stacklevel=2,
        )
        return
    loop.shutil = _TrainingLoopShutil()


@registry.callbacks("spacy-elmo.require_vectors.v1")
def create_require_vectors(also: Optional[Callable[[Language], Language]] = None) -> Callable[[Language], Language]:
    """An ``[initialize.before_init]`` callback: an error naming ``[paths] vectors`` when a
    config that uses static vectors is initialized without them. ``also`` is another
    ``before_init`` callback to run after the check (the slot holds one)."""
    return _requiring(
        "vectors",
        "This config uses static vectors (include_static_vectors = true) but [paths] vectors is not set: "
        "pass --paths.vectors DIR, a directory made by 'python -m spacy init vectors LANG FILE DIR --mode "
        "floret' (the project's 'vectors' step makes one), or use the config without '_vectors'.",
        also,
    )


@registry.callbacks("spacy-elmo.require_init_tok2vec.v1")
def create_require_init_tok2vec(also: Optional[Callable[[Language], Language]] = None) -> Callable[[Language], Language]:
    """An ``[initialize.before_init]`` callback: an error naming ``[paths] init_tok2vec`` when a
    config built around ``spacy pretrain`` weights is initialized without them. ``also`` as in
    ``spacy-elmo.require_vectors.v1``."""
    return _requiring(
        "init_tok2vec",
        "This config starts its tok2vec from 'spacy pretrain' weights but [paths] init_tok2vec is not set: "
        "pass --paths.init_tok2vec FILE, a model*.bin written by 'python -m spacy pretrain' with this "
        "config's [pretraining] block (the project's 'tok2vec-pretrain' step makes one), or use the "
        "config without '_pretrain'.",
        also,
    )


def _requiring(setting: str, message: str, also: Optional[Callable[[Language], Language]]) -> Callable[[Language], Language]:
    """A ``before_init`` callback that raises ``message`` while ``[initialize] setting`` is unset, then runs ``also``."""

    def require(nlp: Language) -> Language:
        if nlp.config.interpolate()["initialize"].get(setting) is None:
            raise ElmoConfigError(message)
        return also(nlp) if also is not None else nlp

    return require
