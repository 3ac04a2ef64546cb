"""Data-parallel search on torch.distributed: process-group set-up, rank helpers, agreement checks.

One node with N GPUs (or N CPU processes, gloo), and M nodes of N GPUs each (the same line on every node; HOST is
any one of them)::

    torchrun --standalone --nproc_per_node=N -m strongticket search --data cifar10 --data-root ~/data --model resnet20
    torchrun --nnodes=M --nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=JOB \\
             -m strongticket search ...

``--batch-size`` stays the *global* batch B. Rank r of R takes examples r, r + R, r + 2R, … of each global batch
(the share a DistributedSampler gives it when B is a multiple of R), so the ranks together see the examples a
single process sees, step by step. Each rank minimises ℓ_r = (R / B) Σ_{i ∈ shard r} CE_i and DDP averages the
gradients: (1 / R) Σ_r ∇ℓ_r = ∇ (1 / B) Σ_i CE_i, the gradient of the global batch's mean loss, so R processes
match one process up to the order of summation (one process under torchrun is the plain run, bit for bit).
The scores are then identical on every rank, so each rank computes the same top-k mask locally — per layer,
global, or through the Triton radix select — with no extra communication; :func:`check_agreement` verifies it
once per epoch. Frozen weights are regenerated from the seed on every rank and never sent: DDP is told to ignore
them. Models with batch norm use SyncBatchNorm (statistics of the global batch; CUDA only).

A rank that dies or hangs makes the others fail once the process group's timeout passes
(``STRONGTICKET_DIST_TIMEOUT`` seconds, default 300) instead of waiting forever; torchrun then stops the job.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "launched_by_torchrun",
    "timeout_seconds",
    "init_from_env",
    "shutdown",
    "rank",
    "world_size",
    "is_main",
    "local_device",
    "wrap_model",
    "all_reduce_sum",
    "on_main",
    "check_agreement",
    "tensors_sha256",
]

DEFAULT_TIMEOUT_S = 300.0
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True when the environment holds what torchrun sets for each worker (RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def timeout_seconds() -> float:
    """The process-group timeout: ``STRONGTICKET_DIST_TIMEOUT`` seconds, default 300."""
    text = os.environ.get("STRONGTICKET_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 7 * 86400:
        raise ValueError(f"STRONGTICKET_DIST_TIMEOUT must be seconds in (0, 604800], got {text!r}")
    return value


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (nccl for CUDA, gloo for CPU) and return this rank's device
    (``cuda:LOCAL_RANK``); outside torchrun, or when a group exists already, only the device is resolved."""
    if dist.is_initialized() or not launched_by_torchrun():
        return local_device(device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if not 0 <= local_rank < torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK must be in [0, {torch.cuda.device_count() - 1}] (one visible GPU per "
                             f"process on this node), got {local_rank}")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return local_device(device)


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank leaves while another still talks to it)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, which alone writes files and prints; always true outside torchrun."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``cuda`` → this rank's GPU (``cuda:LOCAL_RANK``) when a process group is up; anything else unchanged."""
    if dist.is_initialized() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if dist.is_initialized() and dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError(f"device must be cuda in an nccl process group, got {device.type}")
    return device


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel when a process group is up, else ``model`` itself.

    Frozen tensors (``requires_grad=False``) are excluded from DDP's start-up broadcast: every rank regenerated
    them from the seed. Batch norm becomes SyncBatchNorm when there are several ranks (CUDA only), so its
    statistics are those of the global batch and identical on every rank: no buffers are broadcast.
    """
    if not dist.is_initialized():
        return model
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and world_size() > 1:
        if device.type != "cuda":
            raise ValueError(f"device must be cuda for a model with batch norm on {world_size()} processes "
                             f"(SyncBatchNorm), got {device.type}")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    ddp._set_params_and_buffers_to_ignore_for_model(model, frozen)
    # Buffers (batch-norm statistics) are equal on every rank; newer torch renames broadcast_buffers.
    renamed = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return ddp(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def _comm_device() -> torch.device:
    """Where collectives take their tensors: this rank's GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Iterable[float]) -> list[float]:
    """Sums over the ranks (float64) of ``values``; the values themselves with one process."""
    values = [float(v) for v in values]
    if world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result handed to every rank; an error there is raised on every rank
    (so no rank waits for a rank 0 that gave up)."""
    if world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            payload = [("ok", fn())]
        except Exception as e:  # noqa: BLE001 — sent to the other ranks, then raised again here
            error = e
            payload = [("error", type(e).__name__, str(e))]
    dist.broadcast_object_list(payload, src=0, device=_comm_device())
    if error is not None:
        raise error
    if payload[0][0] == "error":
        kind = ValueError if payload[0][1] == "ValueError" else RuntimeError
        raise kind(f"{payload[0][2]} (raised on rank 0)")
    return payload[0][1]


def tensors_sha256(tensors: Iterable[torch.Tensor | None]) -> str:
    """SHA-256 (hex) of the shapes, dtypes and bytes of ``tensors`` in order (None counts as a marker)."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        data = t.detach().cpu().contiguous()
        h.update(f"{data.dtype}{tuple(data.shape)};".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_agreement(digests: dict[str, str], where: str) -> None:
    """Raise on every rank when any rank's hex digest differs from the others' (min == max over the ranks)."""
    if world_size() == 1:
        return
    names = sorted(digests)
    words = np.concatenate([np.frombuffer(bytes.fromhex(digests[k]), dtype=np.int64) for k in names])
    low = torch.from_numpy(words.copy()).to(_comm_device())
    high = low.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    per = len(words) // len(names)  # int64 words per digest
    differ = [k for i, k in enumerate(names) if not torch.equal(low[i * per:(i + 1) * per],
                                                                 high[i * per:(i + 1) * per])]
    if differ:
        raise RuntimeError(f"ranks hold different {' and '.join(differ)} {where}; every rank must derive the same "
                           f"mask from identical scores (this is a bug in strongticket)")
