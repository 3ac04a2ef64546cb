"""What every op module shares: the kernel import, the dispatch test, the dot precision, bit packing.

``_kernels`` is the package's only import of ``strongticket.kernels``; ``_use_triton`` decides, per call, whether
an op body runs the Triton kernels (see :mod:`strongticket.ops`).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from ..backend import backend_name

_FLOATS = (torch.float32, torch.bfloat16)
_PRECISION_VAR = "STRONGTICKET_INPUT_PRECISION"
_GEMM_VAR = "STRONGTICKET_GEMM"
GEMM_PATHS = ("auto", "fused", "materialize")
MATERIALIZE_FROM = 2**22  # weights per layer from which auto materializes W ⊙ M on CUDA (see _gemm_path)


def _kernels(name: str) -> ModuleType:
    """``strongticket.kernels.<name>`` (installed), or, from a source tree on PYTHONPATH (the GPU check runs so),
    ``kernels.<name>`` — but only the ``kernels/`` folder beside this package, never another project's."""
    try:
        return importlib.import_module(f"strongticket.kernels.{name}")
    except ModuleNotFoundError:
        module = importlib.import_module(f"kernels.{name}")
        beside = Path(__file__).resolve().parents[2] / "kernels"
        if Path(module.__file__).resolve().parent != beside:
            raise ImportError(f"strongticket.kernels is not installed and the 'kernels' on the path "
                              f"({module.__file__}) is not the one beside strongticket; reinstall") from None
        return module


def _use_triton(*tensors: Tensor | None) -> bool:
    """True when the Triton kernels run these inputs: the backend of their device is Triton, every floating
    tensor is fp32/bf16 and none is a fake (meta) tensor."""
    present = [t for t in tensors if t is not None]
    if not present or present[0].device.type == "meta":
        return False
    if backend_name(present[0].device) == "torch":
        return False
    return all(t.dtype in _FLOATS or not t.dtype.is_floating_point for t in present)


def _input_precision() -> str | None:
    """The fp32 dot precision the kernels use: ``STRONGTICKET_INPUT_PRECISION`` when set (checked), else None,
    the kernels' own default (``kernels.tiles.DEFAULT_PRECISION``). Read on the Triton path only."""
    value = os.environ.get(_PRECISION_VAR)
    if value is None:
        return None
    allowed = _kernels("tiles").INPUT_PRECISIONS
    if value not in allowed:
        raise ValueError(f"{_PRECISION_VAR} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _gemm_path(device: torch.device, numel: int) -> str:
    """How a masked linear layer of ``numel`` weights runs on the Triton backend: ``fused`` (our GEMM kernels
    build W ⊙ M in registers and run SGD in the dS epilogue) or ``materialize`` (one elementwise kernel writes
    W ⊙ M in the compute dtype, the library GEMM — cuBLAS on a GPU — multiplies, one elementwise kernel turns
    G = dyᵀx into dS or the SGD step). ``STRONGTICKET_GEMM`` = auto (default) | fused | materialize. auto
    materializes on CUDA from 2^22 weights: on an H200 (2026-11-29, benchmarks/gpu_check.sh) the whole step at
    4096×4096 ran 1.4× (B=256, bf16) to 3.4× (B=4096, bf16) faster materialized, and at 1024×1024 (launch-bound)
    10–15% slower. The interpreter keeps the fused kernels, which the tests pin."""
    value = os.environ.get(_GEMM_VAR, "auto")
    if value not in GEMM_PATHS:
        raise ValueError(f"{_GEMM_VAR} must be one of {', '.join(GEMM_PATHS)}, got {value!r}")
    if value != "auto":
        return value
    return "materialize" if device.type == "cuda" and numel >= MATERIALIZE_FROM else "fused"


def _grad_weight(dy2: Tensor, x2: Tensor) -> Tensor:
    """G = dy2ᵀ x2 (N, K) for the score gradient: fp32 for fp32 inputs; for bf16 inputs accumulated in fp32 and
    kept in fp32 (``mm`` with ``out_dtype`` on CUDA, an fp32 product elsewhere), never rounded to bf16."""
    if dy2.dtype == torch.float32 and x2.dtype == torch.float32:
        return dy2.t() @ x2
    if dy2.is_cuda and dy2.dtype == x2.dtype == torch.bfloat16:
        return torch.mm(dy2.t(), x2, out_dtype=torch.float32)
    return dy2.t().float() @ x2.float()


def _masked_weight(weight: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    return (weight * mask).to(dtype)


def pack_bits(mask: Tensor) -> Tensor:
    """Bool mask (R, ...) -> int32 words (R, ⌈C/32⌉), C = numel / R; bit j of word w = M[r, 32w + j]."""
    rows = mask.shape[0]
    flat = mask.reshape(rows, -1)
    cols = flat.shape[1]
    n_words = (cols + 31) // 32
    padded = torch.zeros((rows, n_words * 32), dtype=torch.int64, device=mask.device)
    padded[:, :cols] = flat
    shifts = torch.arange(32, device=mask.device, dtype=torch.int64)
    words = (padded.view(rows, n_words, 32) << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_bits(bits: Tensor, shape: list[int] | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits` for a mask of ``shape``."""
    rows = shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    shifts = torch.arange(32, device=bits.device, dtype=torch.int32)
    flat = ((bits.unsqueeze(-1) >> shifts) & 1).reshape(rows, -1)[:, :cols]
    return flat.bool().reshape(shape)


def thresholds_mask_ref(scores: Tensor, threshold: Tensor) -> Tensor:
    """Reference of the threshold rule: |S| bits > τ, or == τ at a flat index <= cut (``threshold`` = (τ, cut))."""
    bits = scores.float().reshape(-1).view(torch.int32) & 0x7FFFFFFF
    tau, cut = threshold[0].to(torch.int32), threshold[1]
    flat = torch.arange(bits.numel(), device=bits.device)
    return ((bits > tau) | ((bits == tau) & (flat <= cut))).view(scores.shape)


def _as_mask_arg(mask: Tensor) -> Tensor:
    """A bool mask as the kernels want it: (rows, rest) contiguous; int32 words pass through."""
    if mask.dtype == torch.bool:
        return mask.reshape(mask.shape[0], -1).contiguous()
    return mask.contiguous()


def _sgd_ref(grad: Tensor, scores: Tensor, momentum_buffer: Tensor | None, lr: float, momentum: float,
             weight_decay: float) -> None:
    """``torch.optim.SGD``'s step on ``scores`` (dampening 0, no Nesterov) in its own order of operations, so the
    reference path equals the unfused optimizer bit for bit: d = dS + λ·S; buf = μ·buf + d; S −= lr·buf."""
    d_p = grad if weight_decay == 0 else grad.add(scores, alpha=weight_decay)
    if momentum_buffer is not None:
        d_p = momentum_buffer.mul_(momentum).add_(d_p)
    scores.add_(d_p, alpha=-lr)


def _check_sgd(lr: float, momentum: float, weight_decay: float, momentum_buffer: Tensor | None) -> None:
    """The fused step's arguments: what the kernels accept, checked on every path."""
    if not lr > 0 or not 0 <= momentum < 1 or not weight_decay >= 0:
        raise ValueError(f"the fused SGD step needs lr > 0, momentum in [0, 1), weight_decay >= 0; got lr={lr}, "
                         f"momentum={momentum}, weight_decay={weight_decay}")
    if momentum > 0 and momentum_buffer is None:
        raise ValueError("momentum > 0 needs a momentum_buffer (zeros before the first step)")
