"""Thinc layer around :class:`ElmoBiLM`: token sequences in, every biLM layer out.

Sequences are sorted by length and cut into sub-batches of at most ``max_batch_tokens``
padded slots, so memory stays bounded whatever the caller's batch is. The biLM is loaded
lazily (on ``initialize`` or first use) from the files named in the layer's settings, or
from serialized bytes, which hold the weights in the published HDF5 layout (no pickle)
and their sha256 checksum, checked when they are loaded.

One pipeline may be called from several threads: each layer holds one lock around the
lazy load and around every biLM call, so the biLM loads once and its caches are filled by
one call at a time. Concurrent calls on one layer therefore run one after another (PyTorch
already uses every core inside one call); separate pipelines run in parallel.
"""

import contextvars
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, cast

import numpy as np
import srsly
import torch
from thinc.api import ArgsKwargs, Model, Optimizer, PyTorchGradScaler, PyTorchShim, get_torch_default_device, torch2xp
from thinc.types import Floats3d, Floats4d
from tqdm import tqdm

from ..bilm.batching import batches_by_length
from ..bilm.manylangs import ManyLangsBiLM
from ..bilm.manylangs_io import is_manylangs_data
from ..bilm.model import ElmoBiLM
from ..bilm.options import ElmoOptions
from ..bilm.pretrained import resolve_files
from ..bilm.weights_io import weights_from_bytes
from ..errors import ElmoOptionsError, ElmoWeightsError
from ..locks import PicklableLock
from ..memory import large_allocations_returned
from .layer_cache import LayerCache
from .layer_store import LayerStore, bilm_fingerprint, default_store_dir, sequence_key
from .settings import LAYER_DEFAULTS, ElmoLayerSettings

TokenSequences = List[List[str]]
LAYER_NAME = "elmo-bilm"
Backprop = Callable[[List[Floats3d]], List[Any]]


