"""Read and write the files of an ELMoForManyLangs (HIT-SCIR) model directory, checked.

A model directory holds ``config.json`` (whose ``config_path`` names the network config),
the network config (e.g. ``cnn_50_100_512_4096_sample.json``), the lexicons ``char.dic``
and ``word.dic`` (one ``token<TAB>id`` per line) and two PyTorch state dicts,
``token_embedder.pkl`` and ``encoder.pkl``. Everything is read as the reference package
reads it (its quirks are listed where they apply) and checked before a model is built:
state dicts are loaded with ``torch.load(..., weights_only=True)``, never as arbitrary
pickles, and every tensor's name and shape is compared with what the network and the
lexicons need. Pure Python and PyTorch: no model is built here (see :mod:`.manylangs`).
"""

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import h5py
import numpy as np
import torch

from ..errors import ElmoModelNotFoundError, ElmoOptionsError, ElmoWeightsError
from ..files import PathLike, write_bytes_atomic, write_text_atomic
from .options import ElmoOptions

CONFIG_FILE = "config.json"
CHAR_LEXICON_FILE = "char.dic"
WORD_LEXICON_FILE = "word.dic"
TOKEN_EMBEDDER_FILE = "token_embedder.pkl"
ENCODER_FILE = "encoder.pkl"
ALLENNLP_OPTIONS_FILE = "options.json"

FORMAT = "elmoformanylangs"
"""The ``format`` of a serialized model's options (see :func:`is_manylangs_data`)."""

BOS, EOS, OOV, PAD, BOW, EOW = "<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"
CHAR_SPECIALS = (BOS, EOS, OOV, PAD, BOW, EOW)
"""Entries every ``char.dic`` needs: the reference looks each of them up for every batch."""
WORD_SPECIALS = (OOV, PAD)
"""Entries every ``word.dic`` needs (``<bos>`` and ``<eos>`` fall back to ``<oov>`` like any word)."""

LONE_ID_TOKEN = "\u3000"
"""The token of a lexicon line that holds only an id once stripped. The reference strips each
line before splitting it at the tab, so the line of a whitespace character (U+3000, the
ideographic space, in the published lexicons) loses its token; it reads such lines as U+3000."""

PUBLISHED_NETWORK: Dict[str, Any] = {
    "encoder": {"name": "elmo", "projection_dim": 512, "cell_clip": 3, "proj_clip": 3, "dim": 4096, "n_layers": 2},
    "token_embedder": {
        "name": "cnn",
        "activation": "relu",
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
        "n_highway": 2,
        "word_dim": 100,
        "char_dim": 50,
        "max_characters_per_token": 50,
    },
    "classifier": {"name": "sampled_softmax", "n_samples": 8192},
    "dropout": 0.1,
}
"""The network every published model uses (the classifier and dropout only matter in training,
but the reference reads them when it loads a model). Their ``config.json`` names it by a file that the
reference package ships rather than the model directory; it is used when that file is absent."""
PUBLISHED_NETWORK_FILES = ("cnn_50_100_512_4096_sample.json", "cnn_0_100_512_4096_sample.json")

