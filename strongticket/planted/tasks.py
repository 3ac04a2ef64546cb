"""The three synthetic tasks of Plant 'n' Seek (Fischer & Burkholz, ICLR 2022), generated in code and seeded.

x ~ U(-1, 1)^{d_in}, n = 10,000 samples:
- ``circle``: d_in = 2, label = #{B_k < x1^2 + x2^2}, B = (0.2, 0.5, 0.7) (4 classes); with probability 0.01 the
  label is replaced by the runner-up class of the piecewise-linear class scores (a neighbouring ring).
- ``relu``: d_in = 1, y = relu(x) + N(0, 0.01^2).
- ``helix``: d_in = 1, y = (y cos y, y sin y, y) / (8 pi) + N(0, 0.01^2 I), y = 5 pi + 3 pi x.

Every draw comes from ``strongticket.random`` streams (kind ``STREAM_DATA``): the same ``seed`` gives the same
bits on every machine (the original sampling was unseeded). A fixed permutation (seed 42, as the paper's)
orders the samples; the first 90% train, the last 10% test, and the validation split is the last
``val_fraction`` of the train part. Shapes: x (n, d_in) float64; y (n,) int64 (circle) or (n, d_out) float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..random import STREAM_DATA, permutation, standard_normal, uniform01
from .targets import CIRCLE_BOUNDARIES, CLASSIFICATION_TASKS, TASKS, circle_logits, helix

__all__ = ["LABEL_NOISE", "PERMUTATION_SEED", "TARGET_NOISE_STD", "TaskData", "circle_labels", "make_task", "task_dims"]

LABEL_NOISE = 0.01
TARGET_NOISE_STD = 0.01
PERMUTATION_SEED = 42
TRAIN_FRACTION = 0.9
_DIMS = {"circle": (2, 4), "relu": (1, 1), "helix": (1, 3)}
# stream layers: 8 per task so that no two draws share a stream
_X, _NOISE, _FLIP, _PERM = 0, 1, 2, 3


@dataclass(frozen=True)
class TaskData:
    """Train / validation / test arrays of one task (see module docstring for shapes)."""

    task: str
    seed: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def is_classification(self) -> bool:
        return self.task in CLASSIFICATION_TASKS


def task_dims(task: str) -> tuple[int, int]:
    """``(d_in, d_out)`` of a task (d_out = classes for circle)."""
    if task not in _DIMS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return _DIMS[task]


def circle_labels(x: np.ndarray) -> np.ndarray:
    """Noise-free ring labels of x (B, 2): #{B_k < x1^2 + x2^2}, int64 (B,)."""
    g = np.sum(np.square(x), axis=1)
    return np.sum(g[:, None] > np.asarray(CIRCLE_BOUNDARIES), axis=1).astype(np.int64)


def _stream(task: str, purpose: int) -> int:
    return 8 * TASKS.index(task) + purpose


def make_task(task: str, *, seed: int = 0, n: int = 10_000, val_fraction: float = 0.1) -> TaskData:
    """Draw ``n`` samples of ``task`` from ``seed`` and split them (permutation seed 42; 90/10; validation)."""
    d_in, d_out = task_dims(task)
    if isinstance(n, bool) or not isinstance(n, int) or n < 20:
        raise ValueError(f"n must be an integer >= 20, got {n!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    x = 2.0 * uniform01(seed, _stream(task, _X), STREAM_DATA, n, d_in) - 1.0  # (n, d_in), never exactly +-1
    if task == "circle":
        scores = circle_logits(np.sum(np.square(x), axis=1), slope0=0.1)  # (n, 4)
        order = np.argsort(-scores, axis=1, kind="stable")
        flip = uniform01(seed, _stream(task, _FLIP), STREAM_DATA, 1, n)[0] <= LABEL_NOISE
        y = np.where(flip, order[:, 1], order[:, 0]).astype(np.int64)
    else:
        clean = np.maximum(x, 0.0) if task == "relu" else helix(x[:, 0])
        y = clean + TARGET_NOISE_STD * standard_normal(seed, _stream(task, _NOISE), STREAM_DATA, n, d_out)
    order = permutation(PERMUTATION_SEED, n, layer=_PERM)
    x, y = x[order], y[order]
    n_train = int(round(TRAIN_FRACTION * n))
    n_val = max(1, int(round(val_fraction * n_train)))
    cut = n_train - n_val
    return TaskData(task, seed, x[:cut], y[:cut], x[cut:n_train], y[cut:n_train], x[n_train:], y[n_train:])
