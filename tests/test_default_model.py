"""The shipped default biLM: pinned outputs, so that a changed checkpoint (retrained, re-exported
or damaged in packaging) is noticed by a test and not by a user's scores."""

import numpy as np
import pytest

from spacy_elmo import ElmoBiLM

SENTENCES = [["The", "river", "bank", "flooded", "."], ["She", "deposited", "money", "at", "the", "bank", "."], ["Zwingmann"]]

GOLDEN = [
    # per sentence: the sum of each layer, then layers 0-2 of the last token's first two values
    ([-11.846, -20.573, 31.167], [6.46114, 2.1434, 0.03352, -1.39581, 0.54257, -0.68842]),
    ([-6.466, -8.38, -22.047], [6.46114, 2.1434, 0.03527, -0.90462, 1.03713, -0.05385]),
    ([-3.21, 6.009, 2.784], [-0.20168, -2.28384, 0.3596, 0.04335, 0.16816, 0.0315]),
]
"""Measured on the default biLM of commit 1d04a6f (fp32, CPU)."""


@pytest.fixture(scope="module")
def outputs():
    return ElmoBiLM.from_pretrained("default").embed_sentences(SENTENCES)


def test_the_default_biLM_has_its_published_shape():
    options = ElmoBiLM.from_pretrained("default").options
    assert (options.n_layers, options.lstm_dim, options.projection_dim) == (2, 512, 128)


@pytest.mark.parametrize("index", range(len(SENTENCES)))
def test_the_default_biLM_gives_its_pinned_outputs(outputs, index):
    sums, values = GOLDEN[index]
    layers = outputs[index]
    assert layers.shape == (3, len(SENTENCES[index]), 256)
    np.testing.assert_allclose([layers[layer].sum() for layer in range(3)], sums, atol=2e-3)
    np.testing.assert_allclose(layers[:, -1, :2].ravel(), values, atol=2e-5)
