"""Subset sums: the exact best subset per (output, input) pair by meet-in-the-middle, batched.

For each row p of ``values`` (P, n) and target t_p, find S ⊆ [n] minimising |Σ_{q∈S} v_pq − t_p|.
Meet in the middle (Horowitz & Sahni 1974): split the n values into halves of h1 = n//2 and h2 = n − h1,
enumerate the 2^h1 and 2^h2 half sums (a 0/1 matrix product), sort the second half per row and look up
t − s1 for every first-half sum s1 (batched ``torch.searchsorted``; the two neighbours of the insertion
point hold the nearest value); the winning half-subsets are recovered by exact equality of their sums.
Cost O(P · 2^(n/2) · n), memory bounded by processing rows in chunks.

Any candidate count: with ``exact`` = K < n, the search is exact over the first K candidates (index order) and
the others stay unused, so the result is the best subset of that prefix — never worse than the exact best over
any shorter prefix, which is what the calibrated block sizes promise (``widths``) — and its error
|Σ_S v − t| is returned for every row, never assumed. ``exact_limit`` chooses K per construction from a work
budget (half sums enumerated in all), so a construction's cost is known before it starts.

Shapes: values (P, n) float64, targets (P,) float64 → chosen (P, n) bool, sums (P,) float64 (Σ of the chosen
values, summed in index order). ``smallest_subset`` solves min |S| s.t. |Σ_S v − t| ≤ tol as a MILP
(``scipy.optimize.milp``), the surrogate of Pensia et al. (NeurIPS 2020, Exp. 1, which used Gurobi).
``coverage_error`` is sup_{z∈[lo,hi]} min_S |z − Σ_S v| for one block (exact, from the sorted 2^n sums).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MAX_VALUES", "WORK_BUDGET", "exact_limit", "best_subsets", "brute_force_subsets", "smallest_subset",
           "coverage_error", "subset_sum"]

# Largest exact search: 2^(n/2) half sums per row, n = 40 is a million per row.
MAX_VALUES = 40
# Smallest exact search ``exact_limit`` picks, whatever the instance count (2 · 2^10 half sums per row).
MIN_EXACT = 20
# Half sums ``exact_limit`` lets one construction enumerate: ~2-3 minutes of numpy on one core.
WORK_BUDGET = 1 << 31
# Half-sum elements held at once (float64): ~32 MB per buffer.
_CHUNK_ELEMENTS = 1 << 22


def _bits(n: int) -> np.ndarray:
    """(2^n, n) float64 0/1 matrix: row s is the binary expansion of s (bit q = value q in the subset)."""
    codes = np.arange(2**n, dtype=np.int64)[:, None]
    return ((codes >> np.arange(n, dtype=np.int64)) & 1).astype(np.float64)


def _half_sums(n: int) -> int:
    """Half sums MITM enumerates for one row of n candidates: 2^⌊n/2⌋ + 2^⌈n/2⌉."""
    return 2 ** (n // 2) + 2 ** (n - n // 2)


def exact_limit(instances: int, budget: int = WORK_BUDGET) -> int:
    """Largest K ≤ MAX_VALUES with instances · (2^⌊K/2⌋ + 2^⌈K/2⌉) ≤ ``budget``, but at least MIN_EXACT."""
    if isinstance(instances, bool) or not isinstance(instances, (int, np.integer)) or instances < 0:
        raise ValueError(f"instances must be an integer >= 0, got {instances!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
    k = MAX_VALUES
    while k > MIN_EXACT and instances * _half_sums(k) > budget:
        k -= 1
    return k


def _check(values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-D (pairs, candidates) array, got shape {values.shape}")
    if targets.shape != (values.shape[0],):
        raise ValueError(f"targets must have shape ({values.shape[0]},), got {targets.shape}")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(targets))):
        raise ValueError("values and targets must be finite")
    return values, targets


def subset_sum(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Σ of the chosen values per row, accumulated in index order (the order every caller uses)."""
    return np.where(chosen, values, 0.0).sum(axis=1)


