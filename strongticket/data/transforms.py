"""Batched, deterministic image transforms in plain torch: random crop with zero padding + horizontal flip, and
per-channel normalization with the standard statistics of MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

``random_crop_flip`` is the standard CIFAR augmentation (He et al., "Deep residual learning for image
recognition", CVPR 2016: pad 4, random 32x32 crop, flip with probability 1/2). Its randomness is a pure
function of ``(seed, epoch, step, i)`` for example ``i`` of the batch, so a resumed run sees the same
augmentations with no generator state saved. The exact derivation, with ``p = padding``::

    key     = (seed, STREAM_DATA << 24)                     # strongticket.random stream (seed, layer 0, DATA)
    counter = (i, step, epoch, 0x00A06A06)                  # Philox4x32-10 counter words c0, c1, c2, c3
    w0, w1, w2, w3 = philox4x32(key, counter)
    dy = (w0 * (2p + 1)) >> 32,  dx = (w1 * (2p + 1)) >> 32   # crop offsets in [0, 2p], in the padded image
    flip = w2 >> 31                                          # 1 = mirror left-right, probability exactly 1/2

``random_words`` counters always have ``c1 = c2 = c3 = 0``, so the constant ``c3`` keeps these words disjoint
from every other stream of the package (batch order, splits) whatever the seed. Output pixel ``(c, h, w)`` of
example ``i`` is ``padded[c, dy + h, dx + w']`` with ``w' = W - 1 - w`` if flipped, else ``w``, where ``padded``
is the example with ``p`` rows/columns of ``fill`` (default 0) on every side: one gather over the whole batch.

``normalize`` maps uint8 pixels to float32 ``(x / 255 - mean) / std`` per channel.

Shapes: ``x`` is ``(N, C, H, W)``; outputs have the same shape (normalize: float32).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..random import STREAM_DATA, philox4x32, stream_seed

__all__ = ["DATASET_STATS", "augment_params", "dataset_stats", "normalize", "normalizer", "random_crop_flip"]

DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
"""Name -> per-channel ``(mean, std)`` of ``pixel / 255`` over the training set (the widely published values;
for CIFAR-10 the true per-pixel std, not the often copied ``(0.2023, 0.1994, 0.2010)``)."""

_COUNTER_TAG = 0x00A06A06  # counter word c3 of every augmentation draw (module docstring)
_U32 = 2**32


def dataset_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of data set ``name``; a ValueError lists the known names."""
    if name not in DATASET_STATS:
        raise ValueError(f"dataset must be one of {', '.join(DATASET_STATS)}, got {name!r}")
    return DATASET_STATS[name]


def _check_uint(name: str, value: object, high: int = _U32) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int in [0, {high}), got {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int in [0, {high}), got {value!r}") from None
    if not 0 <= as_int < high:
        raise ValueError(f"{name} must be in [0, {high}), got {as_int}")
    return as_int


def augment_params(
    n: int, *, padding: int, seed: int, epoch: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crop offsets and flips of a batch of ``n`` examples: ``(dy, dx, flip)``, int64 ``(n,)`` each.

    ``dy``/``dx`` are in ``[0, 2 * padding]`` (offsets into the padded image), ``flip`` is 0 or 1; derivation in
    the module docstring.
    """
    n = _check_uint("n", n, 2**32)
    padding = _check_uint("padding", padding, 2**16)
    epoch = _check_uint("epoch", epoch)
    step = _check_uint("step", step)
    key = stream_seed(seed, 0, STREAM_DATA)  # validates seed in [0, 2**32)
    key0, key1 = key & 0xFFFFFFFF, key >> 32
    index = np.arange(n, dtype=np.uint32)
    w0, w1, w2, _ = philox4x32(key0, key1, index, step, epoch, _COUNTER_TAG)
    span = np.uint64(2 * padding + 1)
    dy = ((w0.astype(np.uint64) * span) >> np.uint64(32)).astype(np.int64)  # exact: span < 2**17
    dx = ((w1.astype(np.uint64) * span) >> np.uint64(32)).astype(np.int64)
    flip = (w2 >> np.uint32(31)).astype(np.int64)
    return dy, dx, flip


def random_crop_flip(
    x: torch.Tensor, *, padding: int, seed: int, epoch: int, step: int, fill: float | Sequence[float] = 0.0
) -> torch.Tensor:
    """Pad each image with ``padding`` pixels of ``fill`` per side, crop a random ``H x W`` window, and flip it
    with probability 1/2.

    ``x``: ``(N, C, H, W)`` of any dtype and device; returns a new tensor of the same shape, dtype and device.
    ``fill`` is one value or one per channel: 0 (black) for raw pixels; for inputs already normalized, pass
    the normalized black, ``[-m / s for m, s in zip(mean, std)]``, to match padding before normalization.
    The same ``(seed, epoch, step)`` gives the same output bit for bit; example ``i`` of the batch is
    transformed by the draws of counter ``i`` (module docstring), so it does not depend on the batch size.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    dy, dx, flip = augment_params(n, padding=padding, seed=seed, epoch=epoch, step=step)
    if n == 0:
        return x.clone()
    height, width = h + 2 * padding, w + 2 * padding
    border = _per_channel("fill", fill, c, x.device).to(x.dtype)  # (C, 1, 1)
    padded = border.expand(n, c, height, width).clone()  # (N, C, H + 2p, W + 2p)
    padded[:, :, padding:padding + h, padding:padding + w] = x
    dy_t, dx_t, flip_t = (torch.from_numpy(a).to(x.device) for a in (dy, dx, flip))
    rows = dy_t[:, None] + torch.arange(h, device=x.device)  # (N, H)
    columns = torch.arange(w, device=x.device)
    columns = torch.where(flip_t[:, None].bool(), w - 1 - columns, columns) + dx_t[:, None]  # (N, W)
    index = rows[:, :, None] * width + columns[:, None, :]  # (N, H, W) flat index into one padded plane
    index = index.reshape(n, 1, h * w).expand(n, c, h * w)
    out = padded.reshape(n, c, -1).gather(2, index)  # (N, C, H * W)
    return out.reshape(n, c, h, w)


def normalize(
    x: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, float32; ``x`` uint8 ``(N, C, H, W)`` or ``(C, H, W)``.

    ``mean``/``std`` are one number or one per channel (e.g. ``dataset_stats("cifar10")``).
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"x must have shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    return normalizer(mean, std, x.shape[-3], x.device)(x)


def normalizer(mean: float | Sequence[float], std: float | Sequence[float], channels: int,
               device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`normalize` with ``mean``/``std`` checked and made tensors once (a batch loop calls it every step)."""
    mean_t = _per_channel("mean", mean, channels, device)
    std_t = _per_channel("std", std, channels, device)
    if not all(v > 0 for v in std_t.flatten().tolist()):
        raise ValueError(f"std must be > 0 in every channel, got {std_t.flatten().tolist()}")

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise ValueError(f"x must be uint8 pixels, got dtype {x.dtype}")
        return (x.to(torch.float32) / 255.0 - mean_t) / std_t

    return apply


def _per_channel(name: str, value: float | Sequence[float], channels: int, device: torch.device) -> torch.Tensor:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} must have 1 or {channels} values (one per channel), got {len(values)}")
    return torch.tensor(values, dtype=torch.float32, device=device).reshape(channels, 1, 1)