class ElmoShim(PyTorchShim):
    """A PyTorch shim whose biLM is loaded on first use and serialized as options + HDF5."""

    def __init__(
        self,
        settings: ElmoLayerSettings,
        mixed_precision: bool = False,
        grad_scaler: Optional[PyTorchGradScaler] = None,
    ) -> None:
        super().__init__(
            None,
            config={
                "weights": settings.weights,
                "options": settings.options or "",
                "token_cache_size": settings.token_cache_size,
            },
            mixed_precision=mixed_precision,
            grad_scaler=grad_scaler,
            serialize_model=_serialize_bilm,
            deserialize_model=self._deserialize_bilm,
        )
        self.lock = PicklableLock(reentrant=True)
        self.inference_precision = settings.precision
        """Inference precision of the biLM; kept out of ``cfg``, which deserialization replaces
        with the saved one, so the loading config's setting applies to saved pipelines."""
        self.config_path = ""
        """Where the settings live in the user's config (e.g. ``[components.elmo.model]``), set
        by the component that owns the layer, so that load errors name the line to fix."""
        self.layer_cache: Optional[LayerCache] = None
        """Layers computed by the frozen biLM, per token sequence (see :func:`layer_cache`)."""
        self.layer_store: Optional[LayerStore] = None
        """The on-disk store of those layers (see :func:`layer_store`)."""
        self._fingerprint: Optional[str] = None

    def setting(self, name: str) -> str:
        """How errors name one of the layer's settings."""
        return f"{self.config_path} {name}" if self.config_path else f"the biLM layer's {name} setting"

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["layer_cache"] = None  # a cache, not state: copies start empty
        state["layer_store"] = None
        state["_fingerprint"] = None
        return state

    @property
    def bilm(self) -> ElmoBiLM:
        """The wrapped biLM, loaded from its files the first time it is needed."""
        self.load()
        return self._model

    def load(self) -> None:
        """Load the biLM from the files its settings name, unless it is already loaded."""
        if self._model is not None:
            return
        with self.lock:
            if self._model is None:
                with large_allocations_returned():  # the file's arrays are copied once, then dropped
                    bilm = load_bilm(self.cfg, setting=self.setting).to(get_torch_default_device())
                bilm.to_precision(self.inference_precision, setting=self.setting("precision"))
                bilm.eval()
                self._model = bilm

    @property
    def fingerprint(self) -> str:
        """A digest of the loaded biLM's options, precision and weights, which keys its stored
        layers; computed once per loaded set of weights."""
        with self.lock:
            if self._fingerprint is None:
                self._fingerprint = bilm_fingerprint(self.bilm)
            return self._fingerprint

    @property
    def device(self) -> torch.device:
        return self.bilm.boundary_char_ids.device

    def predict(self, inputs: ArgsKwargs) -> Any:
        bilm = self.bilm
        bilm.eval()
        with torch.no_grad(), torch.autocast("cuda", enabled=self._mixed_precision):
            return bilm(*inputs.args, **inputs.kwargs)

    def begin_update(self, inputs: ArgsKwargs) -> Tuple[torch.Tensor, Callable[[ArgsKwargs], ArgsKwargs]]:
        self.bilm.train()
        return super().begin_update(inputs)

    def finish_update(self, optimizer: Optimizer) -> None:
        if self._model is not None:
            super().finish_update(optimizer)
            self._weights_changed()
            self._model.eval()

    def _weights_changed(self) -> None:
        """Forget what was computed from the old weights: Thinc's optimizer updates the
        parameters in place without bumping torch's version counters."""
        if self._model is not None:
            self._model.weights_changed()
        self._fingerprint = None
        if self.layer_cache is not None:
            self.layer_cache.clear()

    @contextmanager
    def use_params(self, params: Dict[Any, Any]) -> Iterator[None]:
        self.load()
        prefix = f"pytorch_{self.id}_"
        swaps = any(isinstance(key, str) and key.startswith(prefix) for key in params)
        with super().use_params(params):
            if swaps:
                self._weights_changed()
            try:
                yield
            finally:
                if swaps:
                    self._weights_changed()

    def to_device(self, device_type: str, device_id: int) -> None:
        if self._model is not None:
            super().to_device(device_type, device_id)

    def to_bytes(self) -> bytes:
        self.load()
        if _WEIGHTS_OMITTED.get():
            return srsly.msgpack_dumps({"config": self.cfg, "state": b""})
        with large_allocations_returned():
            return super().to_bytes()

    def current_fingerprint(self) -> str:
        """The fingerprint of the weights as they are now, computed again: weights changed
        without the shim being told (written through ``.data`` or a NumPy view) give another
        one than :attr:`fingerprint`, and then everything computed from the old ones is dropped."""
        with self.lock:
            current = bilm_fingerprint(self.bilm)
            if self._fingerprint is not None and current != self._fingerprint:
                self._weights_changed()
            self._fingerprint = current
            return current

    def _deserialize_bilm(self, current: Optional[ElmoBiLM], data: bytes, device: torch.device) -> ElmoBiLM:
        source = _SOURCE.get()
        verified = verified_bilm_data(data, source)
        options_source = f"{source} (its options)"
        try:
            options_data = json.loads(verified["options"])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ElmoOptionsError(f"{options_source} are not readable JSON ({err}). {_RESAVE}") from None
        cache_size = self.cfg.get("token_cache_size", 0)
        bilm: ElmoBiLM
        if is_manylangs_data(options_data):
            bilm = ManyLangsBiLM.from_serialized(options_data, verified["weights"], source=source, token_cache_size=cache_size)
        else:
            options = ElmoOptions.from_dict(options_data, source=options_source)
            arrays = weights_from_bytes(verified["weights"], options, source=f"{source} (its weights)")
            bilm = ElmoBiLM.from_arrays(options, arrays, token_cache_size=cache_size)
        if self.layer_cache is not None:
            self.layer_cache.clear()
        self._fingerprint = None
        return bilm.to(device).to_precision(self.inference_precision, setting=self.setting("precision"))


_WEIGHTS_OMITTED: "contextvars.ContextVar[bool]" = contextvars.ContextVar("elmo_weights_omitted", default=False)


@contextmanager
def weights_omitted() -> Iterator[None]:
    """Serialize biLM layers without their biLM's options and weights (only the shim's
    settings): everything else a model's bytes hold, cheaply, for keying a saved file together
    with :meth:`ElmoShim.current_fingerprint`."""
    token = _WEIGHTS_OMITTED.set(True)
    try:
        yield
    finally:
        _WEIGHTS_OMITTED.reset(token)


SERIALIZED_SOURCE = "<serialized biLM>"
_SOURCE: "contextvars.ContextVar[str]" = contextvars.ContextVar("elmo_serialized_source", default=SERIALIZED_SOURCE)


@contextmanager
def serialized_source(name: str) -> Iterator[None]:
    """Name the file (or other source) whose bytes are being loaded, for error messages."""
    token = _SOURCE.set(name)
    try:
        yield
    finally:
        _SOURCE.reset(token)


