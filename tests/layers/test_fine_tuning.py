"""A fine-tuned biLM computes with its updated weights, never with what was derived from the old ones.

Thinc's optimizer writes the new weights into the parameters' memory through a NumPy view, so
torch's version counters do not change: caches keyed on them (token vectors, low-precision
weight copies) must be dropped explicitly after every update.
"""

import numpy as np
import pytest
from thinc.api import Adam

from spacy_elmo.errors import ElmoOptionsError
from spacy_elmo.layers.bilm_layer import ElmoBiLMLayer, elmo_shim
from spacy_elmo.layers.settings import ElmoLayerSettings

SENTENCES = [["the", "river", "bank"], ["a", "bank", "of", "the", "river"]]


def _fresh_predict(layer):
    """Prediction with every derived copy of the weights rebuilt from the parameters."""
    bilm = elmo_shim(layer).bilm
    bilm.token_cache.clear()
    bilm._kernels = None
    return layer.predict(SENTENCES)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_predict_after_an_update_uses_the_new_weights(tiny_model, precision):
    _options, weights = tiny_model
    layer = ElmoBiLMLayer(ElmoLayerSettings(weights=str(weights.parent), precision=precision, layer_cache_mb=0))
    try:
        layer.initialize()
    except ElmoOptionsError as err:
        pytest.skip(f"{precision} is not supported here: {err}")
    before = layer.predict(SENTENCES)
    outputs, backprop = layer.begin_update(SENTENCES)
    backprop([np.ones_like(output) for output in outputs])
    layer.finish_update(Adam(0.1))
    after = layer.predict(SENTENCES)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(after, before)), "the update changed nothing"
    for got, expected in zip(after, _fresh_predict(layer)):
        np.testing.assert_array_equal(got, expected)
