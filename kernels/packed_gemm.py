"""Weightless inference GEMV/GEMM: y = scale · x (Σ ⊙ M)ᵀ (+ b) from packed sign and mask bits, no dense weight.

A signed-constant ticket layer is W ⊙ M with W = ±c (c = gain/√fan, one fp32 constant per layer), so
W ⊙ M = c · (Σ ⊙ M) with Σ ∈ {−1, +1}: the kernels build the ±1/0 tile in registers from two bits per weight,
multiply it with x in fp32 accumulation and apply c (and the bias) in the fp32 epilogue. ±1 and 0 are exact in
bf16, so a bf16 ``tl.dot`` loses nothing on the weight side.

Inputs (N = out features, K = in features, n_words = ⌈K/32⌉; bit j of word w of row n is element (n, 32w + j),
the layout of ``strongticket.ops.pack_bits``; int32 words, read as unsigned bits):
  x          (M, K) fp32/bf16, M = batch 1…256 (any M works)
  mask_bits  (N, n_words) int32, 1 = kept
  sign_bits  (N, n_words) int32, 1 = negative                      [2-bit format]
  or seed    int64 Philox stream seed (``random.stream_seed``)       [1 bit + seed: signs regenerated in-kernel]
  scale      fp32 c;  bias (N,) fp32/bf16 optional;  y (M, N) in x.dtype
Seeded signs follow ``strongticket.random.sign_bits``: element (n, k) is bit k % 32 of word (k % 128) // 32 of
counter n·⌈K/128⌉ + k // 128 (one ``tl.randint4x`` call per 128 weights, kernels.md §5.2), so the sign word w of
a row *is* Philox word w % 4 of counter w // 4: the 2-bit file stores exactly the words the seed regenerates.

Bytes per weight read: 0.25 (2-bit) or 0.125 (seed), vs 2 for dense bf16 (kernels.md §6.1: ≈ 7× / 2–6× floor
at batch 1). FLOPs 2·M·N·K. Two kernels:
  GEMV (M < ``gemv_max_batch``): one program per (row tile, batch row), ``tl.sum`` over K — no tensor cores,
       no 16-row padding of a batch of 1.
  GEMM: swap-AB tiles yᵀ[BLOCK_N, BLOCK_M] = (Σ⊙M)[BLOCK_N, BLOCK_K] · xᵀ[BLOCK_K, BLOCK_M] with ``tl.dot``.
Under ``TRITON_INTERPRET=1`` bf16 dot operands are upcast to fp32 (the interpreter's bf16 ``tl.dot`` is wrong).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import device_arch, device_sms, dot_class, gemm_tiles, interpreting, launch, resolve_precision

__all__ = ["packed_linear", "sign_tile_words"]

_MAX_COUNTERS = 2**31
_MAX_SEED = 2**63


# Sign tile of rows ``rows`` ([BLOCK_R] int32) and columns k0 … k0 + BLOCK_K − 1 of a weight with R rows and
# cpr = ⌈K/128⌉ counters per row: int32 [BLOCK_R, BLOCK_K], 1 = negative. k0 must be a multiple of
# min(BLOCK_K, 128) (it is a multiple of BLOCK_K in every caller). BLOCK_K >= 128: one randint4x per 128 weights
# (join the 4 words); BLOCK_K in {32, 64}: one call per 32-bit word, the word picked by column.
@triton.jit
def _philox_sign_tile(seed, rows, k0, R, cpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    safe_row = tl.where(rows < R, rows, 0)  # counters past the edge would overflow int32: clamp, masked later
    if BLOCK_K >= 128:
        GROUPS: tl.constexpr = BLOCK_K // 128
        group = k0 // 128 + tl.arange(0, GROUPS)
        safe_group = tl.where(group < cpr, group, 0)
        counters = safe_row[:, None] * cpr + safe_group[None, :]  # [BLOCK_R, GROUPS] int32
        w0, w1, w2, w3 = tl.randint4x(seed, counters)
        # join appends the new axis last: join(join(w0, w2), join(w1, w3)) flattens as w0, w1, w2, w3
        words = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), (BLOCK_R, GROUPS * 4))
    else:
        NW: tl.constexpr = BLOCK_K // 32
        widx = k0 // 32 + tl.arange(0, NW)  # absolute word index along K
        group = widx // 4
        safe_group = tl.where(group < cpr, group, 0)
        counters = safe_row[:, None] * cpr + safe_group[None, :]  # [BLOCK_R, NW]
        w0, w1, w2, w3 = tl.randint4x(seed, counters)
        which = (widx % 4)[None, :]
        words = tl.where(which == 0, w0, tl.where(which == 1, w1, tl.where(which == 2, w2, w3)))
    # uint32 >> is logical; shift amounts < 32 (a shift >= 32 is poison on the GPU)
    bits = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1
    return tl.reshape(bits, (BLOCK_R, BLOCK_K)).to(tl.int32)


# Bits of packed int32 words (R, n_words) for rows ``rows`` and columns k0 … k0 + BLOCK_K − 1: int32
# [BLOCK_R, BLOCK_K] of 0/1 (0 outside the array). k0 is a multiple of 32.
@triton.jit
def _word_bits_tile(ptr, rows, k0, R, n_words, stride_r, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    NW: tl.constexpr = BLOCK_K // 32
    rw = k0 // 32 + tl.arange(0, NW)
    words = tl.load(ptr + rows.to(tl.int64)[:, None] * stride_r + rw[None, :],
                    mask=(rows[:, None] < R) & (rw[None, :] < n_words), other=0)  # [BLOCK_R, NW] int32
    bits = (words[:, :, None] >> tl.arange(0, 32)[None, None, :]) & 1  # arithmetic >> on int32: & 1 keeps the bit
    return tl.reshape(bits, (BLOCK_R, BLOCK_K))


# ±1/0 fp32 tile of Σ ⊙ M at rows rn [BLOCK_N], columns k0 … (zero past K).
@triton.jit
def _unit_tile(mask_ptr, sign_ptr, rn, k0, N, K, n_words, stride_mn, stride_sn, seed, cpr,
               SEEDED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rk = k0 + tl.arange(0, BLOCK_K)
    keep = _word_bits_tile(mask_ptr, rn, k0, N, n_words, stride_mn, BLOCK_N, BLOCK_K)
    if SEEDED:
        neg = _philox_sign_tile(seed, rn, k0, N, cpr, BLOCK_N, BLOCK_K)
    else:
        neg = _word_bits_tile(sign_ptr, rn, k0, N, n_words, stride_sn, BLOCK_N, BLOCK_K)
    keep = (keep != 0) & (rk[None, :] < K)
    return tl.where(keep, tl.where(neg != 0, -1.0, 1.0), 0.0)


# x: (M, K) fp32/bf16; mask/sign words (N, ⌈K/32⌉) int32 (sign unused when SEEDED); bias (N,); y: (M, N).
# grid (cdiv(N, BLOCK_N), M): one batch row per program, acc [BLOCK_N] fp32 by tl.sum over K tiles.
@triton.jit
def _packed_gemv_kernel(
    x_ptr, mask_ptr, sign_ptr, bias_ptr, y_ptr,
    M, N, K, n_words, seed, cpr, scale,
    stride_xm, stride_xk, stride_mn, stride_sn, stride_ym, stride_yn,
    SEEDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    m = tl.program_id(1).to(tl.int64)  # index × stride reaches 2^31 on large layers: 64-bit addresses
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        w = _unit_tile(mask_ptr, sign_ptr, rn, k0, N, K, n_words, stride_mn, stride_sn, seed, cpr,
                       SEEDED, BLOCK_N, BLOCK_K)
        xk = tl.load(x_ptr + m * stride_xm + rk.to(tl.int64) * stride_xk, mask=rk < K, other=0.0).to(tl.float32)
        acc += tl.sum(w * xk[None, :], axis=1)
    acc = acc * scale
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + rn.to(tl.int64) * stride_yn, acc.to(y_ptr.dtype.element_ty), mask=rn < N)


# x: (M, K) fp32/bf16; mask/sign words (N, ⌈K/32⌉) int32; bias (N,); y: (M, N) x.dtype.
# Tile acc = yᵀ[BLOCK_N, BLOCK_M] = (Σ⊙M) xᵀ, fp32; epilogue · scale (+ bias).
@triton.jit
def _packed_gemm_kernel(
    x_ptr, mask_ptr, sign_ptr, bias_ptr, y_ptr,
    M, N, K, n_words, seed, cpr, scale,
    stride_xm, stride_xk, stride_mn, stride_sn, stride_ym, stride_yn,
    SEEDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_m  # batch tiles vary fastest: CTAs sharing a bit tile run together (L2 reuse)
    pid_n = pid // num_m
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rm64 = rm.to(tl.int64)  # index × stride reaches 2^31 on large batches: 64-bit addresses
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        w = _unit_tile(mask_ptr, sign_ptr, rn, k0, N, K, n_words, stride_mn, stride_sn, seed, cpr,
                       SEEDED, BLOCK_N, BLOCK_K)
        xt = tl.load(x_ptr + rk.to(tl.int64)[:, None] * stride_xk + rm64[None, :] * stride_xm,
                     mask=(rk[:, None] < K) & (rm[None, :] < M), other=0.0)  # [BLOCK_K, BLOCK_M]
        if UPCAST:
            acc = tl.dot(w, xt.to(tl.float32), acc, input_precision=INPUT_PRECISION)
        else:
            acc = tl.dot(w.to(x_ptr.dtype.element_ty), xt, acc, input_precision=INPUT_PRECISION)
    acc = acc * scale
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[:, None]
    tl.store(y_ptr + rm64[None, :] * stride_ym + rn.to(tl.int64)[:, None] * stride_yn, acc.to(y_ptr.dtype.element_ty),
             mask=(rm[None, :] < M) & (rn[:, None] < N))


def _pow2(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {low}, got {value!r}")


def _words(name: str, t: torch.Tensor, n: int, n_words: int) -> None:
    if t.dim() != 2 or tuple(t.shape) != (n, n_words) or t.dtype != torch.int32 or t.stride(1) != 1:
        raise ValueError(f"{name} must be int32 of shape ({n}, {n_words}) contiguous along words, got "
                         f"{tuple(t.shape)} {t.dtype} strides {tuple(t.stride())}")


def packed_linear(
    x: torch.Tensor,
    mask_bits: torch.Tensor,
    scale: float,
    *,
    sign_bits: torch.Tensor | None = None,
    seed: int | None = None,
    bias: torch.Tensor | None = None,
    input_precision: str | None = None,
    gemv_max_batch: int = 16,
    gemv_block_n: int = 16,
    gemv_block_k: int = 512,
    block_n: int | None = None,
    block_m: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """y = scale · x (Σ ⊙ M)ᵀ (+ bias), (M, N) in x.dtype, from ``mask_bits`` and ``sign_bits`` or ``seed``.

    ``x``: (M, K) fp32/bf16; ``mask_bits`` / ``sign_bits``: (N, ⌈K/32⌉) int32; ``seed``: stream seed in
    [0, 2**63) (signs regenerated by Philox, needs N·⌈K/128⌉ < 2**31); exactly one of sign_bits / seed.
    Batches below ``gemv_max_batch`` run the GEMV kernel (4 warps), others the tl.dot GEMM (tiles None: the
    dispatch's choice, ``tiles.gemm_tiles("packed_gemm", ...)``).
    """
    if x.dim() != 2 or x.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"x must be 2-D float32/bfloat16, got {tuple(x.shape)} {x.dtype}")
    m_rows, k = x.shape
    if k < 1:
        raise ValueError(f"x must have at least one feature (K >= 1), got K={k}")
    n_words = triton.cdiv(k, 32)
    if mask_bits.dim() != 2:
        raise ValueError(f"mask_bits must be 2-D (N, {n_words}) int32, got {tuple(mask_bits.shape)}")
    n = mask_bits.shape[0]
    _words("mask_bits", mask_bits, n, n_words)
    if (sign_bits is None) == (seed is None):
        raise ValueError("give exactly one of sign_bits (2-bit format) and seed (signs regenerated in-kernel)")
    cpr = triton.cdiv(k, 128)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
            raise ValueError(f"seed must be an int in [0, 2**63) (a stream seed), got {seed!r}")
        if n * cpr > _MAX_COUNTERS:
            raise ValueError(f"a ({n}, {k}) weight needs {n * cpr} Philox counters, one stream holds at most 2**31")
    else:
        _words("sign_bits", sign_bits, n, n_words)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale == scale:
        raise ValueError(f"scale must be a finite float (the layer's fp32 constant), got {scale!r}")
    if bias is not None and (bias.shape != (n,) or bias.dtype not in (torch.float32, torch.bfloat16)):
        raise ValueError(f"bias must have shape ({n},) and dtype float32/bfloat16, got {tuple(bias.shape)} "
                         f"{bias.dtype}")
    dot = dot_class(x.dtype, resolve_precision(input_precision))
    precision = "tf32" if dot == "16bit" else dot  # 16-bit dots ignore it: compile them all as one
    if isinstance(gemv_max_batch, bool) or not isinstance(gemv_max_batch, int) or gemv_max_batch < 0:
        raise ValueError(f"gemv_max_batch must be an int >= 0, got {gemv_max_batch!r}")
    _pow2("gemv_block_n", gemv_block_n, 1)
    _pow2("gemv_block_k", gemv_block_k, 32)
    t = gemm_tiles("packed_gemm", device_arch(x.device), dot, m_rows, n, device_sms(x.device)).replace(
        block_n=block_n, block_m=block_m, block_k=block_k, num_warps=num_warps, num_stages=num_stages)
    for name in ("block_n", "block_m"):
        _pow2(name, getattr(t, name), 16)
    _pow2("block_k", t.block_k, 32)
    y = torch.empty((m_rows, n), dtype=x.dtype, device=x.device)
    if not y.numel():
        return y
    sign = mask_bits if sign_bits is None else sign_bits
    args = (x, mask_bits, sign, mask_bits if bias is None else bias, y, m_rows, n, k, n_words,
            0 if seed is None else seed, cpr, float(scale),
            x.stride(0), x.stride(1), mask_bits.stride(0), sign.stride(0), y.stride(0), y.stride(1))
    if m_rows < gemv_max_batch:
        launch(_packed_gemv_kernel, (triton.cdiv(n, gemv_block_n), m_rows), x.device, *args,
               SEEDED=seed is not None, HAS_BIAS=bias is not None, BLOCK_N=gemv_block_n, BLOCK_K=gemv_block_k,
               num_warps=4)
    else:
        launch(_packed_gemm_kernel, (triton.cdiv(m_rows, t.block_m) * triton.cdiv(n, t.block_n),), x.device, *args,
               SEEDED=seed is not None, HAS_BIAS=bias is not None,
               UPCAST=interpreting() and x.dtype == torch.bfloat16, INPUT_PRECISION=precision,
               BLOCK_N=t.block_n, BLOCK_M=t.block_m, BLOCK_K=t.block_k, num_warps=t.num_warps,
               num_stages=t.num_stages)
    return y


# seed: int64 stream seed; out: (rows, n_words) int32 sign words, word w of row r = Philox word w % 4 of
# counter r·cpr + w // 4 (bits past ``cols`` zeroed). 1-D grid over (row tile, column tile), column tiles fastest.
@triton.jit
def _sign_words_kernel(out_ptr, seed, rows, cols, n_words, cpr, stride_or,
                       BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    col_tiles = tl.cdiv(cols, BLOCK_K)
    rr = (tl.program_id(0) // col_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    k0 = (tl.program_id(0) % col_tiles) * BLOCK_K
    bits = _philox_sign_tile(seed, rr, k0, rows, cpr, BLOCK_R, BLOCK_K)
    rk = k0 + tl.arange(0, BLOCK_K)
    bits = tl.where(rk[None, :] < cols, bits, 0)
    packed = tl.reshape(bits, (BLOCK_R, BLOCK_K // 32, 32)) << tl.arange(0, 32)[None, None, :]
    words = tl.sum(packed, axis=2)  # distinct powers of two: the sum is the bitwise or
    rw = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    tl.store(out_ptr + rr.to(tl.int64)[:, None] * stride_or + rw[None, :], words,
             mask=(rr[:, None] < rows) & (rw[None, :] < n_words))


def sign_tile_words(seed: int, rows: int, cols: int, *, device: torch.device | str = "cpu",
                    block_r: int = 16, block_k: int = 128) -> torch.Tensor:
    """(rows, ⌈cols/32⌉) int32 sign words regenerated in-kernel (the tile helper the GEMMs use), 1 = negative.

    Equals ``ops.pack_bits(random.sign_bits(...))``; ``block_k`` 32, 64 or >= 128 exercises both Philox paths.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63) (a stream seed), got {seed!r}")
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    cpr = triton.cdiv(cols, 128)
    if rows * cpr > _MAX_COUNTERS:
        raise ValueError(f"a ({rows}, {cols}) weight needs {rows * cpr} Philox counters, one stream holds 2**31")
    _pow2("block_r", block_r, 1)
    _pow2("block_k", block_k, 32)
    n_words = triton.cdiv(cols, 32)
    out = torch.empty((rows, n_words), dtype=torch.int32, device=device)
    grid = (triton.cdiv(rows, block_r) * triton.cdiv(cols, block_k),)
    launch(_sign_words_kernel, grid, out.device, out, seed, rows, cols, n_words, cpr, out.stride(0),
           BLOCK_R=block_r, BLOCK_K=block_k)
    return out
