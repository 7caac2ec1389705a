"""Read, validate and write the published ``weights.hdf5`` layout (docs/design.md §7).

Pure NumPy/h5py: the file must hold exactly the datasets the options describe, each checked
by name and shape before anything is built from it, so a wrong file fails here with a
message a user can act on.

What reading detects in any file: a missing, unreadable, truncated or non-HDF5 file;
missing, extra, mis-shaped or non-float datasets (an extra dataset names the options field
that would use it); NaN or infinite values, also after the cast to float32; and magnitudes
no trained ELMo has (above :data:`MAX_WEIGHT`). Files this package writes
(``ElmoBiLM.save``, pretraining exports) carry a Fletcher-32 checksum per dataset, which
HDF5 verifies on every read, so changed bytes in their data are detected too. What cannot be
detected in a third-party file (the published ones carry no checksum): finite, plausible
values that were changed, or weights from another model of the same shape. Pipelines saved
by spacy-elmo carry a sha256 of the whole biLM, checked when they are loaded (see
``spacy_elmo.layers.bilm_layer``).
"""

import io
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import h5py
import numpy as np

from ..errors import ElmoWeightsError
from ..files import PathLike, atomic_path
from .options import ElmoOptions

_CELL = re.compile(r"RNN_[01]/RNN/MultiRNNCell/Cell(\d+)/")

BYTES_SOURCE = "<serialized weights>"

# Errors h5py raises for unreadable, truncated or corrupted files.
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)

_REDOWNLOAD = "It is likely an incomplete or corrupted download: delete it and download it again."
_RESERIALIZE = "The serialized data is incomplete or corrupted: save the pipeline again from a working copy."
_MISMATCH_FIX = "the options and weights are from different models; pass the options.json published with these weights."

MAX_WEIGHT = 1e4
"""Largest magnitude accepted in a weights file: trained ELMo weights stay below 10 (the
shipped and AllenNLP test models below 3); a larger value is a corrupted file."""


def read_weights(path: PathLike, options: ElmoOptions, *, source: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Every dataset ``options`` needs, as C-contiguous float32 arrays, after checking shapes.

    ``source`` names the file in error messages (default: the path). A dataset the options
    do not use is an error naming the options field that would use it.
    """
    path = Path(path)
    source = source or str(path)
    if not path.exists():
        raise ElmoWeightsError(
            f"Weights file not found: {path}. Pass the 'weights.hdf5' published with your "
            f"options.json (or a published model name / a directory holding options.json and "
            f"weights.hdf5)."
        )
    if path.is_dir():
        raise ElmoWeightsError(
            f"{path} is a directory, not an HDF5 weights file. Pass the weights file itself "
            f"(for a model directory, pass the directory holding options.json and weights.hdf5, "
            f"both plain files)."
        )
    if not path.is_file():
        raise ElmoWeightsError(f"{path} is not a regular file. Pass the 'weights.hdf5' file published with your options.json.")
    return _read(path, options, source, _REDOWNLOAD)


def weights_from_bytes(data: bytes, options: ElmoOptions, *, source: str = BYTES_SOURCE) -> Dict[str, np.ndarray]:
    """Like :func:`read_weights`, for HDF5 content held in memory (serialised pipelines)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ElmoWeightsError(f"{source}: expected the bytes of an HDF5 weights file, got {type(data).__name__}.")
    return _read(io.BytesIO(bytes(data)), options, source, _RESERIALIZE)


def write_weights(path: PathLike, arrays: Mapping[str, Any]) -> None:
    """Write ``arrays`` as float32 datasets (``'/'`` in a name makes groups), atomically.

    An interrupted write never leaves a partial file at ``path`` (see :mod:`spacy_elmo.files`).
    """
    path = Path(path)
    prepared = _prepare(arrays, str(path))
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "x") as h5:
            _write(h5, prepared)
    except OSError as err:
        raise ElmoWeightsError(
            f"Cannot write weights to {path}: {err}. Check that the directory exists and is "
            f"writable and that the disk is not full."
        ) from None


def weights_to_bytes(arrays: Mapping[str, Any]) -> bytes:
    """The HDF5 file :func:`write_weights` would write, as bytes (deterministic)."""
    prepared = _prepare(arrays, BYTES_SOURCE)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        _write(h5, prepared)
    return buffer.getvalue()


