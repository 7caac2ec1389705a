"""The forward and backward LSTM stacks of the biLM (docs/design.md §3).

Both directions run in the same loop: the backward stack reads every row reversed within
its length, so that in its own time axis real steps come first, exactly as in the forward
stack. Each step is then one batched matmul for both directions. Rows are sorted by length
so the rows still running at step ``t`` are a prefix of the batch. With gradients, the input
half of every gate pre-activation is computed for all steps at once before the loop (autograd
wants few large tensors); without, layers with narrow inputs multiply each step's own inputs,
which keeps its pre-activations in cache (``PER_STEP_INPUT_MAX_DIM``).

On the CPU, ``tanh`` costs about five times as much as ``sigmoid`` per element, and a step
spends more time in its two ``tanh`` calls than in its matmul. The loop therefore uses
``tanh(x) = 2 * sigmoid(2x) - 1`` (absolute error below 2e-7), so one ``sigmoid`` covers all
four gates: with autograd on a derived copy of the weights whose candidate columns are scaled
by 2 (exact in floating point) and moved last; without, on the parameters as they are, by
doubling each step's candidate pre-activations in place (no copy of the weights per call).
The parameters themselves stay in the file's layout.
"""

import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inference_precision import LowPrecisionMatmul, LstmLayerKernels
from .module_list import ModuleList
from .options import ElmoOptions, lstm_cell_prefix
from .tensors import to_numpy
from .training_precision import matmul_dtype

FORGET_BIAS = 1.0
PER_STEP_INPUT_MAX_DIM = 256
"""Without autograd, layers with inputs up to this wide multiply them per step (see
:meth:`ElmoLstm._step_from_inputs`). Wider inputs do enough multiply-adds per pre-activation to
outweigh the memory traffic of precomputing all steps: measured on one core, per step is 2x
faster at width 128 (small), 8 % at 256 (medium) and 5-10 % slower at 512 (original)."""

LstmState = Tuple[torch.Tensor, torch.Tensor]
"""Cell state ``(n_layers, 2, B, H)`` and projected state ``(n_layers, 2, B, P)``."""


