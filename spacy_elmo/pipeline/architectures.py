"""Every registered architecture of spacy-elmo: the ``elmo`` component's biLM, the listener
that downstream components read it through, and what a listener becomes when replaced."""

import inspect
from typing import Any, Dict, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Maxout, Model, PyTorchGradScaler, chain, concatenate, with_array
from thinc.types import Floats2d, Floats3d

from ..bilm.batching import DEFAULT_MAX_PIECE_LENGTH
from ..errors import ElmoOptionsError
from ..layers.bilm_layer import ElmoBiLMLayer
from ..layers.doc_pieces import with_doc_pieces
from ..layers.listener import ElmoListener
from ..layers.scalar_mix import ScalarMix
from ..layers.settings import LAYER_DEFAULTS, ElmoLayerSettings

ELMO_BILM = "spacy-elmo.ElmoBiLM.v1"

BILM_LAYER_REF = "bilm"
"""The ref under which an ``ElmoBiLM.v1`` model holds its biLM layer (the Thinc
:class:`ElmoBiLMLayer`; the PyTorch biLM is that layer's ``shim.bilm``). Saved pipelines
store ref names, so the string stays."""


@registry.architectures(ELMO_BILM)
def ElmoBiLM_v1(
    weights: str = LAYER_DEFAULTS.weights,
    options: Optional[str] = LAYER_DEFAULTS.options,
    token_cache_size: int = LAYER_DEFAULTS.token_cache_size,
    max_batch_tokens: int = LAYER_DEFAULTS.max_batch_tokens,
    max_piece_length: int = DEFAULT_MAX_PIECE_LENGTH,
    layer_cache_mb: int = LAYER_DEFAULTS.layer_cache_mb,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[Dict[str, Any]] = None,
    precision: str = LAYER_DEFAULTS.precision,
    layer_store: str = LAYER_DEFAULTS.layer_store,
    layer_store_dir: Optional[str] = LAYER_DEFAULTS.layer_store_dir,
    layer_store_mb: int = LAYER_DEFAULTS.layer_store_mb,
    layer_store_float16: bool = LAYER_DEFAULTS.layer_store_float16,
) -> Model[List[Doc], List[Floats3d]]:
    """Every layer of an ELMo biLM for every token of each doc, ``(L+1, len(doc), 2P)``.

    weights, options, token_cache_size, max_batch_tokens, layer_cache_mb, precision,
    layer_store, layer_store_dir, layer_store_mb, layer_store_float16: see
        :class:`spacy_elmo.layers.settings.ElmoLayerSettings` (and docs/configuration.md).
    max_piece_length: docs with more tokens are read in sentences or windows of this size.
    mixed_precision, grad_scaler_config: CUDA autocast while fine-tuning, as in spaCy's own
        PyTorch wrappers.
    """
    try:
        settings = ElmoLayerSettings(
            weights=weights,
            options=options,
            token_cache_size=token_cache_size,
            max_batch_tokens=max_batch_tokens,
            layer_cache_mb=layer_cache_mb,
            precision=precision,
            layer_store=layer_store,
            layer_store_dir=layer_store_dir,
            layer_store_mb=layer_store_mb,
            layer_store_float16=layer_store_float16,
        )
        scaler = PyTorchGradScaler(**(grad_scaler_config or {"enabled": mixed_precision}))
        bilm_layer = ElmoBiLMLayer(settings, mixed_precision=mixed_precision, grad_scaler=scaler)
        model = with_doc_pieces(bilm_layer, max_piece_length)
    except ElmoOptionsError as err:
        raise ElmoOptionsError(
            f"{ELMO_BILM} (the model of an elmo component, [components.<name>.model] in a config): {err}"
        ) from None
    model.set_ref(BILM_LAYER_REF, bilm_layer)
    model.attrs["replace_listener_cfg"] = replace_listener_cfg
    return model


def default_model_config() -> Dict[str, Any]:
    """The ``elmo`` factory's default ``model`` block, read off :func:`ElmoBiLM_v1`'s signature."""
    parameters = inspect.signature(ElmoBiLM_v1).parameters
    return {
        "@architectures": ELMO_BILM,
        **{name: p.default for name, p in parameters.items()},
    }


