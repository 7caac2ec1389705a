"""The ``elmo`` spaCy component: annotations, hooks, pieces, serialization, errors."""

import shutil
import warnings

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc

from spacy_elmo import ElmoBiLM, ElmoModelNotFoundError, ElmoOptionsError, ElmoWeightsError
from spacy_elmo.bilm.pretrained import resolve_model
from spacy_elmo.pipeline.component import ElmoComponent

TEXT = "She sat on the river bank."


def _nlp(model_dir, **model):
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "elmo",
        config={"model": {"weights": str(model_dir / "weights.hdf5"), "options": str(model_dir / "options.json"), **model}},
    )
    return nlp


def test_layers_tensor_and_vectors(model_dir):
    nlp = _nlp(model_dir)
    doc = nlp(TEXT)
    bilm = ElmoBiLM.from_pretrained(model_dir)
    expected = bilm.embed_sentences([[t.text for t in doc]])[0]
    assert doc._.elmo_layers.dtype == np.float32 and doc._.elmo_layers.shape == (3, 7, 32)
    np.testing.assert_allclose(doc._.elmo_layers, expected, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(doc.tensor, expected.mean(axis=0), atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(doc[5].vector, doc.tensor[5])
    np.testing.assert_allclose(doc[2:5].vector, doc.tensor[2:5].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(doc.vector, doc.tensor.mean(axis=0), rtol=1e-6)
    a, b = doc[5].vector, doc[4].vector
    assert doc[5].similarity(doc[4]) == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), rel=1e-5)
    assert doc[5].similarity(doc[5]) == pytest.approx(1.0, rel=1e-5)


def test_layer_weights_and_gamma_set_the_mix(model_dir):
    nlp = spacy.blank("en")
    config = {"weights": str(model_dir), "options": None}
    nlp.add_pipe("elmo", config={"model": config, "layer_weights": [0.0, 1.0, 2.0], "gamma": 2.0})
    doc = nlp(TEXT)
    w = np.exp([0.0, 1.0, 2.0])
    w = 2.0 * w / w.sum()
    np.testing.assert_allclose(doc.tensor, np.tensordot(w, doc._.elmo_layers, axes=1), rtol=1e-5, atol=1e-6)


def test_whitespace_tokens_get_zeros_and_do_not_change_neighbours(model_dir):
    nlp = _nlp(model_dir)
    spaced = nlp("She sat  on the\n river bank.")
    plain = nlp("She sat on the river bank.")
    assert [t.text for t in spaced if t.is_space] == [" ", "\n "]
    kept = [t.i for t in spaced if not t.is_space]
    np.testing.assert_allclose(spaced._.elmo_layers[:, kept], plain._.elmo_layers, atol=1e-6, rtol=1e-5)
    for token in spaced:
        if token.is_space:
            assert not spaced._.elmo_layers[:, token.i].any()
            assert token.similarity(spaced[0]) == 0.0


def test_empty_and_whitespace_only_docs(model_dir):
    nlp = _nlp(model_dir)
    for text in ["", "   \n "]:
        doc = nlp(text)
        assert doc._.elmo_layers.shape == (3, len(doc), 32)
        assert doc.tensor.shape == (len(doc), 32)
        assert doc.vector.shape == (32,) and not doc.vector.any()


def test_long_docs_are_read_in_pieces(model_dir):
    words = ("the cat sat on the mat and then it went home .".split()) * 10
    nlp = _nlp(model_dir, max_piece_length=16)
    doc = nlp(Doc(nlp.vocab, words=words))
    bilm = ElmoBiLM.from_pretrained(model_dir)
    windows = bilm.embed_sentences([words[i : i + 16] for i in range(0, len(words), 16)])
    np.testing.assert_allclose(doc._.elmo_layers, np.concatenate(windows, axis=1), atol=1e-6, rtol=1e-5)

    sent_starts = [i % 12 == 0 for i in range(len(words))]
    doc = nlp(Doc(nlp.vocab, words=words, sent_starts=sent_starts))
    sentences = bilm.embed_sentences([words[i : i + 12] for i in range(0, len(words), 12)])
    np.testing.assert_allclose(doc._.elmo_layers, np.concatenate(sentences, axis=1), atol=1e-6, rtol=1e-5)


def test_results_do_not_depend_on_batching(model_dir):
    texts = [TEXT, "A much longer sentence about the bank of the river and the money in it .", "Hi"]
    nlp = _nlp(model_dir, max_batch_tokens=8)
    alone = [nlp(t)._.elmo_layers for t in texts]
    batched = [d._.elmo_layers for d in nlp.pipe(texts, batch_size=3)]
    for a, b in zip(alone, batched):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_to_disk_is_self_contained(model_dir, tmp_path):
    nlp = _nlp(model_dir)
    before = nlp(TEXT)._.elmo_layers
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(model_dir)
    loaded = spacy.load(tmp_path / "pipeline")
    np.testing.assert_array_equal(loaded(TEXT)._.elmo_layers, before)


def test_to_bytes_round_trip(model_dir):
    nlp = _nlp(model_dir)
    before = nlp(TEXT)._.elmo_layers
    data = nlp.get_pipe("elmo").to_bytes()
    other = _nlp(model_dir)
    other.get_pipe("elmo").from_bytes(data)
    shutil.rmtree(model_dir)
    np.testing.assert_array_equal(other(TEXT)._.elmo_layers, before)


def test_multiprocessing_pipe(model_dir):
    nlp = _nlp(model_dir)
    texts = [TEXT, "Another one .", "And a third sentence here ."] * 2
    expected = [nlp(t)._.elmo_layers for t in texts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        docs = list(nlp.pipe(texts, n_process=2, batch_size=2))
    for doc, layers in zip(docs, expected):
        np.testing.assert_allclose(doc._.elmo_layers, layers, atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(doc[0].vector, doc.tensor[0])


def test_unknown_model_name_is_a_clear_error():
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": "elmo-xxl"}})
    with pytest.raises(ElmoModelNotFoundError, match="small"):
        nlp("text")


def test_missing_weights_file_is_a_clear_error(model_dir):
    (model_dir / "weights.hdf5").unlink()
    nlp = _nlp(model_dir)
    with pytest.raises(ElmoWeightsError, match=r"weights\.hdf5"):
        nlp.initialize()


def test_mismatched_options_name_dataset_and_shapes(model_dir, tmp_path):
    import json

    options = json.loads((model_dir / "options.json").read_text())
    options["lstm"]["projection_dim"] = 32
    (model_dir / "options.json").write_text(json.dumps(options))
    with pytest.raises(ElmoWeightsError, match=r"CNN_proj/W_proj.*\(28, 16\).*\(28, 32\)"):
        _nlp(model_dir)(TEXT)


def test_invalid_config_values(model_dir):
    with pytest.raises(ElmoOptionsError, match="max_batch_tokens"):
        _nlp(model_dir, max_batch_tokens=0)
    with pytest.raises(
        ElmoOptionsError, match=r"spacy-elmo\.ElmoBiLM\.v1 .*max_piece_length must be a positive integer, got -1: .*default 256"
    ):
        _nlp(model_dir, max_piece_length=-1)
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir)}, "layer_weights": [1.0, 2.0]})
    with pytest.raises(ElmoOptionsError, match="layer_weights has 2 values"):
        nlp(TEXT)
    with pytest.raises(ElmoOptionsError, match="gamma"):
        ElmoComponent(nlp.vocab, nlp.get_pipe("elmo").model, gamma=float("nan"))


def test_default_model_ships_and_works_offline(monkeypatch):
    """``nlp.add_pipe("elmo")`` with no configuration uses the biLM inside the package."""
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("the default model must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo")
    doc = nlp(TEXT)
    assert doc._.elmo_layers.shape == (3, 7, 256) and doc._.elmo_layers.dtype == np.float32
    assert doc[5].similarity(doc[4]) != 0.0
    _, weights_path = resolve_model("default")
    assert weights_path.parent.name == "default_model" and weights_path.stat().st_size < 25 * 2**20
