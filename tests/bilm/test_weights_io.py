"""weights.hdf5 reading/writing: bit-exact round trips and actionable error messages."""

import json
import re
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


def _options_without(tiny_model, section: str, field: str) -> dict:
    data = json.loads(Path(tiny_model[0]).read_text(encoding="utf-8"))
    del data[section][field]
    return data


@pytest.mark.parametrize(
    "extra,message",
    [
        ("CNN_high_1/W_carry", r"char_cnn.n_highway = 1; the file holds 2 highway layer\(s\): set it to 2"),
        ("CNN/W_cnn_3", r"lists 3 char_cnn.filters banks but the file holds bank 3"),
        ("RNN_0/RNN/MultiRNNCell/Cell2/LSTMCell/B", r"lstm.n_layers = 2 but the file holds LSTM layer 2"),
        ("softmax/W", r"not part of ELMo's weights layout; the options and weights are from different models"),
    ],
)
def test_datasets_the_options_do_not_use_are_an_error(tmp_path, options, weights, extra, message):
    """A file holding more than the options describe means the options leave part of the
    model out (its outputs would be wrong); the error names the field to fix."""
    target = tmp_path / "weights.hdf5"
    write_weights(target, {**weights, extra: np.ones((3, 2))})
    with pytest.raises(
        ElmoWeightsError, match=rf"{target}: dataset '{re.escape(extra)}' is not used by the options: .*{message}"
    ):
        read_weights(target, options)


def test_options_without_n_highway_warn_and_the_file_names_it(tmp_path, tiny_model):
    """Options that leave out n_highway used to ignore the file's highway layers silently."""
    from spacy_elmo.errors import ElmoOptionsWarning

    with pytest.warns(ElmoOptionsWarning, match=r"'char_cnn.n_highway' is missing; using 0"):
        options = ElmoOptions.from_dict(_options_without(tiny_model, "char_cnn", "n_highway"))
    with pytest.raises(ElmoWeightsError, match=r"char_cnn.n_highway = 0; the file holds 1 highway layer\(s\): set it to 1"):
        read_weights(tiny_model[1], options)


@pytest.mark.parametrize("field", ["proj_clip", "cell_clip", "use_skip_connections"])
def test_options_without_a_numeric_field_warn_naming_it(tiny_model, field):
    from spacy_elmo.errors import ElmoOptionsWarning

    with pytest.warns(ElmoOptionsWarning, match=rf"options: 'lstm.{field}' is missing; using .* It changes the biLM's outputs"):
        ElmoOptions.from_dict(_options_without(tiny_model, "lstm", field))


@pytest.mark.parametrize("value", [3e38, -2e4])
def test_implausible_magnitudes_are_refused(tmp_path, options, weights, value):
    target = tmp_path / "weights.hdf5"
    damaged = {**weights, "CNN_proj/b_proj": weights["CNN_proj/b_proj"].copy()}
    damaged["CNN_proj/b_proj"][1] = value
    write_weights(target, damaged)
    with pytest.raises(ElmoWeightsError, match=r"dataset 'CNN_proj/b_proj' holds .* at index \(1,\), beyond the 10000"):
        read_weights(target, options)


def test_a_float64_value_beyond_float32_is_refused(tmp_path, options, weights):
    """1e39 is finite as stored (float64) but infinite once cast to float32."""
    target = tmp_path / "weights.hdf5"
    with h5py.File(target, "w") as h5:
        for name, array in weights.items():
            h5.create_dataset(name, data=array.astype(np.float64))
        h5["CNN_proj/b_proj"][0] = 1e39
    with pytest.raises(ElmoWeightsError, match=r"dataset 'CNN_proj/b_proj' holds 1 NaN or infinite value"):
        read_weights(target, options)


def test_changed_bytes_in_a_file_we_wrote_are_detected(tmp_path, options, weights):
    """Our files carry a Fletcher-32 checksum per dataset: a byte changed inside the data of
    any dataset is an error on read (it used to load and give wrong outputs)."""
    target = tmp_path / "weights.hdf5"
    write_weights(target, weights)
    with h5py.File(target, "r") as h5:
        offsets = {name: h5[name].id.get_chunk_info(0).byte_offset for name in weights}
    original = target.read_bytes()
    for name, offset in offsets.items():
        damaged = bytearray(original)
        damaged[offset + 2] ^= 0x10
        target.write_bytes(bytes(damaged))
        with pytest.raises(ElmoWeightsError, match=rf"reading dataset '{re.escape(name)}' failed .* truncated or corrupted"):
            read_weights(target, options)


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
