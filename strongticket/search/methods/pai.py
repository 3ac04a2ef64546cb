"""Pruning at initialization: random, magnitude, SNIP (Lee et al. 2019), GraSP (Wang et al. 2020), SynFlow
(Tanaka et al. 2020); no training, rounds of re-scoring."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.splits import batches
from ...nn import MaskedConv2d, MaskedLayer, masked_layers
from .base import Method, set_density

if TYPE_CHECKING:
    from ...data.splits import Splits

PRUNE_AT_INIT = ("random", "magnitude", "snip", "grasp", "synflow")
PRUNE_SET_PER_CLASS = 10
GRASP_TEMPERATURE = 200.0
_EPS = 1e-10
_MAX_RANKED = 1 << 24  # float32 represents every integer rank up to here exactly


class PruneAtInit(Method):
    """A pruning-at-initialization baseline: no training; ``rounds`` rounds of score-and-prune."""

    trains = False
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        kept = [torch.ones(layer.scores.shape, dtype=torch.bool, device=layer.scores.device) for layer in layers]
        prune_set = _prune_set(splits) if self.name in ("snip", "grasp") else None
        n = self.cfg.rounds
        for r in range(1, n + 1):
            density = self.cfg.density if r == n else self.cfg.density ** (r / n)
            scores = saliency(self.name, model, kept, prune_set=prune_set, input_shape=splits.input_shape,
                              seed=self.cfg.seed, round=r)
            ranks = _ranks(scores, kept)
            with torch.no_grad():
                for layer, rank in zip(layers, ranks):
                    layer.scores.copy_(rank)
            set_density(layers, density)
            kept = [layer.mask.clone() for layer in layers]
        for layer, mask in zip(layers, kept):  # weights only are scored: every bias is kept
            keep_bias = None if layer.bias_scores is None else torch.ones_like(layer.bias_scores, dtype=torch.bool)
            layer.fix_mask(mask, keep_bias)


def _pai(name: str) -> type[PruneAtInit]:
    return type(name.title().replace("-", "") + "Pruning", (PruneAtInit,), {"name": name,
                                                                           "__doc__": f"{name} pruning at init."})


def saliency(name: str, model: nn.Module, kept: list[Tensor], *, prune_set: tuple[Tensor, Tensor] | None = None,
             input_shape: tuple[int, ...] | None = None, seed: int = 0, round: int = 1) -> list[Tensor]:
    """Scores (higher = keep) of every masked layer's weights θ = W ⊙ kept, per method ``name``."""
    layers = masked_layers(model)
    if len(kept) != len(layers):
        raise ValueError(f"kept must hold one mask per masked layer ({len(layers)}), got {len(kept)}")
    thetas = [(layer.weight.to(m.device) * m).detach() for layer, m in zip(layers, kept)]
    if name == "random":
        # the CPU generator keeps only 32 bits of its seed: mix (seed, round) into 32 bits by hashing
        digest = hashlib.sha256(f"strongticket.random-pruning:{seed}:{round}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
        return [torch.randn(t.shape, generator=gen).to(t.device) for t in thetas]
    if name == "magnitude":
        return [t.abs() for t in thetas]
    was_training = model.training
    model.eval()
    try:
        if name == "snip":
            return _snip(model, layers, thetas, _need(prune_set, name))
        if name == "grasp":
            return _grasp(model, layers, thetas, _need(prune_set, name))
        if name == "synflow":
            if input_shape is None:
                raise ValueError("synflow needs input_shape, got None")
            return _synflow(model, layers, thetas, input_shape)
    finally:
        model.train(was_training)
    raise ValueError(f"saliency name must be one of {', '.join(PRUNE_AT_INIT)}, got {name!r}")


def _need(prune_set: tuple[Tensor, Tensor] | None, name: str) -> tuple[Tensor, Tensor]:
    if prune_set is None:
        raise ValueError(f"{name} needs a prune set of (inputs, labels), got None")
    return prune_set


def _snip(model: nn.Module, layers: list[MaskedLayer], thetas: list[Tensor],
          prune_set: tuple[Tensor, Tensor]) -> list[Tensor]:
    x, y = prune_set
    thetas = [t.requires_grad_() for t in thetas]
    with _plain_forward(layers, thetas):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), thetas)
    scores = [(t * g).detach().abs() for t, g in zip(thetas, grads)]
    return _normalise(scores, sum(float(s.sum()) for s in scores))


