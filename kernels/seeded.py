"""Seeded edge-popup GEMMs: the fused kernels of ``masked_linear`` with the frozen signed-constant weight
regenerated in registers from its Philox seed, so the weight tensor never exists on the device.

W[n, k] = −c if sign bit (n, k) else +c, c = gain/√fan (fp32, one per layer), sign bits from the stream
``seed`` exactly as ``strongticket.random.sign_bits`` (element (n, k) = bit k % 32 of word (k % 128) // 32 of
counter n·⌈K/128⌉ + k // 128). With x (M, K), S (N, K), mask M (N, K), dy (M, N):

    forward  y  = x (W ⊙ M)ᵀ (+ b)
    dx       dx = dy (W ⊙ M)
    dS       dS = (dyᵀ x) ⊙ W ⊙ sign(S)   (+ fused SGD-momentum step on S, torch.optim.SGD semantics)

Bit-exact twin of the stored-weight path: every tile holds the very values the stored kernel loads
(±c rounded to ``weight_dtype``, fp32 or bf16, then cast like the stored tile), the loops, tiles and
accumulation order are the same, so y, dx and dS equal ``masked_linear_forward/dx/dscores`` on
W = ``init_weight(...)`` (``.to(weight_dtype)``) bit for bit for the same tile sizes — and the masks of a search
follow the same trajectory. Mask sources as in ``masked_linear`` (threshold on S, bit-packed words, bool).

Bytes per weight element per step (kernels.md §2 (c)): fwd 4.125 (S + bits out), dx 0.125, dS + SGD momentum
16, i.e. ≈ 20 vs ≈ 26 with a stored bf16 W; the weight itself costs 0 bytes of device memory.
Philox: one ``tl.randint4x`` per 128 weights when the tile's K extent is >= 128, one per 32 otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .masked_linear import _check_2d, _check_precision, _check_tiles, _mask_source, _mask_tile, _upcast
from .packed_gemm import _philox_sign_tile

__all__ = ["seeded_linear_forward", "seeded_linear_dx", "seeded_linear_dscores"]

_FLOATS = (torch.float32, torch.bfloat16)
_MAX_COUNTERS = 2**31
_MAX_SEED = 2**63


# Weight tile W[rows, k0 … k0 + BLOCK_K) = ±scale in fp32, rounded through bf16 when W_BF16 (as a stored bf16 W).
@triton.jit
def _weight_tile(seed, scale, rows, k0, R, cpr, W_BF16: tl.constexpr, BLOCK_R: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    neg = _philox_sign_tile(seed, rows, k0, R, cpr, BLOCK_R, BLOCK_K)
    c = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32) + scale
    w = tl.where(neg != 0, -c, c)
    if W_BF16:
        w = w.to(tl.bfloat16)
    return w


# x: (M, K) fp32/bf16; W regenerated (N, K); mask source as in masked_linear; bias (N,); y: (M, N) x.dtype;
# bits_out (N, ⌈K/32⌉) int32. Tile acc = yᵀ[BLOCK_N, BLOCK_M].
@triton.jit
def _seeded_forward_kernel(
    x_ptr, s_ptr, thr_ptr, m_ptr, bits_ptr, bias_ptr, y_ptr, bits_out_ptr,
    M, N, K, n_words, seed, cpr, scale,
    stride_xm, stride_xk, stride_sn, stride_mn, stride_bn, stride_ym, stride_yn, stride_on,
    MASK_MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    WRITE_BITS: tl.constexpr,
    W_BF16: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m
    pid_n = pid // num_m
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        w = _weight_tile(seed, scale, rn, k0, N, cpr, W_BF16, BLOCK_N, BLOCK_K)
        keep = _mask_tile(rn[:, None], rk[None, :], N, K, s_ptr, stride_sn, thr_ptr, m_ptr, stride_mn,
                          bits_ptr, stride_bn, MASK_MODE)
        xt = tl.load(x_ptr + rk[:, None] * stride_xk + rm[None, :] * stride_xm,
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
                tl.store(bits_out_ptr + rn[:, None] * stride_on + rw[None, :], words,
                         mask=(rn[:, None] < N) & (rw[None, :] < n_words))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[:, None]
    tl.store(y_ptr + rm[None, :] * stride_ym + rn[:, None] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=(rm[None, :] < M) & (rn[:, None] < N))


# dy: (M, N) fp32/bf16; W regenerated (N, K); mask source; dx: (M, K) dy.dtype.
# Tile acc = dxᵀ[BLOCK_K, BLOCK_M], reduction over N; the W tile is generated [BLOCK_N, BLOCK_K] and transposed.
@triton.jit
def _seeded_dx_kernel(
    dy_ptr, s_ptr, thr_ptr, m_ptr, bits_ptr, dx_ptr,
    M, N, K, seed, cpr, scale,
    stride_dym, stride_dyn, stride_sn, stride_mn, stride_bn, stride_dxm, stride_dxk,
    MASK_MODE: tl.constexpr,
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
    acc = tl.zeros((BLOCK_K, BLOCK_M), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        wt = tl.trans(_weight_tile(seed, scale, rn, k0, N, cpr, W_BF16, BLOCK_N, BLOCK_K))  # [BLOCK_K, BLOCK_N]
        keep = _mask_tile(rn[None, :], rk[:, None], N, K, s_ptr, stride_sn, thr_ptr, m_ptr, stride_mn,
                          bits_ptr, stride_bn, MASK_MODE)  # [BLOCK_K, BLOCK_N]
        dyt = tl.load(dy_ptr + rn[:, None] * stride_dyn + rm[None, :] * stride_dym,
                      mask=(rn[:, None] < N) & (rm[None, :] < M), other=0.0)  # [BLOCK_N, BLOCK_M]
        wm = tl.where(keep, wt, 0.0).to(dy_ptr.dtype.element_ty)
        if UPCAST:
            acc = tl.dot(wm.to(tl.float32), dyt.to(tl.float32), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(wm, dyt, acc, input_precision=INPUT_PRECISION)
    tl.store(dx_ptr + rm[None, :] * stride_dxm + rk[:, None] * stride_dxk, acc.to(dx_ptr.dtype.element_ty),
             mask=(rm[None, :] < M) & (rk[:, None] < K))


# dy: (M, N), x: (M, K) fp32/bf16; W regenerated (N, K); S, momentum buffer, dS: (N, K) fp32.
# Tile acc = (dyᵀ x)[BLOCK_N, BLOCK_K] over the batch; epilogue ⊙ W ⊙ sign(S) (+ SGD on S).
@triton.jit
def _seeded_dscores_kernel(
    dy_ptr, x_ptr, s_ptr, ds_ptr, buf_ptr,
    M, N, K, seed, cpr, scale,
    lr, momentum, weight_decay,
    stride_dym, stride_dyn, stride_xm, stride_xk, stride_sn, stride_dsn, stride_bufn,
    WRITE_GRAD: tl.constexpr,
    SGD: tl.constexpr,
    HAS_BUF: tl.constexpr,
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
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        dyt = tl.load(dy_ptr + rn[:, None] * stride_dyn + rm[None, :] * stride_dym,
                      mask=(rn[:, None] < N) & (rm[None, :] < M), other=0.0)  # [BLOCK_N, BLOCK_M]
        xk = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
                     mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)  # [BLOCK_M, BLOCK_K]
        if UPCAST:
            acc = tl.dot(dyt.to(tl.float32), xk.to(tl.float32), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(dyt, xk.to(dyt.dtype), acc, input_precision=INPUT_PRECISION)
    ok = (rn[:, None] < N) & (rk[None, :] < K)
    w = _weight_tile(seed, scale, rn, k0, N, cpr, W_BF16, BLOCK_N, BLOCK_K).to(tl.float32)
    s_ptrs = s_ptr + rn[:, None] * stride_sn + rk[None, :]
    s = tl.load(s_ptrs, mask=ok, other=0.0)
    sign = tl.where(s > 0, 1.0, tl.where(s < 0, -1.0, 0.0))
    grad = acc * w * sign
    if WRITE_GRAD:
        tl.store(ds_ptr + rn[:, None] * stride_dsn + rk[None, :], grad, mask=ok)
    if SGD:
        d_p = grad + weight_decay * s
        if HAS_BUF:
            buf_ptrs = buf_ptr + rn[:, None] * stride_bufn + rk[None, :]
            d_p = momentum * tl.load(buf_ptrs, mask=ok, other=0.0) + d_p
            tl.store(buf_ptrs, d_p, mask=ok)
        tl.store(s_ptrs, s - lr * d_p, mask=ok)


def _check_seeded(seed: int, scale: float, n: int, k: int, weight_dtype: torch.dtype) -> int:
    """Validated seed; returns counters per row ⌈K/128⌉."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63) (a stream seed), got {seed!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < float(scale) < float("inf"):
        raise ValueError(f"scale must be a positive finite float (gain/sqrt(fan) as fp32), got {scale!r}")
    if weight_dtype not in _FLOATS:
        raise ValueError(f"weight_dtype must be torch.float32 or torch.bfloat16, got {weight_dtype}")
    for name, value in (("out_features", n), ("in_features", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    cpr = triton.cdiv(k, 128)
    if n * cpr > _MAX_COUNTERS:
        raise ValueError(f"a ({n}, {k}) weight needs {n * cpr} Philox counters, one stream holds at most 2**31")
    return cpr


def _tile_scale(scale: float, weight_dtype: torch.dtype) -> float:
    """``scale`` rounded to ``weight_dtype`` on the host (as ``W.to(weight_dtype)`` rounds a stored W), so the
    in-kernel cast to bf16 is exact whatever its rounding mode (the interpreter truncates, GPUs round to even)."""
    return float(torch.tensor(float(scale), dtype=torch.float32).to(weight_dtype).float())


def _shape_only(n: int, k: int, device: torch.device) -> torch.Tensor:
    """A 4-byte tensor viewed as (n, k) with zero strides: carries W's shape to the mask checks, no memory."""
    return torch.zeros(1, dtype=torch.float32, device=device).as_strided((n, k), (0, 0))


def seeded_linear_forward(
    x: torch.Tensor,
    seed: int,
    scale: float,
    out_features: int,
    *,
    weight_dtype: torch.dtype = torch.float32,
    mask: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    threshold: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    write_bits: bool = False,
    input_precision: str = "ieee",
    block_n: int = 128,
    block_m: int = 64,
    block_k: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = x (W ⊙ M)ᵀ (+ bias) with W = ±scale from stream ``seed``: (y (M, N) x.dtype, bit mask or None).

    Same arguments and tiles as ``masked_linear.masked_linear_forward`` with the weight replaced by
    (seed, scale, out_features, weight_dtype); block_k must be >= 32.
    """
    _check_2d("x", x, None, _FLOATS)
    m_rows, k = x.shape
    n = out_features
    cpr = _check_seeded(seed, scale, n, k, weight_dtype)
    _check_tiles(write_bits, block_n=block_n, block_m=block_m, block_k=block_k)
    if block_k < 32:
        raise ValueError(f"block_k must be >= 32 (one Philox word per 32 weights), got {block_k}")
    _check_precision(input_precision)
    shape = _shape_only(n, k, x.device)
    mode, s, stride_sn, thr, mk, stride_mn, bits, stride_bn = _mask_source(shape, mask, scores, threshold)
    if bias is not None and (bias.shape != (n,) or bias.dtype not in _FLOATS):
        raise ValueError(f"bias must have shape ({n},) and a float32/bfloat16 dtype, got {tuple(bias.shape)} "
                         f"{bias.dtype}")
    y = torch.empty((m_rows, n), dtype=x.dtype, device=x.device)
    n_words = triton.cdiv(k, 32)
    bits_out = torch.empty((n, n_words), dtype=torch.int32, device=x.device) if write_bits else None
    if y.numel():
        grid = (triton.cdiv(m_rows, block_m) * triton.cdiv(n, block_n),)
        _seeded_forward_kernel[grid](
            x, s, thr, mk, bits, x if bias is None else bias, y, x if bits_out is None else bits_out,
            m_rows, n, k, n_words, seed, cpr, _tile_scale(scale, weight_dtype),
            x.stride(0), x.stride(1), stride_sn, stride_mn, stride_bn, y.stride(0), y.stride(1), n_words,
            MASK_MODE=mode, HAS_BIAS=bias is not None, WRITE_BITS=write_bits,
            W_BF16=weight_dtype == torch.bfloat16, UPCAST=_upcast(x.dtype, weight_dtype),
            INPUT_PRECISION=input_precision, BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_K=block_k,
            num_warps=num_warps, num_stages=num_stages,
        )
    elif write_bits and m_rows == 0:
        raise ValueError("write_bits needs a batch of at least one row (the pid_m == 0 CTAs write the bits)")
    return y, bits_out


def seeded_linear_dx(
    dy: torch.Tensor,
    seed: int,
    scale: float,
    in_features: int,
    *,
    weight_dtype: torch.dtype = torch.float32,
    mask: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    threshold: torch.Tensor | None = None,
    input_precision: str = "ieee",
    block_k: int = 128,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor:
    """dx = dy (W ⊙ M), (M, K) in dy.dtype, W regenerated; tiles as ``masked_linear.masked_linear_dx``."""
    _check_2d("dy", dy, None, _FLOATS)
    m_rows, n = dy.shape
    k = in_features
    cpr = _check_seeded(seed, scale, n, k, weight_dtype)
    _check_tiles(block_k=block_k, block_m=block_m, block_n=block_n)
    if block_k < 32:
        raise ValueError(f"block_k must be >= 32 (one Philox word per 32 weights), got {block_k}")
    _check_precision(input_precision)
    mode, s, stride_sn, thr, mk, stride_mn, bits, stride_bn = _mask_source(
        _shape_only(n, k, dy.device), mask, scores, threshold)
    dx = torch.empty((m_rows, k), dtype=dy.dtype, device=dy.device)
    if dx.numel():
        grid = (triton.cdiv(m_rows, block_m) * triton.cdiv(k, block_k),)
        _seeded_dx_kernel[grid](
            dy, s, thr, mk, bits, dx, m_rows, n, k, seed, cpr, _tile_scale(scale, weight_dtype),
            dy.stride(0), dy.stride(1), stride_sn, stride_mn, stride_bn, dx.stride(0), dx.stride(1),
            MASK_MODE=mode, W_BF16=weight_dtype == torch.bfloat16, UPCAST=_upcast(dy.dtype, weight_dtype),
            INPUT_PRECISION=input_precision, BLOCK_K=block_k, BLOCK_M=block_m, BLOCK_N=block_n,
            num_warps=num_warps, num_stages=num_stages,
        )
    return dx


def seeded_linear_dscores(
    dy: torch.Tensor,
    x: torch.Tensor,
    seed: int,
    scale: float,
    scores: torch.Tensor,
    *,
    weight_dtype: torch.dtype = torch.float32,
    write_grad: bool = True,
    lr: float | None = None,
    momentum_buffer: torch.Tensor | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    input_precision: str = "ieee",
    block_n: int = 64,
    block_k: int = 64,
    block_m: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor | None:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) with W regenerated (+ fused SGD step); as ``masked_linear_dscores``."""
    _check_2d("dy", dy, None, _FLOATS)
    _check_2d("x", x, (dy.shape[0], x.shape[1]), _FLOATS)
    n, k = dy.shape[1], x.shape[1]
    cpr = _check_seeded(seed, scale, n, k, weight_dtype)
    _check_2d("scores", scores, (n, k), (torch.float32,))
    if scores.stride(1) != 1:
        raise ValueError(f"scores must be contiguous along K, got strides {scores.stride()}")
    _check_tiles(block_n=block_n, block_k=block_k, block_m=block_m)
    if block_k < 32:
        raise ValueError(f"block_k must be >= 32 (one Philox word per 32 weights), got {block_k}")
    _check_precision(input_precision)
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
    ds = torch.empty((n, k), dtype=torch.float32, device=dy.device) if write_grad else None
    buf = momentum_buffer if momentum_buffer is not None else scores
    grid = (triton.cdiv(n, block_n) * triton.cdiv(k, block_k),)
    _seeded_dscores_kernel[grid](
        dy, x, scores, scores if ds is None else ds, buf, dy.shape[0], n, k, seed, cpr,
        _tile_scale(scale, weight_dtype),
        float(lr or 0.0), float(momentum), float(weight_decay),
        dy.stride(0), dy.stride(1), x.stride(0), x.stride(1), scores.stride(0),
        0 if ds is None else ds.stride(0), buf.stride(0),
        WRITE_GRAD=write_grad, SGD=sgd, HAS_BUF=momentum_buffer is not None,
        W_BF16=weight_dtype == torch.bfloat16, UPCAST=_upcast(dy.dtype, x.dtype),
        INPUT_PRECISION=input_precision, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_M=block_m,
        num_warps=num_warps, num_stages=num_stages,
    )
    return ds