_MAX_WIDTH = 65_536
_MAX_LAYERS = 64
_DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True)
class ManyLangsNetwork:
    """The network config of a model (its ``encoder`` and ``token_embedder`` sections), validated."""

    projection_dim: int
    lstm_dim: int
    n_layers: int
    cell_clip: Optional[float]
    proj_clip: Optional[float]
    filters: Tuple[Tuple[int, int], ...]
    n_highway: int
    activation: str
    word_dim: int
    char_dim: int
    max_characters_per_token: int
    file_name: str = "network.json"
    raw: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_filters(self) -> int:
        """Width F of the char CNN's output."""
        return sum(count for _, count in self.filters)

    @classmethod
    def from_dict(cls, data: Any, source: str, file_name: str = "network.json") -> "ManyLangsNetwork":
        """Validate a network config; ``source`` names it in errors."""
        if not isinstance(data, dict):
            raise ElmoOptionsError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        encoder = _section(data, "encoder", source)
        embedder = _section(data, "token_embedder", source)
        encoder_name = encoder.get("name")
        if not isinstance(encoder_name, str) or encoder_name.lower() != "elmo":
            raise ElmoOptionsError(
                f"{source}: 'encoder.name' is {encoder_name!r}; only the 'elmo' encoder (the one every published "
                f"ELMoForManyLangs model uses) can be loaded: its 'lstm' encoder returns no layers to mix."
            )
        embedder_name = embedder.get("name")
        if not isinstance(embedder_name, str) or embedder_name.lower() != "cnn":
            raise ElmoOptionsError(
                f"{source}: 'token_embedder.name' is {embedder_name!r}; only the 'cnn' token embedder can be loaded "
                f"(every published model uses it; the reference package itself fails on its 'lstm' one)."
            )
        filters = embedder.get("filters")
        if (
            not isinstance(filters, list)
            or not filters
            or not all(
                isinstance(f, list) and len(f) == 2 and all(_is_int(v) and 0 < v <= _MAX_WIDTH for v in f) for f in filters
            )
        ):
            raise ElmoOptionsError(
                f"{source}: 'token_embedder.filters' must be a non-empty list of [width, count] integer pairs, got {filters!r}."
            )
        activation = embedder.get("activation")
        if activation not in ("relu", "tanh"):
            raise ElmoOptionsError(f"{source}: 'token_embedder.activation' must be 'relu' or 'tanh', got {activation!r}.")
        char_dim = _int(embedder, "char_dim", source, "token_embedder.", 0)
        if char_dim == 0:
            raise ElmoOptionsError(
                f"{source}: 'token_embedder.char_dim' is 0 (no character CNN); models without characters are not "
                f"supported (every published model has char_dim 50)."
            )
        max_chars = _int(embedder, "max_characters_per_token", source, "token_embedder.", 3)
        widest = max(width for width, _ in filters)
        if widest > max_chars:
            raise ElmoOptionsError(
                f"{source}: a filter of width {widest} is wider than 'token_embedder.max_characters_per_token' = {max_chars}."
            )
        return cls(
            projection_dim=_int(encoder, "projection_dim", source, "encoder.", 1),
            lstm_dim=_int(encoder, "dim", source, "encoder.", 1),
            n_layers=_int(encoder, "n_layers", source, "encoder.", 1, _MAX_LAYERS),
            cell_clip=_clip(encoder, "cell_clip", source),
            proj_clip=_clip(encoder, "proj_clip", source),
            filters=tuple((int(w), int(n)) for w, n in filters),
            n_highway=_int(embedder, "n_highway", source, "token_embedder.", 0, _MAX_LAYERS),
            activation=activation,
            word_dim=_int(embedder, "word_dim", source, "token_embedder.", 0),
            char_dim=char_dim,
            max_characters_per_token=max_chars,
            file_name=file_name,
            raw=data,
        )

    def to_options(self, extra: Dict[str, Any]) -> ElmoOptions:
        """The same network in :class:`ElmoOptions` terms (what the LSTM and the char CNN read).

        The reference adds every layer's input to its output from the second layer on, and
        clips only where a clip value is truthy.
        """
        return ElmoOptions(
            lstm_dim=self.lstm_dim,
            projection_dim=self.projection_dim,
            n_layers=self.n_layers,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            use_skip_connections=True,
            char_embedding_dim=self.char_dim,
            filters=self.filters,
            n_highway=self.n_highway,
            activation=self.activation,
            max_characters_per_token=self.max_characters_per_token,
            extra=extra,
        )

    def token_embedder_shapes(self, n_chars: int, n_words: int) -> Dict[str, Tuple[int, ...]]:
        """Every tensor of ``token_embedder.pkl`` with its shape, for lexicons of these sizes."""
        F, P, d = self.n_filters, self.projection_dim, self.char_dim
        shapes: Dict[str, Tuple[int, ...]] = {}
        if self.word_dim > 0:
            shapes["word_emb_layer.embedding.weight"] = (n_words, self.word_dim)
        shapes["char_emb_layer.embedding.weight"] = (n_chars, d)
        for i, (width, count) in enumerate(self.filters):
            shapes[f"convolutions.{i}.weight"] = (count, d, width)
            shapes[f"convolutions.{i}.bias"] = (count,)
        for k in range(self.n_highway):
            shapes[f"highways._layers.{k}.weight"] = (2 * F, F)
            shapes[f"highways._layers.{k}.bias"] = (2 * F,)
        shapes["projection.weight"] = (P, self.word_dim + F)
        shapes["projection.bias"] = (P,)
        return shapes

    def encoder_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Every tensor of ``encoder.pkl`` with its shape."""
        P, H = self.projection_dim, self.lstm_dim
        shapes: Dict[str, Tuple[int, ...]] = {}
        for layer in range(self.n_layers):
            for direction in _DIRECTIONS:
                prefix = f"{direction}_layer_{layer}"
                shapes[f"{prefix}.input_linearity.weight"] = (4 * H, P)
                shapes[f"{prefix}.state_linearity.weight"] = (4 * H, P)
                shapes[f"{prefix}.state_linearity.bias"] = (4 * H,)
                shapes[f"{prefix}.state_projection.weight"] = (P, H)
        return shapes

    def shape_origin(self, name: str) -> str:
        """The network fields (and lexicons) that decide a tensor's shape, for error messages."""
        if name.startswith("word_emb_layer"):
            return f"one row per {WORD_LEXICON_FILE} entry; token_embedder.word_dim={self.word_dim}"
        if name.startswith("char_emb_layer"):
            return f"one row per {CHAR_LEXICON_FILE} entry; token_embedder.char_dim={self.char_dim}"
        if name.startswith("convolutions."):
            return f"token_embedder.filters={[list(f) for f in self.filters]}; token_embedder.char_dim={self.char_dim}"
        if name.startswith("highways."):
            return f"token_embedder.n_highway={self.n_highway}; F={self.n_filters}, the sum of the filter counts"
        if name.startswith("projection."):
            return f"encoder.projection_dim={self.projection_dim}; token_embedder.word_dim={self.word_dim} + F={self.n_filters}"
        return f"encoder.n_layers={self.n_layers}; encoder.dim={self.lstm_dim}; encoder.projection_dim={self.projection_dim}"


