"""Small tensor conversions shared by the biLM modules."""

import numpy as np
import torch
from torch import nn


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached, C-contiguous float32 NumPy copy on the CPU (never a view of the parameter)."""
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)


def conv_bias(conv: nn.Conv1d) -> torch.Tensor:
    """The bias of a convolution built with one (every char CNN filter bank is)."""
    if conv.bias is None:
        raise ValueError(f"{conv} has no bias; the char CNN's convolutions are built with one.")
    return conv.bias
