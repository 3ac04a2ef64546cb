"""Fused masked-linear GEMMs for edge-popup training: the mask lives only in registers, never as W ⊙ M in memory.

With x (M, K), frozen weight W (N, K), scores S (N, K), mask M (N, K) and dy (M, N):

    forward  y  = x (W ⊙ M)ᵀ (+ b)                 2·M·N·K FLOPs
    dx       dx = dy (W ⊙ M)                       2·M·N·K
    dS       dS = (dyᵀ x) ⊙ W ⊙ sign(S)            2·M·N·K, elementwise product in the GEMM epilogue
    (+ SGD)  buf = μ·buf + dS + λ·S;  S -= lr·buf   optional, in the same epilogue (torch.optim.SGD semantics)

The mask tile is built in registers from one of three sources (``MASK_MODE``):
  0 threshold: |S| bits > τ, or == τ at a flat index <= cut (``kernels.select`` output; reads S, 4 B/elem);
  1 bit-packed: int32 words (N, ⌈K/32⌉), bit j of word w in row n = M[n, 32w + j] (0.125 B/elem);
  2 bool mask (N, K) (1 B/elem; the ``strongticket::masked_linear`` op's argument).
The forward can emit the bit-packed mask for the backward pass (only the CTAs with pid_m == 0 write it).
The weight tile is loaded from W, or with ``SEEDED`` regenerated in registers from a Philox seed as ±scale
(``_weight_tile``; ``kernels.seeded``'s launchers, which never materialise W).

Forward and dx compute the transposed product (yᵀ = (W⊙M) xᵀ, dxᵀ = (W⊙M)ᵀ dyᵀ) so that the masked weight
tile is the left ``tl.dot`` operand ("swap-AB": Hopper wgmma can take A from registers, triton#5003); the batch
maps to the MMA's N dimension, good for small batches. dS reduces over the batch and never writes dyᵀx.

Accumulation is fp32; x, dy and W may be fp32 or bf16; S and the momentum buffer are fp32. ``input_precision``
is a parameter ("ieee" for exact fp32 checks, "tf32" for speed). Under ``TRITON_INTERPRET=1`` bf16 dot operands
are upcast to fp32 (the interpreter's bf16 ``tl.dot`` is wrong, triton#11584).

Paper: Ramanujan et al., "What's Hidden in a Randomly Weighted Neural Network?", CVPR 2020.
Prior art: Triton tutorial 03 (blocked matmul), stk/MegaBlocks (kernels → ops → layers).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .packed_gemm import _philox_sign_tile
from .tiles import (
    INPUT_PRECISIONS,
    Tiles,
    device_arch,
    device_sms,
    dot_class,
    gemm_tiles,
    interpreting,
    launch,
    resolve_precision,
)

__all__ = [
    "INPUT_PRECISIONS",
    "masked_linear_forward",
    "masked_linear_dx",
    "masked_linear_dscores",
]

_MODE_THRESHOLD, _MODE_BITS, _MODE_BOOL = 0, 1, 2


# Mask tile at weight coordinates (rows, cols), both already broadcast to the tile's 2-D shape (either
# orientation); R, C = weight shape. Returns int1, False outside the weight.
@triton.jit
def _mask_tile(
    rows, cols, R, C,
    s_ptr, stride_sr,  # fp32 scores (MODE 0)
    thr_ptr,  # int64 (2,): τ bits, tie cut (MODE 0)
    m_ptr, stride_mr,  # int8 bool mask (MODE 2)
    b_ptr, stride_br,  # int32 words (MODE 1)
    MODE: tl.constexpr,
):
    ok = (rows < R) & (cols < C)
    r64 = rows.to(tl.int64)  # row × stride reaches 2^31 on large layers: 64-bit addresses
    if MODE == 0:
        s = tl.load(s_ptr + r64 * stride_sr + cols, mask=ok, other=0.0)
        bits = s.to(tl.int32, bitcast=True) & 0x7FFFFFFF
        tau = tl.load(thr_ptr).to(tl.int32)
        cut = tl.load(thr_ptr + 1)
        keep = (bits > tau) | ((bits == tau) & (r64 * C + cols <= cut))
    elif MODE == 1:
        word = tl.load(b_ptr + r64 * stride_br + (cols >> 5), mask=ok, other=0)
        keep = ((word >> (cols & 31)) & 1) != 0  # shift < 32: a shift >= 32 is poison on the GPU
    else:
        keep = tl.load(m_ptr + r64 * stride_mr + cols, mask=ok, other=0) != 0
    return keep & ok


# Seeded weight tile W[rows, k0 … k0 + BLOCK_K) = ±scale in fp32 (signs from Philox stream ``seed``, cpr counters
# per row, as ``strongticket.random.sign_bits``), rounded through bf16 when W_BF16 (as a stored bf16 W).
@triton.jit
def _weight_tile(seed, scale, rows, k0, R, cpr, W_BF16: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    neg = _philox_sign_tile(seed, rows, k0, R, cpr, BLOCK_R, BLOCK_K)
    c = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32) + scale
    w = tl.where(neg != 0, -c, c)
    if W_BF16:
        w = w.to(tl.bfloat16)
    return w


# x: (M, K) fp32/bf16; W: (N, K) fp32/bf16 loaded from w_ptr, or with SEEDED regenerated from (seed, cpr, scale,
# W_BF16) (w_ptr then unused); S: (N, K) fp32 or bits (N, ⌈K/32⌉) int32 or mask (N, K) int8;
# bias: (N,); y: (M, N) x.dtype; bits_out: (N, ⌈K/32⌉) int32. Tile acc = yᵀ[BLOCK_N, BLOCK_M].
@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, s_ptr, thr_ptr, m_ptr, bits_ptr, bias_ptr, y_ptr, bits_out_ptr,
    M, N, K, n_words, seed, cpr, scale,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_mn, stride_bn, stride_ym, stride_yn,
    stride_on,  # row stride of bits_out
    MASK_MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    WRITE_BITS: tl.constexpr,
    SEEDED: tl.constexpr,
    W_BF16: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m  # batch tiles vary fastest: CTAs sharing a weight tile run together (L2 reuse)
    pid_n = pid // num_m
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn64, rm64 = rn.to(tl.int64), rm.to(tl.int64)  # index × stride reaches 2^31 on large layers and batches
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        rk64 = rk.to(tl.int64)
        if SEEDED:
            w = _weight_tile(seed, scale, rn, k0, N, cpr, W_BF16, BLOCK_N, BLOCK_K)
        else:
            w_ok = (rn[:, None] < N) & (rk[None, :] < K)
            w = tl.load(w_ptr + rn64[:, None] * stride_wn + rk64[None, :] * stride_wk, mask=w_ok, other=0.0)
        keep = _mask_tile(rn[:, None], rk[None, :], N, K, s_ptr, stride_sn, thr_ptr, m_ptr, stride_mn,
                          bits_ptr, stride_bn, MASK_MODE)
        xt = tl.load(x_ptr + rk64[:, None] * stride_xk + rm64[None, :] * stride_xm,
                     mask=(rk[:, None] < K) & (rm[None, :] < M), other=0.0)  # [BLOCK_K, BLOCK_M]
        wm = tl.where(keep, w, 0.0).to(x_ptr.dtype.element_ty)
        if UPCAST:
            acc = tl.dot(wm.to(tl.float32), xt.to(tl.float32), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(wm, xt, acc, input_precision=INPUT_PRECISION)
        if WRITE_BITS:
            if pid_m == 0:
                packed = tl.reshape(keep.to(tl.int32), (BLOCK_N, BLOCK_K // 32, 32)) << tl.arange(0, 32)[None, None, :]
                words = tl.sum(packed, axis=2)  # distinct powers of two: the sum is the bitwise or
                rw = k0 // 32 + tl.arange(0, BLOCK_K // 32)
                tl.store(bits_out_ptr + rn64[:, None] * stride_on + rw[None, :], words,
                         mask=(rn[:, None] < N) & (rw[None, :] < n_words))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[:, None]
    tl.store(y_ptr + rm64[None, :] * stride_ym + rn64[:, None] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=(rm[None, :] < M) & (rn[:, None] < N))


# dy: (M, N) fp32/bf16; W: (N, K) from w_ptr or regenerated (SEEDED) as in the forward; mask source as in the
# forward; dx: (M, K) dy.dtype. Tile acc = dxᵀ[BLOCK_K, BLOCK_M], reduction over N in BLOCK_N steps; a seeded
# W tile is generated [BLOCK_N, BLOCK_K] and transposed.
@triton.jit
def _dx_kernel(
    dy_ptr, w_ptr, s_ptr, thr_ptr, m_ptr, bits_ptr, dx_ptr,
    M, N, K, seed, cpr, scale,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_sn, stride_mn, stride_bn, stride_dxm, stride_dxk,
    MASK_MODE: tl.constexpr,
    SEEDED: tl.constexpr,
    W_BF16: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_k = pid // num_m
    k0 = pid_k * BLOCK_K
    rk = k0 + tl.arange(0, BLOCK_K)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk64, rm64 = rk.to(tl.int64), rm.to(tl.int64)  # index × stride reaches 2^31 on large layers and batches
    acc = tl.zeros((BLOCK_K, BLOCK_M), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        rn64 = rn.to(tl.int64)
        if SEEDED:
            wt = tl.trans(_weight_tile(seed, scale, rn, k0, N, cpr, W_BF16, BLOCK_N, BLOCK_K))  # [BLOCK_K, BLOCK_N]
        else:
            w_ok = (rk[:, None] < K) & (rn[None, :] < N)
            wt = tl.load(w_ptr + rn64[None, :] * stride_wn + rk64[:, None] * stride_wk, mask=w_ok, other=0.0)
        keep = _mask_tile(rn[None, :], rk[:, None], N, K, s_ptr, stride_sn, thr_ptr, m_ptr, stride_mn,
                          bits_ptr, stride_bn, MASK_MODE)  # [BLOCK_K, BLOCK_N]
        dyt = tl.load(dy_ptr + rn64[:, None] * stride_dyn + rm64[None, :] * stride_dym,
                      mask=(rn[:, None] < N) & (rm[None, :] < M), other=0.0)  # [BLOCK_N, BLOCK_M]
        wm = tl.where(keep, wt, 0.0).to(dy_ptr.dtype.element_ty)
        if UPCAST:
            acc = tl.dot(wm.to(tl.float32), dyt.to(tl.float32), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(wm, dyt, acc, input_precision=INPUT_PRECISION)
    tl.store(dx_ptr + rm64[None, :] * stride_dxm + rk64[:, None] * stride_dxk, acc.to(dx_ptr.dtype.element_ty),
             mask=(rm[None, :] < M) & (rk[:, None] < K))


# dy: (M, N), x: (M, K) fp32/bf16; W: (N, K) fp32/bf16 from w_ptr or regenerated (SEEDED) as in the forward;
# S, momentum buffer, dS: (N, K) fp32.
# Tile acc = (dyᵀ x)[BLOCK_N, BLOCK_K], reduction over the batch M; epilogue ⊙ W ⊙ sign(S) (+ SGD on S).
@triton.jit
def _dscores_kernel(
    dy_ptr, x_ptr, w_ptr, s_ptr, ds_ptr, buf_ptr,
    M, N, K, seed, cpr, scale,
    lr, momentum, weight_decay,
    stride_dym, stride_dyn, stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_dsn, stride_bufn,
    WRITE_GRAD: tl.constexpr,
    SGD: tl.constexpr,
    HAS_BUF: tl.constexpr,
    SEEDED: tl.constexpr,
    W_BF16: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_k = tl.cdiv(K, BLOCK_K)
    pid_k = pid % num_k
    pid_n = pid // num_k
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k0 = pid_k * BLOCK_K
    rk = k0 + tl.arange(0, BLOCK_K)
    rn64, rk64 = rn.to(tl.int64), rk.to(tl.int64)  # index × stride reaches 2^31 on large layers and batches
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        rm64 = rm.to(tl.int64)
        dyt = tl.load(dy_ptr + rn64[:, None] * stride_dyn + rm64[None, :] * stride_dym,
                      mask=(rn[:, None] < N) & (rm[None, :] < M), other=0.0)  # [BLOCK_N, BLOCK_M]
        xk = tl.load(x_ptr + rm64[:, None] * stride_xm + rk64[None, :] * stride_xk,
                     mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)  # [BLOCK_M, BLOCK_K]
        if UPCAST:
            acc = tl.dot(dyt.to(tl.float32), xk.to(tl.float32), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(dyt, xk.to(dyt.dtype), acc, input_precision=INPUT_PRECISION)
    ok = (rn[:, None] < N) & (rk[None, :] < K)
    if SEEDED:
        w = _weight_tile(seed, scale, rn, k0, N, cpr, W_BF16, BLOCK_N, BLOCK_K).to(tl.float32)
    else:
        w = tl.load(w_ptr + rn64[:, None] * stride_wn + rk64[None, :] * stride_wk, mask=ok, other=0.0).to(tl.float32)
    s_ptrs = s_ptr + rn64[:, None] * stride_sn + rk[None, :]
    s = tl.load(s_ptrs, mask=ok, other=0.0)
    sign = tl.where(s > 0, 1.0, tl.where(s < 0, -1.0, 0.0))
    grad = acc * w * sign
    if WRITE_GRAD:
        tl.store(ds_ptr + rn64[:, None] * stride_dsn + rk[None, :], grad, mask=ok)
    if SGD:
        d_p = grad + weight_decay * s
        if HAS_BUF:
            buf_ptrs = buf_ptr + rn64[:, None] * stride_bufn + rk[None, :]
            d_p = momentum * tl.load(buf_ptrs, mask=ok, other=0.0) + d_p
            tl.store(buf_ptrs, d_p, mask=ok)
        tl.store(s_ptrs, s - lr * d_p, mask=ok)


def _upcast(*dtypes: torch.dtype) -> bool:
    return interpreting() and torch.bfloat16 in dtypes


def _check_tiles(t: Tiles, write_bits: bool = False, seeded: bool = False) -> None:
    for name in ("block_n", "block_m", "block_k"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (GPU tl.dot minimum), got {value!r}")
    for name in ("num_warps", "num_stages"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if write_bits and t.block_k < 32:
        raise ValueError(f"block_k must be >= 32 to pack 32-bit mask words, got {t.block_k}")
    if seeded and t.block_k < 32:
        raise ValueError(f"block_k must be >= 32 (one Philox word per 32 weights), got {t.block_k}")


def _tiles(kernel: str, device: torch.device, dot_dtype: torch.dtype, input_precision: str | None, batch: int,
           out: int, given: dict[str, int | None], w: _Weight, write_bits: bool = False) -> tuple[Tiles, str]:
    """The dispatch's configuration for this launch (the fields the caller gave replace its own) and the dot
    precision; 16-bit dots ignore the precision, so they all compile as one ("tf32")."""
    dot = dot_class(dot_dtype, resolve_precision(input_precision))
    t = gemm_tiles(kernel, device_arch(device), dot, batch, out, device_sms(device)).replace(**given)
    _check_tiles(t, write_bits, w.seeded)
    return t, "tf32" if dot == "16bit" else dot


def _check_2d(name: str, t: torch.Tensor, shape: tuple[int, int] | None, dtypes: tuple[torch.dtype, ...]) -> None:
    if t.dim() != 2 or (shape is not None and tuple(t.shape) != shape) or t.dtype not in dtypes:
        want = f"shape {shape}" if shape is not None else "2 dimensions"
        raise ValueError(f"{name} must have {want} and dtype in {[str(d) for d in dtypes]}, "
                         f"got {tuple(t.shape)} {t.dtype}")


_FLOATS = (torch.float32, torch.bfloat16)


def _check_sgd(
    n: int,
    k: int,
    write_grad: bool,
    lr: float | None,
    momentum_buffer: torch.Tensor | None,
    momentum: float,
    weight_decay: float,
) -> bool:
    """Validates the fused-SGD arguments of the dS launchers; returns whether the SGD step is on (lr set)."""
    sgd = lr is not None
    if not sgd and (momentum_buffer is not None or not write_grad):
        raise ValueError("momentum_buffer and write_grad=False need lr (the fused SGD step)")
    if sgd:
        if not lr > 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"SGD needs lr > 0, momentum in [0, 1), weight_decay >= 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if momentum > 0 and momentum_buffer is None:
            raise ValueError("momentum > 0 needs a momentum_buffer (zeros before the first step)")
    if momentum_buffer is not None:
        _check_2d("momentum_buffer", momentum_buffer, (n, k), (torch.float32,))
        if momentum_buffer.stride(1) != 1:
            raise ValueError(f"momentum_buffer must be contiguous along K, got strides {momentum_buffer.stride()}")
    return sgd


def _mask_source(
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    scores: torch.Tensor | None,
    threshold: torch.Tensor | None,
) -> tuple[int, torch.Tensor, int, torch.Tensor, torch.Tensor, int, torch.Tensor, int]:
    """(MODE, s, stride_sn, thr, m, stride_mn, bits, stride_bn) with the weight as placeholder pointer."""
    n, k = weight.shape
    dummy = weight
    if threshold is not None:
        if mask is not None or scores is None:
            raise ValueError("pass either mask, or scores with threshold, not both")
        _check_2d("scores", scores, (n, k), (torch.float32,))
        if scores.stride(1) != 1:
            raise ValueError(f"scores must be contiguous along K, got strides {scores.stride()}")
        if threshold.shape != (2,) or threshold.dtype != torch.int64:
            raise ValueError(f"threshold must be a (2,) int64 tensor, got {tuple(threshold.shape)} {threshold.dtype}")
        return _MODE_THRESHOLD, scores, scores.stride(0), threshold, dummy, 0, dummy, 0
    if mask is None:
        raise ValueError("a mask source is needed: mask (bool (N, K) or int32 bits (N, ceil(K/32))) or threshold")
    if mask.dtype == torch.bool:
        _check_2d("mask", mask, (n, k), (torch.bool,))
        if mask.stride(1) != 1:
            raise ValueError(f"mask must be contiguous along K, got strides {mask.stride()}")
        return _MODE_BOOL, dummy, 0, dummy, mask.view(torch.int8), mask.stride(0), dummy, 0
    _check_2d("mask bits", mask, (n, triton.cdiv(k, 32)), (torch.int32,))
    if mask.stride(1) != 1:
        raise ValueError(f"mask bits must be contiguous along words, got strides {mask.stride()}")
    return _MODE_BITS, dummy, 0, dummy, dummy, 0, mask, mask.stride(0)


class _Weight(NamedTuple):
    """The W operand of a launch: a stored tensor, or a signed-constant tile regenerated from ``seed``."""

    ptr: torch.Tensor  # the stored weight; when seeded any tensor on the device (never read)
    stride_n: int
    stride_k: int
    shape: torch.Tensor  # (N, K)-shaped tensor for the mask checks (the weight, or a zero-stride stand-in)
    dtype: torch.dtype
    seeded: bool = False
    seed: int = 0
    cpr: int = 1  # Philox counters per row
    scale: float = 1.0


def _stored(weight: torch.Tensor) -> _Weight:
    return _Weight(weight, weight.stride(0), weight.stride(1), weight, weight.dtype)


def _seeded_args(w: _Weight) -> tuple:
    return w.seed, w.cpr, w.scale


def _given(block_n, block_m, block_k, num_warps, num_stages) -> dict[str, int | None]:
    """A launcher's tile arguments (None: the dispatch's choice)."""
    return dict(block_n=block_n, block_m=block_m, block_k=block_k, num_warps=num_warps, num_stages=num_stages)


def _gemm_kwargs(t: Tiles, w: _Weight, upcast: bool, precision: str) -> dict:
    """The constexprs and launch options every GEMM launch shares."""
    return dict(SEEDED=w.seeded, W_BF16=w.seeded and w.dtype == torch.bfloat16, UPCAST=upcast,
                INPUT_PRECISION=precision, BLOCK_N=t.block_n, BLOCK_M=t.block_m, BLOCK_K=t.block_k,
                num_warps=t.num_warps, num_stages=t.num_stages)


def masked_linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    threshold: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    write_bits: bool = False,
    input_precision: str | None = None,
    block_n: int | None = None,
    block_m: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = x (W ⊙ M)ᵀ (+ bias) for x (M, K); returns (y (M, N) in x.dtype, bit-packed mask or None).

    The mask comes from ``mask`` (bool (N, K) or int32 words (N, ⌈K/32⌉)) or from ``scores`` + ``threshold``.
    ``input_precision`` None: ``tiles.DEFAULT_PRECISION`` for fp32 dots; tiles None: ``tiles.gemm_tiles``.
    """
    _check_2d("x", x, None, _FLOATS)
    _check_2d("weight", weight, (weight.shape[0], x.shape[1]), _FLOATS)
    return _forward(x, _stored(weight), mask, scores, threshold, bias, write_bits, input_precision,
                    _given(block_n, block_m, block_k, num_warps, num_stages))


