"""The biLM hyper-parameters of an ``options.json`` file (docs/design.md §7), validated."""

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import ElmoOptionsError, ElmoOptionsWarning
from ..files import PathLike

ACTIVATIONS = ("relu", "tanh")

# Bounds well above every published model (lstm.dim 4096, 2 layers, 50 characters), low enough
# that a typo cannot make the biLM allocate gigabytes before the weights are even checked.
MAX_WIDTH = 65_536
MAX_LAYERS = 64
MAX_HIGHWAY = 64
MAX_CHARACTERS = 1000
N_CHARACTERS = (261, 262)
"""bilm-tf writes 261 in training options and 262 (the padding id added) in published ones."""
MAX_CLIP = 1e6
"""Clip values above this clip nothing a trained biLM computes (published: 3); larger ones
are typos, and past float32's range they overflow."""

NUMERIC_DEFAULTS: Dict[str, Any] = {
    "lstm.cell_clip": None,
    "lstm.proj_clip": None,
    "lstm.use_skip_connections": False,
    "char_cnn.activation": "relu",
    "char_cnn.n_highway": 0,
    "char_cnn.max_characters_per_token": 50,
    "char_cnn.n_characters": 262,
}
"""Fields that change the numbers a biLM computes but that bilm-tf's options may leave out:
the value used when one is missing, with an :class:`ElmoOptionsWarning` (every published
options.json sets them all)."""


