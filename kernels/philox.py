"""Triton kernels that regenerate Philox4x32-10 streams on the device, bit-exact with ``strongticket.random``.

Two kernels, each with a thin launcher:

- ``philox_words(seed, counters)``: the four words of ``tl.randint4x(seed, counters)`` as an ``(N, 4)`` int32
  tensor (uint32 bits; torch's uint32 support is partial, so words travel as int32 and may read negative).
- ``sign_bits(seed, rows, cols)``: the ``(rows, cols)`` sign pattern of a ``signed_constant`` weight, True =
  negative. One Philox call gives 128 signs (kernels.md 5.2, "Amortise Philox"): element (r, c) is bit
  ``c % 32`` of word ``(c % 128) // 32`` of counter ``r * ceil(cols / 128) + c // 128``.

``seed`` is the 64-bit stream seed of ``strongticket.random.stream_seed(seed, layer, kind)``; it is passed
through, not rebuilt here, so this file needs nothing from the package. Counters are int32 (< 2**31): int64
offsets fill the Philox counter differently across Triton versions (triton#6832).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import launch

__all__ = ["philox_words", "sign_bits"]

_MAX_COUNTERS = 2**31
# Stream seeds are below 2**58 (strongticket.random.stream_seed); int64 kernel arguments hold them.
_MAX_SEED = 2**63


# counters: (N,) int32 in [0, 2**31); out: (N, 4) int32, row i = randint4x(seed, counters[i]) bit-cast.
@triton.jit
def _philox_words_kernel(
    counters_ptr,  # *int32, (N,) contiguous
    out_ptr,  # *int32, (N, 4) contiguous
    seed,  # int64 stream seed: key words (seed & 0xffffffff, seed >> 32)
    n,  # number of counters N
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # offs · 4 may pass 2^31
    in_range = offs < n
    counters = tl.load(counters_ptr + offs, mask=in_range, other=0)
    w0, w1, w2, w3 = tl.randint4x(seed, counters)  # uint32 each
    # Interleaved stores (stride 4) keep the launcher's output a plain (N, 4) row-major tensor.
    tl.store(out_ptr + offs * 4 + 0, w0.to(tl.int32, bitcast=True), mask=in_range)
    tl.store(out_ptr + offs * 4 + 1, w1.to(tl.int32, bitcast=True), mask=in_range)
    tl.store(out_ptr + offs * 4 + 2, w2.to(tl.int32, bitcast=True), mask=in_range)
    tl.store(out_ptr + offs * 4 + 3, w3.to(tl.int32, bitcast=True), mask=in_range)


# out: (rows, cols) int8, 1 = negative; 1-D grid over (row tile, column tile), column tiles fastest;
# BLOCK_C % 128 == 0.
@triton.jit
def _sign_bits_kernel(
    out_ptr,  # *int8, (rows, cols)
    seed,  # int64 stream seed
    rows,
    cols,
    counters_per_row,  # ceil(cols / 128): one Philox call per 128 columns
    stride_or,  # row stride of out, in elements
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    GROUPS: tl.constexpr = BLOCK_C // 128  # Philox calls per row of the tile
    col_tiles = tl.cdiv(cols, BLOCK_C)
    pid_r, pid_c = tl.program_id(0) // col_tiles, tl.program_id(0) % col_tiles
    row = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)  # [BLOCK_R]
    group = pid_c * GROUPS + tl.arange(0, GROUPS)  # [GROUPS]
    row_ok = row < rows
    # Tiles past the edge would form counters beyond 2**31 - 1 (int32 overflow); their elements are masked on
    # store, so clamp them to row / group 0 rather than rely on wrap-around semantics on the device.
    safe_row = tl.where(row_ok, row, 0)
    safe_group = tl.where(group < counters_per_row, group, 0)
    counters = safe_row[:, None] * counters_per_row + safe_group[None, :]  # [BLOCK_R, GROUPS] int32
    w0, w1, w2, w3 = tl.randint4x(seed, counters)  # uint32 [BLOCK_R, GROUPS] each
    # tl.join appends a new last axis, so join(join(a, b), join(c, d)) flattens as a, c, b, d: feeding
    # (w0, w2), (w1, w3) gives w0, w1, w2, w3 along the last axis, the order of columns in a 128-wide group.
    words = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), (BLOCK_R, GROUPS, 4))
    # uint32 >> is logical; the shift amount stays < 32 (a shift >= 32 is poison on the GPU).
    bits = (words[:, :, :, None] >> tl.arange(0, 32)[None, None, None, :]) & 1  # [BLOCK_R, GROUPS, 4, 32]
    bits = tl.reshape(bits, (BLOCK_R, BLOCK_C))  # column c of the tile = bit c % 32 of word (c % 128) // 32
    col = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    out_ptrs = out_ptr + row.to(tl.int64)[:, None] * stride_or + col[None, :]  # rows × stride may pass 2^31
    tl.store(out_ptrs, bits.to(tl.int8), mask=row_ok[:, None] & (col[None, :] < cols))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63) (a stream seed), got {seed!r}")
    return seed


def philox_words(seed: int, counters: torch.Tensor, *, block: int = 1024) -> torch.Tensor:
    """``tl.randint4x(seed, counters)`` as an ``(N, 4)`` int32 tensor on ``counters.device``.

    ``counters``: any integer tensor with values in [0, 2**31), flattened to N. View the result as uint32
    (``.numpy().view(np.uint32)``) to compare with ``strongticket.random.random_words(...).T``.
    """
    seed = _check_seed(seed)
    if counters.dtype.is_floating_point or counters.dtype.is_complex or counters.dtype == torch.bool:
        raise ValueError(f"counters must be an integer tensor, got dtype {counters.dtype}")
    flat = counters.reshape(-1)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= _MAX_COUNTERS):
        raise ValueError(f"counters must be in [0, 2**31), got range [{int(flat.min())}, {int(flat.max())}]")
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 1, got {block}")
    flat = flat.to(torch.int32).contiguous()
    out = torch.empty((flat.numel(), 4), dtype=torch.int32, device=flat.device)
    if flat.numel():
        launch(_philox_words_kernel, (triton.cdiv(flat.numel(), block),), out.device, flat, out, seed, flat.numel(),
               BLOCK=block)
    return out


def sign_bits(
    seed: int,
    rows: int,
    cols: int,
    *,
    device: torch.device | str = "cpu",
    block_r: int = 16,
    block_c: int = 256,
) -> torch.Tensor:
    """``(rows, cols)`` bool sign pattern of stream ``seed``, True = negative; equals ``random.sign_bits``."""
    seed = _check_seed(seed)
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    counters_per_row = triton.cdiv(cols, 128)
    if rows * counters_per_row > _MAX_COUNTERS:
        raise ValueError(
            f"a ({rows}, {cols}) tensor needs {rows * counters_per_row} Philox counters, one stream holds at "
            f"most 2**31 (int32 offsets)"
        )
    if block_r < 1 or block_r & (block_r - 1):
        raise ValueError(f"block_r must be a power of two >= 1, got {block_r}")
    if block_c < 128 or block_c & (block_c - 1):
        raise ValueError(f"block_c must be a power of two >= 128, got {block_c}")
    out = torch.empty((rows, cols), dtype=torch.int8, device=device)
    grid = (triton.cdiv(rows, block_r) * triton.cdiv(cols, block_c),)
    launch(_sign_bits_kernel, grid, out.device, out, seed, rows, cols, counters_per_row, out.stride(0),
           BLOCK_R=block_r, BLOCK_C=block_c)
    return out.bool()
