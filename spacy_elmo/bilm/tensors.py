"""Small tensor conversions shared by the biLM modules."""

import numpy as np
import torch


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A detached, C-contiguous float32 NumPy copy on the CPU (never a view of the parameter)."""
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)