_RESAVE = (
    "Save the pipeline again from a working copy, or copy or download it again; if it was "
    "written by a process that was killed, the write did not finish."
)


def _serialize_bilm(bilm: ElmoBiLM) -> bytes:
    data = bilm.to_bytes()
    return srsly.msgpack_dumps({**data, "sha256": _checksum(data["options"], data["weights"])})


def _checksum(options: bytes, weights: bytes) -> str:
    digest = hashlib.sha256(options)
    digest.update(weights)
    return digest.hexdigest()


def msgpack_or_error(data: Any, message: Callable[[str], str]) -> Any:
    """``data`` decoded from msgpack; damage is an :class:`ElmoWeightsError` whose text is
    ``message(reason)`` (msgpack raises many unrelated types for damaged input)."""
    try:
        return srsly.msgpack_loads(data)
    except Exception as err:
        raise ElmoWeightsError(message(f"{type(err).__name__}: {err}")) from None


def verified_bilm_data(data: Any, source: str = SERIALIZED_SOURCE) -> Dict[str, bytes]:
    """The ``{"options", "weights"}`` of a serialized biLM, after checking it is complete and
    matches the sha256 stored with it."""
    decoded = msgpack_or_error(
        data,
        lambda reason: f"{source}: the stored biLM cannot be decoded ({reason}): the data is truncated or corrupted. {_RESAVE}",
    )
    missing = [key for key in ("options", "weights") if not isinstance(decoded, dict) or key not in decoded]
    if missing:
        raise ElmoWeightsError(
            f"{source}: the stored biLM has no {' and no '.join(missing)}: the data is incomplete "
            f"or was not written by spacy-elmo. {_RESAVE}"
        )
    options, weights = decoded["options"], decoded["weights"]
    if not isinstance(options, bytes) or not isinstance(weights, bytes):
        raise ElmoWeightsError(f"{source}: the stored biLM's options or weights are not bytes: the data is corrupted. {_RESAVE}")
    stored = decoded.get("sha256")
    if not isinstance(stored, str):
        raise ElmoWeightsError(
            f"{source}: the stored biLM has no sha256 checksum, so its weights cannot be verified: the data "
            f"was not written by spacy-elmo or was edited. {_RESAVE}"
        )
    if stored != _checksum(options, weights):
        raise ElmoWeightsError(
            f"{source}: the stored biLM does not match its sha256 checksum: the file is corrupted "
            f"(changed on disk or in transfer). {_RESAVE}"
        )
    return {"options": options, "weights": weights}


def load_bilm(settings: Dict[str, Any], setting: Callable[[str], str] = str) -> ElmoBiLM:
    """Load the biLM that the shim's ``settings`` (``weights``, ``options``, ``token_cache_size``)
    name; ``setting(name)`` is how errors name a setting."""
    options_path, weights_path = resolve_files(
        settings["weights"],
        settings.get("options") or None,
        weights_setting=setting("weights"),
        options_setting=setting("options"),
    )
    return ElmoBiLM.from_files(options_path, weights_path, token_cache_size=settings.get("token_cache_size", 0))


def ElmoBiLMLayer(
    settings: ElmoLayerSettings = LAYER_DEFAULTS,
    *,
    mixed_precision: bool = False,
    grad_scaler: Optional[PyTorchGradScaler] = None,
) -> Model[TokenSequences, List[Floats3d]]:
    """Every biLM layer, ``(L+1, n_i, 2P)``, for each token sequence (see :class:`ElmoLayerSettings`).

    The layer's ``frozen`` attribute (False here; the ``elmo`` component sets it) makes
    training runs use the biLM without gradients; during training updates a frozen layer
    also keeps up to ``layer_cache_mb`` MiB of computed layers per token sequence and reuses
    them, and reads and writes them in the on-disk store (``layer_store``); inference adds to
    the cache only in a process that has trained (see :func:`_frozen_forward`).
    """
    shim = ElmoShim(settings, mixed_precision=mixed_precision, grad_scaler=grad_scaler)
    return Model(
        LAYER_NAME,
        forward,
        init=init,
        shims=[shim],
        attrs={
            "max_batch_tokens": settings.max_batch_tokens,
            "layer_cache_mb": settings.layer_cache_mb,
            "layer_store": settings.layer_store,
            "layer_store_dir": settings.layer_store_dir,
            "layer_store_mb": settings.layer_store_mb,
            "layer_store_float16": settings.layer_store_float16,
            "frozen": False,
        },
        dims={"nO": None, "nL": None},
    )


