"""The HDF5 layout of AllenNLP's ``elmo`` command, which consumers of its files read.

One float32 dataset per input line, named by the line's 0-based index as a string:
``(L+1, n, 2P)`` with ``--all``, ``(n, 2P)`` with ``--top`` (the last layer) or ``--average``
(the mean of the layers). A ``sentence_to_index`` dataset of shape ``(1,)`` holds one JSON
string mapping each stripped line to its index as a string (a repeated line maps to its
last index). The run's settings are kept in the root attribute ``spacy_elmo_embed``
(JSON), which the layout's readers ignore and :func:`spacy_elmo.embed.merge_shards` checks.
"""

import json
from typing import Any, Dict, Iterable, Optional

import h5py
import numpy as np

OUTPUT_FORMATS = ("all", "top", "average")
SENTENCE_TO_INDEX = "sentence_to_index"
METADATA_ATTR = "spacy_elmo_embed"


def reduce_layers(layers: np.ndarray, output_format: str) -> np.ndarray:
    """``(L+1, n, 2P)`` layers of one line → the array stored for ``output_format``, float32."""
    if output_format == "all":
        result = layers
    elif output_format == "top":
        result = layers[-1]
    elif output_format == "average":
        result = layers.mean(axis=0)
    else:
        raise ValueError(f"output format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    return np.ascontiguousarray(result, dtype=np.float32)


def empty_output(n_layers: int, width: int, output_format: str) -> np.ndarray:
    """What an empty line stores: zero tokens, the same rank and width as any other line."""
    return reduce_layers(np.zeros((n_layers, 0, width), dtype=np.float32), output_format)


def write_line(h5: h5py.Group, index: int, array: np.ndarray) -> None:
    h5.create_dataset(str(index), data=array, dtype="float32")


def line_keys(h5: h5py.Group) -> Iterable[str]:
    """Every dataset name that is a line index."""
    return (key for key in h5 if key.isdigit())


def write_sentence_to_index(h5: h5py.Group, mapping: Dict[str, str]) -> None:
    """The JSON lists sentences by index, so that every way of producing a file writes the same string."""
    ordered = dict(sorted(mapping.items(), key=lambda item: int(item[1])))
    dataset = h5.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=h5py.special_dtype(vlen=str))
    dataset[0] = json.dumps(ordered)


def read_sentence_to_index(h5: h5py.Group) -> Optional[Dict[str, str]]:
    if SENTENCE_TO_INDEX not in h5:
        return None
    value = h5[SENTENCE_TO_INDEX][0]
    return json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)


def write_metadata(h5: h5py.Group, metadata: Dict[str, Any]) -> None:
    h5.attrs[METADATA_ATTR] = json.dumps(metadata, sort_keys=True)


def read_metadata(h5: h5py.Group) -> Optional[Dict[str, Any]]:
    value = h5.attrs.get(METADATA_ATTR)
    if value is None:
        return None
    return json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)
