"""The ELMo biLM as one PyTorch module, with loading, saving and a NumPy-level API."""

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..chars import BOS_TOKEN, EOS_TOKEN, encode_tokens, index_batch
from ..errors import ElmoError, ElmoWeightsError
from ..files import PathLike, write_text_atomic
from .batching import batches_of_rows
from .inference_precision import BiLMKernels, check_precision, check_supported, prepare_kernels
from .lstm import ElmoLstm, LstmState
from .options import ElmoOptions
from .pretrained import resolve_model
from .token_cache import DEFAULT_TOKEN_CACHE_SIZE, TokenCache
from .token_encoder import TokenEncoder
from .weights_io import read_weights, weights_from_bytes, weights_to_bytes, write_weights

_fork_guard_installed = False


def _one_thread_in_forked_child() -> None:
    torch.set_num_threads(1)


def install_fork_guard() -> None:
    """Make every process forked from now on start with one torch thread; idempotent.

    OpenMP's thread pool does not survive ``fork()``: a child that inherits a used pool hangs
    in its first parallel op (e.g. ``nlp.pipe(n_process=2)`` after the parent ran the biLM).
    Process-wide, so it is installed when the first biLM is built, not on import.
    """
    global _fork_guard_installed
    if not _fork_guard_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread_in_forked_child)
        _fork_guard_installed = True


