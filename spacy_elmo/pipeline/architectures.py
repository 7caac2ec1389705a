"""Registered architectures of the ``elmo`` component."""

from typing import Any, Dict, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, PyTorchGradScaler, chain
from thinc.types import Floats2d, Floats3d

from ..bilm import memory as bilm_memory
from ..layers.bilm_layer import ElmoBiLMLayer
from ..layers.scalar_mix import ScalarMix
from .doc_pieces import with_doc_pieces


@registry.architectures("spacy-elmo.ElmoBiLM.v1")
def ElmoBiLM_v1(
    weights: str,
    options: Optional[str] = None,
    token_cache_size: int = 10_000,
    max_batch_tokens: int = 4096,
    max_piece_length: int = 256,
    layer_cache_mb: int = 1024,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[Dict[str, Any]] = None,
    keep_freed_memory: bool = True,
    precision: str = "fp32",
) -> Model[List[Doc], List[Floats3d]]:
    """Every layer of an ELMo biLM for every token of each doc, ``(L+1, len(doc), 2P)``.

    weights: a published model name ("small", "medium", "original", "original-5.5b"), a
        directory with options.json + weights.hdf5, or a weights.hdf5 file.
    options: the options.json of ``weights`` when it is a file without one beside it.
    token_cache_size: distinct tokens whose context-free vectors are kept between batches.
    max_batch_tokens: bound on padded token slots the biLM runs at once.
    max_piece_length: docs with more tokens are read in sentences or windows of this size.
    layer_cache_mb: while the component is frozen, MiB of computed layers kept per token
        sequence so that later epochs skip the biLM (0 turns it off).
    keep_freed_memory: on Linux, have the C allocator keep freed blocks for reuse instead
        of returning them to the OS (process-wide; see spacy_elmo.bilm.memory): up to 1.9x
        faster training on a CPU, at the price of the process keeping its peak memory.
    precision: "fp32" (exact), "bf16" or "int8": the precision of the biLM's matmuls whenever
        it runs without gradients (inference, and frozen training); see the README's
        "Low precision" section. Weights stay float32 in memory and on disk.
    """
    if keep_freed_memory:
        bilm_memory.keep_freed_memory()
    scaler = PyTorchGradScaler(**(grad_scaler_config or {"enabled": mixed_precision}))
    bilm = ElmoBiLMLayer(
        weights,
        options,
        token_cache_size=token_cache_size,
        max_batch_tokens=max_batch_tokens,
        layer_cache_mb=layer_cache_mb,
        mixed_precision=mixed_precision,
        grad_scaler=scaler,
        precision=precision,
    )
    model = with_doc_pieces(bilm, max_piece_length)
    model.attrs["replace_listener_cfg"] = replace_listener_cfg
    return model


@registry.architectures("spacy-elmo.ElmoMix.v1")
def ElmoMix_v1(elmo: Model[List[Doc], List[Floats3d]], l2_penalty: float = 0.0, dropout: float = 0.0) -> Model[List[Doc], List[Floats2d]]:
    """A biLM owned by the downstream component, mixed by its scalar mix: what an
    ``ElmoListener.v1`` becomes after ``nlp.replace_listeners``."""
    return chain(elmo, ScalarMix(l2_penalty=l2_penalty, dropout=dropout))


def replace_listener_cfg(elmo_cfg: Dict[str, Any], listener_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Config of a replaced listener: the upstream biLM inline, the task's mix settings kept."""
    if "ElmoListener" not in listener_cfg.get("@architectures", ""):
        listener_cfg = listener_cfg.get("elmo", {})
    return {
        "@architectures": "spacy-elmo.ElmoMix.v1",
        "elmo": elmo_cfg,
        "l2_penalty": listener_cfg.get("l2_penalty", 0.0),
        "dropout": listener_cfg.get("dropout", 0.0),
    }