def is_model_dir(directory: PathLike) -> bool:
    """Whether ``directory`` looks like an ELMoForManyLangs model, complete or not: no AllenNLP
    ``options.json``, and one of the files of the published layout."""
    path = Path(directory)
    layout = (CONFIG_FILE, CHAR_LEXICON_FILE, WORD_LEXICON_FILE, TOKEN_EMBEDDER_FILE, ENCODER_FILE)
    return not (path / ALLENNLP_OPTIONS_FILE).exists() and any((path / name).is_file() for name in layout)


def is_manylangs_files(options_path: PathLike, weights_path: PathLike) -> bool:
    """Whether an (options, weights) pair is the ``config.json`` / ``encoder.pkl`` of a model
    directory, as :func:`model_files` reports it to callers that expect such a pair."""
    return Path(options_path).name == CONFIG_FILE and Path(weights_path).name == ENCODER_FILE


def is_manylangs_data(data: Any) -> bool:
    """Whether serialized options (a parsed JSON object) describe an ELMoForManyLangs model."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def model_files(directory: PathLike) -> Tuple[Path, Path]:
    """``(config.json, encoder.pkl)`` of a complete model directory; an error names what is missing.

    ``word.dic`` is needed only by networks with a word embedding, which :func:`read_network`
    knows; the loader checks it then.
    """
    path = Path(directory)
    needed = [CONFIG_FILE, CHAR_LEXICON_FILE, TOKEN_EMBEDDER_FILE, ENCODER_FILE]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        present = sorted(p.name for p in path.iterdir())[:10]
        raise ElmoModelNotFoundError(
            f"ELMoForManyLangs model directory {path} has no {' and no '.join(missing)} (it holds: "
            f"{', '.join(present) or 'nothing'}). A model directory needs {', '.join(needed)} and, for "
            f"networks with word_dim > 0, {WORD_LEXICON_FILE}: unpack the whole published archive into it."
        )
    return path / CONFIG_FILE, path / ENCODER_FILE


def read_network(directory: PathLike) -> ManyLangsNetwork:
    """The network config that ``config.json`` names, found where the reference looks for it.

    ``config_path`` is joined to the directory (an absolute path stays as it is); if nothing is
    there, its file name is looked up in the directory; if that fails too and the name is one of
    the published configs, the published network is used (the reference ships those files).
    """
    path = Path(directory)
    config_file = path / CONFIG_FILE
    config = _read_json(config_file, "the model's run settings, naming its network in 'config_path'")
    config_path = config.get("config_path") if isinstance(config, dict) else None
    if not isinstance(config_path, str) or not config_path:
        raise ElmoOptionsError(
            f"{config_file}: 'config_path' must name the network config (e.g. 'cnn_50_100_512_4096_sample.json'), "
            f"got {config_path!r}."
        )
    name = os.path.basename(config_path)
    candidates = [Path(os.path.join(str(path), config_path)), path / name]
    for candidate in candidates:
        if candidate.is_file():
            data = _read_json(candidate, "the network config")
            return ManyLangsNetwork.from_dict(data, str(candidate), file_name=name)
    if name in PUBLISHED_NETWORK_FILES:
        return ManyLangsNetwork.from_dict(json.loads(json.dumps(PUBLISHED_NETWORK)), f"published network {name}", file_name=name)
    looked = " and ".join(str(c) for c in dict.fromkeys(candidates))
    raise ElmoModelNotFoundError(
        f"{config_file}: its 'config_path' {config_path!r} names a network config that is not there "
        f"(looked at {looked}). Put that file into {path}, or set 'config_path' to the network config's file name."
    )


def read_lexicon(path: PathLike) -> Dict[str, int]:
    """A ``char.dic`` / ``word.dic`` as the reference reads it: ``token -> id``.

    Lines are split where Python's ``str.splitlines`` splits them (as the reference's reader
    does), each stripped of surrounding whitespace and split at tabs; a line left with only
    an id is :data:`LONE_ID_TOKEN`'s; a token listed twice keeps its later id; ids are read by
    ``int``. A line with more than two fields or an unreadable id is an error (the reference
    fails there too).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ElmoWeightsError(f"{path} is not UTF-8 text ({err}): the lexicon is corrupted; unpack the model again.") from None
    except OSError as err:
        raise ElmoWeightsError(f"{path} cannot be read ({err}). Make the file readable for this user.") from None
    lexicon: Dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.strip().split("\t")
        if len(fields) == 1:
            fields.insert(0, LONE_ID_TOKEN)
        if len(fields) != 2:
            raise ElmoWeightsError(
                f"{path}, line {number}: expected 'token<TAB>id', found {len(fields)} tab-separated fields in {line!r}. "
                f"The lexicon is corrupted; unpack the model again."
            )
        token, value = fields
        try:
            lexicon[token] = int(value)
        except ValueError:
            raise ElmoWeightsError(
                f"{path}, line {number}: the id {value!r} of {token!r} is not an integer"
                f"{' (an empty line?)' if not line.strip() else ''}. The lexicon is corrupted; unpack the model again."
            ) from None
    return lexicon