class ElmoBiLM(nn.Module):
    """Char CNN → highway → projection → forward and backward LSTM stacks (docs/design.md §2–5).

    ``forward`` returns every layer, ``(L+1, B, T, 2P)``, with ``<S>``/``</S>`` removed and
    zeros at padded slots: layer 0 is the token vector twice, layer ``l`` is
    ``[forward_l, backward_l]``. Stateless by default (every sentence starts from zero
    state, so outputs never depend on the rest of the batch). With ``stateful=True`` row
    ``i`` of each batch starts from the final state of row ``i`` of the previous batch, as in
    AllenNLP and bilm-tf (docs/design.md §4).
    """

    boundary_char_ids: torch.Tensor
    """Token ids of ``<S>`` and ``</S>`` ``(2, C)``: a buffer, so it follows the model's device."""

    cache_key_dtype: torch.dtype = torch.int16
    """Integer type the token cache keys ids in: wide enough for every id the token encoder reads."""

    def __init__(
        self,
        options: ElmoOptions,
        *,
        stateful: bool = False,
        token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        precision: str = "fp32",
        token_encoder: Optional[TokenEncoder] = None,
        lstm: Optional[ElmoLstm] = None,
        boundary_ids: Optional[np.ndarray] = None,
    ) -> None:
        """``token_encoder``, ``lstm`` and ``boundary_ids`` default to ELMo's (byte ids, TensorFlow
        cells); a model with another vocabulary or cell passes its own (see :mod:`.manylangs`)."""
        super().__init__()
        install_fork_guard()
        self.inference_precision = check_precision(precision)
        """Precision of inference (``fp32``, ``bf16``, ``int8``; see :mod:`spacy_elmo.bilm.inference_precision`)."""
        self._kernels: Optional[BiLMKernels] = None
        self.options = options
        self.token_encoder = TokenEncoder(options) if token_encoder is None else token_encoder
        self.lstm = ElmoLstm(options) if lstm is None else lstm
        self.stateful = stateful
        self.token_cache = TokenCache(token_cache_size)
        self._state: Optional[LstmState] = None
        if boundary_ids is None:
            boundary_ids = encode_tokens([BOS_TOKEN, EOS_TOKEN], options.max_characters_per_token)
        self.register_buffer("boundary_char_ids", torch.from_numpy(boundary_ids), persistent=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_arrays(cls, options: ElmoOptions, arrays: Dict[str, np.ndarray], **kwargs: Any) -> "ElmoBiLM":
        """Build from weights in the published HDF5 layout (dataset name → array)."""
        model = cls(options, **kwargs)
        model.token_encoder.load_arrays(arrays)
        model.lstm.load_arrays(arrays)
        return model.eval()

    @classmethod
    def from_files(
        cls,
        options_path: PathLike,
        weights_path: PathLike,
        *,
        stateful: bool = False,
        token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        device: Union[str, torch.device, None] = None,
        precision: str = "fp32",
    ) -> "ElmoBiLM":
        """Load a published ``options.json`` + ``weights.hdf5`` pair; ``precision`` as in
        :meth:`to_precision` (the weights are read and kept as float32 in every case).

        An ELMoForManyLangs model's ``config.json`` and ``encoder.pkl`` (what :func:`resolve_model`
        gives for its directory) load that model (:class:`.manylangs.ManyLangsBiLM`)."""
        check_precision(precision)
        from .manylangs import ManyLangsBiLM
        from .manylangs_io import is_manylangs_files

        if is_manylangs_files(options_path, weights_path):
            model: ElmoBiLM = ManyLangsBiLM.from_directory(
                Path(options_path).parent, stateful=stateful, token_cache_size=token_cache_size
            )
            model = model if device is None else model.to(device)
            return model.to_precision(precision)
        options = ElmoOptions.from_file(options_path)
        arrays = read_weights(weights_path, options)
        model = cls.from_arrays(options, arrays, stateful=stateful, token_cache_size=token_cache_size)
        model = model if device is None else model.to(device)
        return model.to_precision(precision)

    @classmethod
    def from_pretrained(cls, name_or_directory: PathLike, **kwargs: Any) -> "ElmoBiLM":
        """Load a published model by name ("small", "medium", "original", "original-5.5b"),
        downloading it once into the cache, a directory with options.json + weights.hdf5, or an
        ELMoForManyLangs model directory (config.json, char.dic, word.dic and two .pkl files)."""
        options_path, weights_path = resolve_model(str(name_or_directory))
        return cls.from_files(options_path, weights_path, **kwargs)

    @classmethod
    def from_bytes(cls, data: Dict[str, bytes], **kwargs: Any) -> "ElmoBiLM":
        """Inverse of :meth:`to_bytes` (of this class or of :class:`.manylangs.ManyLangsBiLM`)."""
        from .manylangs import ManyLangsBiLM
        from .manylangs_io import is_manylangs_data

        try:
            options_data = json.loads(data["options"])
            if is_manylangs_data(options_data):
                return ManyLangsBiLM.from_serialized(options_data, data["weights"], **kwargs)
            options = ElmoOptions.from_dict(options_data, source="<serialized options>")
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ElmoError):
                raise
            raise ElmoWeightsError(f"Serialized biLM is incomplete or corrupted: {err}.") from None
        return cls.from_arrays(options, weights_from_bytes(data["weights"], options), **kwargs)

    # ------------------------------------------------------------------ saving

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """Weights in the published HDF5 layout (dataset name → float32 array)."""
        return {**self.token_encoder.to_arrays(), **self.lstm.to_arrays()}

    def save(self, directory: PathLike) -> None:
        """Write ``options.json`` and ``weights.hdf5`` in the published layout."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / "options.json", self.options.to_json())
        write_weights(directory / "weights.hdf5", self.to_arrays())

    def to_bytes(self) -> Dict[str, bytes]:
        """``options.json`` and ``weights.hdf5`` contents, for self-contained pipelines."""
        return {"options": self.options.to_json().encode("utf-8"), "weights": weights_to_bytes(self.to_arrays())}

    # ------------------------------------------------------------------ state

    def reset_states(self) -> None:
        """Forget the carried LSTM state (stateful mode): the next batch starts from zeros."""
        self._state = None

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], *args: Any, **kwargs: Any) -> "ElmoBiLM":
        self._state = None
        self._kernels = None
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> Dict:
        state = dict(self.__dict__)
        state["_kernels"] = None  # prepacked weights are rebuilt from the parameters on use
        return state

    # ------------------------------------------------------------------ precision

    def to_precision(self, precision: str, *, setting: str = "precision") -> "ElmoBiLM":
        """Run inference in ``fp32`` (exact, the default), ``bf16`` or ``int8``; returns ``self``.

        Low precision applies whenever autograd would record nothing (``torch.no_grad()`` or
        no parameter requiring grad); it runs on copies of the weights prepared on first use
        and again after the parameters change. The parameters, ``to_arrays`` and ``save``
        stay float32. Raises :class:`ElmoOptionsError` naming ``setting`` for an unknown value or
        a device without the instructions (see :func:`spacy_elmo.bilm.inference_precision.check_supported`).
        """
        check_precision(precision, setting)
        check_supported(precision, self.boundary_char_ids.device, setting)
        if precision != self.inference_precision:
            self.inference_precision = precision
            self._kernels = None
            self.token_cache.clear()
        return self

    def resize_token_cache(self, size: int) -> None:
        """Keep at most ``size`` token vectors (0 turns the cache off); drops what it held."""
        self.token_cache = TokenCache(size)

    def weights_changed(self) -> None:
        """Drop everything derived from the weights (token cache, low-precision copies).

        Call after changing parameters in a way torch does not count as a new version, such as
        Thinc's optimizer writing into their memory through a NumPy view.
        """
        self._kernels = None
        self.token_encoder.forget_lookup_table()
        self.token_cache.clear()

    def _low_precision_kernels(self) -> Optional[BiLMKernels]:
        """Prepared low-precision weights, or None when the forward pass must be float32."""
        if self.inference_precision == "fp32":
            return None
        parameters = list(self.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return None
        device = self.boundary_char_ids.device
        signature = (self.inference_precision, device, tuple((p.data_ptr(), p._version) for p in parameters))
        if self._kernels is None or self._kernels.signature != signature:
            self._kernels = None
            check_supported(self.inference_precision, device)
            self._kernels = prepare_kernels(self, self.inference_precision, signature)
        return self._kernels

    # ------------------------------------------------------------------ forward

    def token_vectors(self, char_ids: torch.Tensor, kernels: Optional[BiLMKernels] = None) -> torch.Tensor:
        """Context-insensitive vectors ``(U, P)`` of distinct tokens ``(U, C)``, cached when exact.

        The cache is bypassed while gradients can reach the token encoder, and emptied
        whenever its weights or the precision have changed since the entries were computed.
        """
        encoder_kernels = None if kernels is None else kernels.token_encoder
        parameters = list(self.token_encoder.parameters())
        trainable = torch.is_grad_enabled() and any(p.requires_grad for p in parameters)
        if self.token_cache.size == 0 or trainable:
            return self.token_encoder(char_ids, encoder_kernels)
        version = tuple((p.data_ptr(), p._version, p.dtype) for p in parameters)
        self.token_cache.validate((self.inference_precision if kernels is not None else "fp32", version))
        keys = [row.tobytes() for row in char_ids.to(self.cache_key_dtype).cpu().numpy()]
        found, cached, missing = self.token_cache.lookup(keys)
        if cached is None:  # nothing found
            vectors = self.token_encoder(char_ids, encoder_kernels)
            self.token_cache.store(keys, vectors)
            return vectors
        vectors = cached.new_empty((len(keys), cached.shape[1]))
        vectors[torch.tensor(found, device=vectors.device)] = cached
        if missing:
            missing_index = torch.tensor(missing, device=vectors.device)
            computed = self.token_encoder(char_ids[missing_index], encoder_kernels)
            self.token_cache.store([keys[i] for i in missing], computed)
            vectors[missing_index] = computed
        return vectors

    def forward(
        self, char_ids: torch.Tensor, token_index: torch.Tensor, lengths: torch.Tensor, *, with_boundaries: bool = False
    ) -> torch.Tensor:
        """All layers for a batch given as distinct tokens plus an index.

        ``char_ids`` ``(U, C)``: ids of the distinct tokens (see :func:`spacy_elmo.chars.index_batch`);
        ``token_index`` ``(B, T)``: which distinct token fills each slot; ``lengths`` ``(B,)``.
        Returns ``(L+1, B, T, 2P)``, or with ``with_boundaries`` ``(L+1, B, T+2, 2P)`` where
        slot 0 is ``<S>`` and slot ``length + 1`` is ``</S>`` (what language-model training needs).
        """
        B, T = token_index.shape
        device = self.boundary_char_ids.device
        lengths = lengths.to(device)
        kernels = self._low_precision_kernels()
        vectors = self.token_vectors(torch.cat([self.boundary_char_ids, char_ids.to(device)]), kernels)
        # Slot layout with boundaries: <S> (row 0), tokens (rows 2..), </S> (row 1), padding.
        slots = torch.zeros((B, T + 2), dtype=torch.long, device=device)
        slots[:, 1 : T + 1] = token_index.to(device) + 2
        positions = torch.arange(T + 2, device=device)
        slots = torch.where(positions == (lengths + 1).unsqueeze(1), 1, slots)
        slots = torch.where(positions > (lengths + 1).unsqueeze(1), 0, slots)
        inputs = vectors[slots]  # (B, T+2, P)

        initial_state = self._initial_state(B) if self.stateful else None
        lstm_outputs, final_state = self.lstm(inputs, lengths + 2, initial_state, None if kernels is None else kernels.lstm)
        if self.stateful:
            self._store_state(final_state)

        if with_boundaries:
            mask = (positions < (lengths + 2).unsqueeze(1)).unsqueeze(-1).to(inputs.dtype)  # (B, T+2, 1)
            layers = [torch.cat([inputs, inputs], dim=-1), *lstm_outputs]
            return torch.stack(layers) * mask
        mask = (positions[:T] < lengths.unsqueeze(1)).unsqueeze(-1).to(inputs.dtype)  # (B, T, 1)
        token_layer = inputs[:, 1 : T + 1]
        layers = [torch.cat([token_layer, token_layer], dim=-1)]
        layers.extend(output[:, 1 : T + 1] for output in lstm_outputs)
        return torch.stack(layers) * mask

    def _initial_state(self, batch_size: int) -> Optional[LstmState]:
        if self._state is None:
            return None
        c, h = self._state
        slots = c.shape[2]
        if slots < batch_size:
            grow = batch_size - slots
            c = torch.cat([c, c.new_zeros(c.shape[:2] + (grow,) + c.shape[3:])], dim=2)
            h = torch.cat([h, h.new_zeros(h.shape[:2] + (grow,) + h.shape[3:])], dim=2)
        return c[:, :, :batch_size], h[:, :, :batch_size]

    def _store_state(self, final_state: LstmState) -> None:
        c, h = (tensor.detach() for tensor in final_state)
        batch_size = c.shape[2]
        if self._state is not None and self._state[0].shape[2] > batch_size:
            old_c, old_h = self._state
            c = torch.cat([c, old_c[:, :, batch_size:]], dim=2)
            h = torch.cat([h, old_h[:, :, batch_size:]], dim=2)
        self._state = (c, h)

    # ------------------------------------------------------------------ NumPy API

    def index_batch(self, sentences: Sequence[Sequence[str]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What :meth:`forward` takes for a batch: the ids of its distinct tokens ``(U, C)``, an
        index into them ``(B, T)`` and the lengths ``(B,)`` (see :func:`spacy_elmo.chars.index_batch`)."""
        char_ids, token_index, lengths, _ = index_batch(sentences, self.options.max_characters_per_token)
        return char_ids, token_index, lengths

    def embed_batch(self, sentences: Sequence[Sequence[str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """One batch of tokenised sentences → layers ``(L+1, B, T, 2P)`` and lengths ``(B,)``."""
        if not sentences:
            empty = self.boundary_char_ids.new_zeros((0,), dtype=torch.long)
            layers = self.token_encoder.projection.new_zeros((self.options.n_output_layers, 0, 0, self.options.output_dim))
            return layers, empty
        char_ids, token_index, lengths = self.index_batch(sentences)
        row_lengths = torch.from_numpy(lengths)
        layers = self(torch.from_numpy(char_ids), torch.from_numpy(token_index), row_lengths)
        return layers, row_lengths

    def embed_sentences(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> List[np.ndarray]:
        """Every layer of every sentence: a list of float32 ``(L+1, n_i, 2P)`` arrays.

        Stateless models batch sentences of similar length together (the result does not
        depend on batching). Stateful models keep the given order: each run of
        ``batch_size`` consecutive sentences is one batch, sentence ``i`` of it in row ``i``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        results: List[Optional[np.ndarray]] = [None] * len(sentences)
        with torch.no_grad():
            for rows in batches_of_rows([len(s) for s in sentences], batch_size, by_length=not self.stateful):
                layers, lengths = self.embed_batch([sentences[i] for i in rows])
                arrays = layers.cpu().numpy()
                for row, index in enumerate(rows):
                    results[index] = np.ascontiguousarray(arrays[:, row, : int(lengths[row])])
        return results  # type: ignore[return-value]