def _grasp(model: nn.Module, layers: list[MaskedLayer], thetas: list[Tensor],
           prune_set: tuple[Tensor, Tensor]) -> list[Tensor]:
    x, y = prune_set
    thetas = [t.requires_grad_() for t in thetas]
    with _plain_forward(layers, thetas):
        g = [v.detach() for v in torch.autograd.grad(F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), thetas)]
        grads = torch.autograd.grad(F.cross_entropy(model(x) / GRASP_TEMPERATURE, y), thetas, create_graph=True)
        hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, grads)), thetas)  # H g = ∇(gᵀ ∇L)
    scores = [(t * v).detach() for t, v in zip(thetas, hg)]
    return _normalise(scores, abs(sum(float(s.sum()) for s in scores)))


def _synflow(model: nn.Module, layers: list[MaskedLayer], thetas: list[Tensor],
             input_shape: tuple[int, ...]) -> list[Tensor]:
    thetas = [t.abs().requires_grad_() for t in thetas]
    device = thetas[0].device
    ones = torch.ones((1, *input_shape), device=device)
    with _plain_forward(layers, thetas, absolute_bias=True):
        grads = torch.autograd.grad(model(ones).sum(), thetas)
    return [(t * g).detach().abs() for t, g in zip(thetas, grads)]


def _normalise(scores: list[Tensor], total: float) -> list[Tensor]:
    return [s / (total + _EPS) for s in scores]


@contextmanager
def _plain_forward(layers: list[MaskedLayer], thetas: list[Tensor], absolute_bias: bool = False) -> Iterator[None]:
    """Inside: every masked layer computes with the plain tensor θ (which autograd can differentiate) as its
    weight instead of its masked op; its frozen bias is kept (|b| with ``absolute_bias``)."""
    for layer, theta in zip(layers, thetas):
        layer.forward = _forward_with(layer, theta, absolute_bias)  # instance attribute shadows the method
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _forward_with(layer: MaskedLayer, theta: Tensor, absolute_bias: bool) -> Any:
    bias = layer.bias.detach() if layer.bias is not None else None
    if bias is not None and absolute_bias:
        bias = bias.abs()
    if isinstance(layer, MaskedConv2d):
        return lambda x: F.conv2d(x, theta, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return lambda x: F.linear(x, theta, bias)


def _prune_set(splits: Splits) -> tuple[Tensor, Tensor]:
    """The first ``PRUNE_SET_PER_CLASS`` training examples of every class, in split order, as the network sees them
    in training (float32, normalized: MNIST and CIFAR images are stored as uint8)."""
    labels = splits.train.labels
    idx = torch.cat([torch.nonzero(labels == c).squeeze(1)[:PRUNE_SET_PER_CLASS]
                     for c in range(splits.num_classes)])
    chosen = next(batches(splits.train.take(idx.sort().values), len(idx)))
    return chosen.x, chosen.labels


def _ranks(scores: list[Tensor], kept: list[Tensor]) -> list[Tensor]:
    """Scores → float32 ranks over all layers together: the largest kept score gets n, pruned weights 0; equal
    scores rank the lower index (layer order, then flat index) higher, matching the top-k tie-break."""
    flat = torch.cat([s.reshape(-1).double() for s in scores])
    alive = torch.cat([m.reshape(-1) for m in kept])
    n = flat.numel()
    if n > _MAX_RANKED:
        raise ValueError(f"pruning at init ranks at most {_MAX_RANKED} weights exactly, got {n}")
    if torch.isnan(flat[alive]).any():
        raise FloatingPointError("pruning scores became NaN (e.g. synflow overflow in a deep net)")
    order = torch.sort(torch.where(alive, flat, -math.inf), descending=True, stable=True).indices
    ranks = torch.empty(n, dtype=torch.float32, device=flat.device)
    ranks[order] = torch.arange(n, 0, -1, dtype=torch.float32, device=flat.device)
    ranks[~alive] = 0.0
    return [part.view(s.shape) for part, s in zip(ranks.split([s.numel() for s in scores]), scores)]
