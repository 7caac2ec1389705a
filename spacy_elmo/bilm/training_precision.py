"""Training precision of the biLM: ``fp32``, or ``bf16`` matmuls and convolutions under ``torch.autocast``.

With ``bf16`` the parameters stay float32 (the optimiser updates float32 master weights) and
autograd records the forward pass as usual; only the operands of matmuls and convolutions are
rounded to bfloat16, which CPUs with AVX-512 BF16 or AMX (and CUDA GPUs) multiply several times
faster, accumulating in float32. Elementwise arithmetic follows the dtypes of its operands, and
the LSTM keeps its cell state in float32, so the recurrence does not accumulate bfloat16
rounding from step to step. Inference without autograd has its own prepared low-precision
weights (:mod:`.inference_precision`).
"""

import contextlib
from typing import ContextManager, Optional

import torch

from ..errors import ElmoOptionsError

TRAINING_PRECISIONS = ("fp32", "bf16")
"""What ``[training] precision`` of ``pretrain`` may be."""


def training_autocast(precision: str, device: torch.device) -> ContextManager:
    """The context that runs a training forward pass in ``precision`` on ``device``."""
    if precision not in TRAINING_PRECISIONS:
        raise ElmoOptionsError(
            f"[training] precision must be one of {', '.join(repr(p) for p in TRAINING_PRECISIONS)}, got {precision!r}: "
            f"training runs in float32 or under bfloat16 autocast ('int8' is a precision of inference only, the "
            f"elmo component's model.precision)."
        )
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def matmul_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The dtype autocast gives matmuls on ``device`` right now, or None when autocast is off."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None
