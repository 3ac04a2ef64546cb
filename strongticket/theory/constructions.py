"""The constructive strong-lottery-ticket proofs, built for real: (target, seed, block sizes) -> masks.

The random network is an ordinary strongticket model: ``nn.Sequential`` of bias-free ``MaskedLinear`` layers,
init "uniform" (U[−1,1], float32, regenerated bit for bit from (seed, layer index) by ``strongticket.random``),
ReLU between them. A construction picks the mask by the proof, never by training, and records the target-shaped
"effective" network it realises, so that the two can be compared exactly (``verify.identity_check``).

Identities (Malach et al. 2020): w·x = σ(wx) − σ(−wx); for a > 0, b·σ(ax) = (ab)·σ(x), for a < 0,
b·σ(ax) = −(ab)·σ(−x). So a block of neurons σ(a_q x_j) followed by weights b realises
x ↦ Ŵ⁺σ(x) − Ŵ⁻σ(−x) with Ŵ± = Σ of the kept products ab over the a > 0 / a < 0 neurons.

* ``malach`` — Malach, Yehudai, Shalev-Shwartz, Shamir, "Proving the Lottery Ticket Hypothesis: Pruning is All
  You Need", ICML 2020. Depth 2l; per target layer d_in → d_out, A (d_in·k, d_in) block-diagonal, B (d_out, d_in·k);
  per (o, j, sign) keep the one neuron whose product ab is nearest to W[o, j]: error ∝ 1/k.
* ``pensia`` — Pensia, Rajput, Nagle, Vishwakarma, Papailiopoulos, "Optimal Lottery Tickets via SubsetSum:
  Logarithmic Over-Parameterization is Sufficient", NeurIPS 2020. Same layout, block m = 2n neurons per input;
  per (o, j, sign) the exact best *subset* of products (meet in the middle): error falls exponentially in m.
* ``burkholz`` — Burkholz, "Most Activation Functions Can Win the Lottery Without Excessive Depth", NeurIPS 2022.
  Depth l+1: layer 1 is a (2ρ·d_0, d_0) block-diagonal expansion with U[−2,2] weights (as the authors' code),
  layer 2 realises target layer 1 with ρ copies
  of every target neuron (subset sums of products), layer i+1 realises target layer i (i ≥ 2) from subsets of
  the ρ copies of each input neuron (plain U[−1,1] values); the output layer has one copy. Parameters ≈ ρ²× target.
* ``orseau`` — Orseau, Hutter, Rivasplata, "Logarithmic Pruning is All You Need", NeurIPS 2020. Pensia's depth-2l
  layout, but the weights are *hyperbolic* (density ∝ 1/|w|, init "hyperbolic" of ``strongticket.random``) and each
  weight is a *greedy* sum of products: per (o, j, sign half), the products ab with the sign of W[o, j] by
  decreasing |ab|, each taken when it does not overshoot the residual (no search: O(M log M) per weight). Covering
  lemma (reference §5, derived): v_0 ≥ … ≥ v_{K−1} > 0 with v_k ≤ Σ_{i>k} v_i + v_{K−1} ⇒ greedy reaches every
  r ∈ [0, Σv + v_{K−1}] within v_{K−1}; digits v_k = cγ^k with γ = 2/3 (a base-3/2 expansion, c = w_max/2) still
  qualify when each lies anywhere in the window [cγ^k/1.15, 1.15·cγ^k]. Under a log-uniform law every window has
  the same probability ln(1.15²)/ln(β/α), so one pool of M = O(K log(K/δ)) neurons per input coordinate (shared by
  every output of the layer) fills all K = O(log(1/ε_w)) windows: logarithmic in 1/ε, no exponential search.
  Ranges (our choice, reconstructed): the products should cover [α, β] = [ε_w/4, 2] (w_max ≤ 1 under spectral
  norm ≤ 1, fixed before seeing the target); with ρ = β/α, a ~ ±LU[ρ^{−1/2}, ρ^{1/2}] (block-diagonal layer) and
  b ~ ±LU[α, β], so log|ab| is triangular on [ln α − ½ln ρ, ln β + ½ln ρ] and [α, β] is its central half (window
  probability ≥ half the peak). Random signs: a < 0 neurons serve Ŵ⁻ (layer 0) and b's sign picks the sign of ab.

In blocks i ≥ 2 (and all Burkholz layers ≥ 2) the inputs are post-ReLU, so a < 0 neurons are dead: only the a > 0
half is used (Pensia's widths still count them). Neurons no later layer reads are pruned.
Weights generated here use the layout of ``strongticket.random.uniform01``, so the mask fits ``MaskedLinear``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..random import MAX_COUNTERS, STREAM_WEIGHT, hyperbolic_from_words, init_weight, random_words
from .subset_sum import MAX_VALUES, best_subsets, exact_limit, smallest_subset, subset_sum
from .targets import Target, check_dims, dims_of

__all__ = [
    "CONSTRUCTIONS",
    "SUBSET_RULES",
    "Construction",
    "build_model",
    "construct",
    "malach",
    "pensia",
    "burkholz",
    "orseau",
    "orseau_ranges",
    "hyperbolic_elements",
    "greedy_subsets",
    "uniform_elements",
    "random_layer_weight",
]

SUBSET_RULES = ("best", "smallest")
# Burkholz's first (expansion) layer is U[−2, 2] in the authors' code (LT-existence, Utils/pruning.py); products
# 2·U·U cover [−1, 1] as U·U covers [−½, ½] (reference §9, type P2).
FIRST_LAYER_SCALE = 2.0


@dataclass
class Construction:
    """A random network, its mask, and what the proof promises about it.

    ``widths``: random-net layer widths [d_0, h_1, ..., d_l]; ``masks[k]``: bool (widths[k+1], widths[k]) of
    random layer k. ``effective[i]`` = (Ŵ⁺, Ŵ⁻) realised for target layer i: layer 0 computes
    Ŵ⁺σ(x) − Ŵ⁻σ(−x), every later one Ŵ⁺σ(h) (Ŵ⁻ None). Burkholz rows/columns are copies: row r of layer i
    stands for target neuron r // row_copies[i], column block j·col_copies[i] … for input j.
    ``weight_errors[i]``: |Ŵ − W| per realised weight (per sign / per copy), flattened.
    """

    name: str
    target: Target
    seed: int
    widths: list[int]
    masks: list[np.ndarray]
    effective: list[tuple[np.ndarray, np.ndarray | None]]
    block: list[int]
    row_copies: list[int]
    col_copies: list[int]
    weight_errors: list[np.ndarray]
    subset: str = "best"
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    init_ranges: list[tuple[float, float] | None] | None = None  # per random layer: hyperbolic (low, high) or None
    init_scales: list[float] | None = None  # per random layer: uniform U[−s, s] (a power of two, exact) or None = 1

    @property
    def init(self) -> str:
        """The init of the random layers: "hyperbolic" when any layer has a range, else "uniform"."""
        return "hyperbolic" if self.init_ranges and any(r is not None for r in self.init_ranges) else "uniform"

    @property
    def depth(self) -> int:
        return len(self.widths) - 1

    @property
    def random_params(self) -> int:
        return sum(self.widths[k] * self.widths[k + 1] for k in range(self.depth))

    @property
    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks))

    @property
    def target_params(self) -> int:
        return int(sum(w.size for w in self.target))


# ----------------------------------------------------------------------------------------------------------
# Random weights (layout of strongticket.random: element (r, c) = word c % 4 of counter r·⌈cols/4⌉ + c // 4)
# ----------------------------------------------------------------------------------------------------------


def _element_words(seed: int, layer: int, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The uint32 Philox word of each selected element of a (rows, cols) weight (layout of ``uniform01``)."""
    n_rows, n_cols = shape
    rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows or cols.min() < 0 or cols.max() >= n_cols):
        raise ValueError(f"element indices must lie in a {shape} matrix, got rows [{rows.min()}, {rows.max()}], "
                         f"cols [{cols.min()}, {cols.max()}]")
    groups = -(-n_cols // 4)
    if n_rows * groups > MAX_COUNTERS:
        raise ValueError(f"a {shape} weight needs {n_rows * groups} Philox counters, one stream holds at most 2**31")
    words = random_words(seed, layer, STREAM_WEIGHT, rows * groups + cols // 4)  # (4, *shape)
    return np.take_along_axis(words, (cols % 4)[None], axis=0)[0]


def uniform_elements(seed: int, layer: int, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Selected elements of ``init_weight(shape, "uniform", seed, layer)`` as float64, without the rest.

    ``rows``/``cols`` broadcast; the values are bit-identical to the float32 entries of the full matrix.
    """
    word = _element_words(seed, layer, shape, rows, cols)
    u = (word.astype(np.float64) + 0.5) * 2.0**-32
    return (2.0 * u - 1.0).astype(np.float32).astype(np.float64)


def hyperbolic_elements(seed: int, layer: int, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray,
                        low: float, high: float) -> np.ndarray:
    """Selected elements of ``init_weight(shape, "hyperbolic", seed, layer, low=low, high=high)`` as float64."""
    word = _element_words(seed, layer, shape, rows, cols)
    return hyperbolic_from_words(word, low, high).astype(np.float32).astype(np.float64)


def random_layer_weight(seed: int, layer: int, shape: tuple[int, int],
                        init_range: tuple[float, float] | None = None) -> np.ndarray:
    """The full frozen weight of random layer ``layer`` (out, in) as float64 (the float32 values, exactly).

    ``init_range`` None: init "uniform"; (low, high): init "hyperbolic" with that magnitude range.
    """
    if init_range is None:
        return init_weight(tuple(shape), "uniform", seed, layer).numpy().astype(np.float64)
    low, high = init_range
    return init_weight(tuple(shape), "hyperbolic", seed, layer, low=low, high=high).numpy().astype(np.float64)


def _diag_block(seed: int, layer: int, d_in: int, m: int, init_range: tuple[float, float] | None = None) -> np.ndarray:
    """a[j, q] = A[j·m + q, j] of the block-diagonal expansion A (d_in·m, d_in): (d_in, m) float64."""
    j = np.arange(d_in)[:, None]
    q = np.arange(m)[None, :]
    rows, cols, shape = j * m + q, np.broadcast_to(j, (d_in, m)), (d_in * m, d_in)
    if init_range is None:
        return uniform_elements(seed, layer, shape, rows, cols)
    return hyperbolic_elements(seed, layer, shape, rows, cols, *init_range)


# ----------------------------------------------------------------------------------------------------------
# Selection: per (row, input) pair, a subset of the candidates of one sign half
# ----------------------------------------------------------------------------------------------------------


def _select(values: np.ndarray, targets: np.ndarray, allowed: np.ndarray, rule: str, tol: float | None,
            stats: dict[str, int] | None = None) -> np.ndarray:
    """Chosen (R, d_in, n) bool: per (r, j) a subset of {q : allowed[j, q]} approximating targets[r, j].

    values (R, d_in, n) candidate values, targets (R, d_in), allowed (d_in, n). Inputs with the same number of
    allowed candidates are solved together as one batch of R·(#inputs) rows. ``stats`` (subset rules only) holds
    "exact" (the exact-search limit K, ``subset_sum.best_subsets``) and counts the rows searched over all their
    candidates ("instances_exact") or over the first K ("instances_prefix"), and the largest count seen.
    """
    r_rows, d_in, _ = values.shape
    chosen = np.zeros(values.shape, dtype=bool)
    counts = allowed.sum(axis=1)
    for count in np.unique(counts):
        if count == 0:
            continue
        js = np.flatnonzero(counts == count)
        idx = np.stack([np.flatnonzero(allowed[j]) for j in js])  # (J, count)
        vals = values[:, js[:, None], idx].reshape(-1, count)  # (R·J, count)
        tgt = targets[:, js].reshape(-1)
        if rule == "one":
            pick = np.abs(vals - tgt[:, None]).argmin(axis=1)
            sub = np.zeros(vals.shape, dtype=bool)
            sub[np.arange(len(pick)), pick] = True
        elif rule == "greedy":
            sub = greedy_subsets(vals, tgt)
        else:
            exact = MAX_VALUES if stats is None else stats["exact"]
            sub, _ = best_subsets(vals, tgt, exact)
            if stats is not None:
                stats["instances_exact" if count <= exact else "instances_prefix"] += len(tgt)
                stats["candidates_max"] = max(stats["candidates_max"], int(count))
            if rule == "smallest":
                for p in range(len(tgt)):
                    small = smallest_subset(vals[p], tgt[p], tol)
                    if small is not None:
                        sub[p] = small
        sub = sub.reshape(r_rows, len(js), count)
        rr = np.arange(r_rows)[:, None, None]
        chosen[rr, js[None, :, None], idx[None, :, :]] = sub
    return chosen


def _subset_stats(instances: int, exact: int | None) -> dict[str, int]:
    """The ``stats`` of ``_select``: K = ``exact`` or, if None, ``exact_limit(instances)`` (fixed before any work)."""
    if exact is None:
        exact = exact_limit(instances)
    elif isinstance(exact, bool) or not isinstance(exact, (int, np.integer)) or not 1 <= exact <= MAX_VALUES:
        raise ValueError(f"exact must be an integer in [1, {MAX_VALUES}] or None (chosen from the work), "
                         f"got {exact!r}")
    return {"exact": int(exact), "instances": int(instances), "instances_exact": 0, "instances_prefix": 0,
            "candidates_max": 0}


def greedy_subsets(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Orseau's greedy decomposition, batched: (P, n) values, (P,) targets -> (P, n) bool chosen.

    Per row, the values with the sign of the target (none for a zero target), by decreasing |value| (ties by
    index), each taken when |value| ≤ the residual |target| − Σ taken: the sum never overshoots the target.
    """
    values = np.asarray(values, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if values.ndim != 2 or targets.shape != values.shape[:1]:
        raise ValueError(f"values must be (P, n) and targets (P,), got {values.shape} and {targets.shape}")
    usable = (np.sign(values) == np.sign(targets)[:, None]) & (targets[:, None] != 0)
    mags = np.where(usable, np.abs(values), np.inf)  # unusable values are never taken
    order = np.argsort(-np.where(usable, mags, -1.0), axis=1, kind="stable")
    sorted_mags = np.take_along_axis(mags, order, axis=1)
    residual = np.abs(targets).copy()
    take_sorted = np.zeros(values.shape, dtype=bool)
    for t in range(values.shape[1]):
        take = sorted_mags[:, t] <= residual
        residual = np.where(take, residual - sorted_mags[:, t], residual)
        take_sorted[:, t] = take
    chosen = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(chosen, order, take_sorted, axis=1)
    return chosen


def _realised(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Ŵ[r, j] = Σ_q chosen values (R, d_in), in index order."""
    r_rows, d_in, n = values.shape
    return subset_sum(values.reshape(-1, n), chosen.reshape(-1, n)).reshape(r_rows, d_in)


def _prune_dead(masks: list[np.ndarray]) -> None:
    """Drop the incoming weights of hidden neurons that no kept weight of the next layer reads."""
    for k in range(len(masks) - 2, -1, -1):
        masks[k] &= masks[k + 1].any(axis=0)[:, None]


def _per_layer(value: int | Sequence[int], layers: int, name: str, low: int) -> list[int]:
    values = [value] * layers if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else list(value)
    if len(values) != layers:
        raise ValueError(f"{name} must be one integer or {layers} (one per target layer), got {len(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= 1 << 24:
            raise ValueError(f"{name}[{i}] must be an integer in [{low}, 2**24], got {v!r}")
    return [int(v) for v in values]


def _check_rule(subset: str, tol: float | None) -> None:
    if subset not in SUBSET_RULES:
        raise ValueError(f"subset must be one of {SUBSET_RULES}, got {subset!r}")
    if subset == "smallest" and (tol is None or not 0 < tol < 1):
        raise ValueError(f"tol must be in (0, 1) for subset='smallest', got {tol}")


# ----------------------------------------------------------------------------------------------------------
# Depth 2l: Malach (one neuron per sign) and Pensia (subset sums)
# ----------------------------------------------------------------------------------------------------------


def _two_level(name: str, target: Target, seed: int, blocks: list[int], rule: str, tol: float | None,
               ranges: list[tuple[tuple[float, float], tuple[float, float]]] | None = None,
               exact: int | None = None) -> Construction:
    """Depth 2l; ``ranges[i]`` = hyperbolic (low, high) of the A and B layers of target layer i (None: uniform)."""
    start = time.perf_counter()
    dims = dims_of(target)
    stats = None
    if rule in SUBSET_RULES:  # one subset sum per (o, j, sign), both signs in layer 0 only
        stats = _subset_stats(sum(w.size * (2 if i == 0 else 1) for i, w in enumerate(target)), exact)
    widths = [dims[0]]
    for i in range(len(target)):
        widths += [dims[i] * blocks[i], dims[i + 1]]
    masks, effective, errors, candidates = [], [], [], []
    for i, w in enumerate(target):
        d_in, d_out, m = dims[i], dims[i + 1], blocks[i]
        range_a, range_b = (None, None) if ranges is None else ranges[i]
        a = _diag_block(seed, 2 * i, d_in, m, range_a)  # (d_in, m)
        b = random_layer_weight(seed, 2 * i + 1, (d_out, d_in * m), range_b).reshape(d_out, d_in, m)
        products = a[None] * b  # (d_out, d_in, m): exact in float64 (24-bit x 24-bit mantissas)
        chosen = _select(products, w, a > 0, rule, tol, stats)
        w_plus = _realised(products, chosen & (a > 0)[None])
        w_minus = None
        if i == 0:
            chosen |= _select(products, w, a < 0, rule, tol, stats)
            w_minus = _realised(products, chosen & (a < 0)[None])
        mask_a = np.zeros((d_in * m, d_in), dtype=bool)
        mask_a[np.arange(d_in * m), np.repeat(np.arange(d_in), m)] = chosen.any(axis=0).reshape(-1)
        masks += [mask_a, chosen.reshape(d_out, d_in * m)]
        effective.append((w_plus, w_minus))
        err = [np.abs(w_plus - w).ravel()] + ([] if w_minus is None else [np.abs(w_minus - w).ravel()])
        errors.append(np.concatenate(err))
        candidates.append([int((a > 0).sum(axis=1).min()), int((a > 0).sum(axis=1).max())])
    _prune_dead(masks)
    init_ranges = None if ranges is None else [r for pair in ranges for r in pair]
    info: dict[str, Any] = {"positive_candidates_min_max": candidates}
    if stats is not None:
        info["subset_search"] = stats
    return Construction(name, target, seed, widths, masks, effective, blocks, [1] * len(target),
                        [1] * len(target), errors, subset="one" if rule == "one" else rule,
                        seconds=time.perf_counter() - start, info=info, init_ranges=init_ranges)


def malach(target: Target, seed: int, block: int | Sequence[int]) -> Construction:
    """Malach et al. 2020: ``block`` = k neurons per input coordinate per target layer (≈k/2 per sign)."""
    blocks = _per_layer(block, len(target), "block", 2)
    return _two_level("malach", target, seed, blocks, "one", None)


def pensia(target: Target, seed: int, block: int | Sequence[int], subset: str = "best",
           tol: float | None = None, exact: int | None = None) -> Construction:
    """Pensia et al. 2020: ``block`` = m = 2n neurons per input coordinate per target layer (≈n per sign).

    ``subset="best"``: best subset per weight (meet in the middle), exact over the first ``exact`` candidates of
    each sign (None: ``subset_sum.exact_limit`` of the instance count; ``info["subset_search"]`` says how many
    instances were searched over all their candidates); ``"smallest"``: fewest products within ``tol`` (MILP;
    falls back to the best subset where none is within ``tol``).
    """
    blocks = _per_layer(block, len(target), "block", 2)
    _check_rule(subset, tol)
    return _two_level("pensia", target, seed, blocks, subset, tol, exact=exact)


def orseau_ranges(dims: Sequence[int], eps: float, high: float = 2.0) -> list[tuple[tuple[float, float],
                                                                                  tuple[float, float]]]:
    """Hyperbolic ranges (A layer, B layer) per target layer: products cover [α_i, β] = [ε_w,i/4, ``high``].

    ε_w,i = ε / (2·l·d_{i−1}·d_i) (Pensia's per-weight tolerance); ρ = β/α_i; a ~ LU[ρ^{−1/2}, ρ^{1/2}],
    b ~ LU[α_i, β] (module docstring). Depends on (dims, ε) only, never on the target's weights.
    """
    dims = check_dims(dims)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    if isinstance(high, bool) or not isinstance(high, (int, float)) or not 0 < high <= 1e6:
        raise ValueError(f"high must be in (0, 1e6], got {high!r}")
    n_layers = len(dims) - 1
    out = []
    for i in range(n_layers):
        alpha = eps / (2 * n_layers * dims[i] * dims[i + 1]) / 4
        if not alpha < high:
            raise ValueError(f"high must exceed eps_w/4 = {alpha:.3g}, got {high}")
        root = math.sqrt(high / alpha)
        out.append(((1.0 / root, root), (alpha, float(high))))
    return out


def orseau(target: Target, seed: int, block: int | Sequence[int], eps: float = 0.01, high: float = 2.0) -> Construction:
    """Orseau et al. 2020: ``block`` = M hyperbolic neurons per input coordinate per target layer, greedy sums.

    ``eps`` fixes the hyperbolic ranges (``orseau_ranges``: products cover [ε_w/4, ``high``]); the random net
    depends on (widths, seed, eps, high) only, so one net serves every target of that shape.
    """
    blocks = _per_layer(block, len(target), "block", 2)
    ranges = orseau_ranges(dims_of(target), eps, high)
    c = _two_level("orseau", target, seed, blocks, "greedy", None, ranges)
    c.info.update({"eps": eps, "high": high})
    return c


# ----------------------------------------------------------------------------------------------------------
# Depth l+1: Burkholz
# ----------------------------------------------------------------------------------------------------------


def burkholz(target: Target, seed: int, rho: int, subset: str = "best", tol: float | None = None,
             exact: int | None = None) -> Construction:
    """Burkholz 2022 (L+1 depth, bias-free ReLU case): ``rho`` copies of every hidden target neuron.

    ``exact`` as in :func:`pensia` (per copy, input and sign in layer 1; per copy and input later).
    """
    (rho,) = _per_layer(rho, 1, "rho", 1)
    _check_rule(subset, tol)
    start = time.perf_counter()
    dims = dims_of(target)
    n_layers = len(target)
    row_copies = [rho if i < n_layers - 1 else 1 for i in range(n_layers)]
    stats = _subset_stats(sum(row_copies[i] * w.size * (2 if i == 0 else 1) for i, w in enumerate(target)), exact)
    widths = [dims[0], 2 * rho * dims[0]] + [row_copies[i] * dims[i + 1] for i in range(n_layers)]
    masks, effective, errors = [], [], []

    # Layer 0: block-diagonal expansion, 2ρ neurons per input, U[−2, 2] as in the authors' code
    # (RelationalML/LT-existence, Utils/pruning.py); layer 1: ρ copies of target layer 1.
    d0, rows = dims[0], widths[2]
    a = FIRST_LAYER_SCALE * _diag_block(seed, 0, d0, 2 * rho)  # (d0, 2ρ); ×2 is exact
    b = random_layer_weight(seed, 1, (rows, d0 * 2 * rho)).reshape(rows, d0, 2 * rho)
    products = a[None] * b
    w_rows = target[0][np.arange(rows) // row_copies[0]]  # (rows, d0): the target row of each copy
    chosen = _select(products, w_rows, a > 0, subset, tol, stats) | _select(products, w_rows, a < 0, subset, tol, stats)
    w_plus = _realised(products, chosen & (a > 0)[None])
    w_minus = _realised(products, chosen & (a < 0)[None])
    mask_a = np.zeros((d0 * 2 * rho, d0), dtype=bool)
    mask_a[np.arange(d0 * 2 * rho), np.repeat(np.arange(d0), 2 * rho)] = chosen.any(axis=0).reshape(-1)
    masks += [mask_a, chosen.reshape(rows, d0 * 2 * rho)]
    effective.append((w_plus, w_minus))
    errors.append(np.concatenate([np.abs(w_plus - w_rows).ravel(), np.abs(w_minus - w_rows).ravel()]))

    # Layers i ≥ 1 (target layer i+1): per copy row and input neuron j, a subset of the ρ copies of j.
    for i in range(1, n_layers):
        rows, d_in = widths[i + 2], dims[i]
        m = random_layer_weight(seed, i + 1, (rows, d_in * rho)).reshape(rows, d_in, rho)
        w_rows = target[i][np.arange(rows) // row_copies[i]]
        chosen = _select(m, w_rows, np.ones((d_in, rho), dtype=bool), subset, tol, stats)
        realised = _realised(m, chosen)
        masks.append(chosen.reshape(rows, d_in * rho))
        effective.append((np.where(chosen, m, 0.0).reshape(rows, d_in * rho), None))
        errors.append(np.abs(realised - w_rows).ravel())
    _prune_dead(masks)
    return Construction("burkholz", target, seed, widths, masks, effective, [rho] * n_layers, row_copies,
                        [1] + [rho] * (n_layers - 1), errors, subset=subset, seconds=time.perf_counter() - start,
                        info={"subset_search": stats},
                        init_scales=[FIRST_LAYER_SCALE] + [1.0] * (len(widths) - 2))


CONSTRUCTIONS = {"malach": malach, "pensia": pensia, "burkholz": burkholz, "orseau": orseau}


def construct(name: str, target: Target, seed: int, block: int | Sequence[int], **kwargs: Any) -> Construction:
    """Dispatch by name: ``block`` is k (malach), m (pensia), ρ (burkholz) or M (orseau; kwargs eps, high)."""
    if name not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {sorted(CONSTRUCTIONS)}, got {name!r}")
    if name == "malach":
        return malach(target, seed, block)
    return CONSTRUCTIONS[name](target, seed, block, **kwargs)


def build_model(construction: Construction) -> nn.Sequential:
    """The strongticket model of a construction: MaskedLinear (uniform, seed, layers 0..L−1) + ReLU, masks fixed.

    Materialises every random weight (float32, plus the layer's scores): fine up to tens of millions of weights.
    """
    layers: list[nn.Module] = []
    w = construction.widths
    ranges = construction.init_ranges or [None] * construction.depth
    scales = construction.init_scales or [1.0] * construction.depth
    for k in range(construction.depth):
        lin = _masked_linear(w[k], w[k + 1], construction.seed, k, ranges[k], scales[k])
        lin.fix_mask(torch.from_numpy(construction.masks[k]))
        layers.append(lin)
        if k < construction.depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _masked_linear(d_in: int, d_out: int, seed: int, layer: int,
                   init_range: tuple[float, float] | None = None, scale: float = 1.0) -> nn.Module:
    """A bias-free MaskedLinear: init "uniform" (U[−``scale``, ``scale``]), or "hyperbolic" with magnitudes in
    ``init_range``.

    MaskedLinear builds the init's default range; the layer's frozen weight is then replaced (in place, same
    dtype/shape) by ``init_weight(..., "hyperbolic", low, high)``, a pure function of (seed, layer, low, high), or
    multiplied by ``scale`` (a power of two: exact in float32, so the weights stay bit-reproducible).
    """
    from ..nn import MaskedLinear

    if init_range is None:
        lin = MaskedLinear(d_in, d_out, bias=False, density=1.0, init="uniform", seed=seed, layer=layer)
        if scale != 1.0:
            with torch.no_grad():
                lin.weight.mul_(scale)
        return lin
    lin = MaskedLinear(d_in, d_out, bias=False, density=1.0, init="hyperbolic", seed=seed, layer=layer)
    low, high = init_range
    with torch.no_grad():
        lin.weight.copy_(init_weight((d_out, d_in), "hyperbolic", seed, layer, low=low, high=high))
    return lin
