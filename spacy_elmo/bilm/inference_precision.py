"""Low-precision inference: the biLM's large matmuls in bfloat16 or int8, everything else in float32.

``fp32`` (the default) runs the module's own parameters and is exact. ``bf16`` and ``int8``
apply to forward passes that autograd does not record, and run on copies of the weights
prepared once from the float32 parameters, which stay as they are (saving writes them
unchanged). Training-time bfloat16 autocast is a separate matter (:mod:`.training_precision`).

* ``bf16``: the highway, projection and LSTM matmuls take bfloat16 inputs and weights
  (oneDNN/AMX on a CPU, tensor cores on CUDA), accumulate in float32 inside the kernel and
  round their result to bfloat16; gate sums, the LSTM cell state, the clipping, the residual
  sums and every returned layer are float32.
* ``int8``: the highway, token projection and LSTM input, recurrent and projection matmuls
  use int8 weights (symmetric, one scale per output column) and int8 activations with one
  scale per row, so a token's result never depends on what else is in the batch (see
  :func:`_linear_int8`); they run through PyTorch's dynamic quantized linear op (oneDNN
  engine); everything elementwise is float32. CPU only.

In both, the char CNN is the float32 table lookup of fp32 inference (it has no matmul to
speed up: :meth:`TokenEncoder._pool_by_lookup`).
"""

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import torch

from ..errors import ElmoOptionsError

if TYPE_CHECKING:
    from .model import ElmoBiLM

INFERENCE_PRECISIONS = ("fp32", "bf16", "int8")
"""Accepted values of an inference ``precision``."""

_INT8_ENGINES = ("onednn", "x86", "fbgemm")
"""Quantized engines for int8, best first (oneDNN uses AVX512-VNNI / AMX-INT8 where present)."""


def check_precision(precision: Any, setting: str = "precision") -> str:
    """``precision`` if it is one of :data:`INFERENCE_PRECISIONS`; otherwise an error naming ``setting``."""
    if precision not in INFERENCE_PRECISIONS:
        raise ElmoOptionsError(
            f"{setting} must be one of {', '.join(repr(p) for p in INFERENCE_PRECISIONS)}, got {precision!r}: "
            f"use 'fp32' for exact results, 'bf16' or 'int8' for faster approximate inference."
        )
    return precision


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); without it,
    bfloat16 matmuls are emulated and slower than float32."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def int8_engine() -> Optional[str]:
    """The quantized CPU engine int8 inference uses, or None when this PyTorch has none."""
    supported = torch.backends.quantized.supported_engines
    return next((engine for engine in _INT8_ENGINES if engine in supported), None)


def check_supported(precision: str, device: torch.device, setting: str = "precision") -> None:
    """Raise :class:`ElmoOptionsError` when ``device`` cannot run ``precision`` natively."""
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ElmoOptionsError(
                f"{setting} = 'bf16': this GPU has no bfloat16 support; use 'fp32' "
                f"(or the component's mixed_precision = true for float16 autocast)."
            )
        if device.type == "cpu" and not cpu_has_bf16():
            raise ElmoOptionsError(
                f"{setting} = 'bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX) and "
                f"a PyTorch built with oneDNN; without them bfloat16 is slower than float32. Use 'int8' or 'fp32'."
            )
    elif precision == "int8":
        if device.type != "cpu":
            raise ElmoOptionsError(f"{setting} = 'int8' runs on the CPU only, but the biLM is on {device}; use 'bf16' on a GPU.")
        if int8_engine() is None:
            raise _no_int8_engine(setting)


def _no_int8_engine(setting: str) -> ElmoOptionsError:
    return ElmoOptionsError(
        f"{setting} = 'int8' needs one of PyTorch's quantized CPU engines ({', '.join(_INT8_ENGINES)}); "
        f"this build has {torch.backends.quantized.supported_engines}. Use 'bf16' or 'fp32'."
    )


class LowPrecisionMatmul:
    """``x @ weight + bias`` in bf16 or int8; ``weight`` is ``(K, N)`` or ``(D, K, N)`` (one
    matrix per direction, applied to ``x[d]``), in the row-vector convention of the module's
    parameters. bf16 weights are cast once; int8 weights are quantized and prepacked once."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], precision: str) -> None:
        weight = weight.detach()
        self.precision = precision
        self.batched = weight.dim() == 3
        if precision == "bf16":
            self.weight = weight.to(torch.bfloat16).contiguous()
            self.bias = None if bias is None else bias.detach().to(torch.bfloat16).unsqueeze(-2)
            return
        slices = weight.unbind(0) if self.batched else [weight]
        biases: Sequence[Optional[torch.Tensor]] = [None] * len(slices)
        if bias is not None:
            biases = bias.detach().float().unbind(0) if self.batched else [bias.detach().float()]
        self.int8 = [Int8Weight.pack(w, b) for w, b in zip(slices, biases)]

    def __call__(self, x: torch.Tensor, float32: bool = True) -> torch.Tensor:
        """``x @ weight + bias`` for ``x`` ``(M, K)`` or ``(D, M, K)``: float32, or with
        ``float32=False`` whatever the kernel returns (bfloat16 in bf16 mode: half the memory
        traffic for large results that are read once)."""
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
            if self.bias is None:
                product = torch.matmul(x, self.weight)
            elif self.batched:
                product = torch.baddbmm(self.bias, x, self.weight)
            else:
                product = torch.addmm(self.bias, x, self.weight)
            return product.float() if float32 else product
        if not self.batched:
            return _linear_int8(x, self.int8[0])
        return torch.stack([_linear_int8(x_d, weight) for x_d, weight in zip(x, self.int8)])

    def add_to(self, addend: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A new float32 tensor ``addend + x @ weight`` (no bias); ``addend`` may be bfloat16."""
        if self.precision == "bf16":
            return addend.float().add_(torch.matmul(x.to(torch.bfloat16), self.weight))
        return self(x).add_(addend)


