"""The biLM: AllenNLP's regression fixtures (shared data), and its behaviour on a tiny random biLM."""

import importlib.util
import json
import random

import h5py
import numpy as np
import pytest
import torch

from spacy_elmo import ElmoBiLM, ElmoOptions
from spacy_elmo.bilm.weights_io import read_weights
from spacy_elmo.chars import encode_tokens

TIGHT = {"atol": 1e-6, "rtol": 1e-5}


def _expected_stateless(shared, name):
    with h5py.File(shared / "fixtures" / name / "stateless_layers.hdf5", "r") as f:
        return {(s, i): f[f"stream{s}/sentence{i}"][...] for s in range(3) for i in range(10)}


def _assert_layers(actual, expected, **tolerance):
    assert actual.shape == expected.shape
    assert np.allclose(actual, expected, **tolerance), f"max |Δ| = {np.abs(actual - expected).max()}"


@pytest.mark.parametrize("batch_size", [1, 3, 7, 30])
def test_stateless_layers_match_fixture_in_any_batch_composition(shared, fixture_model, fixture_sentences, batch_size):
    expected = _expected_stateless(shared, "allennlp_elmo")
    keys = list(expected)
    random.Random(batch_size).shuffle(keys)
    bilm = ElmoBiLM.from_files(*fixture_model, token_cache_size=50 if batch_size == 7 else 0)
    outputs = bilm.embed_sentences([fixture_sentences[s][i] for s, i in keys], batch_size=batch_size)
    for key, output in zip(keys, outputs):
        _assert_layers(output, expected[key], **TIGHT)


@pytest.mark.parametrize("per_step_input_max_dim", [0, 10_000])
def test_both_inference_lstm_paths_match_fixture(shared, fixture_model, fixture_sentences, monkeypatch, per_step_input_max_dim):
    """Inference multiplies a layer's inputs per step or for all steps at once, by input width."""
    from spacy_elmo.bilm import lstm

    monkeypatch.setattr(lstm, "PER_STEP_INPUT_MAX_DIM", per_step_input_max_dim)
    expected = _expected_stateless(shared, "allennlp_elmo")
    bilm = ElmoBiLM.from_files(*fixture_model, token_cache_size=0)
    sentences = [fixture_sentences[s][i] for s, i in expected]
    outputs = bilm.embed_sentences(sentences, batch_size=4)
    for key, output in zip(expected, outputs):
        _assert_layers(output, expected[key], **TIGHT)


def test_stateless_layers_do_not_depend_on_batch_composition(tiny_model, tiny_sentences):
    sentences = [s for stream in tiny_sentences for s in stream]
    alone = ElmoBiLM.from_files(*tiny_model, token_cache_size=0).embed_sentences(sentences, batch_size=1)
    for batch_size in (3, 7, 30):
        order = list(range(len(sentences)))
        random.Random(batch_size).shuffle(order)
        bilm = ElmoBiLM.from_files(*tiny_model, token_cache_size=50 if batch_size == 7 else 0)
        outputs = bilm.embed_sentences([sentences[i] for i in order], batch_size=batch_size)
        for i, output in zip(order, outputs):
            _assert_layers(output, alone[i], **TIGHT)


