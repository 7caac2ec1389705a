"""Registered architectures of the ``elmo`` component."""

from typing import Any, Dict, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, PyTorchGradScaler
from thinc.types import Floats3d

from ..layers.bilm_layer import ElmoBiLMLayer
from .doc_pieces import with_doc_pieces


@registry.architectures("spacy-elmo.ElmoBiLM.v1")
def ElmoBiLM_v1(
    weights: str,
    options: Optional[str] = None,
    token_cache_size: int = 10_000,
    max_batch_tokens: int = 4096,
    max_piece_length: int = 256,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[Dict[str, Any]] = None,
) -> Model[List[Doc], List[Floats3d]]:
    """Every layer of an ELMo biLM for every token of each doc, ``(L+1, len(doc), 2P)``.

    weights: a published model name ("small", "medium", "original", "original-5.5b"), a
        directory with options.json + weights.hdf5, or a weights.hdf5 file.
    options: the options.json of ``weights`` when it is a file without one beside it.
    token_cache_size: distinct tokens whose context-free vectors are kept between batches.
    max_batch_tokens: bound on padded token slots the biLM runs at once.
    max_piece_length: docs with more tokens are read in sentences or windows of this size.
    """
    scaler = PyTorchGradScaler(**(grad_scaler_config or {"enabled": mixed_precision}))
    bilm = ElmoBiLMLayer(
        weights,
        options,
        token_cache_size=token_cache_size,
        max_batch_tokens=max_batch_tokens,
        mixed_precision=mixed_precision,
        grad_scaler=scaler,
    )
    return with_doc_pieces(bilm, max_piece_length)