@dataclass(frozen=True)
class ElmoOptions:
    """Architecture of an ELMo biLM, in the vocabulary of ``options.json``."""

    lstm_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: Optional[float]
    proj_clip: Optional[float]
    use_skip_connections: bool
    char_embedding_dim: int
    filters: Tuple[Tuple[int, int], ...]
    n_highway: int
    activation: str = "relu"
    max_characters_per_token: int = 50
    n_characters: int = 262
    extra: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_filters(self) -> int:
        """Width F of the char-CNN output: the sum of every bank's filter count."""
        return sum(n for _, n in self.filters)

    @property
    def output_dim(self) -> int:
        """Width 2P of every layer the biLM reports."""
        return 2 * self.projection_dim

    @property
    def n_output_layers(self) -> int:
        """L + 1: the token layer and every LSTM layer."""
        return self.n_layers + 1

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "options") -> "ElmoOptions":
        """Validate an ``options.json`` dictionary; ``source`` names it in error messages."""
        if not isinstance(data, dict):
            raise ElmoOptionsError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        lstm = _section(data, "lstm", source)
        cnn = _section(data, "char_cnn", source)
        embedding = _section(cnn, "embedding", source, prefix="char_cnn.")
        filters = _get(cnn, "filters", source, "char_cnn.")
        if (
            not isinstance(filters, list)
            or not filters
            or not all(
                isinstance(f, (list, tuple)) and len(f) == 2 and all(_is_int(v) and 0 < v <= MAX_WIDTH for v in f)
                for f in filters
            )
        ):
            raise ElmoOptionsError(
                f"{source}: 'char_cnn.filters' must be a non-empty list of [width, count] pairs of "
                f"integers in [1, {MAX_WIDTH}], got {filters!r}."
            )
        max_chars = _int_in_range(
            _defaulted(cnn, "char_cnn.", "max_characters_per_token", source),
            "char_cnn.max_characters_per_token",
            source,
            3,
            MAX_CHARACTERS,
            "begin-of-word, at least one byte and end-of-word; the published models use 50",
        )
        widest = max(int(w) for w, _ in filters)
        if widest > max_chars:
            raise ElmoOptionsError(
                f"{source}: a char-CNN filter of width {widest} is wider than 'char_cnn.max_characters_per_token' = {max_chars}."
            )
        activation = _defaulted(cnn, "char_cnn.", "activation", source)
        if activation not in ACTIVATIONS:
            raise ElmoOptionsError(f"{source}: 'char_cnn.activation' must be one of {list(ACTIVATIONS)}, got {activation!r}.")
        n_highway = _int_in_range(_defaulted(cnn, "char_cnn.", "n_highway", source), "char_cnn.n_highway", source, 0, MAX_HIGHWAY)
        n_characters = _defaulted(cnn, "char_cnn.", "n_characters", source)
        if not _is_int(n_characters) or n_characters not in N_CHARACTERS:
            raise ElmoOptionsError(
                f"{source}: 'char_cnn.n_characters' must be 261 or 262 (the size of ELMo's byte "
                f"vocabulary, with or without the padding id), got {n_characters!r}."
            )
        skip = _defaulted(lstm, "lstm.", "use_skip_connections", source)
        if not isinstance(skip, bool):
            raise ElmoOptionsError(f"{source}: 'lstm.use_skip_connections' must be true or false, got {skip!r}.")
        known = {"lstm", "char_cnn"}
        return cls(
            lstm_dim=_int_in_range(_get(lstm, "dim", source, "lstm."), "lstm.dim", source, 1, MAX_WIDTH),
            projection_dim=_int_in_range(
                _get(lstm, "projection_dim", source, "lstm."), "lstm.projection_dim", source, 1, MAX_WIDTH
            ),
            n_layers=_int_in_range(_get(lstm, "n_layers", source, "lstm."), "lstm.n_layers", source, 1, MAX_LAYERS),
            cell_clip=_clip(_defaulted(lstm, "lstm.", "cell_clip", source), "lstm.cell_clip", source),
            proj_clip=_clip(_defaulted(lstm, "lstm.", "proj_clip", source), "lstm.proj_clip", source),
            use_skip_connections=skip,
            char_embedding_dim=_int_in_range(
                _get(embedding, "dim", source, "char_cnn.embedding."), "char_cnn.embedding.dim", source, 1, MAX_WIDTH
            ),
            filters=tuple((int(w), int(n)) for w, n in filters),
            n_highway=n_highway,
            activation=activation,
            max_characters_per_token=max_chars,
            n_characters=int(n_characters),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_file(cls, path: PathLike) -> "ElmoOptions":
        """Read and validate an ``options.json`` file."""
        path = Path(path)
        if not path.is_file():
            raise ElmoOptionsError(
                f"Options file not found: {path}. Pass the 'options.json' that was published with "
                f"the weights (or a directory holding options.json and weights.hdf5)."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError, and ints over Python's digit limit
            raise ElmoOptionsError(f"Options file {path} is not readable JSON: {err}.") from None
        except RecursionError:
            raise ElmoOptionsError(
                f"Options file {path} nests brackets too deeply to be an options.json: the file is corrupted. "
                f"Pass the 'options.json' published with the weights."
            ) from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> Dict[str, Any]:
        """The ``options.json`` dictionary, in the published schema (inference fields only)."""
        data = dict(self.extra)
        data["lstm"] = {
            "dim": self.lstm_dim,
            "projection_dim": self.projection_dim,
            "n_layers": self.n_layers,
            "cell_clip": _json_number(self.cell_clip),
            "proj_clip": _json_number(self.proj_clip),
            "use_skip_connections": self.use_skip_connections,
        }
        data["char_cnn"] = {
            "embedding": {"dim": self.char_embedding_dim},
            "filters": [list(f) for f in self.filters],
            "n_highway": self.n_highway,
            "activation": self.activation,
            "max_characters_per_token": self.max_characters_per_token,
            "n_characters": 262,
        }
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def expected_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Every dataset of the published ``weights.hdf5`` layout (docs/design.md §7) with its shape."""
        d_c, F, P, H = self.char_embedding_dim, self.n_filters, self.projection_dim, self.lstm_dim
        shapes: Dict[str, Tuple[int, ...]] = {"char_embed": (261, d_c)}
        for i, (width, count) in enumerate(self.filters):
            shapes[f"CNN/W_cnn_{i}"] = (1, width, d_c, count)
            shapes[f"CNN/b_cnn_{i}"] = (count,)
        for k in range(self.n_highway):
            for name in ("carry", "transform"):
                shapes[f"CNN_high_{k}/W_{name}"] = (F, F)
                shapes[f"CNN_high_{k}/b_{name}"] = (F,)
        shapes["CNN_proj/W_proj"] = (F, P)
        shapes["CNN_proj/b_proj"] = (P,)
        for direction in range(2):
            for layer in range(self.n_layers):
                prefix = lstm_cell_prefix(direction, layer)
                shapes[f"{prefix}/W_0"] = (P + P, 4 * H)
                shapes[f"{prefix}/B"] = (4 * H,)
                shapes[f"{prefix}/W_P_0"] = (H, P)
        return shapes


def lstm_cell_prefix(direction: int, layer: int) -> str:
    """HDF5 group of one LSTM cell: direction 0 = forward, 1 = backward."""
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def _json_number(value: Optional[float]) -> Optional[Union[int, float]]:
    """Write 3.0 as 3, as the published files do."""
    return int(value) if value is not None and float(value).is_integer() else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _section(data: Dict[str, Any], key: str, source: str, prefix: str = "") -> Dict[str, Any]:
    value = _get(data, key, source, prefix)
    if not isinstance(value, dict):
        raise ElmoOptionsError(f"{source}: '{prefix}{key}' must be a JSON object, got {value!r}.")
    return value


def _get(data: Dict[str, Any], key: str, source: str, prefix: str = "") -> Any:
    if key not in data:
        raise ElmoOptionsError(
            f"{source}: missing field '{prefix}{key}'. An ELMo options.json needs 'lstm' "
            f"(dim, projection_dim, n_layers, ...) and 'char_cnn' (embedding.dim, filters, ...)."
        )
    return data[key]


def _int_in_range(value: Any, name: str, source: str, low: int, high: int, why: str = "") -> int:
    """``value`` as an int if it is an integer (not a bool, not a float) in ``[low, high]``."""
    if not _is_int(value) or not low <= value <= high:
        reason = f" ({why})" if why else ""
        raise ElmoOptionsError(f"{source}: '{name}' must be an integer in [{low}, {high}]{reason}, got {value!r}.")
    return int(value)


def _defaulted(section: Dict[str, Any], prefix: str, key: str, source: str) -> Any:
    """``section[key]``, or its :data:`NUMERIC_DEFAULTS` value with a warning naming the field."""
    if key in section:
        return section[key]
    default = NUMERIC_DEFAULTS[prefix + key]
    warnings.warn(
        f"{source}: '{prefix}{key}' is missing; using {json.dumps(default)}. It changes the biLM's outputs: "
        f"set it to the value the weights were trained with (every published options.json has it).",
        ElmoOptionsWarning,
        stacklevel=3,
    )
    return default


def _clip(value: Any, name: str, source: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= MAX_CLIP:
        raise ElmoOptionsError(
            f"{source}: '{name}' must be a number in (0, {MAX_CLIP:g}] (the published models use 3), or null "
            f"for no clipping, got {value!r}."
        )
    return float(value)