def _forward(x: torch.Tensor, w: _Weight, mask, scores, threshold, bias, write_bits: bool,
             input_precision: str | None, given: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    m_rows, k = x.shape
    n = w.shape.shape[0]
    t, precision = _tiles("forward", x.device, x.dtype, input_precision, m_rows, n, given, w, write_bits)
    mode, s, stride_sn, thr, mk, stride_mn, bits, stride_bn = _mask_source(w.shape, mask, scores, threshold)
    if bias is not None and (bias.shape != (n,) or bias.dtype not in _FLOATS):
        raise ValueError(f"bias must have shape ({n},) and a float32/bfloat16 dtype, got {tuple(bias.shape)} "
                         f"{bias.dtype}")
    y = torch.empty((m_rows, n), dtype=x.dtype, device=x.device)
    n_words = triton.cdiv(k, 32)
    bits_out = torch.empty((n, n_words), dtype=torch.int32, device=x.device) if write_bits else None
    if y.numel():
        grid = (triton.cdiv(m_rows, t.block_m) * triton.cdiv(n, t.block_n),)
        launch(
            _forward_kernel, grid, x.device,
            x, w.ptr, s, thr, mk, bits, w.ptr if bias is None else bias, y,
            w.ptr if bits_out is None else bits_out,
            m_rows, n, k, n_words, *_seeded_args(w),
            x.stride(0), x.stride(1), w.stride_n, w.stride_k, stride_sn, stride_mn, stride_bn,
            y.stride(0), y.stride(1), n_words,
            MASK_MODE=mode, HAS_BIAS=bias is not None, WRITE_BITS=write_bits,
            **_gemm_kwargs(t, w, _upcast(x.dtype, w.dtype), precision),
        )
    elif write_bits and m_rows == 0:
        raise ValueError("write_bits needs a batch of at least one row (the pid_m == 0 CTAs write the bits)")
    return y, bits_out


def masked_linear_dx(
    dy: torch.Tensor,
    weight: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    threshold: torch.Tensor | None = None,
    input_precision: str | None = None,
    block_k: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """dx = dy (W ⊙ M) for dy (M, N): (M, K) in dy.dtype; mask sources as in :func:`masked_linear_forward`."""
    _check_2d("dy", dy, None, _FLOATS)
    _check_2d("weight", weight, (dy.shape[1], weight.shape[1]), _FLOATS)
    return _dx(dy, _stored(weight), mask, scores, threshold, input_precision,
               _given(block_n, block_m, block_k, num_warps, num_stages))


def _dx(dy: torch.Tensor, w: _Weight, mask, scores, threshold, input_precision: str | None,
        given: dict) -> torch.Tensor:
    m_rows, n = dy.shape
    k = w.shape.shape[1]
    t, precision = _tiles("dx", dy.device, dy.dtype, input_precision, m_rows, k, given, w)
    mode, s, stride_sn, thr, mk, stride_mn, bits, stride_bn = _mask_source(w.shape, mask, scores, threshold)
    dx = torch.empty((m_rows, k), dtype=dy.dtype, device=dy.device)
    if dx.numel():
        grid = (triton.cdiv(m_rows, t.block_m) * triton.cdiv(k, t.block_k),)
        launch(
            _dx_kernel, grid, dy.device,
            dy, w.ptr, s, thr, mk, bits, dx, m_rows, n, k, *_seeded_args(w),
            dy.stride(0), dy.stride(1), w.stride_n, w.stride_k, stride_sn, stride_mn, stride_bn,
            dx.stride(0), dx.stride(1),
            MASK_MODE=mode, **_gemm_kwargs(t, w, _upcast(dy.dtype, w.dtype), precision),
        )
    return dx


def masked_linear_dscores(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    scores: torch.Tensor,
    *,
    write_grad: bool = True,
    lr: float | None = None,
    momentum_buffer: torch.Tensor | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    input_precision: str | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    block_m: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor | None:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) (N, K) fp32, with dyᵀx only in registers.

    With ``lr`` set, also applies one ``torch.optim.SGD`` step (momentum, weight decay, no dampening or Nesterov)
    to ``scores`` and ``momentum_buffer`` in place, in the same epilogue; ``write_grad=False`` then skips writing
    dS (returns None). A zero-initialised buffer reproduces SGD's first step (buf = dS + λ·S).
    """
    _check_2d("dy", dy, None, _FLOATS)
    _check_2d("x", x, (dy.shape[0], x.shape[1]), _FLOATS)
    n, k = dy.shape[1], x.shape[1]
    _check_2d("weight", weight, (n, k), _FLOATS)
    _check_2d("scores", scores, (n, k), (torch.float32,))
    if scores.stride(1) != 1:
        raise ValueError(f"scores must be contiguous along K, got strides {scores.stride()}")
    return _dscores(dy, x, _stored(weight), scores, write_grad, lr, momentum_buffer, momentum, weight_decay,
                    input_precision,
                    _given(block_n, block_m, block_k, num_warps, num_stages))


def _dscores(dy: torch.Tensor, x: torch.Tensor, w: _Weight, scores: torch.Tensor, write_grad: bool, lr, momentum_buffer,
             momentum: float, weight_decay: float, input_precision: str | None, given: dict) -> torch.Tensor | None:
    n, k = dy.shape[1], x.shape[1]
    t, precision = _tiles("dscores", dy.device, dy.dtype, input_precision, dy.shape[0], n, given, w)
    sgd = _check_sgd(n, k, write_grad, lr, momentum_buffer, momentum, weight_decay)
    ds = torch.empty((n, k), dtype=torch.float32, device=dy.device) if write_grad else None
    buf = momentum_buffer if momentum_buffer is not None else scores
    if n * k:
        grid = (triton.cdiv(n, t.block_n) * triton.cdiv(k, t.block_k),)
        launch(
            _dscores_kernel, grid, dy.device,
            dy, x, w.ptr, scores, scores if ds is None else ds, buf, dy.shape[0], n, k, *_seeded_args(w),
            float(lr or 0.0), float(momentum), float(weight_decay),
            dy.stride(0), dy.stride(1), x.stride(0), x.stride(1), w.stride_n, w.stride_k,
            scores.stride(0), 0 if ds is None else ds.stride(0), buf.stride(0),
            WRITE_GRAD=write_grad, SGD=sgd, HAS_BUF=momentum_buffer is not None,
            **_gemm_kwargs(t, w, _upcast(dy.dtype, x.dtype), precision),
        )
    return ds
