"""Mask budgets on a planted network: does the planted ticket fit in one, and how good is the best cut that does.

A budget is what a search at a density may keep (:class:`Budget`, :func:`budget`): weights k_l = ⌈d·n_l⌉ in each
layer (scope ``layer``) or K = ⌈d·N⌉ over all layers together (scope ``global``), and biases ⌈d_b·n_out⌉ in each
layer, d_b = ``bias_density`` (None: the weight density, Plant 'n' Seek's rule: their ``SupermaskLinear`` masks its
biases at the weights' fraction, edgepopup_benchmarkdata/ticket_models.py:79-80,94). The planted ticket is
*representable* in a budget when its planted weights and its non-zero planted biases fit in it.

The benchmark's rule (:func:`budget_rule`), so that the planted ticket is representable at the planted density:
  * biases are outside the weight budget: ``bias_density`` 1, every bias may be kept. The planted output layers
    need all their biases (Circle 4 of 4, Helix 3 of 3), so no bias density below 1 holds the ticket, and Plant 'n'
    Seek counts density over weights only (``get_sparsity_gt``, ticket_models.py:125-131). A kept bias of a neuron
    the planted ticket does not use changes nothing (no planted edge leaves it), nor does one of a matched neuron
    with a zero target bias (planted as exactly 0).
  * a numeric density d: k_l = ⌈d·n_l⌉ per layer, as Plant 'n' Seek (one ``sparsity`` for every layer,
    ticket_models.py:167-174);
  * ``"planted"``: the planted density ρ = planted weights / all weights under one global threshold, K = ⌈ρ·N⌉:
    the planted weight count, or one more where the float ρ rounds up (Circle 109 for 108). Per layer at ρ the
    planted ticket does not fit: its layer densities range from 0.0004 to 0.2 (Circle at depth 5 x width 100:
    layer 0 keeps 2 of its 4 planted edges, the head 3 of 80; Helix: layer 2 keeps 59 of 86), in Plant 'n' Seek's
    code too (``sparsity = -1``: ρ in every layer, ticket_models.py:167-168).

When the ticket does not fit, :func:`cut_to_budget` cuts it by greedy backward elimination: while a layer (or, under
scope ``global``, the total) is over budget, drop the one planted weight or bias of an over-budget group whose removal
leaves the best training metric (accuracy, ties by the lower cross-entropy of the target logits; or MSE; then by
position). It runs on the planted sub-network (matched neurons only, float64, outputs / scale), which computes what
the mother network computes under the same masks. :func:`best_within_budget` reports the cut's test metric: the best
this search finds, a lower bound on the best mask within the budget (masks with unplanted edges are not searched).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import SCOPES
from ..masks import keep_count, validate_density
from .recovery import masked_task_metric, task_metric_name

if TYPE_CHECKING:
    from .plant import Planted
    from .tasks import TaskData

__all__ = ["BENCH_BIAS_DENSITY", "SCOPES", "Budget", "best_within_budget", "budget", "budget_rule", "cut_to_budget"]

BENCH_BIAS_DENSITY = 1.0


@dataclass(frozen=True)
class Budget:
    """Kept counts a search may use: ``weights[l]`` per layer (scope layer; None under scope global) or ``total``
    over all layers (scope global; with scope layer the sum of ``weights``), ``biases[l]`` per layer."""

    density: float
    scope: str
    bias_density: float | None
    weights: tuple[int, ...] | None
    total: int
    biases: tuple[int, ...]

    def holds(self, p: Planted) -> bool:
        """Whether the planted ticket (its weights and non-zero biases) fits in this budget."""
        weights = (all(k >= n for k, n in zip(self.weights, p.planted_counts, strict=True)) if self.scope == "layer"
                   else self.total >= sum(p.planted_counts))
        return weights and all(k >= n for k, n in zip(self.biases, p.planted_bias_counts, strict=True))

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def budget(p: Planted, density: float, *, scope: str = "layer", bias_density: float | None = None) -> Budget:
    """The budget of a search on ``p``'s mother network at ``density`` (see the module docstring)."""
    density = validate_density(density)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if bias_density is not None:
        bias_density = validate_density(bias_density, "bias_density")
    sizes = p.total_counts
    per_layer = tuple(keep_count(density, n) for n in sizes) if scope == "layer" else None
    total = sum(per_layer) if per_layer is not None else keep_count(density, sum(sizes))
    d_b = density if bias_density is None else bias_density
    biases = tuple(keep_count(d_b, m.size) for m in p.bias_masks)
    return Budget(density, scope, bias_density, per_layer, total, biases)


def budget_rule(label: float | str, planted_density: float) -> dict[str, Any]:
    """The benchmark's budget at density ``label`` (a number, or ``"planted"``): SearchConfig fields ``density``,
    ``scope`` and ``bias_density`` (see the module docstring)."""
    if label == "planted":
        return {"density": planted_density, "scope": "global", "bias_density": BENCH_BIAS_DENSITY}
    return {"density": float(label), "scope": "layer", "bias_density": BENCH_BIAS_DENSITY}