ELMO_MIX = "spacy-elmo.ElmoMix.v1"
ELMO_LISTENER = "spacy-elmo.ElmoListener.v1"


def _scalar_mix(architecture: str, l2_penalty: float, dropout: float, layer_norm: bool) -> Model:
    """The task's :func:`ScalarMix`; a wrong setting names ``architecture`` and where it sits in a config."""
    try:
        return ScalarMix(l2_penalty=l2_penalty, dropout=dropout, layer_norm=layer_norm)
    except ElmoOptionsError as err:
        raise ElmoOptionsError(
            f"{architecture} (a task's ELMo mix, the elmo block of its tok2vec in a config, e.g. "
            f"[components.ner.model.tok2vec.elmo]): {err}"
        ) from None


@registry.architectures(ELMO_MIX)
def ElmoMix_v1(
    elmo: Model[List[Doc], List[Floats3d]], l2_penalty: float = 0.0, dropout: float = 0.0, layer_norm: bool = False
) -> Model[List[Doc], List[Floats2d]]:
    """A biLM owned by the downstream component, mixed by its scalar mix: what an
    ``ElmoListener.v1`` becomes after ``nlp.replace_listeners``, with the listener's mix
    settings (see :func:`ElmoListener_v1`); a config without ``layer_norm`` means false."""
    return chain(elmo, _scalar_mix(ELMO_MIX, l2_penalty, dropout, layer_norm))


def replace_listener_cfg(elmo_cfg: Dict[str, Any], listener_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Config of a replaced listener: the upstream biLM inline, the task's mix settings kept."""
    if "ElmoListener" not in listener_cfg.get("@architectures", ""):
        listener_cfg = listener_cfg.get("elmo", {})
    defaults = inspect.signature(ElmoListener_v1).parameters
    return {
        "@architectures": ELMO_MIX,
        "elmo": elmo_cfg,
        **{name: listener_cfg.get(name, defaults[name].default) for name in MIX_SETTINGS},
    }


MIX_SETTINGS = ("l2_penalty", "dropout", "layer_norm")
"""The listener's settings that its replacement, ``ElmoMix.v1``, carries over (``upstream``
and ``grad_factor`` concern the shared biLM, which the replacement owns)."""


@registry.architectures(ELMO_LISTENER)
def ElmoListener_v1(
    upstream: str = "*",
    grad_factor: float = 1.0,
    l2_penalty: float = 0.0,
    dropout: float = 0.0,
    layer_norm: bool = False,
) -> Model[List[Doc], List[Floats2d]]:
    """The upstream ``elmo`` layers mixed by this task's own learned scalar mix.

    upstream: name of the ``elmo`` component to listen to, or "*" for any.
    grad_factor: scales the gradient sent to the biLM (0 keeps it unchanged by this task).
    l2_penalty: λ of the penalty λ Σ w² on the mix weights (the paper used 0.001).
    dropout: dropout on the mixed vectors during training.
    layer_norm: standardise each layer over the batch before mixing (upstream ``do_layer_norm``).
    """
    listener = ElmoListener(upstream, grad_factor)
    model: Model[List[Doc], List[Floats2d]] = chain(listener, _scalar_mix(ELMO_LISTENER, l2_penalty, dropout, layer_norm))
    model.set_ref("listener", listener)
    return model


@registry.architectures("spacy-elmo.ElmoTok2Vec.v1")
def ElmoTok2Vec_v1(
    elmo: Model[List[Doc], List[Floats2d]],
    embed: Optional[Model[List[Doc], List[Floats2d]]],
    width: int,
    encode: Optional[Model[List[Floats2d], List[Floats2d]]] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """ELMo concatenated with spaCy's own token embeddings (as in the paper; ``embed = null``
    leaves them out), projected to ``width`` by a Maxout layer, then an optional contextual
    encoder."""
    features = elmo if embed is None else concatenate(elmo, embed)
    model: Model[List[Doc], List[Floats2d]] = chain(features, with_array(Maxout(width, nP=3, normalize=True)))
    if encode is not None:
        model = chain(model, encode)
    model.set_dim("nO", width)
    model.set_ref("elmo", elmo)
    return model
