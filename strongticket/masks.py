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

On the CPU the selection runs in numpy, whose comparisons and partial sorts are several times faster than torch's
there (``np.partition`` 1.6 ms against ``torch.kthvalue`` 16 ms for 2^20 scores on one core): the k-th largest bit
pattern by introselect. :class:`WindowTopK` re-selects a search's masks step after step: the scores move a little
per step, so the new threshold is found among the few scores in a window around the last one, proved exact by
counting the scores above the window (a full selection whenever the count says it is not inside).
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
    "KEEP_ALL_TIES",
    "WindowTopK",
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

    On the CPU numpy's introselect; elsewhere a radix select: histogram of the top ``_RADIX_BITS`` magnitude bits,
    pick the bin holding the k-th largest, then take the exact order statistic among that bin's candidates only.
    """
    n = bits.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if bits.device.type == "cpu":
        return torch.tensor(_kth_largest_np(bits.numpy(), k), dtype=torch.int32)
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
    if bits.device.type == "cpu":
        if not 1 <= k <= bits.numel():
            raise ValueError(f"k must be in [1, {bits.numel()}], got {k}")
        b = bits.numpy()
        tau, cut = _threshold_np(b, k, _kth_largest_np(b, k))
        return torch.from_numpy(threshold_mask_np(b, tau, cut))
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


KEEP_ALL_TIES = 2**62  # the tie cut of a threshold that keeps every score equal to τ


def _kth_largest_np(bits: np.ndarray, k: int) -> int:
    n = bits.size
    return int(np.partition(bits, n - k)[n - k])


def _threshold_np(bits: np.ndarray, k: int, tau: int) -> tuple[int, int]:
    """(τ, cut) of the top ``k`` of ``bits`` given its k-th largest value τ: cut is the flat index of the last
    score equal to τ that is kept (ties by index), :data:`KEEP_ALL_TIES` when all of them are."""
    at_or_above = np.count_nonzero(bits >= tau)
    if at_or_above == k:
        return tau, KEEP_ALL_TIES
    tied = np.flatnonzero(bits == tau)
    return tau, int(tied[k - (at_or_above - tied.size) - 1])


def threshold_mask_np(bits: np.ndarray, tau: int, cut: int) -> np.ndarray:
    """The bool mask of a threshold on |S| bit patterns: ``bits`` > τ, or == τ at a flat index <= ``cut``."""
    mask = bits >= tau
    start = max(cut + 1, 0)
    if start < bits.size:
        tail = mask[start:]
        tail &= bits[start:] != tau
    return mask


class WindowTopK:
    """Exact top-k thresholds (τ, cut) of a group of CPU float32 score tensors, one call per optimizer step.

    The first call (and any call after the group or k changed) selects in full with ``np.partition``. Later calls
    look only at the scores whose |S| bits lie in a window [lo, hi) around the previous τ: with c_hi the number
    of scores at or above hi (counted exactly), τ lies in the window iff c_hi < k <= c_hi + (scores in it), and is
    then the (k − c_hi)-th largest of them; otherwise the call selects in full. The window's half-width adapts to
    how far τ moves (:meth:`_adapt`; quadrupled on a miss). Same rows as ``ops.topk_thresholds`` for one slot: per
    tensor (τ, cut − its offset).

    Where the compiled CPU loops run (``ops._cpu.WindowSelect``), the whole call is one pass and a quickselect in
    C: it keeps the |S| bits and flags every score whose old or new bits lie in the window or that crossed it —
    the only places where the mask can have changed: :attr:`changed` lists them (flat indices in the group,
    ascending; None after a full selection or on the numpy route).
    """

    def __init__(self) -> None:
        self._shape: tuple | None = None
        self._tau = 0
        self._span = 0
        self._bits = self._work = self._flags = np.empty(0)
        self._compiled = None
        self.changed: np.ndarray | None = None
        self.full_selections = 0  # how often the window missed (or there was none): for tests and benchmarks

    def __deepcopy__(self, memo: dict) -> WindowTopK:
        return WindowTopK()  # a cache of the last selection: a copy (bake, deepcopy of a model) starts afresh

    def __getstate__(self) -> dict:
        return WindowTopK().__dict__

    def thresholds(self, scores: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        fast = self._fast(scores, k)
        return fast if fast is not None else self._thresholds(scores, k)

    def _fast(self, scores: Sequence[torch.Tensor], k: int) -> torch.Tensor | None:
        """The usual call, with the least Python: same group and k, compiled loops, τ found in the window."""
        compiled = self._compiled
        if compiled is None or not self._span or self._shape[1] != k or len(scores) != len(self._shape[0]):
            return None
        for s, numel in zip(scores, self._shape[0]):
            if not (s.is_cpu and s.dtype is torch.float32 and s.is_contiguous() and s.numel() == numel):
                return None
        lo = max(self._tau - self._span, 0)
        found = compiled(scores, lo, min(self._tau + self._span, 2**31 - 1), k, KEEP_ALL_TIES)
        if found is None:  # the general path selects in full (its bits are the new ones already)
            self._span *= 4
            self.changed = None
            return self._rows(*self._full(k))
        self.changed = compiled.flagged[:int(compiled.out[2])]
        self._adapt(found[0], self.changed.size)
        return self._rows(*found)

    def _rows(self, tau: int, cut: int) -> torch.Tensor:
        rows = np.empty((len(self._shape[0]), 2), dtype=np.int64)
        rows[:, 0] = tau
        rows[:, 1] = cut - self._offsets
        return torch.from_numpy(rows)

    def _thresholds(self, scores: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        from .ops import _cpu

        flats = [s.detach().reshape(-1).contiguous() for s in scores]
        for flat in flats:
            if flat.dtype is not torch.float32 or not flat.is_cpu:
                raise ValueError(f"WindowTopK needs float32 CPU scores, got {flat.dtype} on {flat.device}")
        numels = tuple(f.numel() for f in flats)
        n = sum(numels)
        if not 1 <= k <= n:
            raise ValueError(f"k must be in [1, {n}], got {k}")
        if self._shape != (numels, k):
            self._shape, self._span = (numels, k), 0
            self._offsets = np.cumsum((0, *numels[:-1]), dtype=np.int64)
            self._compiled = _cpu.WindowSelect(numels) if _cpu.usable(*flats, same_size=False) else None
            self._bits = self._compiled.bits if self._compiled is not None else np.empty(n, dtype=np.int32)
            self._work, self._flags = np.empty(0, dtype=np.int32), np.empty(0, dtype=bool)  # numpy route: on use
        self.changed, found = None, None  # the compiled pass runs in _fast; here the numpy route (no change list)
        self._fill_bits(flats)
        if self._span:
            found = self._in_window(k)
        if found is None:
            self._span *= 4
            found = self._full(k)
        return self._rows(*found)

    def _fill_bits(self, flats: list[torch.Tensor]) -> None:
        offset = 0
        for flat in flats:
            np.bitwise_and(flat.view(torch.int32).numpy(), 0x7FFFFFFF, out=self._bits[offset:offset + flat.numel()])
            offset += flat.numel()

    def _window(self) -> tuple[int, int]:
        lo = max(self._tau - self._span, 0)
        return lo, min(self._tau + self._span, 2**31 - 1)

    def _adapt(self, tau: int, in_window: int) -> None:
        """Re-centre the window on τ; widen it when τ moved by more than half of it, narrow it while it holds
        more than 1/512 of the scores (and 256) and τ moved by less than a quarter."""
        moved = abs(tau - self._tau)
        if 2 * moved > self._span:
            self._span *= 2
        elif in_window > max(self._bits.size // 512, 256) and moved < self._span // 4:
            self._span = max(self._span // 2, 1)
        self._tau = tau

    def _full(self, k: int) -> tuple[int, int]:
        self.full_selections += 1
        self.changed = None
        bits = self._bits
        n = bits.size
        margin = max(n // 256, 1)
        below, at, above = max(n - k - margin, 0), n - k, min(n - k + margin, n - 1)
        part = np.partition(bits, sorted({below, at, above}))
        tau = int(part[at])
        self._tau, self._span = tau, max(tau - int(part[below]), int(part[above]) - tau, self._span, 1)
        return _threshold_np(bits, k, tau)

    def _in_window(self, k: int) -> tuple[int, int] | None:
        """The numpy route (no compiled loops): window membership by two integer passes, no change list."""
        bits = self._bits
        if self._work.size != bits.size:
            self._work, self._flags = np.empty(bits.size, dtype=np.int32), np.empty(bits.size, dtype=bool)
        lo, hi = self._window()
        shifted = np.subtract(bits, np.int32(lo), out=self._work)  # no overflow: bits and lo in [0, 2^31)
        where = np.flatnonzero(np.less(shifted.view(np.uint32), np.uint32(hi - lo), out=self._flags))
        below = np.count_nonzero(np.less(shifted, 0, out=self._flags))
        at_or_above_hi = bits.size - below - where.size
        if not at_or_above_hi < k <= at_or_above_hi + where.size:
            return None
        values = bits[where]
        rank = values.size - (k - at_or_above_hi)  # ascending position of τ among the window's scores
        tau = int(np.partition(values, rank)[rank])
        self._adapt(tau, values.size)
        at_or_above = at_or_above_hi + np.count_nonzero(values >= tau)
        if at_or_above == k:
            return tau, KEEP_ALL_TIES
        tied = where[values == tau]
        return tau, int(tied[k - (at_or_above - tied.size) - 1])


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
