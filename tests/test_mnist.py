"""Pruning at init on uint8 images (MNIST, CIFAR): the prune set is what the network sees in training."""

import torch

from strongticket.config import SearchConfig
from strongticket.data.splits import Split, Splits
from strongticket.models import model_from_config
from strongticket.nn import masked_layers
from strongticket.search import methods


def test_snip_scores_uint8_images_as_the_network_sees_them_normalized():
    """The prune set is normalized like a training batch: SNIP on uint8 images with (mean, std) picks the same mask
    as on the same images normalized by hand (it crashed on MNIST's uint8 before)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (60, 1, 4, 4), dtype=torch.uint8, generator=g)
    y = torch.arange(60) % 3
    mean, std = (0.2,), (0.3,)
    by_hand = (x.float() / 255 - 0.2) / 0.3

    def mask_of(train: Split) -> list[torch.Tensor]:
        splits = Splits(train, train, train, (1, 4, 4), 3)
        cfg = SearchConfig(algo="snip", density=0.3, widths=(8,), init="kaiming_normal", seed=1)
        model = model_from_config(cfg, splits.input_shape, splits.num_classes)
        methods.build(cfg).prepare(model, splits)
        return [layer.mask.clone() for layer in masked_layers(model)]

    uint8, normalized = mask_of(Split(x, y, mean, std)), mask_of(Split(by_hand, y))
    assert all(torch.equal(a, b) for a, b in zip(uint8, normalized))
