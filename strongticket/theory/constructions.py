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
  Depth l+1: layer 1 is a (2ρ·d_0, d_0) block-diagonal expansion, layer 2 realises target layer 1 with ρ copies
  of every target neuron (subset sums of products), layer i+1 realises target layer i (i ≥ 2) from subsets of
  the ρ copies of each input neuron (plain U[−1,1] values); the output layer has one copy. Parameters ≈ ρ²× target.

In blocks i ≥ 2 (and all Burkholz layers ≥ 2) the inputs are post-ReLU, so a < 0 neurons are dead: only the a > 0
half is used (Pensia's widths still count them). Neurons no later layer reads are pruned.
Weights generated here use the layout of ``strongticket.random.uniform01``, so the mask fits ``MaskedLinear``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..random import MAX_COUNTERS, STREAM_WEIGHT, init_weight, random_words
from .subset_sum import MAX_VALUES, best_subsets, smallest_subset, subset_sum
from .targets import Target, dims_of

__all__ = [
    "CONSTRUCTIONS",
    "SUBSET_RULES",
    "Construction",
    "build_model",
    "construct",
    "malach",
    "pensia",
    "burkholz",
    "uniform_elements",
    "random_layer_weight",
]

SUBSET_RULES = ("best", "smallest")


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


def uniform_elements(seed: int, layer: int, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Selected elements of ``init_weight(shape, "uniform", seed, layer)`` as float64, without the rest.

    ``rows``/``cols`` broadcast; the values are bit-identical to the float32 entries of the full matrix.
    """
    n_rows, n_cols = shape
    rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows or cols.min() < 0 or cols.max() >= n_cols):
        raise ValueError(f"element indices must lie in a {shape} matrix, got rows [{rows.min()}, {rows.max()}], "
                         f"cols [{cols.min()}, {cols.max()}]")
    groups = -(-n_cols // 4)
    if n_rows * groups > MAX_COUNTERS:
        raise ValueError(f"a {shape} weight needs {n_rows * groups} Philox counters, one stream holds at most 2**31")
    words = random_words(seed, layer, STREAM_WEIGHT, rows * groups + cols // 4)  # (4, *shape)
    word = np.take_along_axis(words, (cols % 4)[None], axis=0)[0]
    u = (word.astype(np.float64) + 0.5) * 2.0**-32
    return (2.0 * u - 1.0).astype(np.float32).astype(np.float64)


def random_layer_weight(seed: int, layer: int, shape: tuple[int, int]) -> np.ndarray:
    """The full frozen weight of random layer ``layer`` (out, in) as float64 (the float32 values, exactly)."""
    return init_weight(tuple(shape), "uniform", seed, layer).numpy().astype(np.float64)


def _diag_block(seed: int, layer: int, d_in: int, m: int) -> np.ndarray:
    """a[j, q] = A[j·m + q, j] of the block-diagonal expansion A (d_in·m, d_in): (d_in, m) float64."""
    j = np.arange(d_in)[:, None]
    q = np.arange(m)[None, :]
    return uniform_elements(seed, layer, (d_in * m, d_in), j * m + q, np.broadcast_to(j, (d_in, m)))


# ----------------------------------------------------------------------------------------------------------
# Selection: per (row, input) pair, a subset of the candidates of one sign half
# ----------------------------------------------------------------------------------------------------------


def _select(values: np.ndarray, targets: np.ndarray, allowed: np.ndarray, rule: str, tol: float | None) -> np.ndarray:
    """Chosen (R, d_in, n) bool: per (r, j) a subset of {q : allowed[j, q]} approximating targets[r, j].

    values (R, d_in, n) candidate values, targets (R, d_in), allowed (d_in, n). Inputs with the same number of
    allowed candidates are solved together as one batch of R·(#inputs) rows.
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
        else:
            if count > MAX_VALUES:
                raise ValueError(f"candidates per sign must be in [1, {MAX_VALUES}] for exact subset sums, got "
                                 f"{count} (use a smaller block)")
            sub, _ = best_subsets(vals, tgt)
            if rule == "smallest":
                for p in range(len(tgt)):
                    small = smallest_subset(vals[p], tgt[p], tol)
                    if small is not None:
                        sub[p] = small
        sub = sub.reshape(r_rows, len(js), count)
        rr = np.arange(r_rows)[:, None, None]
        chosen[rr, js[None, :, None], idx[None, :, :]] = sub
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


def _two_level(name: str, target: Target, seed: int, blocks: list[int], rule: str, tol: float | None) -> Construction:
    start = time.perf_counter()
    dims = dims_of(target)
    widths = [dims[0]]
    for i in range(len(target)):
        widths += [dims[i] * blocks[i], dims[i + 1]]
    masks, effective, errors, candidates = [], [], [], []
    for i, w in enumerate(target):
        d_in, d_out, m = dims[i], dims[i + 1], blocks[i]
        a = _diag_block(seed, 2 * i, d_in, m)  # (d_in, m)
        b = random_layer_weight(seed, 2 * i + 1, (d_out, d_in * m)).reshape(d_out, d_in, m)
        products = a[None] * b  # (d_out, d_in, m): exact in float64 (24-bit x 24-bit mantissas)
        chosen = _select(products, w, a > 0, rule, tol)
        w_plus = _realised(products, chosen & (a > 0)[None])
        w_minus = None
        if i == 0:
            chosen |= _select(products, w, a < 0, rule, tol)
            w_minus = _realised(products, chosen & (a < 0)[None])
        mask_a = np.zeros((d_in * m, d_in), dtype=bool)
        mask_a[np.arange(d_in * m), np.repeat(np.arange(d_in), m)] = chosen.any(axis=0).reshape(-1)
        masks += [mask_a, chosen.reshape(d_out, d_in * m)]
        effective.append((w_plus, w_minus))
        err = [np.abs(w_plus - w).ravel()] + ([] if w_minus is None else [np.abs(w_minus - w).ravel()])
        errors.append(np.concatenate(err))
        candidates.append([int((a > 0).sum(axis=1).min()), int((a > 0).sum(axis=1).max())])
    _prune_dead(masks)
    return Construction(name, target, seed, widths, masks, effective, blocks, [1] * len(target),
                        [1] * len(target), errors, subset="one" if rule == "one" else rule,
                        seconds=time.perf_counter() - start, info={"positive_candidates_min_max": candidates})


def malach(target: Target, seed: int, block: int | Sequence[int]) -> Construction:
    """Malach et al. 2020: ``block`` = k neurons per input coordinate per target layer (≈k/2 per sign)."""
    blocks = _per_layer(block, len(target), "block", 2)
    return _two_level("malach", target, seed, blocks, "one", None)


def pensia(target: Target, seed: int, block: int | Sequence[int], subset: str = "best",
           tol: float | None = None) -> Construction:
    """Pensia et al. 2020: ``block`` = m = 2n neurons per input coordinate per target layer (≈n per sign).

    ``subset="best"``: exact best subset per weight (meet in the middle); ``"smallest"``: fewest products within
    ``tol`` (MILP; falls back to the best subset where none is within ``tol``).
    """
    blocks = _per_layer(block, len(target), "block", 2)
    _check_rule(subset, tol)
    return _two_level("pensia", target, seed, blocks, subset, tol)


# ----------------------------------------------------------------------------------------------------------
# Depth l+1: Burkholz
# ----------------------------------------------------------------------------------------------------------


def burkholz(target: Target, seed: int, rho: int, subset: str = "best", tol: float | None = None) -> Construction:
    """Burkholz 2022 (L+1 depth, bias-free ReLU case): ``rho`` copies of every hidden target neuron."""
    (rho,) = _per_layer(rho, 1, "rho", 1)
    _check_rule(subset, tol)
    start = time.perf_counter()
    dims = dims_of(target)
    n_layers = len(target)
    row_copies = [rho if i < n_layers - 1 else 1 for i in range(n_layers)]
    widths = [dims[0], 2 * rho * dims[0]] + [row_copies[i] * dims[i + 1] for i in range(n_layers)]
    masks, effective, errors = [], [], []

    # Layer 0: block-diagonal expansion, 2ρ neurons per input; layer 1: ρ copies of target layer 1.
    d0, rows = dims[0], widths[2]
    a = _diag_block(seed, 0, d0, 2 * rho)  # (d0, 2ρ)
    b = random_layer_weight(seed, 1, (rows, d0 * 2 * rho)).reshape(rows, d0, 2 * rho)
    products = a[None] * b
    w_rows = target[0][np.arange(rows) // row_copies[0]]  # (rows, d0): the target row of each copy
    chosen = _select(products, w_rows, a > 0, subset, tol) | _select(products, w_rows, a < 0, subset, tol)
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
        chosen = _select(m, w_rows, np.ones((d_in, rho), dtype=bool), subset, tol)
        realised = _realised(m, chosen)
        masks.append(chosen.reshape(rows, d_in * rho))
        effective.append((np.where(chosen, m, 0.0).reshape(rows, d_in * rho), None))
        errors.append(np.abs(realised - w_rows).ravel())
    _prune_dead(masks)
    return Construction("burkholz", target, seed, widths, masks, effective, [rho] * n_layers, row_copies,
                        [1] + [rho] * (n_layers - 1), errors, subset=subset, seconds=time.perf_counter() - start)


CONSTRUCTIONS = {"malach": malach, "pensia": pensia, "burkholz": burkholz}


def construct(name: str, target: Target, seed: int, block: int | Sequence[int], **kwargs: Any) -> Construction:
    """Dispatch by name: ``block`` is k (malach), m (pensia) or ρ (burkholz)."""
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
    for k in range(construction.depth):
        lin = _masked_linear(w[k], w[k + 1], construction.seed, k)
        lin.fix_mask(torch.from_numpy(construction.masks[k]))
        layers.append(lin)
        if k < construction.depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _masked_linear(d_in: int, d_out: int, seed: int, layer: int) -> nn.Module:
    from ..nn import MaskedLinear

    return MaskedLinear(d_in, d_out, bias=False, density=1.0, init="uniform", seed=seed, layer=layer)
