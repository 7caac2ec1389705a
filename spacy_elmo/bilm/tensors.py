"""Small tensor conversions shared by the biLM modules."""

import numpy as np
import torch


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached, C-contiguous float32 NumPy copy on the CPU."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)
