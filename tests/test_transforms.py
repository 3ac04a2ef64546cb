"""Random crop + flip (Philox-keyed, batched) and normalization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from strongticket.data.transforms import (
    DATASET_STATS,
    augment_params,
    dataset_stats,
    normalize,
    random_crop_flip,
)
from strongticket.random import STREAM_DATA, philox4x32, stream_seed


def _images(n: int, c: int = 3, h: int = 8, w: int = 7) -> torch.Tensor:
    # distinct values everywhere, so any misplaced pixel shows
    return (torch.arange(n * c * h * w, dtype=torch.int64) % 251 + 1).to(torch.uint8).reshape(n, c, h, w)


def _reference(x: torch.Tensor, padding: int, seed: int, epoch: int, step: int, fill=0.0) -> torch.Tensor:
    """One example at a time: pad, slice the window, flip."""
    dy, dx, flip = augment_params(x.shape[0], padding=padding, seed=seed, epoch=epoch, step=step)
    h, w = x.shape[2:]
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        padded = torch.empty((x.shape[1], h + 2 * padding, w + 2 * padding), dtype=x.dtype)
        for c in range(x.shape[1]):
            padded[c] = fill[c] if isinstance(fill, tuple) else fill
        padded[:, padding:padding + h, padding:padding + w] = x[i]
        crop = padded[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@pytest.mark.parametrize("padding", [0, 1, 4])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_equals_slow_reference_loop(padding, dtype):
    x = _images(64).to(dtype)
    out = random_crop_flip(x, padding=padding, seed=7, epoch=3, step=11)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(out, _reference(x, padding, 7, 3, 11))


def test_crop_flip_pads_with_per_channel_fill():
    x = normalize(_images(40), *dataset_stats("cifar10"))
    fill = (-1.5, 0.25, 2.0)
    out = random_crop_flip(x, padding=3, seed=2, epoch=0, step=1, fill=fill)
    assert torch.equal(out, _reference(x, 3, 2, 0, 1, fill))
    assert bool((out == 2.0).any())  # some border pixels made it in


def test_crop_flip_is_deterministic_and_keyed_by_seed_epoch_step():
    x = _images(32)
    out = random_crop_flip(x, padding=4, seed=1, epoch=2, step=3)
    assert torch.equal(out, random_crop_flip(x.clone(), padding=4, seed=1, epoch=2, step=3))
    for other in ({"seed": 2, "epoch": 2, "step": 3}, {"seed": 1, "epoch": 3, "step": 3},
                  {"seed": 1, "epoch": 2, "step": 4}):
        assert not torch.equal(out, random_crop_flip(x, padding=4, **other)), other


def test_example_draws_do_not_depend_on_batch_size():
    x = _images(20)
    whole = random_crop_flip(x, padding=2, seed=5, epoch=0, step=0)
    assert torch.equal(random_crop_flip(x[:6], padding=2, seed=5, epoch=0, step=0), whole[:6])


def test_augment_params_follow_the_documented_derivation():
    n, padding, seed, epoch, step = 10, 4, 123, 6, 9
    key = stream_seed(seed, 0, STREAM_DATA)
    w0, w1, w2, _ = philox4x32(key & 0xFFFFFFFF, key >> 32, np.arange(n), step, epoch, 0x00A06A06)
    span = 2 * padding + 1
    dy, dx, flip = augment_params(n, padding=padding, seed=seed, epoch=epoch, step=step)
    assert dy.tolist() == [(int(w) * span) >> 32 for w in w0]
    assert dx.tolist() == [(int(w) * span) >> 32 for w in w1]
    assert flip.tolist() == [int(w) >> 31 for w in w2]


def test_flip_rate_is_half_and_offsets_cover_the_range():
    n = 40_000
    dy, dx, flip = augment_params(n, padding=4, seed=0, epoch=0, step=0)
    assert abs(flip.mean() - 0.5) < 0.015  # binomial sd 0.0025
    for offsets in (dy, dx):
        counts = np.bincount(offsets, minlength=9)
        assert counts.shape == (9,) and counts.min() > 0.9 * n / 9 and counts.max() < 1.1 * n / 9


def test_flip_only_mirrors_and_no_padding_crop_is_identity():
    x = _images(50)
    out = random_crop_flip(x, padding=0, seed=3, epoch=1, step=0)
    _, _, flip = augment_params(50, padding=0, seed=3, epoch=1, step=0)
    for i in range(50):
        assert torch.equal(out[i], x[i].flip(-1) if flip[i] else x[i])
    assert 0 < flip.sum() < 50


def test_crop_flip_rejects_bad_arguments():
    x = _images(2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_crop_flip(x[0], padding=4, seed=0, epoch=0, step=0)
    with pytest.raises(ValueError, match="padding must be in"):
        random_crop_flip(x, padding=-1, seed=0, epoch=0, step=0)
    with pytest.raises(ValueError, match="seed must be in"):
        random_crop_flip(x, padding=4, seed=2**32, epoch=0, step=0)
    with pytest.raises(ValueError, match="epoch must be an int"):
        random_crop_flip(x, padding=4, seed=0, epoch=1.5, step=0)
    assert random_crop_flip(x[:0], padding=4, seed=0, epoch=0, step=0).shape == (0, 3, 8, 7)


def test_normalize_per_channel_float32():
    x = _images(4)
    mean, std = dataset_stats("cifar10")
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == x.shape
    m = torch.tensor(mean).reshape(3, 1, 1)
    s = torch.tensor(std).reshape(3, 1, 1)
    assert torch.equal(out, (x.float() / 255.0 - m) / s)
    assert torch.equal(normalize(x[0], mean, std), out[0])
    grey = normalize(_images(2, c=1), *DATASET_STATS["mnist"])
    assert torch.allclose(grey, (_images(2, c=1).float() / 255 - 0.1307) / 0.3081)


def test_normalize_rejects_bad_inputs():
    x = _images(2)
    with pytest.raises(ValueError, match="uint8"):
        normalize(x.float(), 0.5, 0.5)
    with pytest.raises(ValueError, match="mean must have 1 or 3 values"):
        normalize(x, (0.1, 0.2), 0.5)
    with pytest.raises(ValueError, match="std must be > 0"):
        normalize(x, 0.5, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="mnist, fashion_mnist, cifar10, cifar100.*'imagenet'"):
        dataset_stats("imagenet")
