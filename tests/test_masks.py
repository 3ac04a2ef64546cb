import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from strongticket.masks import (
    global_topk_masks,
    keep_count,
    kth_largest,
    magnitude_bits,
    pack_mask,
    topk_mask,
    unpack_mask,
)


def _reference_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Full stable sort by (-|S|, index): the definition of the mask, ties by index."""
    mag = scores.detach().double().abs().reshape(-1).numpy()
    order = np.lexsort((np.arange(mag.size), -mag))  # last key is primary
    keep = np.zeros(mag.size, dtype=bool)
    keep[order[:k]] = True
    return torch.from_numpy(keep).view(scores.shape)


@pytest.mark.parametrize(
    "density, n, expected",
    [(0.3, 10, 3), (0.5, 7, 4), (1.0, 13, 13), (1e-9, 5, 1), (0.1, 30, 3), (0.7, 10, 7), (0.05, 1_000_001, 50_001)],
)
def test_mask_keeps_exactly_ceil_density_n(density, n, expected):
    # 0.3 * 10 == 3.0000000000000004 and 0.7 * 10 == 7.000000000000001 in floats: the decimal is what counts.
    assert keep_count(density, n) == expected == math.ceil(Fraction(str(density)) * n)


@pytest.mark.parametrize("shape", [(1,), (7, 3), (33, 65), (4, 3, 5, 5)])
@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
def test_topk_mask_equals_stable_sort_definition(shape, density):
    g = torch.Generator().manual_seed(sum(shape))
    scores = torch.randn(shape, generator=g)
    k = keep_count(density, scores.numel())
    mask = topk_mask(scores, k)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int(mask.sum()) == k
    assert torch.equal(mask, _reference_mask(scores, k))


def test_ties_are_broken_by_index():
    scores = torch.tensor([1.0, -2.0, 2.0, 0.5, -2.0, 2.0, 1.0])  # |S| = 2 four times
    assert topk_mask(scores, 3).tolist() == [False, True, True, False, True, False, False]
    assert topk_mask(torch.zeros(10), 4).tolist() == [True] * 4 + [False] * 6


def test_heavily_tied_scores_match_the_definition():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(-3, 4, (257, 31), generator=g).float() / 4  # only 7 distinct values
    for k in (1, 100, 4000, scores.numel()):
        assert torch.equal(topk_mask(scores, k), _reference_mask(scores, k))


def test_kth_largest_equals_topk_values_min():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 1000, 100_003):
        bits = magnitude_bits(torch.randn(n, generator=g))
        for k in {1, n // 2 + 1, n}:
            assert kth_largest(bits, k) == torch.topk(bits, k).values.min()


def test_global_topk_uses_one_threshold_across_layers():
    g = torch.Generator().manual_seed(1)
    layers = [torch.randn(20, 30, generator=g) * 3, torch.randn(50, 20, generator=g), torch.randn(7, generator=g)]
    n = sum(s.numel() for s in layers)
    k = keep_count(0.3, n)
    masks = global_topk_masks(layers, k)
    assert sum(int(m.sum()) for m in masks) == k
    flat = torch.cat([s.reshape(-1) for s in layers])
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks]), _reference_mask(flat, k))
    # the larger-scaled layer keeps more than its share; per-layer top-k would keep 30% of each
    assert masks[0].float().mean() > 0.5 > masks[1].float().mean()
    smallest_kept = min(float(s[m].abs().min()) for s, m in zip(layers, masks) if m.any())
    largest_dropped = max(float(s[~m].abs().max()) for s, m in zip(layers, masks) if (~m).any())
    assert smallest_kept >= largest_dropped


def test_pack_mask_is_one_bit_per_weight_and_round_trips():
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(13, 7, generator=g) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == np.uint8 and packed.size == math.ceil(91 / 8)
    assert torch.equal(unpack_mask(packed, (13, 7)), mask)
    with pytest.raises(ValueError, match="must be 12 uint8 bytes, got 11"):
        unpack_mask(packed[:-1], (13, 7))


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_bad_density_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"density must be (in|a number in) \(0, 1\], got"):
        keep_count(bad, 10)
