"""Data sets as deterministic train / validation / test splits, and seeded batches (augmented, normalized).

Data sets (``DATASETS``): ``digits`` (ships with the package), ``mnist`` and ``fashion_mnist`` (IDX files under
``<root>/MNIST/raw/`` or ``<root>/FashionMNIST/raw/``), ``cifar10`` and ``cifar100`` (python batches under
``<root>/cifar-10-batches-py/`` or ``<root>/cifar-100-python/``), and ``imagefolder`` (``<root>/train/<class>/``
and ``<root>/test/<class>/``). Nothing is ever downloaded. ``planted-circle``, ``planted-relu`` and
``planted-helix`` are the Plant 'n' Seek tasks (:func:`strongticket.planted.make_task`, 10,000 samples drawn from
the fixed task seed ``PLANTED_TASK_SEED``, the task's own 90/10 test split): float32 inputs (n, d_in); Circle has
int64 labels (4 classes), ReLU and Helix are *regression* tasks with float32 targets (n, d_out). ``seq-sort`` and
``seq-reverse`` (:mod:`strongticket.data.sequences`, generated from a fixed seed) are token sequences: int64 inputs
(n, T) and one label per position (n, T); the network outputs (batch, classes, T) and accuracy is per token.

``Splits.task`` (and every ``Split.task``) is ``"classification"`` (labels (n,) int64; the search trains with
cross-entropy and selects on accuracy) or ``"regression"`` (``labels`` holds targets (n, d_out) float32; the
search trains with the MSE of an identity head and selects on the lowest validation MSE); ``num_classes`` is the
number of outputs of the network (classes, or d_out).

The test split is the files' own test set (for digits, a fixed 20% chosen by a Philox permutation with a
constant seed), so every run and every ticket is scored on the same examples. The validation split is carved
from the training data with a fixed permutation: the search selects its epoch on validation accuracy and reports
test accuracy once, at the end. Images stay uint8 in memory and are normalized per batch; training batches of
CIFAR get the standard augmentation (random crop with 4 pixels of zero padding, horizontal flip). Batch order and
augmentation of epoch e come from Philox words of (data_seed, e): independent of the weight seed, reproducible on
resume without saving any generator state. Under torchrun, each rank takes its strided share of every global
batch (``batches(..., rank=, world_size=)``), so the ranks together see the batches of a single process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..random import permutation
from .cifar import load_cifar
from .digits import load_digits
from .idx import load_mnist
from .imagefolder import load_image_folder
from .transforms import dataset_stats, normalizer, random_crop_flip

__all__ = ["Split", "Splits", "DATASETS", "PLANTED_TASK_SEED", "TASKS", "load_splits", "batches"]

_SPLIT_SEED = 0x5EED  # fixes the test split of digits and the validation split of every data set, for good
_TEST_FRACTION = 0.2  # digits only: the other data sets bring their own test set
PLANTED_TASK_SEED = 0  # the data of planted-<task>: fixed for good, like the digits split
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (n, *input_shape) — float32, or uint8 normalized per batch by ``mean``/``std`` — and
    integer ``labels`` (n,) (``task`` "classification") or float32 targets (n, d_out) ("regression");
    ``crop_padding`` > 0 turns on crop + flip augmentation for training batches."""

    x: Tensor
    labels: Tensor
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_padding: int = 0
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return replace(self, x=self.x.to(device), labels=self.labels.to(device))

    def take(self, idx: Tensor) -> Split:
        return replace(self, x=self.x[idx], labels=self.labels[idx])


@dataclass(frozen=True)
class Splits:
    """Train / validation / test splits of one data set; ``num_classes`` is the number of network outputs
    (classes, or target dimensions when ``task`` is "regression"); every split carries the same ``task``."""

    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    task: str = "classification"

    def __post_init__(self) -> None:
        if any(s.task != self.task for s in (self.train, self.val, self.test)):
            raise ValueError(f"every split must have task {self.task!r}, got "
                             f"{', '.join(s.task for s in (self.train, self.val, self.test))}")


_Arrays = tuple[Tensor, Tensor, Tensor, Tensor]
_FILE_DATASETS: dict[str, tuple[Callable[[Path], _Arrays], str | None, int]] = {
    # name: (reader(root) -> train_x, train_y, test_x, test_y; normalization stats; crop padding)
    "mnist": (lambda root: load_mnist(root, "MNIST"), "mnist", 0),
    "fashion_mnist": (lambda root: load_mnist(root, "FashionMNIST"), "fashion_mnist", 0),
    "cifar10": (lambda root: load_cifar(root, "cifar10"), "cifar10", 4),
    "cifar100": (lambda root: load_cifar(root, "cifar100", label="fine"), "cifar100", 4),
    "imagefolder": (lambda root: tuple(load_image_folder(root))[:4], None, 0),
}
_PLANTED = {"planted-circle": "circle", "planted-relu": "relu", "planted-helix": "helix"}
_SEQUENCES = {"seq-sort": "sort", "seq-reverse": "reverse"}
DATASETS = ("digits", *_FILE_DATASETS, *_PLANTED, *_SEQUENCES)


