"""What docs/guarantees.md promises: thread safety, integrity checks on every
weights source, clear errors for damaged pipelines, saves that never rewrite unchanged
weights, and bounded batch dependence. Runs on tiny random biLMs built here."""

import json
import os
import random
import threading
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import spacy
import srsly
import torch

from conftest import TINY_OPTIONS, run_threads
from spacy_elmo import ElmoBiLM, ElmoOptionsError, ElmoWeightsError
from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.bilm.weights_io import read_weights, write_weights
from spacy_elmo.layers import bilm_layer
from test_batch_invariance import FP32_BOUND

TEXT = "She sat on the river bank ."


def tiny_arrays(options: ElmoOptions, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in options.expected_shapes().items():
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        scale = 1.0 if name == "char_embed" else (0.1 if len(shape) == 1 else 1.5 / np.sqrt(fan_in))
        arrays[name] = rng.normal(0.0, scale, shape).astype(np.float32)
    return arrays


def make_model_dir(folder: Path, options: Dict = TINY_OPTIONS, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "options.json").write_text(json.dumps(options), encoding="utf-8")
    write_weights(folder / "weights.hdf5", tiny_arrays(ElmoOptions.from_dict(options), seed))
    return folder


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return make_model_dir(tmp_path / "tiny")


def make_nlp(model_dir: Path, **model):
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir), **model}})
    return nlp


def bilm_node(nlp):
    return next(node for node in nlp.get_pipe("elmo").model.walk() if node.name == "elmo-bilm")


def random_texts(n: int, n_words: int, seed: int, max_length: int = 6) -> List[str]:
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12))) for _ in range(n_words)]
    return [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, max_length))) for _ in range(n)]


# ---------------------------------------------------------------------------- threads

BATCH_TOLERANCE = FP32_BOUND
"""The stated bound on float32 rounding differences between batch compositions."""


