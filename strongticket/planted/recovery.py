"""Recovery metrics of a found mask against a planted ticket (not reported by Plant 'n' Seek, ICLR 2022).

Per layer, with F the found and P the planted edge sets among the layer's n entries: precision |F ∩ P| / |F|,
recall |F ∩ P| / |P|, Jaccard |F ∩ P| / |F ∪ P| (conventions for empty sets: precision 0 if F = ∅, recall 1 if
P = ∅, Jaccard 1 if both are empty). Each against chance, i.e. a mask of |F| entries drawn uniformly at random
from the layer's n (the overlap X is then hypergeometric, E[X] = |F||P| / n):
  recall lift  = recall - |F| / n               (E[recall] = |F| / n: the found mask's density in the layer);
  Jaccard lift = Jaccard - E[X / (|F| + |P| - X)]  (exact sum over the hypergeometric law of X);
both 0 in expectation for a random mask, 1 - |F|/n and 1 - E[J] for the planted mask itself, and undefined
(None) on a layer with no planted entry. :func:`recovery_summary` averages every measure over the layers that
hold planted entries. The same functions take bias masks (per layer bool (n_out,)).
``planted_path_survives``: every planted edge is kept (the ticket is a sub-network of the found one).
``has_path``: some input reaches some output through kept edges (no layer collapse).
Task metric: accuracy of argmax for circle, mean squared error over all outputs for relu / helix.
Masks: per layer bool (n_out, n_in), as ``Planted.masks``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .targets import CLASSIFICATION_TASKS, TASKS

if TYPE_CHECKING:
    from .plant import Planted

__all__ = ["LayerRecovery", "expected_random_jaccard", "has_path", "mask_recovery", "masked_task_metric",
           "planted_path_survives", "recovery_summary", "task_metric", "task_metric_name"]


@dataclass(frozen=True)
class LayerRecovery:
    """Edge recovery of one layer (of ``total`` entries); lifts are None when nothing is planted there."""

    layer: int
    total: int
    planted: int
    found: int
    overlap: int
    precision: float
    recall: float
    jaccard: float
    recall_lift: float | None
    jaccard_lift: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def expected_random_jaccard(total: int, planted: int, found: int) -> float:
    """E[|F ∩ P| / |F ∪ P|] for F drawn uniformly among the ``found``-subsets of ``total`` entries, |P| = ``planted``
    (X = |F ∩ P| hypergeometric; 1 when both sets are empty, as :func:`mask_recovery`)."""
    if not 0 <= planted <= total or not 0 <= found <= total:
        raise ValueError(f"planted and found must be in [0, total={total}], got {planted} and {found}")
    if planted + found == 0:
        return 1.0

    def log_choose(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    norm = log_choose(total, found)
    return sum(math.exp(log_choose(planted, x) + log_choose(total - planted, found - x) - norm) * x
               / (found + planted - x) for x in range(max(1, found + planted - total), min(found, planted) + 1))


def _check_masks(found: Sequence[np.ndarray], planted: Sequence[np.ndarray]) -> None:
    if len(found) != len(planted):
        raise ValueError(f"found masks must have {len(planted)} layers, got {len(found)}")
    for i, (f, p) in enumerate(zip(found, planted, strict=True)):
        if np.shape(f) != np.shape(p):
            raise ValueError(f"found mask of layer {i} must have shape {np.shape(p)}, got {np.shape(f)}")


def mask_recovery(found: Sequence[np.ndarray], planted: Sequence[np.ndarray]) -> list[LayerRecovery]:
    """Precision / recall / Jaccard of ``found`` vs ``planted``, one entry per layer."""
    _check_masks(found, planted)
    out = []
    for i, (f, p) in enumerate(zip(found, planted, strict=True)):
        f, p = np.asarray(f, dtype=bool), np.asarray(p, dtype=bool)
        nf, npl, both, union = int(f.sum()), int(p.sum()), int((f & p).sum()), int((f | p).sum())
        recall, jaccard = both / npl if npl else 1.0, both / union if union else 1.0
        lifts = (recall - nf / p.size, jaccard - expected_random_jaccard(p.size, npl, nf)) if npl else (None, None)
        out.append(LayerRecovery(i, p.size, npl, nf, both, both / nf if nf else 0.0, recall, jaccard, *lifts))
    return out


def recovery_summary(layers: Sequence[LayerRecovery]) -> dict[str, float | None]:
    """Precision, recall, Jaccard and their lifts, each the mean over the layers that hold planted entries (None
    when no layer does, e.g. the bias masks of the ReLU ticket, whose biases are all zero)."""
    held = [r for r in layers if r.planted]
    keys = ("precision", "recall", "jaccard", "recall_lift", "jaccard_lift")
    return {k: sum(getattr(r, k) for r in held) / len(held) if held else None for k in keys}


def planted_path_survives(found: Sequence[np.ndarray], planted: Sequence[np.ndarray]) -> bool:
    """Whether every planted edge is kept by ``found``."""
    _check_masks(found, planted)
    return all(bool(np.all(np.asarray(f, dtype=bool)[np.asarray(p, dtype=bool)])) for f, p in zip(found, planted))


def has_path(masks: Sequence[np.ndarray]) -> bool:
    """Whether some input neuron reaches some output neuron through kept edges."""
    reach = np.ones(np.shape(masks[0])[1], dtype=bool)
    for m in masks:
        reach = np.asarray(m, dtype=bool)[:, reach].any(axis=1)
    return bool(reach.any())


def task_metric_name(task: str) -> str:
    """``"accuracy"`` for circle, ``"mse"`` for the regression tasks."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return "accuracy" if task in CLASSIFICATION_TASKS else "mse"


def task_metric(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy (circle: outputs (B, 4) logits, y (B,) labels) or MSE (outputs and y (B, d_out))."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task_metric_name(task) == "accuracy":
        return float(np.mean(np.argmax(outputs, axis=1) == np.asarray(y)))
    y = np.asarray(y, dtype=np.float64)
    if outputs.shape != y.shape:
        raise ValueError(f"outputs must have the targets' shape {y.shape}, got {outputs.shape}")
    return float(np.mean(np.square(outputs - y)))


def masked_task_metric(p: Planted, masks: list[np.ndarray], x: np.ndarray, y: np.ndarray,
                       bias_masks: list[np.ndarray] | None = None, *, scaled: bool = True) -> float:
    """Task metric of the mother net under ``masks`` (float64), with ``bias_masks`` those biases, else all kept;
    outputs divided by the planting scale (``scaled``, the ``planted-scaled`` read-out) or raw (``planted``)."""
    h = x
    for i, (w, b) in enumerate(zip(p.weights, p.biases, strict=True)):
        h = h @ (w * masks[i]).T + (b if bias_masks is None else b * bias_masks[i])
        if i < len(p.weights) - 1:
            h = np.maximum(h, 0.0)
    return task_metric(p.task, h / p.scale if scaled else h, y)
