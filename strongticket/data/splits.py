"""Deterministic train / validation / test splits and seeded batch order for in-memory data sets.

The test split is fixed per data set (a Philox permutation with a constant seed), so every run and every
ticket is scored on the same examples. The validation split is carved from the remaining training data: the
search selects its epoch on validation accuracy and reports test accuracy once, at the end. Batch order for
epoch e is a Philox permutation of (data_seed, e): independent of the weight seed, and reproducible on resume
without saving any generator state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..random import permutation
from .digits import load_digits

__all__ = ["Split", "Splits", "DATASETS", "load_splits", "batches"]

_SPLIT_SEED = 0x5EED  # fixes the test split of every data set for good
_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (n, *input_shape) float32 and integer ``labels`` (n,)."""

    x: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int


DATASETS = ("digits",)


def load_splits(name: str, *, val_fraction: float = 0.1, root: str | Path | None = None) -> Splits:
    """Load data set ``name`` and split it; ``val_fraction`` is the share of the training data held out."""
    if name != "digits":
        raise ValueError(f"data must be one of {', '.join(DATASETS)}, got {name!r}")
    images, labels = load_digits()
    n = labels.shape[0]
    order = torch.from_numpy(permutation(_SPLIT_SEED, n))
    n_test = round(_TEST_FRACTION * n)
    test_idx, rest = order[:n_test], order[n_test:]
    n_val = round(val_fraction * rest.numel())
    if not 1 <= n_val < rest.numel():
        raise ValueError(f"val_fraction must leave at least one example in validation and in training, "
                         f"got {val_fraction} of {rest.numel()}")
    val_idx, train_idx = rest[:n_val], rest[n_val:]

    def take(idx: Tensor) -> Split:
        idx = idx.sort().values  # keep the file's order inside each split
        return Split(images[idx], labels[idx])

    return Splits(take(train_idx), take(val_idx), take(test_idx), tuple(images.shape[1:]), 10)


def batches(split: Split, batch_size: int, *, seed: int | None = None, epoch: int = 0,
            augment: bool = False) -> Iterator[Split]:
    """Mini-batches of ``split``; shuffled by Philox(seed, epoch) when ``seed`` is given, else in order."""
    n = len(split)
    if seed is None:
        order = None
    else:
        order = torch.from_numpy(permutation(seed, n, layer=epoch)).to(split.x.device)
    for start in range(0, n, batch_size):
        if order is None:
            yield Split(split.x[start:start + batch_size], split.labels[start:start + batch_size])
        else:
            idx = order[start:start + batch_size]
            yield Split(split.x[idx], split.labels[idx])