@pytest.mark.parametrize("texts_mode", ["shared", "distinct"])
@pytest.mark.parametrize("token_cache_size,layer_cache_mb", [(64, 0), (64, 1024), (10_000, 0), (10_000, 1024)])
def test_threads_give_the_vectors_of_a_sequential_run(tiny_dir, monkeypatch, texts_mode, token_cache_size, layer_cache_mb):
    """Four threads calling nlp(text) on one pipeline get exactly what one thread gets running
    the same biLM calls in the order they took the lock (replayed on a fresh pipeline), and
    what a plain sequential run gets, up to the documented rounding bound."""
    texts = random_texts(60, 150, seed=1)
    config = {"token_cache_size": token_cache_size, "layer_cache_mb": layer_cache_mb}
    nlp = make_nlp(tiny_dir, **config)
    calls: List[Tuple[List[List[str]], List[np.ndarray]]] = []
    original = bilm_layer._frozen_forward

    def recording(model, sequences, **kwargs):
        outputs = original(model, sequences, **kwargs)
        calls.append(([list(s) for s in sequences], [np.array(o, copy=True) for o in outputs]))
        return outputs

    monkeypatch.setattr(bilm_layer, "_frozen_forward", recording)
    results: List[List[Tuple[str, np.ndarray]]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        mine = random.Random(k).sample(texts, len(texts)) if texts_mode == "shared" else texts[k::4]
        for text in mine:
            results[k].append((text, nlp(text)._.elmo_layers))

    run_threads(4, work)
    monkeypatch.setattr(bilm_layer, "_frozen_forward", original)

    replay = bilm_node(make_nlp(tiny_dir, **config))
    for sequences, outputs in calls:
        for expected, got in zip(outputs, original(replay, sequences)):
            np.testing.assert_array_equal(got, expected)
    sequential = make_nlp(tiny_dir, **config)
    reference = {text: sequential(text)._.elmo_layers for text in texts}
    assert sum(map(len, results)) == (4 if texts_mode == "shared" else 1) * len(texts)
    for text, layers in (item for result in results for item in result):
        np.testing.assert_allclose(layers, reference[text], rtol=0, atol=BATCH_TOLERANCE)


def test_threads_without_caches_are_bit_identical_to_a_sequential_run(tiny_dir):
    texts = random_texts(40, 100, seed=2)
    config = {"token_cache_size": 0, "layer_cache_mb": 0}
    sequential = make_nlp(tiny_dir, **config)
    reference = {text: sequential(text)._.elmo_layers for text in texts}
    nlp = make_nlp(tiny_dir, **config)
    results: List[Tuple[str, np.ndarray]] = []
    run_threads(4, lambda k: results.extend((t, nlp(t)._.elmo_layers) for t in random.Random(k).sample(texts, len(texts))))
    assert len(results) == 4 * len(texts)
    for text, layers in results:
        np.testing.assert_array_equal(layers, reference[text])


def test_concurrent_first_calls_load_the_bilm_once(tiny_dir, monkeypatch):
    loads = []
    original = bilm_layer.load_bilm

    def slow_load(settings, **kwargs):
        loads.append(threading.get_ident())
        threading.Event().wait(0.2)
        return original(settings, **kwargs)

    monkeypatch.setattr(bilm_layer, "load_bilm", slow_load)
    nlp = make_nlp(tiny_dir)
    layers = [None] * 4
    run_threads(4, lambda k: layers.__setitem__(k, nlp(TEXT)._.elmo_layers))
    assert len(loads) == 1
    for other in layers[1:]:
        np.testing.assert_array_equal(other, layers[0])


def test_pipelines_with_locks_can_still_be_copied(tiny_dir):
    """Locks are not copied: Model.copy (used by nlp.replace_listeners) deep-copies the biLM."""
    nlp = make_nlp(tiny_dir)
    expected = nlp(TEXT)._.elmo_layers
    copy = nlp.get_pipe("elmo").model.copy()
    np.testing.assert_array_equal(copy.predict([nlp.make_doc(TEXT)])[0], expected)


# ---------------------------------------------------------------------------- saving


def test_saving_again_does_not_rewrite_unchanged_weights(tiny_dir, tmp_path):
    nlp = make_nlp(tiny_dir, layer_cache_mb=0)
    nlp(TEXT)
    nlp.to_disk(tmp_path / "pipeline")
    model_file = tmp_path / "pipeline" / "elmo" / "model"
    before = model_file.stat()
    nlp.to_disk(tmp_path / "pipeline")
    after = model_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in model_file.parent.iterdir() if p.name.startswith(".")]

    with torch.no_grad():
        bilm_node(nlp).shims[0].bilm.token_encoder.projection_bias.add_(1.0)
    nlp.to_disk(tmp_path / "pipeline")
    assert model_file.stat().st_mtime_ns != before.st_mtime_ns
    np.testing.assert_array_equal(spacy.load(tmp_path / "pipeline")(TEXT)._.elmo_layers, nlp(TEXT)._.elmo_layers)


