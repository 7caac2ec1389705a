"""A task's own mix of the biLM layers: ``γ · Σ_j softmax(w)_j · layer_j`` (Peters et al. 2018, §3.2).

``w`` starts at 0 (uniform weights) and ``γ`` at 1. An optional L2 penalty ``λ Σ w²`` (the
paper used λ = 0.001) is added as its gradient, ``2λw``, since Thinc layers have no loss
of their own; optional dropout applies to the mixed vectors (its own rate, which
``[training] dropout`` does not change). With ``layer_norm`` each layer
is first standardised by one mean and variance over every token and dimension of the batch,
as the upstream ``do_layer_norm`` (docs/design.md §6).
"""

from typing import Callable, Iterable, List, Optional, Tuple, cast

from thinc.api import Model, Ops
from thinc.types import Floats1d, Floats2d, Floats3d

from ..errors import ElmoOptionsError

LAYER_NORM_EPS = 1e-12
MIX_DROPOUT = "mix_dropout"
"""The attribute holding the mix's own dropout rate."""


def ScalarMix(
    n_layers: Optional[int] = None, l2_penalty: float = 0.0, dropout: float = 0.0, layer_norm: bool = False
) -> Model[List[Floats3d], List[Floats2d]]:
    """Mix ``(L+1, n, width)`` layer stacks into ``(n, width)`` with learned weights."""
    if not _is_number(l2_penalty) or not l2_penalty >= 0:
        raise ElmoOptionsError(
            f"l2_penalty must be a number >= 0, got {l2_penalty!r}: use 0 for no penalty on the mix weights, "
            f"or a small value such as 0.001 (the paper's)."
        )
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ElmoOptionsError(
            f"dropout must be a number in [0, 1), got {dropout!r}: use 0 for none, or the share of the mixed "
            f"vectors' values to drop in training, such as 0.1."
        )
    if not isinstance(layer_norm, bool):
        raise ElmoOptionsError(f"layer_norm must be true or false, got {layer_norm!r}.")
    return Model(
        "elmo-scalar-mix",
        forward,
        init=init,
        dims={"nL": n_layers},
        params={"weights": None, "gamma": None},
        # Not "dropout_rate": spaCy's update sets every layer's "dropout_rate" to [training] dropout.
        attrs={"l2_penalty": l2_penalty, MIX_DROPOUT: dropout, "layer_norm": layer_norm},
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def init(model: Model, X: Optional[List[Floats3d]] = None, Y: Optional[List[Floats2d]] = None) -> None:
    if not model.has_dim("nL") and X:
        model.set_dim("nL", X[0].shape[0])
    if not model.has_param("weights"):
        model.set_param("weights", model.ops.alloc1f(model.get_dim("nL")))
        gamma = model.ops.alloc1f(1)
        gamma[0] = 1.0
        model.set_param("gamma", gamma)


def mix_coefficients(model: Model) -> Floats1d:
    """The current softmax weights (without γ), e.g. to report what a task learned."""
    return model.ops.softmax(cast(Floats1d, model.get_param("weights")))


def _normalise(ops: Ops, layers: List[Floats3d]) -> Tuple[List[Floats3d], Callable[[List[Floats3d]], List[Floats3d]]]:
    """Standardise each layer by its mean and variance over the whole batch; with the backward pass."""
    count = sum(X.shape[1] * X.shape[2] for X in layers)
    if count == 0:
        return layers, lambda d_normed: d_normed
    n_layers = layers[0].shape[0]

    def per_layer_mean(arrays: Iterable[Floats3d]) -> Floats3d:
        """``(L, 1, 1)``: the mean of each layer over every token and dimension of ``arrays``."""
        total = sum((A.sum(axis=(1, 2), keepdims=False) for A in arrays), ops.alloc1f(n_layers))
        return ops.reshape3f(total / count, n_layers, 1, 1)

    mean = per_layer_mean(layers)
    inv_std = 1.0 / ops.xp.sqrt(per_layer_mean((X - mean) ** 2 for X in layers) + LAYER_NORM_EPS)
    normed = [(X - mean) * inv_std for X in layers]

    def backprop(d_normed: List[Floats3d]) -> List[Floats3d]:
        d_mean = per_layer_mean(d_normed)
        d_dot = per_layer_mean(d * N for d, N in zip(d_normed, normed))
        return [inv_std * (d - d_mean - N * d_dot) for d, N in zip(d_normed, normed)]

    return normed, backprop


def forward(model: Model, layers: List[Floats3d], is_train: bool) -> Tuple[List[Floats2d], Callable]:
    ops = model.ops
    backprop_norm = None
    if model.attrs.get("layer_norm"):
        layers, backprop_norm = _normalise(ops, layers)
    weights, gamma = cast(Floats1d, model.get_param("weights")), cast(Floats1d, model.get_param("gamma"))
    s = ops.softmax(weights)
    scale = gamma[0]
    mixed = [ops.xp.tensordot(s, X, axes=1) for X in layers]
    outputs = [scale * m for m in mixed]
    rate = model.attrs[MIX_DROPOUT] if is_train else 0.0
    masks = [ops.get_dropout_mask(Y.shape, rate) for Y in outputs] if rate else []
    if rate:
        outputs = [Y * mask for Y, mask in zip(outputs, masks)]

    def backprop(d_outputs: List[Floats2d]) -> List[Floats3d]:
        if rate:
            d_outputs = [dY * mask for dY, mask in zip(d_outputs, masks)]
        d_gamma = ops.alloc1f(1)
        d_s = ops.alloc1f(len(s))
        d_layers = []
        scaled_s = ops.reshape3f(scale * s, len(s), 1, 1)
        for dY, X, m in zip(d_outputs, layers, mixed):
            d_gamma[0] += (dY * m).sum()
            d_s += ops.xp.tensordot(X, dY, axes=([1, 2], [0, 1]))
            d_layers.append(scaled_s * dY)
        d_s *= scale
        d_weights = s * (d_s - (s * d_s).sum(keepdims=False))
        if model.attrs["l2_penalty"]:
            d_weights += 2.0 * model.attrs["l2_penalty"] * weights
        model.inc_grad("weights", d_weights)
        model.inc_grad("gamma", d_gamma)
        return backprop_norm(d_layers) if backprop_norm is not None else d_layers

    return outputs, backprop
