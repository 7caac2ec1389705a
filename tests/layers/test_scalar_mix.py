"""ScalarMix: its hand-written backward pass against finite differences, the layer norm, its own dropout."""

from typing import Callable, List

import numpy as np
import pytest

from spacy_elmo.errors import ElmoOptionsError
from spacy_elmo.layers.scalar_mix import ScalarMix, mix_coefficients
from spacy_elmo.pipeline.architectures import ElmoListener_v1, ElmoMix_v1


def make_mix(layer_norm: bool, l2_penalty: float = 0.0):
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(3, n, 4)).astype("float64") for n in (5, 2, 0, 3)]
    mix = ScalarMix(l2_penalty=l2_penalty, layer_norm=layer_norm)
    mix.initialize(X=layers)
    mix.set_param("weights", np.array([0.3, -0.2, 0.5]))
    mix.set_param("gamma", np.array([1.7]))
    return mix, layers


def loss_of(mix, layers: List[np.ndarray], probes: List[np.ndarray]) -> float:
    """A fixed linear functional of the outputs, so that d loss / d output = probe."""
    outputs = mix.predict(layers)
    return float(sum((Y * P).sum() for Y, P in zip(outputs, probes)))


def numeric(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        old = array[index]
        array[index] = old + eps
        up = f()
        array[index] = old - eps
        down = f()
        array[index] = old
        grad[index] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("layer_norm", [False, True])
def test_backprop_matches_finite_differences(layer_norm):
    mix, layers = make_mix(layer_norm)
    rng = np.random.default_rng(1)
    probes = [rng.normal(size=X.shape[1:]) for X in layers]
    _, backprop = mix.begin_update(layers)
    d_layers = backprop(probes)
    f = lambda: loss_of(mix, layers, probes)  # noqa: E731
    for name in ("weights", "gamma"):
        np.testing.assert_allclose(mix.get_grad(name), numeric(f, mix.get_param(name)), rtol=1e-6, atol=1e-8)
    for X, dX in zip(layers, d_layers):
        np.testing.assert_allclose(dX, numeric(f, X), rtol=1e-6, atol=1e-8)


def test_l2_penalty_adds_its_gradient():
    plain, layers = make_mix(False)
    penalised, _ = make_mix(False, l2_penalty=0.001)
    probes = [np.ones(X.shape[1:]) for X in layers]
    for mix in (plain, penalised):
        _, backprop = mix.begin_update(layers)
        backprop(probes)
    expected = 2 * 0.001 * penalised.get_param("weights")
    np.testing.assert_allclose(penalised.get_grad("weights") - plain.get_grad("weights"), expected, rtol=1e-9)


def test_layer_norm_standardises_each_layer_over_the_batch():
    mix, layers = make_mix(True)
    mix.set_param("weights", np.array([-1e9, 1e9, -1e9]))
    mix.set_param("gamma", np.array([1.0]))
    chosen = np.concatenate([Y.ravel() for Y in mix.predict(layers)])
    assert abs(chosen.mean()) < 1e-9
    assert abs(chosen.std() - 1.0) < 1e-6
    np.testing.assert_allclose(mix_coefficients(mix), [0.0, 1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("own,training", [(0.0, 0.5), (0.3, 0.0)])
def test_the_mix_keeps_its_own_dropout_whatever_spacy_training_sets(own, training):
    """spaCy's update sets every layer's ``dropout_rate`` to ``[training] dropout``; the mix's
    configured rate must survive it (it once did not: the setting had no effect in spacy train)."""
    from thinc.api import set_dropout_rate

    from spacy_elmo.pipeline.architectures import ElmoListener_v1

    listener = ElmoListener_v1(dropout=own)
    set_dropout_rate(listener, training)
    mix = listener.layers[-1]
    layers = [np.ones((3, 200, 8), dtype="f")]
    mix.initialize(X=layers)
    outputs, _ = mix(layers, is_train=True)
    dropped = float((outputs[0] == 0).mean())
    assert dropped == pytest.approx(own, abs=0.05)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"l2_penalty": -0.1}, r"l2_penalty must be a number >= 0, got -0\.1: use 0 for no penalty"),
        ({"l2_penalty": "0.001"}, r"l2_penalty must be a number >= 0, got '0\.001'"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1\.0: use 0 for none"),
        ({"dropout": True}, r"dropout must be a number in \[0, 1\), got True"),
        ({"layer_norm": "yes"}, r"layer_norm must be true or false, got 'yes'"),
    ],
)
def test_a_wrong_mix_setting_names_the_setting_the_architecture_and_the_fix(settings, message):
    with pytest.raises(ElmoOptionsError, match=message):
        ScalarMix(**settings)
    with pytest.raises(
        ElmoOptionsError, match=r"spacy-elmo\.ElmoListener\.v1 \(a task's ELMo mix.*tok2vec\.elmo\]\): " + message
    ):
        ElmoListener_v1(**settings)
    with pytest.raises(ElmoOptionsError, match=r"spacy-elmo\.ElmoMix\.v1 .*: " + message):
        ElmoMix_v1(ScalarMix(), **settings)