def best_subsets(values: np.ndarray, targets: np.ndarray, exact: int = MAX_VALUES) -> tuple[np.ndarray, np.ndarray]:
    """Best subset per row by meet-in-the-middle: ``(chosen (P, n) bool, sums (P,))``.

    Exact over all n candidates when n ≤ ``exact``; otherwise exact over the first ``exact`` of them (module
    docstring). Sorting is numpy's; the batched binary search is ``torch.searchsorted`` (numpy has no row-batched
    one).
    """
    values, targets = _check(values, targets)
    if isinstance(exact, bool) or not isinstance(exact, (int, np.integer)) or not 1 <= exact <= MAX_VALUES:
        raise ValueError(f"exact must be an integer in [1, {MAX_VALUES}], got {exact!r}")
    p, n_all = values.shape
    chosen = np.zeros((p, n_all), dtype=bool)
    n = min(n_all, int(exact))
    values_all, values = values, values[:, :n]
    if p == 0 or n == 0:
        return chosen, np.zeros(p)
    h1 = n // 2
    h2 = n - h1
    bits1, bits2 = _bits(h1), _bits(h2)  # (2^h1, h1), (2^h2, h2)
    rows = max(1, _CHUNK_ELEMENTS // (2**h1 + 2**h2))
    for start in range(0, p, rows):
        stop = min(start + rows, p)
        r = np.arange(stop - start)[:, None]
        v = values[start:stop]
        need = targets[start:stop, None] - v[:, :h1] @ bits1.T  # (R, 2^h1): second-half sum each s1 wants
        s2 = v[:, h1:] @ bits2.T  # (R, 2^h2)
        s2_sorted = np.sort(s2, axis=1)
        need_sorted = np.sort(need, axis=1)  # sorted queries: cache-friendly lookups
        pos = torch.searchsorted(torch.from_numpy(s2_sorted), torch.from_numpy(need_sorted)).numpy()
        # The nearest second-half sum is one of the two neighbours of the insertion point.
        left = np.take_along_axis(s2_sorted, np.maximum(pos - 1, 0), axis=1)
        right = np.take_along_axis(s2_sorted, np.minimum(pos, 2**h2 - 1), axis=1)
        use_right = np.abs(right - need_sorted) < np.abs(left - need_sorted)
        found = np.where(use_right, right, left)
        col = np.abs(found - need_sorted).argmin(axis=1)[:, None]
        best_need, best_s2 = need_sorted[r, col], found[r, col]  # (R, 1) each
        # Recover the subset codes by exact equality with the unsorted sums (same float expressions).
        code1 = (need == best_need).argmax(axis=1)
        code2 = (s2 == best_s2).argmax(axis=1)
        chosen[start:stop, :h1] = bits1[code1].astype(bool)
        chosen[start:stop, h1:n] = bits2[code2].astype(bool)
    return chosen, subset_sum(values_all, chosen)


def brute_force_subsets(values: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive best subset per row (the oracle for :func:`best_subsets`); n ≤ 20."""
    values, targets = _check(values, targets)
    p, n = values.shape
    if n > 20:
        raise ValueError(f"candidates per pair must be in [0, 20] for brute force, got {n}")
    bits = _bits(n)  # (2^n, n)
    sums = values @ bits.T  # (P, 2^n)
    code = np.abs(sums - targets[:, None]).argmin(axis=1)
    chosen = bits[code].astype(bool)
    return chosen, subset_sum(values, chosen)


def smallest_subset(values: np.ndarray, target: float, tol: float) -> np.ndarray | None:
    """Smallest S with |Σ_S v − target| ≤ tol (MILP), as a bool (n,) mask; None if no subset is within tol."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if not tol > 0:
        raise ValueError(f"tol must be in (0, inf), got {tol}")
    n = values.size
    if n == 0:
        return np.zeros(0, dtype=bool) if abs(target) <= tol else None
    res = milp(
        c=np.ones(n),
        constraints=LinearConstraint(values[None, :], target - tol, target + tol),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
    )
    if res.status != 0 or res.x is None:
        return None
    chosen = res.x > 0.5
    # The solver's feasibility tolerance is ~1e-6 relative; re-check in exact arithmetic order.
    if abs(values[chosen].sum() - target) > tol * (1 + 1e-9):
        return None
    return chosen


def coverage_error(values: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> float:
    """sup_{z∈[lo, hi]} min_S |z − Σ_S v| for one block of n ≤ 24 values (exact, sorted subset sums)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size > 24:
        raise ValueError(f"values must be 1-D with at most 24 entries, got shape {values.shape}")
    if not lo < hi:
        raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")
    sums = np.sort(_bits(values.size) @ values)
    err = max(sums[0] - lo, hi - sums[-1], 0.0)
    inside = (sums[1:] >= lo) & (sums[:-1] <= hi)
    if np.any(inside):
        left = np.maximum(sums[:-1][inside], lo)
        right = np.minimum(sums[1:][inside], hi)
        # A gap meeting [lo, hi]: the worst z is its midpoint, clipped to the interval.
        mid = np.clip((sums[:-1][inside] + sums[1:][inside]) / 2, left, right)
        gap_err = np.minimum(mid - sums[:-1][inside], sums[1:][inside] - mid)
        err = max(err, float(gap_err.max()))
    return float(err)
