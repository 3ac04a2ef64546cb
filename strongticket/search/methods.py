"""Search methods behind one interface: a registry of small strategy objects that :func:`run_search` drives.

One meaning of density everywhere: the fraction of weights kept, k = ⌈density·n⌉ per layer (``--scope layer``)
or over all masked layers together (``--scope global``), ties broken by index (:mod:`strongticket.masks`).

Hooks a method may override (all default to "do nothing", so edge-popup's loop is unchanged bit for bit):
  * ``trains``            False for pruning-at-initialization methods: no score training, the mask comes from
                          :meth:`Method.prepare` alone and is evaluated as a normal (fixed-mask) ticket;
  * ``prepare(model, splits)``   before training (e.g. compute saliency scores and fix the mask);
  * ``density_at(epoch)`` the density trained at in 0-based ``epoch`` (schedules); only epochs at the target
                          density may be selected as the best epoch;
  * ``after_step(model)``, ``after_epoch(model, epoch)``.

Methods (``--algo``):
  edge-popup            M = TopK(|S|), dS = G ⊙ W ⊙ sign(S); Ramanujan et al., CVPR 2020.
  annealed-edge-popup   edge-popup trained at density ρ^{min(1, e/T)} in epoch e = 1..E (T = ``anneal_epochs``,
                        default E): starts (nearly) dense, ends at the target ρ; Fischer & Burkholz, ICLR 2022.
  random, magnitude, snip, grasp, synflow
                        pruning at initialization, no training; ``rounds`` N ≥ 1 rounds at densities ρ^{r/N},
                        r = 1..N, re-scoring the surviving weights θ = W ⊙ M between rounds (Tanaka et al.,
                        NeurIPS 2020). Scores, higher = keep:
                          random     N(0, 1) from a generator seeded by (seed, round);
                          magnitude  |θ|;
                          snip       |θ ⊙ ∂L/∂θ| / Σ, L = cross-entropy on the prune set (Lee et al., ICLR 2019);
                          grasp      θ ⊙ (H g) / (|Σ| + ε), g = ∂L/∂θ at logits / 200 (Wang et al., ICLR 2020).
                                     Sign: GraSP removes the largest −θ ⊙ Hg, i.e. keeps the largest +θ ⊙ Hg
                                     (what Synaptic-Flow does despite its "negate" comment); pinned by a test;
                          synflow    |θ ⊙ ∂R/∂θ|, R = Σ f(1; |θ|), one all-ones input, eval mode, |bias|, batch-norm
                                     buffers untouched (the original abs()es them), data-free (Tanaka et al. 2020).
                        The prune set is the first 10 training examples of every class. Scores are turned into
                        ranks (exact in float32 up to 2**24 weights) so that signed scores select correctly under
                        the |S| top-k; pruned weights get rank 0, so a round only removes weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masks import validate_density
from ..nn import MaskedConv2d, MaskedLayer, masked_layers

if TYPE_CHECKING:
    from ..config import SearchConfig
    from ..data.splits import Splits

__all__ = [
    "Method",
    "EdgePopup",
    "AnnealedEdgePopup",
    "PruneAtInit",
    "METHODS",
    "PRUNE_AT_INIT",
    "get",
    "build",
    "set_density",
    "saliency",
    "collapsed_layers",
]

PRUNE_SET_PER_CLASS = 10
GRASP_TEMPERATURE = 200.0
_EPS = 1e-10
_MAX_RANKED = 1 << 24  # float32 represents every integer rank up to here exactly


class Method:
    """Base strategy: train the popup scores at the config's density (edge-popup's behaviour)."""

    name = "edge-popup"
    trains = True

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        """Called once before training (and before a resumed run continues), splits already on the device."""

    def density_at(self, epoch: int) -> float:
        """The density trained at in 0-based ``epoch``."""
        return self.cfg.density

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after every epoch (0-based), before validation."""


class EdgePopup(Method):
    """Edge-popup (Ramanujan et al. 2020), per layer or global (``--scope``)."""

    name = "edge-popup"


class AnnealedEdgePopup(Method):
    """Edge-popup with density ρ^{min(1, e/T)} in epoch e = 1..E; the last T..E epochs train at ρ exactly."""

    name = "annealed-edge-popup"

    def density_at(self, epoch: int) -> float:
        horizon = self.cfg.anneal_epochs or self.cfg.epochs
        if epoch + 1 >= horizon:
            return self.cfg.density
        return self.cfg.density ** ((epoch + 1) / horizon)


class PruneAtInit(Method):
    """A pruning-at-initialization baseline: no training; ``rounds`` rounds of score-and-prune."""

    trains = False

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
        for layer, mask in zip(layers, kept):
            layer.fix_mask(mask)


def _pai(name: str) -> type[PruneAtInit]:
    return type(name.title().replace("-", "") + "Pruning", (PruneAtInit,), {"name": name,
                                                                           "__doc__": f"{name} pruning at init."})


PRUNE_AT_INIT = ("random", "magnitude", "snip", "grasp", "synflow")
METHODS: dict[str, type[Method]] = {
    "edge-popup": EdgePopup,
    "annealed-edge-popup": AnnealedEdgePopup,
    **{name: _pai(name) for name in PRUNE_AT_INIT},
}


def get(name: str) -> type[Method]:
    """The method class registered as ``name``; the error lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"algo must be one of {', '.join(METHODS)}, got {name!r}") from None


def build(cfg: SearchConfig) -> Method:
    """The strategy object for ``cfg.algo``."""
    return get(cfg.algo)(cfg)


def set_density(layers: list[MaskedLayer], density: float) -> None:
    """Make ``layers`` keep ``density`` of their weights: through their shared global threshold if they have one."""
    validate_density(density)
    selector = layers[0]._selector if layers else None
    if selector is not None:
        selector.set_density(density)
    else:
        for layer in layers:
            layer.set_density(density)


def collapsed_layers(layers: list[MaskedLayer]) -> list[int]:
    """Positions (in module order) of the masked layers whose mask keeps no weight at all."""
    return [i for i, layer in enumerate(layers) if layer.kept() == 0]


# --------------------------------------------------------------------------------------------------- saliency


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
    """The first ``PRUNE_SET_PER_CLASS`` training examples of every class, in split order."""
    labels = splits.train.labels
    idx = torch.cat([torch.nonzero(labels == c).squeeze(1)[:PRUNE_SET_PER_CLASS]
                     for c in range(splits.num_classes)])
    idx = idx.sort().values
    return splits.train.x[idx], labels[idx]


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