def test_token_cache_changes_nothing(tiny_model, tiny_sentences):
    sentences = [s for stream in tiny_sentences for s in stream]
    plain = ElmoBiLM.from_files(*tiny_model, token_cache_size=0).embed_sentences(sentences, batch_size=4)
    cached = ElmoBiLM.from_files(*tiny_model, token_cache_size=64)
    for _ in range(2):
        for a, b in zip(plain, cached.embed_sentences(sentences, batch_size=4)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    assert len(cached.token_cache) == 64


def test_clip_stress_fixture(shared, fixture_sentences):
    folder = shared / "fixtures" / "clip_stress"
    expected = _expected_stateless(shared, "clip_stress")
    bilm = ElmoBiLM.from_files(folder / "options.json", folder / "weights.hdf5")
    keys = list(expected)
    outputs = bilm.embed_sentences([fixture_sentences[s][i] for s, i in keys], batch_size=5)
    for key, output in zip(keys, outputs):
        _assert_layers(output, expected[key], atol=1e-5, rtol=1e-4)


def test_upstream_stateful_protocol(shared, fixture_model, fixture_sentences):
    bilm = ElmoBiLM.from_files(*fixture_model, stateful=True)
    files = [h5py.File(shared / "fixtures" / "allennlp_elmo" / f"lm_embeddings_{k}.hdf5", "r") for k in range(3)]
    try:
        for i in range(10):
            batch = [fixture_sentences[k][i] for k in range(3)]
            outputs = bilm.embed_sentences(batch)
            for k in range(3):
                assert outputs[k].shape[1] == len(batch[k])
                forward, backward = files[k][str(i)][...]
                _assert_layers(outputs[k][2], np.concatenate([forward, backward], axis=-1), **TIGHT)
    finally:
        for f in files:
            f.close()


def test_stateful_depends_on_history_and_reset_restores_fresh_state(tiny_model, tiny_sentences):
    bilm = ElmoBiLM.from_files(*tiny_model, stateful=True)
    batch = [tiny_sentences[k][0] for k in range(3)]
    first = bilm.embed_sentences(batch)
    second = bilm.embed_sentences(batch)
    assert np.abs(first[0][2] - second[0][2]).max() > 1e-2
    bilm.reset_states()
    again = bilm.embed_sentences(batch)
    np.testing.assert_array_equal(first[0], again[0])


def test_stateful_smaller_batch_keeps_other_slots(tiny_model, tiny_sentences):
    """Reference §4: slots beyond a smaller batch keep their state."""
    a, b = ElmoBiLM.from_files(*tiny_model, stateful=True), ElmoBiLM.from_files(*tiny_model, stateful=True)
    s = tiny_sentences
    a.embed_sentences([s[0][0], s[1][0], s[2][0]])
    a.embed_sentences([s[0][1]])
    b.embed_sentences([s[0][0], s[1][0], s[2][0]])
    b.embed_sentences([s[0][1], s[1][1]])
    out_a = a.embed_sentences([s[0][2], s[1][2], s[2][2]])
    out_b = b.embed_sentences([s[0][2], s[1][2], s[2][2]])
    np.testing.assert_array_equal(out_a[2], out_b[2])  # slot 2 untouched in both histories
    assert np.abs(out_a[1] - out_b[1]).max() > 1e-3


def test_token_layer_matches_fixture(shared, fixture_model):
    folder = shared / "fixtures" / "allennlp_elmo"
    vocab = (folder / "vocab_test.txt").read_text(encoding="utf-8").split("\n")
    with h5py.File(folder / "elmo_token_embeddings.hdf5", "r") as f:
        expected = f["embedding"][...]
    bilm = ElmoBiLM.from_files(*fixture_model)
    with torch.no_grad():
        actual = bilm.token_encoder(torch.from_numpy(encode_tokens(vocab))).numpy()
    _assert_layers(actual[: len(expected)], expected, **TIGHT)
    layers = bilm.embed_sentences([vocab[:50]])[0]
    _assert_layers(layers[0, :, :16], expected[:50], **TIGHT)
    np.testing.assert_array_equal(layers[0, :, :16], layers[0, :, 16:])


def test_token_layer_is_the_token_encoder_output_twice(tiny_model, tiny_sentences):
    words = sorted({w for stream in tiny_sentences for s in stream for w in s})
    bilm = ElmoBiLM.from_files(*tiny_model)
    with torch.no_grad():
        expected = bilm.token_encoder(torch.from_numpy(encode_tokens(words))).numpy()
    layers = bilm.embed_sentences([words])[0]
    _assert_layers(layers[0, :, :16], expected, **TIGHT)
    np.testing.assert_array_equal(layers[0, :, :16], layers[0, :, 16:])


def test_an_empty_batch_gives_empty_layers(tiny_model):
    bilm = ElmoBiLM.from_files(*tiny_model, token_cache_size=0)
    layers, lengths = bilm.embed_batch([])
    assert layers.shape == (bilm.options.n_output_layers, 0, 0, bilm.options.output_dim) and lengths.shape == (0,)
    assert bilm.embed_sentences([]) == []


def test_padded_slots_are_zero_and_empty_sentences_work(tiny_model):
    bilm = ElmoBiLM.from_files(*tiny_model)
    with torch.no_grad():
        layers, _ = bilm.embed_batch([["a", "b", "c"], [], ["d"]])
    assert layers.shape == (3, 3, 3, 32)
    assert (layers[:, 1] == 0).all() and (layers[:, 2, 1:] == 0).all()
    outputs = bilm.embed_sentences([[], ["x"], []])
    assert [o.shape for o in outputs] == [(3, 0, 32), (3, 1, 32), (3, 0, 32)]
    assert bilm.embed_sentences([]) == []


def test_save_load_round_trip_is_bit_identical(tiny_model, tiny_sentences, tmp_path):
    bilm = ElmoBiLM.from_files(*tiny_model)
    bilm.save(tmp_path / "copy")
    original = read_weights(tiny_model[1], bilm.options)
    saved = read_weights(tmp_path / "copy" / "weights.hdf5", bilm.options)
    assert original.keys() == saved.keys()
    for name in original:
        np.testing.assert_array_equal(original[name], saved[name], err_msg=name)
    assert json.loads((tmp_path / "copy" / "options.json").read_text()) == json.loads(tiny_model[0].read_text())
    reloaded = ElmoBiLM.from_pretrained(tmp_path / "copy")
    sentences = tiny_sentences[0]
    expected = bilm.embed_sentences(sentences)
    for a, b in zip(expected, reloaded.embed_sentences(sentences)):
        np.testing.assert_array_equal(a, b)
    # A fresh copy, as the others were when they ran: the token cache then holds the same vectors.
    from_bytes = ElmoBiLM.from_bytes(bilm.to_bytes())
    for a, b in zip(expected, from_bytes.embed_sentences(sentences)):
        np.testing.assert_array_equal(a, b)


def _load_comparator(shared):
    spec = importlib.util.spec_from_file_location("naive_elmo", shared / "bench" / "naive_elmo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_skip_connections_matches_independent_comparator(shared, fixture_model, fixture_sentences, tmp_path):
    """``use_skip_connections: false`` (bilm-tf's own test setting) against the spec-level comparator."""
    options = json.loads(fixture_model[0].read_text())
    options["lstm"]["use_skip_connections"] = False
    (tmp_path / "options.json").write_text(json.dumps(options))
    naive = _load_comparator(shared)
    reference = naive.load(tmp_path / "options.json", fixture_model[1])
    bilm = ElmoBiLM.from_files(tmp_path / "options.json", fixture_model[1])
    with_skip = ElmoBiLM.from_files(*fixture_model)
    sentences = fixture_sentences[1]
    with torch.no_grad():
        expected = naive.embed_batch(reference, sentences)
    actual = bilm.embed_sentences(sentences)
    for a, e, s in zip(actual, expected, with_skip.embed_sentences(sentences)):
        _assert_layers(a, e, atol=1e-5, rtol=1e-4)
        assert np.abs(a[2] - s[2]).max() > 0.1


def test_skip_connections_change_only_the_layers_above_the_first_lstm_layer(tiny_model, tiny_model_no_skip, tiny_sentences):
    sentences = tiny_sentences[1]
    with_skip = ElmoBiLM.from_files(*tiny_model).embed_sentences(sentences)
    without = ElmoBiLM.from_files(*tiny_model_no_skip).embed_sentences(sentences)
    for a, s in zip(without, with_skip):
        _assert_layers(a[:2], s[:2], **TIGHT)  # token layer and first LSTM layer: no residual below them
        assert np.abs(a[2] - s[2]).max() > 0.1


def test_gradients_reach_every_parameter(tiny_model):
    bilm = ElmoBiLM.from_files(*tiny_model).train()
    layers, _ = bilm.embed_batch([["The", "cat", "sat"], ["A", "dog"]])
    layers.sum().backward()
    missing = [name for name, p in bilm.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.filterwarnings("ignore::spacy_elmo.ElmoOptionsWarning")
def test_options_validation_names_field(tmp_path):
    from spacy_elmo import ElmoOptionsError

    with pytest.raises(ElmoOptionsError, match=r"lstm\.projection_dim"):
        ElmoOptions.from_dict(
            {"lstm": {"dim": 4, "projection_dim": 0, "n_layers": 1}, "char_cnn": {"embedding": {"dim": 2}, "filters": [[1, 2]]}}
        )
    with pytest.raises(ElmoOptionsError, match=r"char_cnn\.activation"):
        ElmoOptions.from_dict(
            {
                "lstm": {"dim": 4, "projection_dim": 2, "n_layers": 1},
                "char_cnn": {"embedding": {"dim": 2}, "filters": [[1, 2]], "activation": "gelu"},
            }
        )
    with pytest.raises(ElmoOptionsError, match="not found"):
        ElmoOptions.from_file(tmp_path / "missing.json")


def test_the_char_cnn_lookup_table_follows_the_weights(tiny_model, tiny_sentences):
    """Inference's char CNN table is kept between calls and rebuilt when the weights change,
    also when they change behind torch's back (as Thinc's optimizer writes them) and the
    owner says so with ``weights_changed``."""
    sentences = [s for stream in tiny_sentences for s in stream][:6]
    bilm = ElmoBiLM.from_files(*tiny_model, token_cache_size=0)
    before = bilm.embed_sentences(sentences)
    assert bilm.token_encoder.lookup_table() is bilm.token_encoder.lookup_table()

    def reference():
        with torch.enable_grad():  # the plain convolutions
            layers, lengths = bilm.embed_batch(sentences)
        return [layers[:, b, : int(n)].detach().numpy() for b, n in enumerate(lengths)]

    with torch.no_grad():
        bilm.token_encoder.convolutions[0].weight.mul_(3.0)
    changed = bilm.embed_sentences(sentences)
    assert not np.allclose(changed[0][0], before[0][0], atol=1e-4)
    for got, expected in zip(changed, reference()):
        _assert_layers(got, expected, **TIGHT)
    bilm.token_encoder.convolutions[0].weight.detach().numpy()[...] *= 0.5  # no new torch version
    bilm.weights_changed()
    for got, expected in zip(bilm.embed_sentences(sentences), reference()):
        _assert_layers(got, expected, **TIGHT)


@pytest.mark.parametrize("bad", [-1, 262])
def test_character_ids_out_of_range_are_refused(tiny_model, bad):
    """The lookup char CNN would read a neighbouring table block for such an id: refuse it."""
    bilm = ElmoBiLM.from_files(*tiny_model, token_cache_size=0)
    ids = torch.from_numpy(encode_tokens(["river", "bank"], bilm.options.max_characters_per_token))
    ids[1, 2] = bad
    with torch.no_grad(), pytest.raises(ValueError, match=r"character ids must be in 0\.\.261"):
        bilm.token_encoder(ids)


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"lstm": {"dim": 1' + "0" * 5000 + "}}", "is not readable JSON"),
        ("[" * 100_000 + "]" * 100_000, "nests brackets too deeply"),
    ],
)
def test_pathological_options_files_name_the_file(tmp_path, text, message):
    from spacy_elmo import ElmoOptionsError

    path = tmp_path / "options.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ElmoOptionsError, match=message) as info:
        ElmoOptions.from_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("clip", [1e308, 2e6, 0])
def test_implausible_clip_values_are_refused(tiny_model, clip):
    from spacy_elmo import ElmoOptionsError

    data = json.loads(tiny_model[0].read_text(encoding="utf-8"))
    data["lstm"]["cell_clip"] = clip
    with pytest.raises(ElmoOptionsError, match=r"'lstm.cell_clip' must be a number in \(0, 1e\+06\]"):
        ElmoOptions.from_dict(data)


def test_a_wrong_token_cache_size_names_the_setting_and_what_it_means():
    from spacy_elmo.bilm.token_cache import TokenCache
    from spacy_elmo.errors import ElmoOptionsError

    for size in (-1, True, 1.5):
        with pytest.raises(
            ElmoOptionsError, match=r"token_cache_size must be an integer >= 0, got .*0 turns the token cache off"
        ):
            TokenCache(size)
