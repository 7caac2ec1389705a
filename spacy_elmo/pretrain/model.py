"""The trainable biLM: :class:`ElmoBiLM` initialised as bilm-tf or from files, with dropout
on the input of every LSTM layer (docs/design.md §9, bilm-tf's input keep-prob 0.9). One difference
from bilm-tf: the residual connection of layers ≥ 1 adds the layer's input *before* dropout
(bilm-tf adds the dropped-out input).
"""

import math

import torch
from torch import nn

from ..bilm.model import ElmoBiLM
from ..bilm.options import ElmoOptions
from ..bilm.pretrained import resolve_files
from ..bilm.tensors import conv_bias
from ..errors import ElmoError
from ..files import PathLike
from .errors import PretrainConfigError


def build_bilm(options: ElmoOptions, dropout: float) -> ElmoBiLM:
    """A freshly initialised biLM for training from scratch."""
    bilm = ElmoBiLM(options, token_cache_size=0)
    bilm.lstm.dropout = dropout
    initialize(bilm)
    return bilm.train()


def load_for_fine_tuning(source: PathLike, dropout: float) -> ElmoBiLM:
    """A biLM in the published layout to fine-tune: ``default``, a published model name, a
    directory holding ``options.json`` + ``weights.hdf5`` (e.g. an earlier run's model-best/)
    or a weights.hdf5 file with an options.json beside it."""
    try:
        loaded = ElmoBiLM.from_files(*resolve_files(source, weights_setting="[training] init_from"), token_cache_size=0)
    except ElmoError as err:
        raise PretrainConfigError(f"[training] init_from = {str(source)!r}: {err}") from None
    loaded.lstm.dropout = dropout
    return loaded.train()


@torch.no_grad()
def initialize(bilm: ElmoBiLM) -> None:
    """bilm-tf's initialisation (docs/design.md §9), using torch's global generator."""
    options = bilm.options
    encoder = bilm.token_encoder
    n_filters = options.n_filters
    nn.init.uniform_(encoder.char_embedding, -1.0, 1.0)
    encoder.char_embedding[0].zero_()
    for (width, _), conv in zip(options.filters, encoder.convolutions):
        if options.activation == "relu":
            nn.init.uniform_(conv.weight, -0.05, 0.05)
        else:
            nn.init.normal_(conv.weight, 0.0, math.sqrt(1.0 / (width * options.char_embedding_dim)))
        nn.init.zeros_(conv_bias(conv))
    for highway in encoder.highways:
        nn.init.normal_(highway.weight, 0.0, math.sqrt(1.0 / n_filters))
        highway.bias[:n_filters].fill_(-2.0)
        highway.bias[n_filters:].zero_()
    nn.init.normal_(encoder.projection, 0.0, math.sqrt(1.0 / n_filters))
    nn.init.zeros_(encoder.projection_bias)
    for layer in bilm.lstm.layers:
        n_in, n_gates = layer.input_weight.shape[1], layer.input_weight.shape[2]
        n_rec = layer.recurrent_weight.shape[1]
        kernel_limit = math.sqrt(6.0 / (n_in + n_rec + n_gates))  # glorot-uniform of TF's (I + P, 4H) kernel
        nn.init.uniform_(layer.input_weight, -kernel_limit, kernel_limit)
        nn.init.uniform_(layer.recurrent_weight, -kernel_limit, kernel_limit)
        nn.init.zeros_(layer.bias)
        hidden, projection = layer.projection.shape[1], layer.projection.shape[2]
        limit = math.sqrt(6.0 / (hidden + projection))
        nn.init.uniform_(layer.projection, -limit, limit)