@dataclass
class Int8Weight:
    """A ``(K, N)`` weight prepacked for PyTorch's dynamic int8 linear op (symmetric, one scale
    per output column, no bias), with ``offsets``: row 0 the float32 column sums of the weight,
    row 1 the bias (or zeros), which :func:`_linear_int8` adds after undoing the row mapping."""

    packed: Any
    offsets: torch.Tensor

    @classmethod
    def pack(cls, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> "Int8Weight":
        weight = weight.float()
        offsets = torch.stack([weight.sum(dim=0), torch.zeros(weight.shape[1]) if bias is None else bias.float()])
        return cls(_prepack_int8(weight), offsets.contiguous())


def _prepack_int8(weight: torch.Tensor) -> Any:
    """The dynamic linear op's prepacked form of ``weight`` ``(K, N)``."""
    columns = weight.t().float().contiguous()  # (N, K): the linear op's (out, in) layout
    amax = columns.abs().amax(dim=1)
    scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).double()
    zero_points = torch.zeros(columns.shape[0], dtype=torch.long)
    engine = int8_engine()
    if engine is None:
        raise _no_int8_engine("precision")
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            # A quantized tensor is only the carrier of the weights into the prepack op.
            warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*deprecated")
            quantized = torch.quantize_per_channel(columns, scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(quantized, None)
    finally:
        torch.backends.quantized.engine = previous


def _linear_int8(x: torch.Tensor, weight: Int8Weight) -> torch.Tensor:
    """``x @ weight + bias`` with ``x`` ``(M, K)`` quantized row by row; float32 result.

    PyTorch's dynamic op quantizes its input with one scale and zero point for the whole
    matrix, taken from the matrix's range, so a row's result would depend on the other rows
    (a long sentence beside a short one changes the short one's vectors). Here each row is
    mapped onto [-1, 1] by its own range, ``x = centre + half_range * x'``, and two sentinel
    rows holding exactly 1 and -1 are appended: the matrix's range is then [-1, 1] whatever
    the batch, so the op quantizes every row the same way, its int32 accumulation is exact,
    and ``x @ W = half_range * (x' @ W) + centre * column_sums(W)`` undoes the mapping. A
    row's result is a function of that row alone, bit for bit, and each row uses all the
    levels of its own range (see :func:`_reduce_range`).
    """
    x = x.float()
    rows = x.shape[0]
    low, high = torch.aminmax(x, dim=1, keepdim=True)
    half_range = (high - low).mul_(0.5)
    half_range = torch.where(half_range > 0, half_range, torch.ones_like(half_range))
    inverse = half_range.reciprocal()
    centre = (high + low).mul_(0.5)
    scaled = torch.empty((rows + 2, x.shape[1]), dtype=torch.float32)
    torch.addcmul(centre.mul(inverse).neg_(), x, inverse, out=scaled[:rows]).clamp_(-1.0, 1.0)
    scaled[rows:].zero_()
    scaled[rows, 0], scaled[rows + 1, 0] = 1.0, -1.0
    product = torch.ops.quantized.linear_dynamic(scaled, weight.packed, _reduce_range())[:rows]
    sums, bias = weight.offsets  # elementwise from here on: a GEMM could round differently per batch shape
    return torch.addcmul(torch.addcmul(bias, centre, sums), product, half_range)


@functools.cache
def _reduce_range() -> bool:
    """Quantize activations to 7 bits on CPUs without VNNI/AMX int8 instructions.

    Without them the int8 kernels add pairs of 8-bit products in 16 bits, which saturates
    when a row uses its whole 8-bit range (as every row does here); 7 bits cannot saturate.
    Measured on an AVX2-only CPU with the synthetic `small` biLM: worst-token cosine to fp32
    0.952 with 8 bits, 0.998 with 7.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return not any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@dataclass
class TokenEncoderKernels:
    """Prepared weights of the token encoder's highways and projection (its char CNN is a float32 table lookup)."""

    highways: List[LowPrecisionMatmul]
    projection: LowPrecisionMatmul


@dataclass
class LstmLayerKernels:
    """Prepared weights of one LSTM layer (both directions), gate blocks in step order."""

    input: LowPrecisionMatmul
    recurrent: LowPrecisionMatmul
    projection: LowPrecisionMatmul


@dataclass
class BiLMKernels:
    """Everything a low-precision forward pass needs, and the parameter versions it was made from."""

    precision: str
    signature: tuple
    token_encoder: TokenEncoderKernels
    lstm: List[LstmLayerKernels]


def prepare_kernels(bilm: "ElmoBiLM", precision: str, signature: tuple) -> BiLMKernels:
    """Low-precision copies of the weights of ``bilm`` (an :class:`ElmoBiLM`), made without autograd."""
    with torch.no_grad():
        encoder = bilm.token_encoder
        token_encoder = TokenEncoderKernels(
            highways=[LowPrecisionMatmul(h.weight, h.bias, precision) for h in encoder.highways],
            projection=LowPrecisionMatmul(encoder.projection, encoder.projection_bias, precision),
        )
        lstm = []
        for layer in bilm.lstm.layers:
            input_weight, recurrent_weight, bias = layer.step_weights()
            lstm.append(
                LstmLayerKernels(
                    input=LowPrecisionMatmul(input_weight, bias, precision),
                    recurrent=LowPrecisionMatmul(recurrent_weight, None, precision),
                    projection=LowPrecisionMatmul(layer.projection, None, precision),
                )
            )
    return BiLMKernels(precision, signature, token_encoder, lstm)
