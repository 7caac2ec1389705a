"""weights.hdf5 reading/writing: bit-exact round trips and actionable error messages."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from spacy_elmo.bilm.options import ElmoOptions
from spacy_elmo.bilm.weights_io import (
    read_weights,
    weights_from_bytes,
    weights_to_bytes,
    write_weights,
)
from spacy_elmo.errors import ElmoWeightsError


@pytest.fixture(scope="module")
def options(tiny_model):
    return ElmoOptions.from_file(tiny_model[0])


@pytest.fixture(scope="module")
def weights(tiny_model, options):
    return read_weights(tiny_model[1], options)


def _raw(path):
    """Every dataset of an HDF5 file, read with plain h5py (as AllenNLP's loader does)."""
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
    return out


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype == np.float32, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def test_read_matches_raw_file(tiny_model, options, weights):
    raw = _raw(tiny_model[1])
    assert weights.keys() == set(options.expected_shapes())
    _assert_identical(weights, {name: raw[name] for name in weights})
    for array in weights.values():
        assert array.flags["C_CONTIGUOUS"]


def test_file_round_trip_is_bit_identical(tmp_path, tiny_model, options, weights):
    target = tmp_path / "weights.hdf5"
    write_weights(target, weights)
    _assert_identical(read_weights(target, options), weights)
    raw_written, raw_original = _raw(target), _raw(tiny_model[1])
    assert {n: a.shape for n, a in raw_written.items()} == {n: a.shape for n, a in raw_original.items()}
    assert [p.name for p in tmp_path.iterdir()] == ["weights.hdf5"]


def test_published_file_reads_and_round_trips_bit_identically(tmp_path, fixture_model):
    """AllenNLP's regression file: read as plain h5py reads it, and written back with the same
    names, shapes and dtype."""
    options = ElmoOptions.from_file(fixture_model[0])
    weights = read_weights(fixture_model[1], options)
    raw_fixture = _raw(fixture_model[1])
    _assert_identical(weights, {name: raw_fixture[name] for name in weights})
    target = tmp_path / "weights.hdf5"
    write_weights(target, weights)
    _assert_identical(read_weights(target, options), weights)
    raw_written = _raw(target)
    assert {n: a.shape for n, a in raw_written.items()} == {n: a.shape for n, a in raw_fixture.items()}


def test_write_replaces_existing_file(tmp_path, options, weights):
    target = tmp_path / "weights.hdf5"
    target.write_bytes(b"old content")
    write_weights(target, weights)
    _assert_identical(read_weights(target, options), weights)


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "weights.hdf5"
    target.write_bytes(b"old content")
    with pytest.raises(ElmoWeightsError, match="'a/b'"):
        write_weights(target, {"a": np.zeros(2), "a/b": np.zeros(2)})
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.hdf5"]


def test_write_into_missing_directory(tmp_path, weights):
    with pytest.raises(ElmoWeightsError, match=r"Cannot write weights to .*missing"):
        write_weights(tmp_path / "missing" / "weights.hdf5", weights)


def test_bytes_round_trip(options, weights):
    data = weights_to_bytes(weights)
    assert data.startswith(b"\x89HDF\r\n\x1a\n")
    _assert_identical(weights_from_bytes(data, options), weights)
    assert weights_to_bytes(weights) == data  # deterministic: no timestamps


def test_bytes_and_file_hold_the_same_content(tmp_path, options, weights):
    target = tmp_path / "weights.hdf5"
    target.write_bytes(weights_to_bytes(weights))
    _assert_identical(read_weights(target, options), weights)


def test_float64_values_are_stored_as_float32(tmp_path, options, weights):
    target = tmp_path / "weights.hdf5"
    write_weights(target, {n: a.astype(np.float64) for n, a in weights.items()})
    _assert_identical(read_weights(target, options), weights)


def test_extra_datasets_are_ignored(tmp_path, options, weights):
    target = tmp_path / "weights.hdf5"
    write_weights(target, {**weights, "softmax/W": np.ones((3, 2))})
    _assert_identical(read_weights(target, options), weights)


def test_missing_file(tmp_path, options):
    missing = tmp_path / "nope.hdf5"
    with pytest.raises(ElmoWeightsError, match="not found") as info:
        read_weights(missing, options)
    assert str(missing) in str(info.value)
    assert "weights.hdf5" in str(info.value)


def test_directory_instead_of_file(tmp_path, options):
    with pytest.raises(ElmoWeightsError, match="is a directory, not an HDF5 weights file"):
        read_weights(tmp_path, options)


def test_not_hdf5(tmp_path, options):
    garbage = tmp_path / "weights.hdf5"
    garbage.write_bytes(b"<html>404 Not Found</html>" * 50)
    with pytest.raises(ElmoWeightsError) as info:
        read_weights(garbage, options)
    message = str(info.value)
    assert str(garbage) in message
    assert "not a readable HDF5 file" in message
    assert "download it again" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_truncated_file(tmp_path, tiny_model, options):
    data = tiny_model[1].read_bytes()
    truncated = tmp_path / "weights.hdf5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ElmoWeightsError) as info:
        read_weights(truncated, options)
    message = str(info.value)
    assert str(truncated) in message
    assert "truncated" in message
    assert "download it again" in message


def test_options_do_not_match(tiny_model, weights):
    data = json.loads(tiny_model[0].read_text())
    data["lstm"]["projection_dim"] = 32
    wrong = ElmoOptions.from_dict(data)
    with pytest.raises(ElmoWeightsError) as info:
        read_weights(tiny_model[1], wrong)
    message = str(info.value)
    assert str(tiny_model[1]) in message
    assert "'CNN_proj/W_proj'" in message
    assert "(28, 16)" in message and "(28, 32)" in message
    assert "lstm.projection_dim=32" in message
    assert "pass the options.json published with these weights" in message


def test_missing_dataset(tmp_path, options, weights):
    target = tmp_path / "weights.hdf5"
    name = "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"
    write_weights(target, {n: a for n, a in weights.items() if n != name})
    with pytest.raises(ElmoWeightsError) as info:
        read_weights(target, options)
    message = str(info.value)
    assert f"'{name}' is missing" in message
    assert "(32, 16)" in message
    assert "'CNN/W_cnn_0'" in message  # lists some datasets the file does hold


def test_more_highway_layers_than_the_file_has(tiny_model):
    data = json.loads(tiny_model[0].read_text())
    data["char_cnn"]["n_highway"] = 3
    with pytest.raises(ElmoWeightsError, match=r"'CNN_high_1/W_carry' is missing.*n_highway=3"):
        read_weights(tiny_model[1], ElmoOptions.from_dict(data))


def test_bytes_errors_name_the_source(tiny_model, options):
    with pytest.raises(ElmoWeightsError, match=r"<serialized weights> is not a readable HDF5 file"):
        weights_from_bytes(b"garbage" * 100, options)
    data = tiny_model[1].read_bytes()
    with pytest.raises(ElmoWeightsError, match=r"<serialized weights>.*truncated"):
        weights_from_bytes(data[: len(data) // 2], options)


def test_non_float_dataset(tmp_path, options, weights):
    target = tmp_path / "weights.hdf5"
    write_weights(target, weights)
    with h5py.File(target, "a") as h5:
        del h5["char_embed"]
        h5.create_dataset("char_embed", data=np.zeros((261, 4), dtype=np.int32))
    with pytest.raises(ElmoWeightsError, match=r"'char_embed' has dtype int32"):
        read_weights(target, options)


def test_paths_may_be_strings(tmp_path, options, weights):
    target = str(Path(tmp_path) / "weights.hdf5")
    write_weights(target, weights)
    _assert_identical(read_weights(target, options), weights)
