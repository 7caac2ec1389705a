"""One digest of a module's weights: what the layer store keys layers by, what ``embed``
records as ``model_sha256`` and what distributed pretraining compares across replicas."""

import hashlib
import json
from typing import Any

import torch
from torch import nn


def weights_fingerprint(module: nn.Module, head: Any = None) -> str:
    """SHA-256 of ``head`` (JSON: what else the result depends on, such as options or
    precision) and every parameter and buffer of ``module`` by name, shape, dtype and bytes:
    equal iff the heads are equal and the weights bit-identical."""
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode("utf-8"))
    tensors = dict(module.state_dict(keep_vars=False))
    tensors.update((f"buffer:{name}", value) for name, value in module.named_buffers())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16: hash the same bits as int16
            tensor = tensor.view(torch.int16)
        digest.update(memoryview(tensor.numpy()).cast("B"))
    return digest.hexdigest()