def load_splits(name: str, *, val_fraction: float = 0.1, root: str | Path | None = None,
                train_examples: int | None = None) -> Splits:
    """Load data set ``name`` and split it; ``val_fraction`` is the share of the training data held out;
    ``train_examples`` keeps the first that many examples of the training split (None: all of them)."""
    splits = _load_splits(name, val_fraction, root)
    if train_examples is None:
        return splits
    n = len(splits.train)
    if isinstance(train_examples, bool) or not isinstance(train_examples, int) or not 1 <= train_examples <= n:
        raise ValueError(f"train_examples must be an integer in [1, {n}] (the training split of {name}), "
                         f"got {train_examples!r}")
    return replace(splits, train=splits.train.take(torch.arange(train_examples)))


def _load_splits(name: str, val_fraction: float, root: str | Path | None) -> Splits:
    if name not in DATASETS:
        raise ValueError(f"data must be one of {', '.join(DATASETS)}, got {name!r}")
    if name in _PLANTED:
        return _planted_splits(_PLANTED[name], val_fraction)
    if name == "digits":
        images, labels = load_digits()
        order = torch.from_numpy(permutation(_SPLIT_SEED, labels.shape[0]))
        n_test = round(_TEST_FRACTION * labels.shape[0])
        test_idx = order[:n_test].sort().values
        rest = order[n_test:].sort().values
        full = Split(images, labels)
        train_all, test = full.take(rest), full.take(test_idx)
        num_classes = 10
    elif name in _SEQUENCES:  # token sequences (strongticket.data.sequences): int64 tokens and labels (n, T)
        from .sequences import VOCAB, make_sequences

        train_x, train_y, test_x, test_y = (torch.from_numpy(a) for a in make_sequences(_SEQUENCES[name]))
        train_all, test, num_classes = Split(train_x, train_y), Split(test_x, test_y), VOCAB
    else:
        if root is None:
            raise ValueError(f"data {name} is read from local files: give data_root (--data-root), got none")
        reader, stats, padding = _FILE_DATASETS[name]
        train_x, train_y, test_x, test_y = reader(Path(root).expanduser())
        mean, std = dataset_stats(stats) if stats else _stats_of(train_x)
        train_all = Split(train_x, train_y, mean, std, padding)
        test = Split(test_x, test_y, mean, std, 0)
        num_classes = int(max(train_y.max(), test_y.max())) + 1
    n = len(train_all)
    n_val = round(val_fraction * n)
    if not 1 <= n_val < n:
        raise ValueError(f"val_fraction must leave at least one example in validation and in training, "
                         f"got {val_fraction} of {n}")
    order = torch.from_numpy(permutation(_SPLIT_SEED, n, layer=1))
    val = replace(train_all.take(order[:n_val].sort().values), crop_padding=0)
    train = train_all.take(order[n_val:].sort().values)
    return Splits(train, val, test, tuple(train.x.shape[1:]), num_classes)


def _planted_splits(task: str, val_fraction: float) -> Splits:
    """The Plant 'n' Seek task ``task`` (seed ``PLANTED_TASK_SEED``) as float32 / int64 splits."""
    from ..planted.tasks import make_task, task_dims

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    data = make_task(task, seed=PLANTED_TASK_SEED, val_fraction=val_fraction)
    kind = "classification" if data.is_classification else "regression"

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        target = torch.from_numpy(y).long() if kind == "classification" else torch.from_numpy(y).float()
        return Split(torch.from_numpy(x).float(), target, task=kind)

    d_in, d_out = task_dims(task)
    return Splits(split(data.x_train, data.y_train), split(data.x_val, data.y_val),
                  split(data.x_test, data.y_test), (d_in,), d_out, kind)


def _stats_of(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double() / 255
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-6).tolist())


def batches(split: Split, batch_size: int, *, seed: int | None = None, epoch: int = 0,
            augment: bool = False, rank: int = 0, world_size: int = 1) -> Iterator[Split]:
    """Mini-batches of ``split`` as float32; shuffled by Philox(seed, epoch) when ``seed`` is given, else in order;
    augmented (crop + flip, when the split has ``crop_padding``) only when ``augment`` and ``seed`` are given.

    With ``world_size`` > 1, ``batch_size`` is the global batch and rank ``rank`` gets its examples rank,
    rank + world_size, … (what a DistributedSampler hands out when batch_size is a multiple of world_size),
    augmented exactly as in the global batch: together the ranks see the single-process batches, step by step.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, {world_size - 1}], got {rank!r}")
    n = len(split)
    order = None if seed is None else torch.from_numpy(permutation(seed, n, layer=epoch)).to(split.x.device)
    norm = None if split.mean is None else normalizer(split.mean, split.std, split.x.shape[-3], split.x.device)
    for step, start in enumerate(range(0, n, batch_size)):
        idx = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        x, labels = split.x[idx], split.labels[idx]
        if augment and seed is not None and split.crop_padding:
            x = random_crop_flip(x, padding=split.crop_padding, seed=seed, epoch=epoch, step=step)
        if world_size > 1:
            x, labels = x[rank::world_size], labels[rank::world_size]
        if norm is not None:
            x = norm(x)
        yield Split(x, labels, task=split.task)