def test_interrupted_save_keeps_the_previous_files(tiny_dir, tmp_path, monkeypatch):
    """The component's files are written beside their target and renamed: a save that dies
    before the rename leaves the previous, complete file and no partial one."""
    nlp = make_nlp(tiny_dir)
    expected = nlp(TEXT)._.elmo_layers
    nlp.to_disk(tmp_path / "pipeline")
    model_file = tmp_path / "pipeline" / "elmo" / "model"
    old_bytes = model_file.read_bytes()
    with torch.no_grad():
        bilm_node(nlp).shims[0].bilm.token_encoder.projection_bias.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        nlp.get_pipe("elmo").to_disk(tmp_path / "pipeline" / "elmo", exclude=["vocab"])
    monkeypatch.undo()
    assert model_file.read_bytes() == old_bytes
    assert not [p for p in model_file.parent.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(spacy.load(tmp_path / "pipeline")(TEXT)._.elmo_layers, expected)


# ---------------------------------------------------------------------------- integrity


def _saved(tiny_dir: Path, tmp_path: Path) -> Path:
    nlp = make_nlp(tiny_dir)
    nlp(TEXT)
    nlp.to_disk(tmp_path / "pipeline")
    return tmp_path / "pipeline"


def test_flipped_bytes_in_saved_weights_fail_the_checksum(tiny_dir, tmp_path):
    pipeline = _saved(tiny_dir, tmp_path)
    model_file = pipeline / "elmo" / "model"
    data = bytearray(model_file.read_bytes())
    start = data.index(b"\x89HDF\r\n\x1a\n")
    rng = random.Random(0)
    # The float data fills the end of the HDF5 image; flip 64 bytes there.
    for position in rng.sample(range(len(data) - 4000, len(data) - 100), 64):
        data[position] ^= 0x5A
    assert start < len(data) - 4000
    model_file.write_bytes(bytes(data))
    with pytest.raises(ElmoWeightsError) as info:
        spacy.load(pipeline)
    message = str(info.value)
    assert str(model_file) in message and "checksum" in message and "corrupted" in message
    assert "Save the pipeline again" in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weight_in_a_weights_file_is_an_error(tiny_dir, bad):
    options = ElmoOptions.from_file(tiny_dir / "options.json")
    arrays = tiny_arrays(options)
    arrays["RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0"][3, 5] = bad
    write_weights(tiny_dir / "weights.hdf5", arrays)
    with pytest.raises(
        ElmoWeightsError,
        match=r"dataset 'RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0' holds 1 NaN or infinite value\(s\) \(the first at index \(3, 5\)",
    ) as info:
        ElmoBiLM.from_pretrained(tiny_dir)
    assert str(tiny_dir / "weights.hdf5") in str(info.value)


def test_non_finite_weight_in_a_saved_pipeline_is_an_error(tiny_dir, tmp_path):
    """A checksum matches whatever was saved; the finite check still catches NaN saved by a diverged run."""
    nlp = make_nlp(tiny_dir)
    with torch.no_grad():
        bilm_node(nlp).shims[0].bilm.token_encoder.projection[0, 0] = float("nan")
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(ElmoWeightsError, match=r"elmo/model \(its weights\): dataset 'CNN_proj/W_proj' holds 1 NaN"):
        spacy.load(tmp_path / "pipeline")


@pytest.mark.parametrize(
    "section,field,value,expected",
    [
        ("lstm", "cell_clip", float("nan"), r"'lstm.cell_clip' must be a number in \(0, 1e\+06\] .*got nan"),
        ("lstm", "proj_clip", -3, r"'lstm.proj_clip' must be a number in \(0, 1e\+06\] .*got -3"),
        ("lstm", "cell_clip", "3", r"'lstm.cell_clip' must be a number in \(0, 1e\+06\] .*got '3'"),
        ("char_cnn", "n_characters", "lots", r"'char_cnn.n_characters' must be 261 or 262 .*got 'lots'"),
        (
            "char_cnn",
            "max_characters_per_token",
            1e9,
            r"'char_cnn.max_characters_per_token' must be an integer in \[3, 1000\].*got 1000000000.0",
        ),
        (
            "char_cnn",
            "max_characters_per_token",
            10**9,
            r"'char_cnn.max_characters_per_token' must be an integer in \[3, 1000\].*got 1000000000",
        ),
        ("lstm", "dim", -32, r"'lstm.dim' must be an integer in \[1, 65536\], got -32"),
        ("lstm", "n_layers", True, r"'lstm.n_layers' must be an integer in \[1, 64\], got True"),
        ("char_cnn", "n_highway", 1.5, r"'char_cnn.n_highway' must be an integer in \[0, 64\], got 1.5"),
    ],
)
def test_options_are_numbers_in_range(tmp_path, section, field, value, expected):
    options = json.loads(json.dumps(TINY_OPTIONS))
    options[section][field] = value
    path = tmp_path / "options.json"
    path.write_text(json.dumps(options), encoding="utf-8")
    with pytest.raises(ElmoOptionsError, match=expected) as info:
        ElmoOptions.from_file(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------- damaged pipelines


def _rewrite_stored_bilm(model_file: Path, change) -> None:
    """Decode the component's model file down to the stored biLM, change it, encode it back
    (with the component's checksum recomputed, so that the inner checks are what is tested)."""
    from spacy_elmo.pipeline import component as component_module

    outer = srsly.msgpack_loads(model_file.read_bytes())
    envelope = srsly.msgpack_loads(outer["model"])
    shim_bytes = envelope["shims"][next(i for i, shims in enumerate(envelope["shims"]) if shims)][0]
    shim = srsly.msgpack_loads(shim_bytes)
    stored = srsly.msgpack_loads(shim["state"])
    change(stored)
    shim["state"] = srsly.msgpack_dumps(stored)
    new_shim = srsly.msgpack_dumps(shim)
    for shims in envelope["shims"]:
        if shims:
            shims[0] = new_shim
    outer["model"] = srsly.msgpack_dumps(envelope)
    outer["sha256"] = component_module._sha256(component_module._canonical(outer["settings"]) + outer["model"])
    model_file.write_bytes(srsly.msgpack_dumps(outer))


@pytest.mark.parametrize(
    "damage", ["truncated", "empty", "garbage", "missing", "directory", "no weights", "no options", "no checksum"]
)
def test_damaged_saved_pipelines_are_clear_errors(tiny_dir, tmp_path, damage):
    pipeline = _saved(tiny_dir, tmp_path)
    model_file = pipeline / "elmo" / "model"
    data = model_file.read_bytes()
    if damage == "truncated":
        model_file.write_bytes(data[: len(data) * 16 // 100])
    elif damage == "empty":
        model_file.write_bytes(b"")
    elif damage == "garbage":
        model_file.write_bytes(b"\x00\xff<html>not found</html>" * 100)
    elif damage == "missing":
        model_file.unlink()
    elif damage == "directory":
        model_file.unlink()
        model_file.mkdir()
    elif damage == "no weights":
        _rewrite_stored_bilm(model_file, lambda stored: stored.pop("weights"))
    elif damage == "no options":
        _rewrite_stored_bilm(model_file, lambda stored: stored.pop("options"))
    else:
        _rewrite_stored_bilm(model_file, lambda stored: stored.pop("sha256"))
    with pytest.raises(ElmoWeightsError) as info:
        spacy.load(pipeline)
    message = str(info.value)
    assert str(model_file) in message
    assert "Save the pipeline again" in message
    assert info.value.__cause__ is None


def test_damaged_component_bytes_are_clear_errors(tiny_dir):
    nlp = make_nlp(tiny_dir)
    nlp(TEXT)
    data = nlp.get_pipe("elmo").to_bytes()
    for broken in (data[: len(data) // 3], b"", b"garbage"):
        with pytest.raises(ElmoWeightsError, match=r"corrupted|incomplete|not a serialized"):
            make_nlp(tiny_dir).get_pipe("elmo").from_bytes(broken)


def test_missing_weights_file_says_the_weights_file_is_missing(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(tmp_path / "x" / "weights.hdf5")}})
    with pytest.raises(ElmoWeightsError, match=r"Weights file not found: .*x/weights.hdf5"):
        nlp(TEXT)


def test_weights_path_that_is_a_directory_is_a_clear_error(tmp_path):
    (tmp_path / "weights.hdf5").mkdir()
    (tmp_path / "options.json").write_text(json.dumps(TINY_OPTIONS), encoding="utf-8")
    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(tmp_path / "weights.hdf5")}})
    with pytest.raises(ElmoWeightsError, match=r"weights.hdf5 is a directory, not an HDF5 weights file"):
        nlp(TEXT)
    with pytest.raises(ElmoWeightsError, match=r"weights.hdf5 is a directory, not an HDF5 weights file"):
        read_weights(tmp_path / "weights.hdf5", ElmoOptions.from_dict(TINY_OPTIONS))


def test_a_model_directory_whose_weights_file_is_a_directory_says_so(tmp_path):
    """It used to say the directory had no weights.hdf5 while listing one."""
    from spacy_elmo.errors import ElmoModelNotFoundError

    (tmp_path / "weights.hdf5").mkdir()
    (tmp_path / "options.json").write_text(json.dumps(TINY_OPTIONS), encoding="utf-8")
    with pytest.raises(ElmoModelNotFoundError, match=r"weights.hdf5 is a directory, not a file: a model directory needs"):
        ElmoBiLM.from_pretrained(tmp_path)


def test_a_weights_file_with_damaged_metadata_is_called_damaged(tmp_path):
    """Zeroed HDF5 metadata (offsets 400-2000 of a file we wrote) used to be reported as options and weights from different models."""
    weights = tmp_path / "weights.hdf5"
    write_weights(weights, tiny_arrays(ElmoOptions.from_dict(TINY_OPTIONS)))
    damaged = bytearray(weights.read_bytes())
    damaged[400:2000] = bytes(1600)  # the root group's links: the file opens, every dataset is gone
    weights.write_bytes(bytes(damaged))
    with pytest.raises(ElmoWeightsError) as info:
        read_weights(weights, ElmoOptions.from_dict(TINY_OPTIONS))
    message = str(info.value)
    assert message.startswith(f"{weights} holds no datasets at all") and "different models" not in message


# ---------------------------------------------------------------------------- batch independence


def test_batch_composition_changes_vectors_by_rounding_only():
    """The shipped biLM, caches off: a sentence alone and inside batches of 7 and 64 differ by
    at most the stated bound (MKL/oneDNN pick kernels by shape)."""
    bilm = ElmoBiLM.from_pretrained("default", token_cache_size=0)
    rng = random.Random(0)
    words = TEXT.lower().split() + "the cat and money went to see dogs run today extraordinarily , quickly".split()
    sentences = [[rng.choice(words) for _ in range(rng.randint(1, 30))] for _ in range(64)]
    worst = 0.0
    for index in range(6):
        alone = bilm.embed_sentences([sentences[index]])[0]
        for size in (7, 64):
            batch = [sentences[index]] + [s for i, s in enumerate(sentences) if i != index][: size - 1]
            worst = max(worst, float(np.abs(bilm.embed_sentences(batch, batch_size=size)[0] - alone).max()))
    assert worst <= BATCH_TOLERANCE


def test_loading_config_overrides_apply_to_a_saved_pipeline(model_dir, tmp_path):
    from spacy_elmo.layers.bilm_layer import elmo_shim

    nlp = spacy.blank("en")
    nlp.add_pipe("elmo", config={"model": {"weights": str(model_dir), "max_batch_tokens": 4096, "layer_cache_mb": 16}})
    nlp.initialize()
    expected = nlp("The river bank is steep .")._.elmo_layers
    nlp.to_disk(tmp_path / "saved")
    overrides = {"max_batch_tokens": 7, "layer_cache_mb": 0, "token_cache_size": 5, "max_piece_length": 100}
    loaded = spacy.load(tmp_path / "saved", config={"components": {"elmo": {"model": overrides}}})
    model = loaded.get_pipe("elmo").model
    attrs = {key: node.attrs[key] for node in model.walk() for key in node.attrs if key in overrides}
    assert attrs == {"max_batch_tokens": 7, "layer_cache_mb": 0, "max_piece_length": 100}
    bilm_layer = model.get_ref("bilm")
    assert elmo_shim(bilm_layer).bilm.token_cache.size == 5
    got = loaded("The river bank is steep .")._.elmo_layers
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ---------------------------------------------------------------------------- stored settings


def test_every_bit_flip_in_the_stored_settings_is_an_error_or_harmless(tiny_dir, tmp_path):
    """The settings are stored inside ``elmo/model``, under the checksum that covers the weights:
    one flipped bit in them (or anywhere in the file) is an error naming the file, or changes
    nothing; it never changes the outputs silently (a flip in a separate cfg used to scale gamma)."""
    nlp = make_nlp(tiny_dir)
    nlp.initialize()
    expected = nlp(TEXT).tensor
    nlp.to_disk(tmp_path / "saved")
    stored = tmp_path / "saved" / "elmo" / "model"
    original = stored.read_bytes()
    settings_end = original.index(b"frozen") + 16
    rng = random.Random(0)
    positions = list(range(settings_end)) + rng.sample(range(settings_end, len(original)), 200)
    component = nlp.get_pipe("elmo")
    errors: List[str] = []
    for position in positions:
        data = bytearray(original)
        data[position] ^= 1 << rng.randrange(8)
        stored.write_bytes(bytes(data))
        try:
            component.from_disk(tmp_path / "saved" / "elmo", exclude=["vocab"])
        except (ElmoWeightsError, ElmoOptionsError) as err:
            errors.append(str(err))
            continue
        np.testing.assert_array_equal(nlp(TEXT).tensor, expected)
    assert len(errors) == len(positions)
    assert all(str(stored) in message for message in errors)


def _restamp(stored: Path, **settings) -> None:
    """Change stored settings and recompute the checksum, as a hand edit that knows the format would."""
    from spacy_elmo.pipeline import component as component_module

    envelope = srsly.msgpack_loads(stored.read_bytes())
    envelope["settings"] = {**envelope["settings"], **settings}
    envelope["sha256"] = component_module._sha256(component_module._canonical(envelope["settings"]) + envelope["model"])
    stored.write_bytes(srsly.msgpack_dumps(envelope))


def test_stored_settings_are_checked_like_a_config(tiny_dir, tmp_path):
    """Settings whose checksum was recomputed around a bad value are refused as the config would be."""
    nlp = make_nlp(tiny_dir)
    nlp.initialize()
    nlp.to_disk(tmp_path / "saved")
    _restamp(tmp_path / "saved" / "elmo" / "model", gamma="1.0")
    with pytest.raises(ElmoOptionsError, match=r"elmo/model gamma must be a finite number, got '1.0'"):
        spacy.load(tmp_path / "saved")


def test_load_time_overrides_of_component_settings_apply_and_round_trip(tiny_dir, tmp_path):
    """``frozen``, ``gamma``, ``layer_weights`` and ``vector_hooks`` given to ``spacy.load`` are
    the ones in force, ``nlp.config`` says so, and a re-save keeps them in both files."""
    nlp = make_nlp(tiny_dir)
    nlp.initialize()
    base = nlp(TEXT)
    nlp.to_disk(tmp_path / "saved")
    overrides = {"frozen": False, "gamma": 2.0, "layer_weights": [0.0, 0.0, 0.0], "vector_hooks": False}
    loaded = spacy.load(tmp_path / "saved", config={"components": {"elmo": overrides}})
    component = loaded.get_pipe("elmo")
    assert component.cfg == {**overrides, "layer_weights": [0.0, 0.0, 0.0]}
    assert {key: loaded.config["components"]["elmo"][key] for key in overrides} == overrides
    assert component.model.get_ref("bilm").attrs["frozen"] is False
    doc = loaded(TEXT)
    np.testing.assert_allclose(doc.tensor, 2.0 * base.tensor, rtol=1e-6, atol=1e-6)
    assert "vector" not in doc.user_token_hooks
    loaded.to_disk(tmp_path / "again")
    stored = srsly.msgpack_loads((tmp_path / "again" / "elmo" / "model").read_bytes())["settings"]
    assert {key: stored[key] for key in overrides} == overrides
    again = spacy.load(tmp_path / "again")
    assert again.get_pipe("elmo").cfg == component.cfg
    assert again.config["components"]["elmo"]["frozen"] is False
