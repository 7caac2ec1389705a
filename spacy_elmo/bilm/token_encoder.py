"""Context-insensitive token representations: char CNN → highway → projection (docs/design.md §2)."""

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..chars import PADDING_ID
from .inference_precision import TokenEncoderKernels
from .module_list import ModuleList
from .options import ElmoOptions
from .tensors import conv_bias, to_numpy
from .training_precision import matmul_dtype

LOOKUP_CHUNK_FLOATS = 2**19
"""Window sums per chunk of :meth:`TokenEncoder._pool_by_lookup`: 2 MiB, about a core's L2 cache."""

LOOKUP_TABLE_MAX_FLOATS = 2**24
"""Largest lookup table (64 MiB of float32) :meth:`TokenEncoder._pool_by_lookup` builds: the byte
vocabulary's is 15 MiB at the published shape; a lexicon of thousands of characters (CJK) would
need hundreds, so such encoders pool by one matmul instead."""


class Highway(nn.Module):
    """``x ← g·relu(x W_t + b_t) + (1 − g)·x`` with ``g = σ(x W_c + b_c)``.

    Carry and transform weights are kept side by side in one ``(F, 2F)`` matrix so that a
    single matmul computes both (row-vector convention, as in the weight file).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width, 2 * width))
        self.bias = nn.Parameter(torch.zeros(2 * width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(x, torch.addmm(self.bias, x, self.weight))

    @staticmethod
    def combine(x: torch.Tensor, pre_activations: torch.Tensor) -> torch.Tensor:
        """The layer's output from its input and ``x W + b`` (computed at any precision)."""
        gate_in, transform_in = pre_activations.chunk(2, dim=-1)
        gate = torch.sigmoid(gate_in)
        return torch.lerp(x, torch.relu(transform_in), gate)