def _prepare(arrays: Mapping[str, Any], target: str) -> List[Tuple[str, np.ndarray]]:
    """Validate names and convert values to float32 before anything is written."""
    prepared = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name.strip("/"):
            raise ElmoWeightsError(f"{target}: dataset names must be non-empty strings like 'CNN_proj/W_proj', got {name!r}.")
        try:
            array = np.ascontiguousarray(value, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ElmoWeightsError(
                f"{target}: dataset '{name}' cannot be stored as float32 ({err}); pass numeric arrays."
            ) from None
        prepared.append((name, array))
    return prepared


def _write(h5: h5py.File, arrays: List[Tuple[str, np.ndarray]]) -> None:
    """Datasets with a Fletcher-32 checksum (HDF5 checks it on every read); no timestamps, so
    output is reproducible. Empty and scalar arrays, which HDF5 cannot checksum, stay plain."""
    for name, array in arrays:
        try:
            h5.create_dataset(name, data=array, dtype=np.float32, track_times=False, fletcher32=array.ndim > 0 and array.size > 0)
        except (TypeError, ValueError) as err:
            raise ElmoWeightsError(
                f"Cannot create dataset '{name}' ({_short(err)}): another name already uses "
                f"'{name}' or one of its groups; pass each dataset name once, with no name being "
                f"a group of another."
            ) from None


def _read(target: Union[Path, io.BytesIO], options: ElmoOptions, source: str, unreadable_fix: str) -> Dict[str, np.ndarray]:
    try:
        # No file locking: reads never race our writes (those rename a finished file into
        # place), and locking fails on some read-only or network file systems.
        h5 = h5py.File(target, "r", locking=False)
    except PermissionError:
        raise ElmoWeightsError(f"{source} cannot be read: permission denied. Make the file readable for this user.") from None
    except _H5_ERRORS as err:
        raise ElmoWeightsError(f"{source} is not a readable HDF5 file ({_short(err)}). {unreadable_fix}") from None
    with h5:
        expected = options.expected_shapes()
        _check_layout(h5, expected, options, source, unreadable_fix)
        _check_nothing_unused(h5, expected, options, source)
        arrays = {}
        for name, shape in expected.items():
            array = np.empty(shape, dtype=np.float32)
            try:
                if array.size:
                    h5[name].read_direct(array)
            except _H5_ERRORS as err:
                raise ElmoWeightsError(
                    f"{source}: reading dataset '{name}' failed ({_short(err)}): the file is "
                    f"truncated or corrupted. {unreadable_fix}"
                ) from None
            _check_finite(array, name, source, unreadable_fix)
            arrays[name] = array
    return arrays


def _check_finite(array: np.ndarray, name: str, source: str, unreadable_fix: str) -> None:
    """Raise if ``array`` holds NaN or infinite values (they would make every output NaN) or
    magnitudes above :data:`MAX_WEIGHT` (a corrupted file)."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        first = np.unravel_index(int(np.argmin(finite)), array.shape)
        raise ElmoWeightsError(
            f"{source}: dataset '{name}' holds {bad} NaN or infinite value(s) (the first at index "
            f"{tuple(int(i) for i in first)}, {float(array[first])}): the weights are corrupted or "
            f"come from a diverged training run. {unreadable_fix}"
        )
    if array.size and float(np.abs(array).max()) > MAX_WEIGHT:
        largest = np.unravel_index(int(np.argmax(np.abs(array))), array.shape)
        raise ElmoWeightsError(
            f"{source}: dataset '{name}' holds {float(array[largest]):g} at index {tuple(int(i) for i in largest)}, "
            f"beyond the {MAX_WEIGHT:g} that no trained ELMo weight comes near: the file is corrupted. {unreadable_fix}"
        )


def _check_nothing_unused(h5: h5py.File, expected: Dict[str, Tuple[int, ...]], options: ElmoOptions, source: str) -> None:
    """Raise for a dataset the options do not use: the options leave out part of the model
    (too few highway layers, filter banks or LSTM layers), so its outputs would be wrong."""
    try:
        names = [name for name in _dataset_names(h5) if name not in expected]
    except _H5_ERRORS as err:
        raise ElmoWeightsError(f"{source}: its datasets cannot be listed ({_short(err)}): the file is corrupted.") from None
    if not names:
        return
    name = sorted(names)[0]
    more = f" ({len(names) - 1} more unused dataset(s) too)" if len(names) > 1 else ""
    highway, bank, cell = re.match(r"CNN_high_(\d+)/", name), re.match(r"CNN/[Wb]_cnn_(\d+)$", name), _CELL.match(name)
    if highway:
        count = 1 + max(int(m.group(1)) for m in map(re.compile(r"CNN_high_(\d+)/").match, names + list(expected)) if m)
        fix = f"options.json has char_cnn.n_highway = {options.n_highway}; the file holds {count} highway layer(s): set it to {count}"
    elif bank:
        fix = f"options.json lists {len(options.filters)} char_cnn.filters banks but the file holds bank {bank.group(1)}: list every bank the weights have"
    elif cell:
        fix = f"options.json has lstm.n_layers = {options.n_layers} but the file holds LSTM layer {cell.group(1)}: set lstm.n_layers to match the weights"
    else:
        fix = f"it is not part of ELMo's weights layout; {_MISMATCH_FIX}"
    raise ElmoWeightsError(f"{source}: dataset '{name}' is not used by the options{more}: {fix.rstrip('.')}.")


def _check_layout(
    h5: h5py.File,
    expected: Dict[str, Tuple[int, ...]],
    options: ElmoOptions,
    source: str,
    unreadable_fix: str,
) -> None:
    """Raise for the first missing or mis-shaped dataset, mentioning how many others differ."""
    problems: List[str] = []
    first: Optional[str] = None
    for name, shape in expected.items():
        try:
            node = h5.get(name)
            found = (tuple(node.shape), node.dtype) if isinstance(node, h5py.Dataset) else None
        except _H5_ERRORS as err:
            raise ElmoWeightsError(
                f"{source}: cannot read the metadata of dataset '{name}' ({_short(err)}): the file is corrupted. {unreadable_fix}"
            ) from None
        if found is not None and found[0] == shape and found[1].kind == "f":
            continue
        problems.append(name)
        if first is not None:
            continue
        needed = f"options.json ({_shape_origin(name, options)}) needs"
        if node is None and not _holds_datasets(h5):
            first = (
                f"{source} holds no datasets at all (an empty file, or one whose HDF5 metadata is damaged): it is "
                f"not a usable weights file. {unreadable_fix}"
            )
        elif node is None or found is None:
            what = "is missing" if node is None else "is a group, not a dataset"
            first = (
                f"{source}: dataset '{name}' {what}, but {needed} it with shape {shape}. "
                f"The file holds {_present(h5)}: {_MISMATCH_FIX}"
            )
        elif found[0] != shape:
            first = f"{source}: dataset '{name}' has shape {found[0]} but {needed} {shape}: {_MISMATCH_FIX}"
        else:
            first = (
                f"{source}: dataset '{name}' has dtype {found[1]}, but ELMo weights are "
                f"float32: this is not an ELMo weights file; pass the weights.hdf5 published "
                f"with your options.json."
            )
    if first is not None:
        others = problems[1:]
        if others:
            first += f" ({len(others)} more dataset(s) differ too, e.g. '{others[0]}'.)"
        raise ElmoWeightsError(first)


def _shape_origin(name: str, options: ElmoOptions) -> str:
    """The options fields that decide whether ``name`` exists and what shape it has."""
    d_c, P, H = options.char_embedding_dim, options.projection_dim, options.lstm_dim
    width_f = f"F={options.n_filters}, the sum of the char_cnn.filters counts"
    if name == "char_embed":
        return f"261 character ids; char_cnn.embedding.dim={d_c}"
    if name.startswith("CNN/"):
        i = int(name.rsplit("_", 1)[1])
        width, count = options.filters[i]
        kernel = f"; char_cnn.embedding.dim={d_c}" if "/W_" in name else ""
        return f"char_cnn.filters[{i}]=[{width}, {count}] of {len(options.filters)} banks{kernel}"
    if name.startswith("CNN_high_"):
        return f"char_cnn.n_highway={options.n_highway}; {width_f}"
    if name == "CNN_proj/W_proj":
        return f"{width_f}; lstm.projection_dim={P}"
    if name == "CNN_proj/b_proj":
        return f"lstm.projection_dim={P}"
    layers = f"lstm.n_layers={options.n_layers}"
    if name.endswith("/W_0"):
        return f"{layers}; lstm.projection_dim={P} (input and recurrent rows); lstm.dim={H} (4 gates)"
    if name.endswith("/B"):
        return f"{layers}; lstm.dim={H} (4 gates)"
    return f"{layers}; lstm.dim={H}; lstm.projection_dim={P}"


def _dataset_names(h5: h5py.File) -> List[str]:
    """Every dataset's path in the file (h5py's errors propagate: a damaged file may not list)."""
    names: List[str] = []
    h5.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
    return names


def _holds_datasets(h5: h5py.File) -> bool:
    try:
        return bool(_dataset_names(h5))
    except _H5_ERRORS:
        return False


def _present(h5: h5py.File, limit: int = 5) -> str:
    """A short list of the datasets a file does hold, for 'missing dataset' messages."""
    try:
        names = _dataset_names(h5)
    except _H5_ERRORS:
        return "datasets that cannot be listed (corrupted file)"
    if not names:
        return "no datasets at all"
    shown = ", ".join(f"'{n}'" for n in sorted(names)[:limit])
    more = ", ..." if len(names) > limit else ""
    return f"{len(names)} dataset(s): {shown}{more}"


def _short(err: BaseException) -> str:
    """h5py's message without the errno noise, for embedding in our own message."""
    text = str(err).strip() or type(err).__name__
    return text.replace("Unable to synchronously ", "unable to ")