def _compact(p: Planted) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The planted sub-network: weights, biases, weight masks and bias masks restricted to the matched neurons
    (target shapes, (n_out, n_in) and (n_out,))."""
    weights, biases, masks, bias_masks = [], [], [], []
    cols = np.arange(p.widths[0])
    for w, b, m, bm, rows in zip(p.weights, p.biases, p.masks, p.bias_masks, p.neurons, strict=True):
        weights.append(w[np.ix_(rows, cols)])
        masks.append(m[np.ix_(rows, cols)])
        biases.append(b[rows])
        bias_masks.append(bm[rows])
        cols = rows
    return weights, biases, masks, bias_masks


def _layer_inputs(weights, biases, masks, bias_masks, x: np.ndarray) -> list[np.ndarray]:
    """The input of every layer, (B, n_in), then the outputs (B, d_out)."""
    h, out = x, [x]
    for i, (w, b, m, bm) in enumerate(zip(weights, biases, masks, bias_masks, strict=True)):
        h = h @ (w * m).T + b * bm
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
        out.append(h)
    return out


def _keys(task: str, outputs: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """Per candidate, outputs (C, B, d_out): smaller is better, (-accuracy, cross-entropy) or (MSE, 0). The
    cross-entropy only breaks ties, so it is computed for the candidates of the best accuracy only (inf else)."""
    if task_metric_name(task) == "mse":
        return [(float(v), 0.0) for v in np.mean(np.square(outputs - y), axis=(1, 2))]
    acc = np.mean(np.argmax(outputs, axis=2) == y, axis=1)  # (C,)
    ce = np.full(len(acc), np.inf)
    top = np.flatnonzero(acc == acc.max())
    z = outputs[top] - outputs[top].max(axis=2, keepdims=True)  # (T, B, d_out)
    picked = np.take_along_axis(z, np.broadcast_to(y[None, :, None], (len(top), len(y), 1)), axis=2)[..., 0]
    ce[top] = np.mean(np.log(np.exp(z).sum(axis=2)) - picked, axis=1)
    return [(-float(a), float(c)) for a, c in zip(acc, ce, strict=True)]


_CHUNK = 1 << 22  # float64 elements per candidate batch (32 MiB)


def cut_to_budget(p: Planted, b: Budget, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The planted masks cut to ``b`` by greedy backward elimination on (``x``, ``y``) (the training split); mother
    shapes, like ``p.masks`` / ``p.bias_masks``. The planted masks themselves when they fit."""
    weights, biases, masks, bias_masks = _compact(p)
    masks, bias_masks = [m.copy() for m in masks], [m.copy() for m in bias_masks]
    depth = len(weights)
    x = np.asarray(x, dtype=np.float64)

    def over() -> list[tuple[int, bool]]:
        """(layer, is_bias) of the groups over budget; every layer's weights when the global total is."""
        if b.scope == "layer":
            groups = [(i, False) for i, m in enumerate(masks) if m.sum() > b.weights[i]]
        else:
            groups = [(i, False) for i in range(depth)] if sum(int(m.sum()) for m in masks) > b.total else []
        return groups + [(i, True) for i, m in enumerate(bias_masks) if m.sum() > b.biases[i]]

    def propagate(layer: int, pre: np.ndarray) -> np.ndarray:
        """Outputs / scale from layer ``layer``'s pre-activations, (C, B, n_out) -> (C, B, d_out)."""
        h = pre
        for i in range(layer, depth):
            if i > layer:
                h = h @ (weights[i] * masks[i]).T + biases[i] * bias_masks[i]
            if i < depth - 1:
                h = np.maximum(h, 0.0)
        return h / p.scale

    while groups := over():
        inputs = _layer_inputs(weights, biases, masks, bias_masks, x)
        best = None
        for layer, is_bias in sorted(groups):
            a = inputs[layer]  # (B, n_in)
            pre = a @ (weights[layer] * masks[layer]).T + biases[layer] * bias_masks[layer]  # (B, n_out)
            entries = (list(zip(np.flatnonzero(bias_masks[layer]), [None] * int(bias_masks[layer].sum())))
                       if is_bias else list(zip(*np.nonzero(masks[layer]))))
            step = max(1, _CHUNK // max(pre.size, inputs[-1].size, max(h.size for h in inputs)))
            for start in range(0, len(entries), step):
                chunk = entries[start:start + step]
                cand = np.repeat(pre[None], len(chunk), axis=0)  # (C, B, n_out)
                for c, (i, j) in enumerate(chunk):  # pre-activation without that one weight or bias
                    cand[c, :, i] -= biases[layer][i] if j is None else weights[layer][i, j] * a[:, j]
                for key, entry in zip(_keys(p.task, propagate(layer, cand), y), chunk, strict=True):
                    if best is None or key < best[0]:
                        best = (key, layer, is_bias, entry)
        _, layer, is_bias, (i, j) = best
        if is_bias:
            bias_masks[layer][i] = False
        else:
            masks[layer][i, j] = False
    out_masks = [np.zeros_like(m) for m in p.masks]
    out_bias = [np.zeros_like(m) for m in p.bias_masks]
    cols = np.arange(p.widths[0])
    for layer, rows in enumerate(p.neurons):
        out_masks[layer][np.ix_(rows, cols)] = masks[layer]
        out_bias[layer][rows] = bias_masks[layer]
        cols = rows
    return out_masks, out_bias


def best_within_budget(p: Planted, b: Budget, data: TaskData) -> dict[str, Any]:
    """The planted ticket cut to ``b`` (greedy on ``data``'s training split): ``representable``, the test metric
    with outputs / scale (``metric``) and raw (``raw_metric``), and the planted entries it drops (``cut_weights``,
    ``cut_biases``)."""
    masks, bias_masks = cut_to_budget(p, b, data.x_train, data.y_train)
    args = (p, masks, data.x_test, data.y_test, bias_masks)
    return {
        "representable": b.holds(p),
        "metric": masked_task_metric(*args, scaled=True),
        "raw_metric": masked_task_metric(*args, scaled=False),
        "cut_weights": sum(p.planted_counts) - sum(int(m.sum()) for m in masks),
        "cut_biases": sum(p.planted_bias_counts) - sum(int(m.sum()) for m in bias_masks),
    }
