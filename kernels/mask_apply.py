"""One-pass elementwise kernels around a dense conv (cuDNN): the masked weight in, the score gradient out.

    mask apply:  W_eff = (W ⊙ M).to(dtype)                  read W + mask source, write W_eff: one pass
    score grad:  dS = G ⊙ W ⊙ sign(S)  (+ SGD on S)          G = conv2d_weight(x, dy), the dense gradient of W⊙M

The mask source is the one of ``kernels.masked_linear`` (threshold on S, bit-packed words, or a bool mask), on
the weight viewed as (R, C) = (out_channels, in_channels/groups · kh · kw); bit-packed words run along C.
The score-gradient kernel is the elementwise epilogue the linear dS GEMM fuses; for conv the GEMM is cuDNN's
weight-gradient convolution, so G is materialised once and consumed here in one pass (12 B/elem, + 16 with SGD).

Shapes: weight, scores, G, momentum buffer: any shape with numel = R·C, contiguous; scores/buffer fp32.
Paper: Ramanujan et al., CVPR 2020 (edge-popup); the optimizer step follows ``torch.optim.SGD``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .masked_linear import _FLOATS, _mask_source, _mask_tile
from .tiles import launch

__all__ = ["mask_apply", "score_grad"]


# weight: (R, C) fp32/bf16; mask source (see masked_linear); out: (R, C) of the requested dtype.
# 1-D grid over (row tile, column tile), column tiles fastest (a 2-D grid caps the column tiles at 65535).
@triton.jit
def _mask_apply_kernel(
    w_ptr, s_ptr, thr_ptr, m_ptr, bits_ptr, out_ptr,
    R, C,
    stride_wr, stride_sr, stride_mr, stride_br, stride_or,
    MASK_MODE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    col_tiles = tl.cdiv(C, BLOCK_C)
    rows = (tl.program_id(0) // col_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = (tl.program_id(0) % col_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    r64 = rows.to(tl.int64)  # row × stride reaches 2^31 on large weights: 64-bit addresses
    ok = (rows[:, None] < R) & (cols[None, :] < C)
    w = tl.load(w_ptr + r64[:, None] * stride_wr + cols[None, :], mask=ok, other=0.0)
    keep = _mask_tile(rows[:, None], cols[None, :], R, C, s_ptr, stride_sr, thr_ptr, m_ptr, stride_mr,
                      bits_ptr, stride_br, MASK_MODE)
    tl.store(out_ptr + r64[:, None] * stride_or + cols[None, :],
             tl.where(keep, w, 0.0).to(out_ptr.dtype.element_ty), mask=ok)


# g: (n,) fp32/bf16, weight: (n,) fp32/bf16, scores / buf / ds: (n,) fp32, all flat contiguous.
@triton.jit
def _score_grad_kernel(
    g_ptr, w_ptr, s_ptr, ds_ptr, buf_ptr,
    n,
    lr, momentum, weight_decay,
    WRITE_GRAD: tl.constexpr,
    SGD: tl.constexpr,
    HAS_BUF: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n
    g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + offs, mask=ok, other=0.0)
    grad = g * w * tl.where(s > 0, 1.0, tl.where(s < 0, -1.0, 0.0))
    if WRITE_GRAD:
        tl.store(ds_ptr + offs, grad, mask=ok)
    if SGD:
        d_p = grad + weight_decay * s
        if HAS_BUF:
            d_p = momentum * tl.load(buf_ptr + offs, mask=ok, other=0.0) + d_p
            tl.store(buf_ptr + offs, d_p, mask=ok)
        tl.store(s_ptr + offs, s - lr * d_p, mask=ok)


def _rows_cols(weight: torch.Tensor) -> tuple[int, int]:
    rows = weight.shape[0] if weight.dim() else 1
    return rows, weight.numel() // max(rows, 1)


def mask_apply(
    weight: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    threshold: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    block_r: int = 16,
    block_c: int = 256,
) -> torch.Tensor:
    """(W ⊙ M).to(dtype) in one pass; ``mask``: bool of W's shape or int32 words (R, ⌈C/32⌉); or scores+threshold."""
    if weight.dtype not in _FLOATS or not weight.is_contiguous() or weight.dim() < 1:
        raise ValueError(f"weight must be contiguous float32/bfloat16 with >= 1 dimension, got {weight.dtype} "
                         f"{tuple(weight.shape)} (contiguous={weight.is_contiguous()})")
    dtype = weight.dtype if dtype is None else dtype
    if dtype not in _FLOATS:
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    for name, value in (("block_r", block_r), ("block_c", block_c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 1, got {value!r}")
    rows, cols = _rows_cols(weight)
    w2 = weight.reshape(rows, cols)
    if mask is not None and mask.dtype == torch.bool:
        if mask.shape != weight.shape:
            raise ValueError(f"mask must have the weight's shape {tuple(weight.shape)}, got {tuple(mask.shape)}")
        mask = mask.contiguous().reshape(rows, cols)
    if scores is not None:
        if scores.shape != weight.shape or not scores.is_contiguous():
            raise ValueError(f"scores must be contiguous with the weight's shape {tuple(weight.shape)}, got "
                             f"{tuple(scores.shape)} (contiguous={scores.is_contiguous()})")
        scores = scores.reshape(rows, cols)
    mode, s, stride_sr, thr, mk, stride_mr, bits, stride_br = _mask_source(w2, mask, scores, threshold)
    out = torch.empty((rows, cols), dtype=dtype, device=weight.device)
    if out.numel():
        grid = (triton.cdiv(rows, block_r) * triton.cdiv(cols, block_c),)
        launch(_mask_apply_kernel, grid, weight.device,
               w2, s, thr, mk, bits, out, rows, cols, w2.stride(0), stride_sr, stride_mr, stride_br, out.stride(0),
               MASK_MODE=mode, BLOCK_R=block_r, BLOCK_C=block_c)
    return out.view(weight.shape)


def score_grad(
    grad_weight: torch.Tensor,
    weight: torch.Tensor,
    scores: torch.Tensor,
    *,
    write_grad: bool = True,
    lr: float | None = None,
    momentum_buffer: torch.Tensor | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    block: int = 1024,
) -> torch.Tensor | None:
    """dS = G ⊙ W ⊙ sign(S) (fp32, S's shape); with ``lr``, also one in-place SGD step on S (and the buffer)."""
    for name, t, dtypes in (("grad_weight", grad_weight, _FLOATS), ("weight", weight, _FLOATS),
                            ("scores", scores, (torch.float32,))):
        if t.shape != scores.shape or t.dtype not in dtypes or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous with shape {tuple(scores.shape)} and dtype in "
                             f"{[str(d) for d in dtypes]}, got {tuple(t.shape)} {t.dtype}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block!r}")
    sgd = lr is not None
    if not sgd and (momentum_buffer is not None or not write_grad):
        raise ValueError("momentum_buffer and write_grad=False need lr (the fused SGD step)")
    if sgd and (not lr > 0 or not 0 <= momentum < 1 or weight_decay < 0 or (momentum > 0 and momentum_buffer is None)):
        raise ValueError(f"SGD needs lr > 0, momentum in [0, 1) (> 0 with a momentum_buffer), weight_decay >= 0; got "
                         f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}")
    if momentum_buffer is not None and (momentum_buffer.shape != scores.shape or momentum_buffer.dtype != torch.float32
                                        or not momentum_buffer.is_contiguous()):
        raise ValueError(f"momentum_buffer must be contiguous float32 of shape {tuple(scores.shape)}, got "
                         f"{tuple(momentum_buffer.shape)} {momentum_buffer.dtype}")
    ds = torch.empty_like(scores) if write_grad else None
    n = scores.numel()
    if n:
        buf = scores if momentum_buffer is None else momentum_buffer
        launch(_score_grad_kernel, (triton.cdiv(n, block),), scores.device,
               grad_weight, weight, scores, scores if ds is None else ds, buf, n,
               float(lr or 0.0), float(momentum), float(weight_decay),
               WRITE_GRAD=write_grad, SGD=sgd, HAS_BUF=momentum_buffer is not None, BLOCK=block)
    return ds