class TokenEncoder(nn.Module):
    """Maps the character ids of distinct tokens ``(U, C)`` to their vectors ``(U, P)``.

    Only the prefix of the character axis that any token of the call needs is convolved:
    a window lying wholly in the padding has the same value for every token, and cutting
    the axis at ``longest real prefix + widest filter`` keeps one such window for every
    token that has one at full length, so the max-pool is exact.

    ``n_chars`` and ``padding_id`` describe the character vocabulary: by default ELMo's 262
    byte ids (:mod:`spacy_elmo.chars`); a lexicon-based model passes its own.
    """

    def __init__(self, options: ElmoOptions, n_chars: int = 262, padding_id: int = PADDING_ID) -> None:
        super().__init__()
        self.max_chars = options.max_characters_per_token
        self.activation = torch.relu if options.activation == "relu" else torch.tanh
        self.padding_id = padding_id
        d_c = options.char_embedding_dim
        self.char_embedding = nn.Parameter(torch.zeros(n_chars, d_c))
        self.convolutions = ModuleList(nn.Conv1d(d_c, count, width) for width, count in options.filters)
        self.widest_filter = max(width for width, _ in options.filters)
        self.highways = ModuleList(Highway(options.n_filters) for _ in range(options.n_highway))
        self.projection = nn.Parameter(torch.zeros(options.n_filters, options.projection_dim))
        self.projection_bias = nn.Parameter(torch.zeros(options.projection_dim))
        self._lookup: Optional[Tuple[tuple, torch.Tensor]] = None

    def forward(self, char_ids: torch.Tensor, kernels: Optional[TokenEncoderKernels] = None) -> torch.Tensor:
        """Token vectors; with ``kernels`` (no autograd) the matmuls run at their precision."""
        if char_ids.shape[0] == 0:
            return self.projection_bias.new_zeros((0, self.projection.shape[1]))
        x = self.char_features(char_ids, kernels)
        return torch.addmm(self.projection_bias, x, self.projection) if kernels is None else kernels.projection(x)

    def char_features(self, char_ids: torch.Tensor, kernels: Optional[TokenEncoderKernels] = None) -> torch.Tensor:
        """The char CNN and highways: ``(U, F)`` features of ``(U, C)`` character ids, before the projection."""
        n_chars = self.char_embedding.shape[0]
        low, high = (int(bound) for bound in torch.aminmax(char_ids))
        if low < 0 or high >= n_chars:
            raise ValueError(
                f"character ids must be in 0..{n_chars - 1} (spacy_elmo.chars.encode_tokens makes them), got {low}..{high}"
            )
        used = int((char_ids != self.padding_id).sum(dim=1).max())
        width = min(char_ids.shape[1], used + self.widest_filter)
        clipped = width < used + self.widest_filter
        if kernels is not None:
            x = self.activation(self._pool_without_grad(char_ids[:, :width], clipped))
            for highway, matmul in zip(self.highways, kernels.highways):
                x = highway.combine(x, matmul(x))
            return x
        dtype = matmul_dtype(char_ids.device)
        if dtype is not None:
            x = self.activation(self._pool_one_matmul(char_ids[:, :width], dtype, clipped))
        elif not torch.is_grad_enabled():
            x = self.activation(self._pool_without_grad(char_ids[:, :width], clipped))
        else:
            chars = F.embedding(char_ids[:, :width], self.char_embedding).transpose(1, 2)
            x = torch.cat([self.activation(conv(chars).amax(dim=2)) for conv in self.convolutions], dim=1)
        for highway in self.highways:
            x = highway(x)
        return x

    def lookup_table_floats(self) -> int:
        """Size of :meth:`lookup_table` in floats: widest filter × characters × filters."""
        return self.widest_filter * self.char_embedding.shape[0] * sum(conv.weight.shape[0] for conv in self.convolutions)

    def pools_by_lookup(self) -> bool:
        """Whether inference without gradients pools by table lookup: only while the table stays
        within :data:`LOOKUP_TABLE_MAX_FLOATS`."""
        return self.lookup_table_floats() <= LOOKUP_TABLE_MAX_FLOATS

    def _pool_without_grad(self, char_ids: torch.Tensor, clipped: bool) -> torch.Tensor:
        """Max-pooled convolutions by table lookup where the table stays small
        (:meth:`pools_by_lookup`), else by one float32 matmul."""
        if self.pools_by_lookup():
            return self._pool_by_lookup(char_ids, clipped)
        return self._pool_one_matmul(char_ids, self.char_embedding.dtype, clipped)

    def _pool_one_matmul(self, char_ids: torch.Tensor, dtype: torch.dtype, clipped: bool) -> torch.Tensor:
        """Max-pooled convolutions ``(U, F)`` (before the activation) as one ``dtype`` matmul over
        windows of the widest filter's width: what training under autocast uses.

        Every kernel is zero-padded to the widest width and the character axis is padded on the
        right, so each window position yields all filters at once. The positions a narrower
        filter does not have read only padding, the value of a wholly padded window that the
        cut already includes, so the max is unchanged; if the cut was limited by the axis
        length (``clipped``), such positions can reach real characters and are masked.
        """
        U, W = char_ids.shape
        widest = self.widest_filter
        table = self.char_embedding.to(dtype)  # cast the vocabulary's rows, not every window
        windows = F.embedding(F.pad(char_ids, (0, widest - 1), value=self.padding_id), table).unfold(
            1, widest, 1
        )  # (U, W, d, widest)
        out = torch.addmm(self._filter_biases(), windows.reshape(U * W, -1), self._padded_kernels().flatten(1).t()).view(U, W, -1)
        if clipped:
            out = out.masked_fill(self._beyond_last_window(W).to(out.device), float("-inf"))
        # max rather than amax: its backward scatters into the winners instead of comparing every element.
        return out.max(dim=1).values

    def _pool_by_lookup(self, char_ids: torch.Tensor, clipped: bool) -> torch.Tensor:
        """Max-pooled convolutions ``(U, F)`` (before the activation) without multiplications:
        what inference without gradients uses.

        A window's convolution is a sum over its offsets ``k`` of ``E[c_k] W_k``, and with only
        262 characters every ``E[c] W_k`` can be tabulated once (262 × widest rows of
        ``F``, :meth:`lookup_table`). Each window is then an ``embedding_bag`` sum of ``widest``
        table rows, 16 times fewer operations than the convolutions with 16-dimensional
        character embeddings. Kernels are zero-padded and positions handled as in
        :meth:`_pool_one_matmul`; the bias is added after the max, which a constant shift
        leaves in place. Windows are summed for a few
        tokens at a time, so that the sums stay in cache until they are pooled.
        """
        W = char_ids.shape[1]
        widest = self.widest_filter
        table = self.lookup_table()
        offsets = torch.arange(widest, device=char_ids.device) * self.char_embedding.shape[0]
        rows = F.pad(char_ids, (0, widest - 1), value=self.padding_id).unfold(1, widest, 1) + offsets  # (U, W, widest)
        invalid = self._beyond_last_window(W).to(char_ids.device) if clipped else None
        tokens_per_chunk = max(1, LOOKUP_CHUNK_FLOATS // (W * table.shape[1]))
        pooled = []
        for chunk in rows.split(tokens_per_chunk):
            sums = F.embedding_bag(chunk.reshape(-1, widest), table, mode="sum").view(chunk.shape[0], W, -1)
            if invalid is not None:
                sums.masked_fill_(invalid, float("-inf"))
            pooled.append(sums.amax(dim=1))
        return torch.cat(pooled).add_(self._filter_biases())

    def lookup_table(self) -> torch.Tensor:
        """``(widest · 262, F)``: row ``k · 262 + c`` holds ``E[c] W_k`` for every filter (zero where
        ``k`` is past a filter's width). Built on first use, again when the weights' versions
        change, and after :meth:`forget_lookup_table`."""
        parameters = [self.char_embedding, *(conv.weight for conv in self.convolutions)]
        signature = tuple((p.device, p.data_ptr(), p._version) for p in parameters)
        if self._lookup is None or self._lookup[0] != signature:
            with torch.no_grad():
                table = torch.einsum("cd,fdk->kcf", self.char_embedding, self._padded_kernels()).reshape(
                    self.widest_filter * self.char_embedding.shape[0], -1
                )
            self._lookup = (signature, table)
        return self._lookup[1]

    def forget_lookup_table(self) -> None:
        """Drop the lookup table (after the weights changed without torch counting a new version)."""
        self._lookup = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_lookup"] = None  # derived from the weights; rebuilt on use
        return state

    def _padded_kernels(self) -> torch.Tensor:
        """``(F, d, widest)``: every filter's kernel, zero-padded on the right to the widest width."""
        widest = self.widest_filter
        return torch.cat([F.pad(conv.weight, (0, widest - conv.weight.shape[2])) for conv in self.convolutions])

    def _filter_biases(self) -> torch.Tensor:
        """``(F,)``: the biases of every filter, in output order."""
        return torch.cat([conv_bias(conv) for conv in self.convolutions])

    def _beyond_last_window(self, W: int) -> torch.Tensor:
        """``(W, F)``: True where a filter's window would start past its last full window."""
        last = torch.cat([torch.full((conv.weight.shape[0],), W - conv.weight.shape[2]) for conv in self.convolutions])
        return torch.arange(W).unsqueeze(1) > last.unsqueeze(0)

    def load_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Copy weights from the published HDF5 layout (docs/design.md §7)."""
        with torch.no_grad():
            embed = torch.from_numpy(arrays["char_embed"])
            self.char_embedding.zero_()
            self.char_embedding[1:].copy_(embed)
            for i, conv in enumerate(self.convolutions):
                conv.weight.copy_(torch.from_numpy(arrays[f"CNN/W_cnn_{i}"][0]).permute(2, 1, 0))
                conv_bias(conv).copy_(torch.from_numpy(arrays[f"CNN/b_cnn_{i}"]))
            for k, highway in enumerate(self.highways):
                group = f"CNN_high_{k}"
                highway.weight.copy_(
                    torch.cat([torch.from_numpy(arrays[f"{group}/W_carry"]), torch.from_numpy(arrays[f"{group}/W_transform"])], 1)
                )
                highway.bias.copy_(
                    torch.cat([torch.from_numpy(arrays[f"{group}/b_carry"]), torch.from_numpy(arrays[f"{group}/b_transform"])])
                )
            self.projection.copy_(torch.from_numpy(arrays["CNN_proj/W_proj"]))
            self.projection_bias.copy_(torch.from_numpy(arrays["CNN_proj/b_proj"]))

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The weights in the published HDF5 layout; exact inverse of :meth:`load_arrays`."""
        arrays = {"char_embed": to_numpy(self.char_embedding[1:])}
        for i, conv in enumerate(self.convolutions):
            arrays[f"CNN/W_cnn_{i}"] = to_numpy(conv.weight.permute(2, 1, 0).unsqueeze(0))
            arrays[f"CNN/b_cnn_{i}"] = to_numpy(conv_bias(conv))
        for k, highway in enumerate(self.highways):
            carry, transform = highway.weight.chunk(2, dim=1)
            carry_bias, transform_bias = highway.bias.chunk(2)
            arrays[f"CNN_high_{k}/W_carry"] = to_numpy(carry)
            arrays[f"CNN_high_{k}/W_transform"] = to_numpy(transform)
            arrays[f"CNN_high_{k}/b_carry"] = to_numpy(carry_bias)
            arrays[f"CNN_high_{k}/b_transform"] = to_numpy(transform_bias)
        arrays["CNN_proj/W_proj"] = to_numpy(self.projection)
        arrays["CNN_proj/b_proj"] = to_numpy(self.projection_bias)
        return arrays
