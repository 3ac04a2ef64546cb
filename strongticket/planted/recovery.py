"""Recovery metrics of a found mask against a planted ticket (not reported by Plant 'n' Seek, ICLR 2022).

Per layer, with F the found and P the planted edge sets: precision |F ∩ P| / |F|, recall |F ∩ P| / |P|,
Jaccard |F ∩ P| / |F ∪ P| (conventions for empty sets: precision 0 if F = ∅, recall 1 if P = ∅, Jaccard 1
if both are empty). ``planted_path_survives``: every planted edge is kept (the ticket is a sub-network of the
found one). ``has_path``: some input reaches some output through kept edges (no layer collapse).
Task metric: accuracy of argmax for circle, mean squared error over all outputs for relu / helix.
Masks: per layer bool (n_out, n_in), as ``Planted.masks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .targets import TASKS

if TYPE_CHECKING:
    from .plant import Planted

__all__ = ["LayerRecovery", "has_path", "mask_recovery", "masked_task_metric", "planted_path_survives", "task_metric",
           "task_metric_name"]


@dataclass(frozen=True)
class LayerRecovery:
    """Edge recovery of one layer."""

    layer: int
    planted: int
    found: int
    overlap: int
    precision: float
    recall: float
    jaccard: float

    def as_dict(self) -> dict:
        return asdict(self)


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
        out.append(LayerRecovery(i, npl, nf, both, both / nf if nf else 0.0, both / npl if npl else 1.0,
                                 both / union if union else 1.0))
    return out


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
    return "accuracy" if task == "circle" else "mse"


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