def check_lexicon(lexicon: Mapping[str, int], required: Tuple[str, ...], rows: int, path: PathLike, tensor: str) -> None:
    """Raise unless ``lexicon`` has every ``required`` entry and every id indexes one of ``rows``."""
    missing = [entry for entry in required if entry not in lexicon]
    if missing:
        raise ElmoWeightsError(
            f"{path} has no {', no '.join(missing)} entry: it is not an ELMoForManyLangs lexicon (those define "
            f"{', '.join(required)}); pass the model directory as published."
        )
    bad = [(token, i) for token, i in lexicon.items() if not 0 <= i < rows]
    if bad:
        token, i = bad[0]
        raise ElmoWeightsError(
            f"{path}: {token!r} has id {i}, but '{tensor}' has {rows} rows (ids 0..{rows - 1}); {len(bad)} "
            f"entr{'y is' if len(bad) == 1 else 'ies are'} out of range: the lexicon and the weights are from different models."
        )


def read_state_dict(
    path: PathLike, expected: Mapping[str, Tuple[int, ...]], network: ManyLangsNetwork
) -> Dict[str, torch.Tensor]:
    """The tensors of a ``.pkl`` state dict, loaded without running pickled code, after checking
    that they are exactly ``expected`` (names and shapes), float and finite."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign, truncated or unsafe files
        raise ElmoWeightsError(
            f"{path} cannot be loaded as a PyTorch state dict of tensors ({type(err).__name__}: {_first_line(err)}). "
            f"It is truncated, corrupted or not an ELMoForManyLangs weights file: unpack the model again."
        ) from None
    return check_state(state, expected, network, str(path))


def check_state(
    state: Any, expected: Mapping[str, Tuple[int, ...]], network: ManyLangsNetwork, source: str
) -> Dict[str, torch.Tensor]:
    """``state`` as float32 tensors if its names and shapes are exactly ``expected``; else an
    error naming the first tensor that differs, its shape and the shape the network needs."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ElmoWeightsError(f"{source}: expected a state dict (tensor name -> tensor), got {type(state).__name__}.")
    tensors: Dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        tensor = state.get(name)
        if tensor is None:
            held = ", ".join(f"'{k}'" for k in list(state)[:5]) or "nothing"
            raise ElmoWeightsError(
                f"{source}: tensor '{name}' is missing; the network ({network.shape_origin(name)}) needs it with shape "
                f"{shape}. The file holds {len(state)} tensor(s): {held}{', ...' if len(state) > 5 else ''}. "
                f"The weights do not belong to this config: pass the model directory as published."
            )
        if tuple(tensor.shape) != shape:
            raise ElmoWeightsError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but the network ({network.shape_origin(name)}) "
                f"needs {shape}: the weights, lexicons and network config are from different models."
            )
        if not tensor.is_floating_point():
            raise ElmoWeightsError(
                f"{source}: tensor '{name}' has dtype {tensor.dtype}, not a float type: the file is not ELMo weights."
            )
        tensor = tensor.detach().to(torch.float32).contiguous()
        if not bool(torch.isfinite(tensor).all()):
            raise ElmoWeightsError(f"{source}: tensor '{name}' holds NaN or infinite values: the weights are corrupted.")
        tensors[name] = tensor
    extra = [name for name in state if name not in expected]
    if extra:
        raise ElmoWeightsError(
            f"{source}: tensor '{extra[0]}' ({tuple(state[extra[0]].shape)}) is not part of the network the config "
            f"describes{f' ({len(extra) - 1} more)' if len(extra) > 1 else ''}: the weights belong to another "
            f"network config; pass the model directory as published."
        )
    return tensors