def init(model: Model, X: Optional[TokenSequences] = None, Y: Optional[Any] = None) -> None:
    bilm_options(model)


def elmo_shim(model: Model) -> ElmoShim:
    """The :class:`ElmoShim` that holds the biLM of an :func:`ElmoBiLMLayer`."""
    shim = model.shims[0] if model.shims else None
    if not isinstance(shim, ElmoShim):
        raise TypeError(
            f"Layer {model.name!r} is not an ElmoBiLMLayer: its first shim is a {type(shim).__name__}, not an ElmoShim."
        )
    return shim


def bilm_options(model: Model) -> ElmoOptions:
    """Options of the wrapped biLM (loading it if needed); also fills the layer's dims."""
    options = elmo_shim(model).bilm.options
    if not model.has_dim("nO"):
        model.set_dim("nO", options.output_dim)
        model.set_dim("nL", options.n_output_layers)
    return options


def forward(model: Model, sequences: TokenSequences, is_train: bool) -> Tuple[List[Floats3d], Backprop]:
    with elmo_shim(model).lock:
        if model.attrs["frozen"]:
            return _frozen_forward(model, sequences, is_train=is_train), lambda d_outputs: []
        return _run(model, sequences, is_train)


def layer_cache(model: Model) -> LayerCache:
    """The frozen layer's cache of layers per token sequence (lives with the shim, never saved)."""
    shim = elmo_shim(model)
    size = model.attrs["layer_cache_mb"] * 2**20
    cache = shim.layer_cache
    if cache is None or cache.max_bytes != size:
        cache = shim.layer_cache = LayerCache(size)
    return cache


def layer_store(model: Model) -> LayerStore:
    """The on-disk layer store the layer's settings name (opened once, reopened when they change)."""
    shim = elmo_shim(model)
    directory = model.attrs.get("layer_store_dir")
    path = Path(directory).expanduser() if directory else default_store_dir()
    size = model.attrs.get("layer_store_mb", 0) * 2**20
    dtype = np.dtype("<f2") if model.attrs.get("layer_store_float16", True) else np.dtype("<f4")
    store = shim.layer_store
    if store is None or store.directory != path or store.max_bytes != size or store.dtype != dtype:
        store = shim.layer_store = LayerStore(path, size, float16=dtype.itemsize == 2)
    return store


def _active_store(model: Model, training: bool) -> Optional[LayerStore]:
    """The store when this call may use it: ``always``, or ``training`` in a process that trains."""
    mode = model.attrs.get("layer_store", "off")
    if mode == "off" or model.attrs.get("layer_store_mb", 0) == 0 or (mode == "training" and not training):
        return None
    return layer_store(model)


def _frozen_forward(model: Model, sequences: TokenSequences, is_train: bool = False) -> List[Floats3d]:
    """The frozen biLM's layers, reusing cached and stored ones.

    Training updates add to the cache (they revisit the same sentences every epoch), and so
    does inference once a training update (or :func:`prefill`) has: in ``spacy train`` that is
    the evaluation, which reads the same dev sentences every ``eval_frequency`` steps. A
    process that only annotates (a server) never adds, so its memory does not grow towards the
    cache's bound; it uses the on-disk store only with ``layer_store = "always"``.
    """
    cache = layer_cache(model)
    training = is_train or cache.filled_in_training
    store = _active_store(model, training)
    if store is None and (cache.max_bytes == 0 or (not is_train and len(cache) == 0)):
        return _run(model, sequences, False)[0]
    outputs = _reused_layers(model, sequences, cache, store, fill=training)
    if is_train:
        cache.filled_in_training = True
    return outputs


def _reused_layers(
    model: Model, sequences: TokenSequences, cache: LayerCache, store: Optional[LayerStore], fill: bool
) -> List[Floats3d]:
    """Each sequence's layers from the memory cache, else the store, else the biLM (then kept
    in both). With a store, every result has the store's precision, however it was found."""
    keys = [tuple(sequence) for sequence in sequences]
    found: List[Any] = [cache.get(key) for key in keys]
    fingerprint = elmo_shim(model).fingerprint if store is not None else ""
    if store is not None:
        for i, layers in enumerate(found):
            if layers is None:
                layers = store.get(fingerprint, sequence_key(fingerprint, sequences[i]), len(sequences[i]))
                if layers is not None:
                    found[i] = layers
                    if fill:
                        cache.put(keys[i], layers)
    missing = [i for i, layers in enumerate(found) if layers is None]
    if missing:
        computed, _ = _run(model, [sequences[i] for i in missing], False)
        for i, layers in zip(missing, computed):
            if store is not None:
                layers = model.ops.to_numpy(layers).astype(store.dtype)
                store.put(fingerprint, sequence_key(fingerprint, sequences[i]), layers)
            if fill:
                cache.put(keys[i], layers)
            found[i] = layers
    if store is None:
        return found
    return [model.ops.asarray3f(layers, dtype="float32") for layers in found]


