"""Top-k mask selection over popup scores: exact count, deterministic ties, no full sort.

A mask at density d over n scores keeps exactly k = ⌈d·n⌉ entries: those with the largest |S|, ties at the
threshold broken by index (lower flat index wins), so every run, rank and device picks the same mask.

The density is read as the shortest decimal that round-trips the float (``repr``), so ``0.3`` means 3/10
exactly and ⌈0.3·10⌉ = 3 — plain float arithmetic would give 0.3·10 = 3.0000000000000004 and keep 4.

Selection works on the int32 bit patterns of |S|: for non-negative IEEE floats the bit patterns order like
the values, so the threshold τ is found by a radix select (an 11-bit histogram of the high bits, then an exact
k-th value among the few candidates of the boundary bin) — O(n), no sort. The original edge-popup code
(allenai/hidden-networks) sorts every layer's scores on every forward; ``benchmarks/bench_topk.py`` compares.

Global selection concatenates the scores of all layers (in layer order) and applies one threshold; ties are
broken by the position in that concatenation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

__all__ = [
    "keep_count",
    "validate_density",
    "magnitude_bits",
    "kth_largest",
    "topk_mask",
    "global_topk_masks",
    "pack_mask",
    "unpack_mask",
]

_RADIX_BITS = 11  # 2048 bins: fits one histogram; the boundary bin holds ~n/1000 scores for Gaussian |S|
_RADIX_SHIFT = 31 - _RADIX_BITS


def validate_density(density: float, field: str = "density") -> float:
    """Return ``density`` as a float, or raise ``ValueError`` unless it lies in (0, 1]."""
    if isinstance(density, bool) or not isinstance(density, (int, float)):
        raise ValueError(f"{field} must be a number in (0, 1], got {density!r}")
    d = float(density)
    if not (0.0 < d <= 1.0):  # also rejects NaN
        raise ValueError(f"{field} must be in (0, 1], got {density!r}")
    return d


def keep_count(density: float, n: int) -> int:
    """Number of weights kept at ``density`` over ``n`` weights: ⌈d·n⌉ with d the decimal that ``repr`` shows."""
    d = validate_density(density)
    if n < 1:
        raise ValueError(f"number of weights must be >= 1, got {n}")
    return math.ceil(Fraction(repr(d)) * n)


def magnitude_bits(scores: torch.Tensor) -> torch.Tensor:
    """int32 bit patterns of |scores| (flattened); they order exactly like the magnitudes."""
    if scores.dtype != torch.float32:
        scores = scores.float()
    return scores.reshape(-1).view(torch.int32) & 0x7FFFFFFF


def kth_largest(bits: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value (a 0-d int32 tensor) of a 1-D tensor of non-negative int32 ``bits``.

    Radix select: histogram of the top ``_RADIX_BITS`` magnitude bits, pick the bin holding the k-th
    largest, then take the exact order statistic among that bin's candidates only.
    """
    n = bits.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    high = bits >> _RADIX_SHIFT
    hist = torch.bincount(high, minlength=1 << _RADIX_BITS)
    at_or_above = hist.flip(0).cumsum(0)  # at_or_above[j]: count in the top j+1 bins
    j = torch.searchsorted(at_or_above, torch.tensor([k], device=bits.device)).squeeze(0)
    boundary = (1 << _RADIX_BITS) - 1 - j
    above = at_or_above[j] - hist[boundary]
    candidates = bits[high == boundary]
    # rank from the top within the boundary bin is k - above; kthvalue counts from the bottom
    rank = candidates.numel() - (k - above)
    return torch.kthvalue(candidates, int(rank) + 1).values


def _mask_from_bits(bits: torch.Tensor, k: int) -> torch.Tensor:
    """Flat bool mask keeping exactly k of ``bits``: all at or above τ, less the highest-index ties at τ."""
    tau = kth_largest(bits, k)
    mask = bits >= tau
    excess = int(mask.sum()) - k  # > 0 only when several scores equal τ exactly
    if excess > 0:
        tied = torch.nonzero(bits == tau).squeeze(1)
        mask[tied[tied.numel() - excess:]] = False
    return mask


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of ``scores``' shape keeping the ``k`` largest |scores| (ties by flat index)."""
    return _mask_from_bits(magnitude_bits(scores), k).view(scores.shape)


def global_topk_masks(scores: Sequence[torch.Tensor], k: int) -> list[torch.Tensor]:
    """One threshold over all ``scores`` together: bool masks keeping ``k`` entries in total.

    Ties are broken by position in the concatenation (layer order, then flat index).
    """
    if len(scores) == 0:
        raise ValueError("global top-k needs at least one scores tensor, got none")
    flat = _mask_from_bits(torch.cat([magnitude_bits(s) for s in scores]), k)
    return [part.view(s.shape) for part, s in zip(flat.split([s.numel() for s in scores]), scores)]


def pack_mask(mask: torch.Tensor) -> np.ndarray:
    """Bit-pack a bool mask (flat order, least significant bit first) into uint8: 1 bit per weight."""
    return np.packbits(mask.detach().reshape(-1).cpu().numpy().astype(bool), bitorder="little")


def unpack_mask(packed: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask` for a mask of ``shape``; raises if the byte count does not fit."""
    n = math.prod(shape)
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (n + 7) // 8:
        raise ValueError(
            f"packed mask for shape {tuple(shape)} must be {(n + 7) // 8} uint8 bytes, "
            f"got {packed.size} of {packed.dtype}"
        )
    bits = np.unpackbits(packed, count=n, bitorder="little").astype(bool)
    return torch.from_numpy(bits).view(*shape)
