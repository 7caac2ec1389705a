"""One API test over every registered ``spacy-elmo.*`` architecture: built from a config with
small settings on the tiny biLM, initialized, run on docs (an empty one and one longer than
a piece included), its outputs of the documented shape and type, and a to_bytes/from_bytes
round trip into a freshly built model that predicts the same and serializes to the same bytes.
A newly registered architecture fails this test until it is given a case here."""

from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model

N_LAYERS, WIDTH = 3, 32
"""The tiny biLM's layers (token layer + 2 LSTM layers) and their width 2P (tests/conftest.py)."""
TOK2VEC_WIDTH = 16
TEXTS = ["The bank sat by the river .", "Mary went to Paris on Monday with John Smith and Anna", ""]


def _bilm_block(model_dir) -> Dict[str, Any]:
    return {
        "@architectures": "spacy-elmo.ElmoBiLM.v1",
        "weights": str(model_dir),
        "max_piece_length": 4,  # the second text is read in pieces
        "layer_cache_mb": 0,
        "layer_store": "off",
    }


def _mix_block(model_dir) -> Dict[str, Any]:
    return {"@architectures": "spacy-elmo.ElmoMix.v1", "elmo": _bilm_block(model_dir), "l2_penalty": 0.001, "layer_norm": True}


def _listener_block(model_dir) -> Dict[str, Any]:
    return {"@architectures": "spacy-elmo.ElmoListener.v1", "upstream": "elmo", "dropout": 0.1}


def _tok2vec_block(model_dir) -> Dict[str, Any]:
    return {
        "@architectures": "spacy-elmo.ElmoTok2Vec.v1",
        "width": TOK2VEC_WIDTH,
        "elmo": _mix_block(model_dir),
        "embed": {
            "@architectures": "spacy.MultiHashEmbed.v2",
            "width": 8,
            "attrs": ["NORM", "SHAPE"],
            "rows": [50, 20],
            "include_static_vectors": False,
        },
        "encode": None,
    }


CASES: Dict[str, Callable[[Any], Dict[str, Any]]] = {
    "spacy-elmo.ElmoBiLM.v1": _bilm_block,
    "spacy-elmo.ElmoMix.v1": _mix_block,
    "spacy-elmo.ElmoListener.v1": _listener_block,
    "spacy-elmo.ElmoTok2Vec.v1": _tok2vec_block,
}
"""Each registered architecture's config with small settings."""

OUTPUT_SHAPE: Dict[str, Callable[[Doc], tuple]] = {
    "spacy-elmo.ElmoBiLM.v1": lambda doc: (N_LAYERS, len(doc), WIDTH),
    "spacy-elmo.ElmoMix.v1": lambda doc: (len(doc), WIDTH),
    "spacy-elmo.ElmoListener.v1": lambda doc: (len(doc), WIDTH),
    "spacy-elmo.ElmoTok2Vec.v1": lambda doc: (len(doc), TOK2VEC_WIDTH),
}


def _build(name: str, model_dir) -> Model:
    return registry.resolve({"model": CASES[name](model_dir)})["model"]


@pytest.fixture(scope="module")
def docs(tiny_model) -> List[Doc]:
    """The texts with the elmo component's layers set, which a listener reads outside training."""
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(tiny_model[0].parent), "layer_cache_mb": 0, "layer_store": "off"}})
    nlp.initialize()
    return list(nlp.pipe(TEXTS))


def _prepare(name: str, model: Model, docs: List[Doc]) -> None:
    if name == "spacy-elmo.ElmoListener.v1":  # the upstream component shares its dims when it finds the listener
        listener = model.get_ref("listener")
        listener.set_dim("nO", WIDTH)
        listener.set_dim("nL", N_LAYERS)
    model.initialize(X=docs)


def _perturb(model: Model, seed: int = 0) -> None:
    """Every Thinc parameter set to random values and noise added to the biLM's weights, so that
    a round trip that dropped either (a fresh model loads the files' weights) shows."""
    rng = np.random.default_rng(seed)
    for node in model.walk():
        for param in node.param_names:
            if node.has_param(param):
                value = node.get_param(param)
                node.set_param(param, node.ops.asarray(rng.normal(0.0, 0.1, value.shape).astype(value.dtype)))
        for shim in node.shims:
            bilm = shim.bilm
            with torch.no_grad():
                for weights in bilm.parameters():
                    weights.add_(torch.from_numpy(rng.normal(0.0, 0.01, tuple(weights.shape)).astype(np.float32)))
            bilm.weights_changed()


def test_every_registered_architecture_has_a_case():
    registered = sorted(name for name in registry.architectures.get_all() if name.startswith("spacy-elmo."))
    assert registered == sorted(CASES), "give each spacy-elmo architecture a case in CASES and OUTPUT_SHAPE"


@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture_predicts_documented_shapes(name, model_dir, docs):
    model = _build(name, model_dir)
    _prepare(name, model, docs)
    outputs = model.predict(docs)
    assert isinstance(outputs, list) and len(outputs) == len(docs)
    for doc, output in zip(docs, outputs):
        assert isinstance(output, np.ndarray) and output.dtype == np.float32
        assert output.shape == OUTPUT_SHAPE[name](doc)
        assert np.isfinite(output).all()
    assert any(float(np.abs(output).sum()) > 0 for output in outputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_architecture_bytes_round_trip(name, model_dir, docs):
    model = _build(name, model_dir)
    _prepare(name, model, docs)
    _perturb(model)
    expected = model.predict(docs)
    data = model.to_bytes()
    fresh = _build(name, model_dir)
    if name == "spacy-elmo.ElmoListener.v1":
        _prepare(name, fresh, docs)
    fresh.from_bytes(data)
    for got, want in zip(fresh.predict(docs), expected):
        np.testing.assert_array_equal(got, want)
    assert fresh.to_bytes() == data