def prefill(model: Model, sequences: Sequence[Sequence[str]], *, progress: bool = True) -> Dict[str, int]:
    """Compute and store the layers of every sequence not yet in the layer store, in batches of
    ``max_batch_tokens`` (the biLM's fastest, whatever the training batch), so that training
    reads them all from the store. The batches' activations are handed back to the system
    afterwards, even under ``keep_freed_memory``: training never needs that much again. Does nothing unless the layer is frozen and its store is
    on for training. Returns counts: ``sequences`` (distinct), ``stored`` (found),
    ``computed``, ``not_stored`` (computed but not kept: the bound or the disk), ``tokens`` computed.
    """
    counts = {"sequences": 0, "stored": 0, "computed": 0, "not_stored": 0, "tokens": 0}
    shim = elmo_shim(model)
    with shim.lock:
        store = _active_store(model, training=True)
        if not model.attrs["frozen"] or store is None:
            return counts
        fingerprint = shim.fingerprint
        distinct: Dict[str, Sequence[str]] = {}
        for tokens in sequences:
            distinct.setdefault(sequence_key(fingerprint, tokens), tokens)
        todo = [(key, tokens) for key, tokens in distinct.items() if not store.contains(fingerprint, key)]
        todo.sort(key=lambda item: len(item[1]), reverse=True)
        counts.update(sequences=len(distinct), stored=len(distinct) - len(todo), computed=len(todo))
        counts["tokens"] = sum(len(tokens) for _, tokens in todo)
        max_tokens = model.attrs["max_batch_tokens"]
        with (
            large_allocations_returned(),
            tqdm(total=counts["tokens"], unit="tok", desc="ELMo layers", disable=None if progress else True) as bar,
        ):
            start = 0
            while start < len(todo):
                end, size = start, 0
                longest = len(todo[start][1])
                while end < len(todo) and (end == start or (end - start + 1) * longest <= max_tokens):
                    size += len(todo[end][1])
                    end += 1
                chunk = todo[start:end]
                computed, _ = _run(model, [list(tokens) for _, tokens in chunk], False)
                for (key, _), layers in zip(chunk, computed):
                    if not store.put(fingerprint, key, model.ops.to_numpy(layers)):
                        counts["not_stored"] += 1
                bar.update(size)
                start = end
    return counts


def _run(model: Model, sequences: TokenSequences, is_train: bool) -> Tuple[List[Floats3d], Backprop]:
    shim = elmo_shim(model)
    bilm_options(model)
    outputs: List[Optional[Floats3d]] = [None] * len(sequences)
    callbacks = []
    for rows in batches_by_length([len(s) for s in sequences], model.attrs["max_batch_tokens"]):
        batch = [sequences[i] for i in rows]
        char_ids, token_index, lengths = shim.bilm.index_batch(batch)
        device = shim.device
        inputs = ArgsKwargs(
            args=(
                torch.from_numpy(char_ids).to(device),
                torch.from_numpy(token_index).to(device),
                torch.from_numpy(lengths).to(device),
            ),
            kwargs={},
        )
        if is_train:
            layers, torch_backprop = shim.begin_update(inputs)
            callbacks.append((rows, layers, torch_backprop))
        else:
            layers = shim.predict(inputs)
        array = cast(Floats4d, torch2xp(layers.detach().float()))  # (L+1, B, T, 2P)
        for row, index in enumerate(rows):
            outputs[index] = array[:, row, : len(sequences[index])]

    def backprop(d_outputs: List[Floats3d]) -> List[Any]:
        for rows, layers, torch_backprop in callbacks:
            grad = torch.zeros_like(layers)
            for row, index in enumerate(rows):
                n = len(sequences[index])
                if n:
                    grad[:, row, :n] = torch.as_tensor(d_outputs[index], device=grad.device, dtype=grad.dtype)
            torch_backprop(ArgsKwargs(args=(layers,), kwargs={"grad_tensors": (grad,)}))
        return []

    return outputs, backprop  # type: ignore[return-value]