def lexicon_lines(lexicon: Mapping[str, int]) -> str:
    """A lexicon as ``token<TAB>id`` lines that :func:`read_lexicon` reads back to the same mapping."""
    return "".join(f"{token}\t{i}\n" for token, i in lexicon.items())


def write_model(
    directory: PathLike,
    network: ManyLangsNetwork,
    chars: Mapping[str, int],
    words: Optional[Mapping[str, int]],
    token_embedder: Mapping[str, torch.Tensor],
    encoder: Mapping[str, torch.Tensor],
) -> None:
    """Write a model directory in the published layout (each file atomically)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / CONFIG_FILE, json.dumps({"config_path": network.file_name}, indent=2) + "\n")
    write_text_atomic(path / network.file_name, json.dumps(network.raw, indent=2) + "\n")
    write_text_atomic(path / CHAR_LEXICON_FILE, lexicon_lines(chars))
    if words is not None:
        write_text_atomic(path / WORD_LEXICON_FILE, lexicon_lines(words))
    for name, state in ((TOKEN_EMBEDDER_FILE, token_embedder), (ENCODER_FILE, encoder)):
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
        write_bytes_atomic(path / name, buffer.getvalue())


def arrays_from_hdf5(data: bytes, source: str) -> Dict[str, np.ndarray]:
    """Every dataset of HDF5 content held in memory (a serialized model's weights), as float32."""
    arrays: Dict[str, np.ndarray] = {}
    try:
        with h5py.File(io.BytesIO(bytes(data)), "r") as h5:

            def visit(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset):
                    arrays[name] = np.asarray(node[()], dtype=np.float32)

            h5.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        raise ElmoWeightsError(
            f"{source}: the stored weights are not readable HDF5 ({_first_line(err)}): the data is truncated or "
            f"corrupted. Save the pipeline again from a working copy."
        ) from None
    return arrays


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ElmoOptionsError(f"{path} ({what}) is not readable JSON: {err}.") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return re.split(r"\n", text, maxsplit=1)[0] if text else type(err).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _section(data: Dict[str, Any], key: str, source: str) -> Dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ElmoOptionsError(
            f"{source}: '{key}' must be a JSON object, got {value!r}. An ELMoForManyLangs network config has "
            f"'encoder' (name, projection_dim, dim, n_layers, cell_clip, proj_clip) and 'token_embedder' "
            f"(name, filters, n_highway, word_dim, char_dim, max_characters_per_token, activation)."
        )
    return value


def _int(section: Dict[str, Any], key: str, source: str, prefix: str, low: int, high: int = _MAX_WIDTH) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ElmoOptionsError(f"{source}: '{prefix}{key}' must be an integer in [{low}, {high}], got {value!r}.")
    return value


def _clip(section: Dict[str, Any], key: str, source: str) -> Optional[float]:
    """A clip value; the reference clips only where it is truthy, so 0 and null mean no clipping."""
    value = section.get(key)
    if value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise ElmoOptionsError(f"{source}: 'encoder.{key}' must be a number >= 0 (0 or null: no clipping), got {value!r}.")
    return float(value)


def serialized_lexicon(lexicon: Optional[Mapping[str, int]]) -> Optional[List[List[Any]]]:
    """A lexicon as JSON-ready ``[token, id]`` pairs in its order (which decides repeated tokens)."""
    return None if lexicon is None else [[token, i] for token, i in lexicon.items()]
