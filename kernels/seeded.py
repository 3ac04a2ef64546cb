"""Seeded edge-popup GEMMs: the fused kernels of ``masked_linear`` with the frozen signed-constant weight
regenerated in registers from its Philox seed, so the weight tensor never exists on the device.

W[n, k] = −c if sign bit (n, k) else +c, c = gain/√fan (fp32, one per layer), sign bits from the stream
``seed`` exactly as ``strongticket.random.sign_bits`` (element (n, k) = bit k % 32 of word (k % 128) // 32 of
counter n·⌈K/128⌉ + k // 128). With x (M, K), S (N, K), mask M (N, K), dy (M, N):

    forward  y  = x (W ⊙ M)ᵀ (+ b)
    dx       dx = dy (W ⊙ M)
    dS       dS = (dyᵀ x) ⊙ W ⊙ sign(S)   (+ fused SGD-momentum step on S, torch.optim.SGD semantics)

Bit-exact twin of the stored-weight path: the launchers run the ``masked_linear`` kernels themselves with
``SEEDED=True`` (``_weight_tile`` instead of the W load); every tile holds the very values the stored kernel loads
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

from .masked_linear import _FLOATS, _check_2d, _dscores, _dx, _forward, _given, _Weight

__all__ = ["seeded_linear_forward", "seeded_linear_dx", "seeded_linear_dscores"]

_MAX_COUNTERS = 2**31
_MAX_SEED = 2**63


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


def _seeded_weight(like: torch.Tensor, seed: int, scale: float, n: int, k: int, cpr: int,
                   weight_dtype: torch.dtype) -> _Weight:
    """The W operand regenerated in the kernels: ``like`` stands in for the (never read) pointer, and a 4-byte
    zero-stride tensor viewed as (n, k) carries W's shape to the mask checks."""
    shape = torch.zeros(1, dtype=torch.float32, device=like.device).as_strided((n, k), (0, 0))
    return _Weight(like, 0, 0, shape, weight_dtype, True, seed, cpr, _tile_scale(scale, weight_dtype))


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
    input_precision: str | None = None,
    block_n: int | None = None,
    block_m: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = x (W ⊙ M)ᵀ (+ bias) with W = ±scale from stream ``seed``: (y (M, N) x.dtype, bit mask or None).

    Same arguments and tiles as ``masked_linear.masked_linear_forward`` with the weight replaced by
    (seed, scale, out_features, weight_dtype); block_k must be >= 32.
    """
    _check_2d("x", x, None, _FLOATS)
    k = x.shape[1]
    n = out_features
    cpr = _check_seeded(seed, scale, n, k, weight_dtype)
    w = _seeded_weight(x, seed, scale, n, k, cpr, weight_dtype)
    return _forward(x, w, mask, scores, threshold, bias, write_bits, input_precision,
                    _given(block_n, block_m, block_k, num_warps, num_stages))


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
    input_precision: str | None = None,
    block_k: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """dx = dy (W ⊙ M), (M, K) in dy.dtype, W regenerated; tiles as ``masked_linear.masked_linear_dx``."""
    _check_2d("dy", dy, None, _FLOATS)
    n = dy.shape[1]
    k = in_features
    cpr = _check_seeded(seed, scale, n, k, weight_dtype)
    w = _seeded_weight(dy, seed, scale, n, k, cpr, weight_dtype)
    return _dx(dy, w, mask, scores, threshold, input_precision,
               _given(block_n, block_m, block_k, num_warps, num_stages))


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
    input_precision: str | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    block_m: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor | None:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) with W regenerated (+ fused SGD step); as ``masked_linear_dscores``."""
    _check_2d("dy", dy, None, _FLOATS)
    _check_2d("x", x, (dy.shape[0], x.shape[1]), _FLOATS)
    n, k = dy.shape[1], x.shape[1]
    cpr = _check_seeded(seed, scale, n, k, weight_dtype)
    _check_2d("scores", scores, (n, k), (torch.float32,))
    if scores.stride(1) != 1:
        raise ValueError(f"scores must be contiguous along K, got strides {scores.stride()}")
    w = _seeded_weight(dy, seed, scale, n, k, cpr, weight_dtype)
    return _dscores(dy, x, w, scores, write_grad, lr, momentum_buffer, momentum, weight_decay, input_precision,
                    _given(block_n, block_m, block_k, num_warps, num_stages))
