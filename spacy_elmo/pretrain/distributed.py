"""Data parallelism with ``torch.distributed``: started by ``torchrun`` (``WORLD_SIZE`` > 1).

Gradients are averaged by one all-reduce per step over the parameters that currently
train (a plain all-reduce rather than ``DistributedDataParallel``, because fine-tuning
changes which parameters train from step to step). Replicas start identical (rank 0's
weights are broadcast) and stay identical because they apply identical updates.
"""

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, List, NoReturn, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..bilm.fingerprint import weights_fingerprint
from .errors import PretrainConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(gpu_id: Optional[int], local_rank: int) -> torch.device:
    """CUDA if available (``gpu_id`` picks one; under torchrun the local rank does), else the CPU.

    ``gpu_id`` -1 forces the CPU.
    """
    if gpu_id is not None and gpu_id < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if gpu_id is not None:
            raise PretrainConfigError(f"--gpu-id {gpu_id} was given but CUDA is not available; use --gpu-id -1 for the CPU.")
        return torch.device("cpu")
    index = local_rank if one_of_several_processes() else (gpu_id or 0)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def one_of_several_processes() -> bool:
    """Whether torchrun started this process as one of several (``WORLD_SIZE`` > 1): then it
    joins a process group, and a one-process torchrun run is a plain run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_worker(code: int) -> NoReturn:
    """End a torchrun worker with ``code`` once its work is done, skipping the interpreter's teardown.

    By then the process group is destroyed and every file this run writes is closed. What is
    left is Python's finalization, in which gloo's worker threads can abort a finished run
    ("terminate called without an active exception", SIGABRT: torchrun then reports the run as
    failed, and stops the other workers). See docs/pretraining.md.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def init_distributed(gpu_id: Optional[int]) -> DistContext:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(gpu_id, local_rank)
    if one_of_several_processes() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return DistContext(rank, world_size, local_rank, device)


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(context: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all processes (in place, returned)."""
    if context.enabled:
        moved = tensor.to(context.device)
        dist.all_reduce(moved)
        tensor.copy_(moved.to(tensor.device))
    return tensor


def average_gradients(context: DistContext, parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the processes (one flat all-reduce)."""
    if not context.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= context.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_module(context: DistContext, module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process."""
    if context.enabled:
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)


def gather_objects(context: DistContext, value: Any) -> List[Any]:
    """``value`` of every process, in rank order (a one-element list without distribution)."""
    if not context.enabled:
        return [value]
    gathered: List[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def parameter_checksum(module: nn.Module) -> str:
    """The :func:`weights_fingerprint` of ``module``: equal iff the replicas are bit-identical."""
    return weights_fingerprint(module)