class BiLstmLayer(nn.Module):
    """One layer of both directions: a TensorFlow ``LSTMCell`` with projection and clipping.

    Weights are kept as in the file (row-vector convention, gate blocks ``i, j, f, o``), one
    slice per direction, so that saving them back is exact. ``forget_bias`` is added to the
    forget gate at run time (TensorFlow's 1.0; 0.0 for models whose stored bias includes it).
    """

    def __init__(self, input_dim: int, hidden_dim: int, projection_dim: int, forget_bias: float = FORGET_BIAS) -> None:
        super().__init__()
        self.forget_bias = forget_bias
        self.input_weight = nn.Parameter(torch.zeros(2, input_dim, 4 * hidden_dim))
        self.recurrent_weight = nn.Parameter(torch.zeros(2, projection_dim, 4 * hidden_dim))
        self.bias = nn.Parameter(torch.zeros(2, 4 * hidden_dim))
        self.projection = nn.Parameter(torch.zeros(2, hidden_dim, projection_dim))

    @property
    def hidden_dim(self) -> int:
        return self.projection.shape[1]

    def gate_bias(self) -> torch.Tensor:
        """The stored bias plus the run-time forget bias (TensorFlow's, never stored in the file)."""
        H = self.hidden_dim
        offset = torch.zeros_like(self.bias[0])
        offset[2 * H : 3 * H] = self.forget_bias
        return self.bias + offset

    def step_weights(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input kernel, recurrent kernel and bias with gate blocks ``i, f, o, 2j``.

        Differentiable copies of the parameters in the order the loop wants: sigmoid gates
        first, then the candidate pre-activation doubled so ``sigmoid`` yields its ``tanh``.
        """
        H = self.hidden_dim

        def reorder(weight: torch.Tensor) -> torch.Tensor:
            i, j, f, o = weight.unflatten(-1, (4, H)).unbind(-2)
            return torch.cat([i, f, o, 2.0 * j], dim=-1)

        return reorder(self.input_weight), reorder(self.recurrent_weight), reorder(self.gate_bias())


class ElmoLstm(nn.Module):
    """``n_layers`` of :class:`BiLstmLayer` with clipping and optional residual connections."""

    def __init__(self, options: ElmoOptions, dropout: float = 0.0, forget_bias: float = FORGET_BIAS) -> None:
        super().__init__()
        P, H = options.projection_dim, options.lstm_dim
        self.layers = ModuleList(BiLstmLayer(P, H, P, forget_bias) for _ in range(options.n_layers))
        self.cell_clip = options.cell_clip
        self.proj_clip = options.proj_clip
        self.use_skip_connections = options.use_skip_connections
        self.dropout = dropout
        """Dropout on every layer's input in training mode (bilm-tf's recipe: 0.1); the
        residual connection adds the input before dropout."""

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        initial_state: Optional[LstmState] = None,
        kernels: Optional[Sequence[LstmLayerKernels]] = None,
    ) -> Tuple[List[torch.Tensor], LstmState]:
        """Run both stacks (with ``kernels``, one per layer, their matmuls run in low precision).

        ``inputs`` ``(B, S, P)`` are the token vectors with boundaries, ``lengths`` ``(B,)``
        the number of real slots of each row (at least 1). Returns, per layer, the outputs
        ``(B, S, 2P)`` (forward half first; zeros at padded slots) and the final state of
        every row (forward: after its last slot; backward: after its first).
        """
        B, S, P = inputs.shape
        lengths = lengths.to(inputs.device)
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        # Time-major and packed: step t owns rows offset[t] : offset[t] + active[t] of the
        # packed sequence, the first ``active[t]`` rows of the length-sorted batch. Padding
        # never enters a matmul.
        steps = torch.arange(S, device=inputs.device)
        real = sorted_lengths.unsqueeze(0) > steps.unsqueeze(1)  # (S, B)
        active = real.sum(dim=1).tolist()
        slot = order.unsqueeze(0) * S  # where (t, b) of the sorted batch lives in (B * S)
        forward_rows = (slot + steps.unsqueeze(1))[real]
        backward_rows = (slot + _reverse_index(sorted_lengths, S))[real]
        flat = inputs.reshape(B * S, P)
        x = torch.stack([flat.index_select(0, forward_rows), flat.index_select(0, backward_rows)])  # (2, N, P)
        if initial_state is not None:
            initial_state = (initial_state[0][:, :, order], initial_state[1][:, :, order])

        outputs: List[torch.Tensor] = []
        final_c: List[torch.Tensor] = []
        final_h: List[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            state = None if initial_state is None else (initial_state[0][index], initial_state[1][index])
            layer_input = F.dropout(x, self.dropout, self.training) if self.dropout else x
            layer_kernels = None if kernels is None else kernels[index]
            h_seq, (c_last, h_last) = self._run_layer(layer, layer_input, active, state, layer_kernels)
            if self.use_skip_connections and index > 0:
                h_seq = h_seq + x
            final_c.append(c_last)
            final_h.append(h_last)
            outputs.append(h_seq)
            x = h_seq

        results = []
        for h_seq in outputs:
            forward_part = flat.new_zeros(B * S, P).index_copy(0, forward_rows, h_seq[0])
            backward_part = flat.new_zeros(B * S, P).index_copy(0, backward_rows, h_seq[1])
            results.append(torch.cat([forward_part, backward_part], dim=-1).view(B, S, 2 * P))
        unsort = torch.argsort(order)
        final = (torch.stack(final_c)[:, :, unsort], torch.stack(final_h)[:, :, unsort])
        return results, final

    def _run_layer(
        self,
        layer: BiLstmLayer,
        x: torch.Tensor,
        active: List[int],
        state: Optional[LstmState],
        kernels: Optional[LstmLayerKernels] = None,
    ) -> Tuple[torch.Tensor, LstmState]:
        """One layer over packed rows ``x`` ``(2, N, P_in)``; returns ``(2, N, P)`` and the final state."""
        B = active[0]
        H, P = layer.hidden_dim, layer.projection.shape[2]
        step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LstmState]  # (step_in, c, h) -> (c, h)
        step_in: torch.Tensor  # per packed row: the input half of the pre-activations, or the inputs
        if kernels is None and not torch.is_grad_enabled() and matmul_dtype(x.device) is None:
            # Inference in float32: the parameters as they are (gate blocks in file order), so
            # no reordered copy of the weights is made per call; the bias is added per step,
            # into data already in cache, rather than copied into all steps' pre-activations.
            bias = layer.gate_bias().unsqueeze(1)
            step_weights = {"recurrent_weight": layer.recurrent_weight, "projection": layer.projection}
            if x.shape[2] <= PER_STEP_INPUT_MAX_DIM:
                step_in = x  # each step multiplies its own inputs
                step = functools.partial(self._step_from_inputs, input_weight=layer.input_weight, bias=bias, **step_weights)
            else:
                step_in = torch.bmm(x, layer.input_weight)  # (2, N, 4H)
                step = functools.partial(self._step_from_input_half, bias=bias, **step_weights)
        elif kernels is None:
            input_weight, recurrent_weight, bias = layer.step_weights()
            projection: torch.Tensor = layer.projection
            dtype = matmul_dtype(x.device)
            if dtype is not None:
                # Training under autocast: cast once per layer, not at every step (autocast
                # caches only casts of parameters, and these are derived from them).
                input_weight, recurrent_weight, projection = (w.to(dtype) for w in (input_weight, recurrent_weight, projection))
            step_in = torch.baddbmm(bias.unsqueeze(1), x, input_weight)  # (2, N, 4H)
            step = functools.partial(self._step, recurrent_weight=recurrent_weight, projection=projection)
        else:
            step_in = kernels.input(x, float32=False)  # bfloat16 in bf16 mode, added in float32 per step
            step = functools.partial(self._step_low_precision, recurrent=kernels.recurrent, projection=kernels.projection)
        if state is None:
            c = x.new_zeros((2, B, H), dtype=layer.projection.dtype)  # float32 even when x is bfloat16
            h = x.new_zeros((2, B, P))
        else:
            c, h = state
        if kernels is not None or not torch.is_grad_enabled():
            c = c.clone()  # the in-place steps update the cell state they are given
        # Steps are collected and concatenated once, and their inputs are cut by one split:
        # writing each step into a preallocated tensor, or slicing each step's rows out of
        # ``step_in``, would make autograd fill and add a tensor of the whole layer's size
        # at every step of the backward pass (one split's backward is a single concatenation).
        sizes = [n for n in active if n > 0]
        step_inputs = step_in.split(sizes, dim=1)
        outputs: List[torch.Tensor] = []
        done_c: List[torch.Tensor] = []
        done_h: List[torch.Tensor] = []
        n = B
        for t, step_input in enumerate(step_inputs):
            if active[t] < n:
                done_c.append(c[:, active[t] : n])
                done_h.append(h[:, active[t] : n])
                n = active[t]
                c, h = c[:, :n], h[:, :n]
            c, h = step(step_input, c, h)
            outputs.append(h)
        done_c.append(c)
        done_h.append(h)
        # Rows finished in order of decreasing index; put them back in sorted order.
        return torch.cat(outputs, dim=1), (torch.cat(done_c[::-1], dim=1), torch.cat(done_h[::-1], dim=1))

    def _step(
        self,
        gates_in: torch.Tensor,
        c: torch.Tensor,
        h: torch.Tensor,
        recurrent_weight: torch.Tensor,
        projection: torch.Tensor,
    ) -> LstmState:
        """One step from the input half of the pre-activations ``(2, n, 4H)``, gate blocks in
        the order of :meth:`BiLstmLayer.step_weights`."""
        gates = torch.baddbmm(gates_in, h, recurrent_weight)
        i, f, o, j2 = torch.sigmoid(gates).chunk(4, dim=2)
        c = torch.addcmul(f * c, i, 2.0 * j2 - 1.0)  # the in-place step's elementwise arithmetic
        if self.cell_clip is not None:
            c = c.clamp(-self.cell_clip, self.cell_clip)
        h = torch.bmm(o * (2.0 * torch.sigmoid(2.0 * c) - 1.0), projection)
        if self.proj_clip is not None:
            h = h.clamp(-self.proj_clip, self.proj_clip)
        return c, h

    def _step_in_place(
        self,
        gates: torch.Tensor,
        c: torch.Tensor,
        h: torch.Tensor,
        recurrent_weight: torch.Tensor,
        projection: torch.Tensor,
    ) -> LstmState:
        """:meth:`_step` without autograd, on the file's gate order ``i, j, f, o``, reusing
        buffers: ``gates`` (the input half and bias) receives the recurrent half and becomes the
        activations, and ``c`` is updated in place. Doubling ``j`` here gives ``tanh`` from the
        same ``sigmoid`` call, with the arithmetic of the reordered weights (scaling by 2 is exact)."""
        gates.baddbmm_(h, recurrent_weight)
        H = c.shape[2]
        gates[:, :, H : 2 * H].mul_(2.0)
        i, j, f, o = gates.sigmoid_().chunk(4, dim=2)
        return self._update_in_place(i, f, o, j, c, functools.partial(torch.bmm, mat2=projection))

    def _step_from_inputs(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        h: torch.Tensor,
        input_weight: torch.Tensor,
        bias: torch.Tensor,
        recurrent_weight: torch.Tensor,
        projection: torch.Tensor,
    ) -> LstmState:
        """:meth:`_step_in_place` from the step's inputs ``x`` ``(2, n, P_in)`` (see ``PER_STEP_INPUT_MAX_DIM``)."""
        return self._step_in_place(torch.baddbmm(bias, x, input_weight), c, h, recurrent_weight, projection)

    def _step_from_input_half(
        self,
        input_half: torch.Tensor,
        c: torch.Tensor,
        h: torch.Tensor,
        bias: torch.Tensor,
        recurrent_weight: torch.Tensor,
        projection: torch.Tensor,
    ) -> LstmState:
        """:meth:`_step_in_place` from the step's slice of the precomputed ``x W_in`` (overwritten)."""
        return self._step_in_place(input_half.add_(bias), c, h, recurrent_weight, projection)

    def _step_low_precision(
        self,
        gates_in: torch.Tensor,
        c: torch.Tensor,
        h: torch.Tensor,
        recurrent: LowPrecisionMatmul,
        projection: LowPrecisionMatmul,
    ) -> LstmState:
        """:meth:`_step_in_place` with the two matmuls in low precision; gates, cell state and
        output stay float32."""
        i, f, o, j = recurrent.add_to(gates_in, h).sigmoid_().chunk(4, dim=2)
        return self._update_in_place(i, f, o, j, c, projection)

    def _update_in_place(
        self,
        i: torch.Tensor,
        f: torch.Tensor,
        o: torch.Tensor,
        j: torch.Tensor,
        c: torch.Tensor,
        project: Callable[[torch.Tensor], torch.Tensor],
    ) -> LstmState:
        """The new cell and projected state from the activated gates (``j`` = σ of the doubled
        candidate pre-activation), updating ``c`` in place and reusing ``j``'s memory."""
        j.mul_(2.0).sub_(1.0)
        c.mul_(f).addcmul_(i, j)
        if self.cell_clip is not None:
            c.clamp_(-self.cell_clip, self.cell_clip)
        squashed = torch.mul(c, 2.0, out=j).sigmoid_().mul_(2.0).sub_(1.0).mul_(o)
        h = project(squashed)
        if self.proj_clip is not None:
            h.clamp_(-self.proj_clip, self.proj_clip)
        return c, h

    def load_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Copy weights from the published HDF5 layout (docs/design.md §7)."""
        with torch.no_grad():
            for index, layer in enumerate(self.layers):
                P = layer.recurrent_weight.shape[1]
                for direction in range(2):
                    prefix = lstm_cell_prefix(direction, index)
                    kernel = torch.from_numpy(arrays[f"{prefix}/W_0"])
                    n_in = kernel.shape[0] - P
                    layer.input_weight[direction].copy_(kernel[:n_in])
                    layer.recurrent_weight[direction].copy_(kernel[n_in:])
                    layer.bias[direction].copy_(torch.from_numpy(arrays[f"{prefix}/B"]))
                    layer.projection[direction].copy_(torch.from_numpy(arrays[f"{prefix}/W_P_0"]))

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The weights in the published HDF5 layout; exact inverse of :meth:`load_arrays`."""
        arrays = {}
        for index, layer in enumerate(self.layers):
            for direction in range(2):
                prefix = lstm_cell_prefix(direction, index)
                kernel = torch.cat([layer.input_weight[direction], layer.recurrent_weight[direction]])
                arrays[f"{prefix}/W_0"] = to_numpy(kernel)
                arrays[f"{prefix}/B"] = to_numpy(layer.bias[direction])
                arrays[f"{prefix}/W_P_0"] = to_numpy(layer.projection[direction])
        return arrays


def _reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(S, B)`` index that reverses each column within its length; an involution."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)
    lengths = lengths.unsqueeze(0)
    return torch.where(t < lengths, lengths - 1 - t, t)
