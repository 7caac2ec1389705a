"""The biLM layer's settings, declared once: their defaults, types and checks.

``spacy-elmo.ElmoBiLM.v1`` takes its defaults from these fields and the ``elmo`` component's
default config is read off that architecture, so a default is changed here and nowhere else.
Errors name the setting only; the pipeline that configures the layer adds where it lives in
its config (``[components.<name>.model]``).
"""

import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Optional, Tuple

from ..bilm.inference_precision import check_precision
from ..bilm.token_cache import DEFAULT_TOKEN_CACHE_SIZE
from ..errors import ElmoOptionsError

LAYER_STORE_MODES = ("training", "always", "off")


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass(frozen=True)
class ElmoLayerSettings:
    """Which biLM the layer runs and how.

    weights: ``default`` (shipped with spacy-elmo), a published model name, a directory with
        options.json + weights.hdf5, or a weights.hdf5 file.
    options: the options.json of ``weights`` when it is a file without one beside it.
    token_cache_size: distinct tokens whose context-free vectors are kept between batches.
    max_batch_tokens: bound on the padded token slots the biLM runs at once.
    layer_cache_mb: frozen biLM: MiB of layers per token sequence kept in a process that
        trains, so that later epochs and evaluations skip the biLM (0 turns it off).
    precision: ``fp32`` (exact), ``bf16`` or ``int8``: the precision of every biLM call made
        without gradients (see :meth:`ElmoBiLM.to_precision`).
    layer_store: frozen biLM: when layers are kept on disk per (biLM, token sequence) and read
        back instead of running the biLM: ``training`` (by ``initialize``'s pre-fill, training
        updates, and evaluations in a process that trains), ``always`` (also ``nlp.pipe`` in
        any process) or ``off``.
    layer_store_dir: the store's directory (null: ``$SPACY_ELMO_LAYER_STORE``, else
        ``layers/`` in the model cache, ``~/.cache/spacy_elmo/layers``); several processes
        may share it.
    layer_store_mb: MiB the store may hold on disk, least recently used entries deleted first.
    layer_store_float16: keep the stored layers as float16 (half the disk and reads; every
        value within a relative 2**-11 of the float32 one). While the store is in use, layers
        are served at this precision whether they were just computed or read back, so a run's
        results never depend on what was already stored.
    """

    weights: str = "default"
    options: Optional[str] = None
    token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE
    max_batch_tokens: int = 4096
    layer_cache_mb: int = 1024
    precision: str = "fp32"
    layer_store: str = "training"
    layer_store_dir: Optional[str] = None
    layer_store_mb: int = 10240
    layer_store_float16: bool = True

    def __post_init__(self) -> None:
        for name, value in (("weights", self.weights), ("options", self.options), ("layer_store_dir", self.layer_store_dir)):
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        for name, (is_valid, expected) in _CHECKS.items():
            value = getattr(self, name)
            if not is_valid(value):
                raise ElmoOptionsError(f"{name} must be {expected}, got {value!r}.")
        check_precision(self.precision, "precision")

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_CHECKS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "weights": (
        lambda value: isinstance(value, str) and value != "",
        "'default' (shipped with spacy-elmo), a published model name ('small', 'medium', 'original', "
        "'original-5.5b'), a directory with options.json and weights.hdf5, or a weights.hdf5 file",
    ),
    "options": (lambda value: value is None or isinstance(value, str), "null or the path of an options.json"),
    "token_cache_size": (_int_at_least(0), "an integer >= 0"),
    "max_batch_tokens": (_int_at_least(1), "a positive integer"),
    "layer_cache_mb": (_int_at_least(0), "an integer >= 0"),
    "layer_store": (lambda value: value in LAYER_STORE_MODES, "one of " + ", ".join(repr(m) for m in LAYER_STORE_MODES)),
    "layer_store_dir": (
        lambda value: value is None or (isinstance(value, str) and value != ""),
        "null (the default directory) or the path of a directory",
    ),
    "layer_store_mb": (_int_at_least(0), "an integer >= 0"),
    "layer_store_float16": (lambda value: isinstance(value, bool), "true or false"),
}

LAYER_DEFAULTS = ElmoLayerSettings()
"""Every setting at its default."""
