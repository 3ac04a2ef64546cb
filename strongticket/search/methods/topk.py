"""Top-k methods: edge-popup (Ramanujan et al. 2020), annealed edge-popup (Fischer & Burkholz 2022),
biprop (Diffenderfer & Kailkhura 2021), IteRand (Chijiwa et al. 2021).

They rank |S| (dS = G ⊙ W ⊙ sign(S)) by default; ``score_key="signed"`` ranks S itself, straight-through dS = G ⊙ W
(:class:`SignedTopKRule`, what IteRand's code does); ``score_init="kaiming-uniform"`` starts the scores at
U(±√(6/fan_in)) (IteRand's) instead of edge-popup's U(±1/√fan_in).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ...nn import MaskedLayer, ScoreRule, masked_layers, version_key
from ...random import STREAM_BIAS_SCORES, STREAM_REDRAW, init_scores, matrix_shape, uniform01
from .base import Method, _top_eligible

if TYPE_CHECKING:
    from ...config import SearchConfig
    from ...data.splits import Splits


class TopKMethod(Method):
    """What the top-k methods share: the initial scores (``score_init``) and the ranking key (``score_key``)."""

    def __init__(self, cfg: SearchConfig) -> None:
        super().__init__(cfg)
        if cfg.score_key == "signed":  # a score rule computes the weight: no fused SGD step
            self.fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        if self.cfg.score_init == "kaiming-uniform":
            reinit_scores(layers, "kaiming-uniform")
        if self.cfg.score_key == "signed":
            rule = SignedTopKRule(layers)
            for layer in layers:
                layer.rule = rule


@torch.no_grad()
def reinit_scores(layers: list[MaskedLayer], mode: str) -> None:
    """Draw every layer's scores (and bias scores) again with ``init_scores(..., mode=mode)``, from the same words
    the layers were built with."""
    for layer in layers:
        shape = tuple(layer.scores.shape)
        layer.scores.copy_(init_scores(shape, layer.seed, layer.layer_index, mode=mode))
        if layer.bias_scores is not None:
            layer.bias_scores.copy_(init_scores((shape[0],), layer.seed, layer.layer_index, fan_in=math.prod(shape[1:]),
                                                kind=STREAM_BIAS_SCORES, mode=mode))


class SignedTopKRule(ScoreRule):
    """Top-k of the signed scores S (not |S|), per layer or over all layers of a global threshold, ties by position;
    straight-through W ⊙ M + W ⊙ (S − sg(S)), so dS = G ⊙ W with no sign(S) factor (IteRand's ``GetSubnet``)."""

    def __init__(self, layers: list[MaskedLayer]) -> None:
        self.layers = layers
        self._cache: dict[int, tuple[tuple, list[Tensor]]] = {}

    def weight(self, layer: MaskedLayer) -> Tensor:
        w = layer.current_weight
        s = layer.scores
        return w * self.mask(layer) + w * (s - s.detach())  # value W ⊙ M exactly; gradient G ⊙ W

    def bias(self, layer: MaskedLayer) -> Tensor | None:
        s = layer.bias_scores
        return layer.bias * self.bias_mask(layer) + layer.bias * (s - s.detach())

    def mask(self, layer: MaskedLayer) -> Tensor:
        group = self.layers if layer._selector is not None else [layer]
        k = layer._selector.k if layer._selector is not None else layer.k
        key = (k, *(version_key(lay.scores) for lay in group))
        cached = self._cache.get(id(group[0]))
        if cached is None or cached[0] != key:
            scores = [lay.scores for lay in group]
            cached = (key, _top_eligible(scores, [torch.ones_like(s, dtype=torch.bool) for s in scores], k,
                                         magnitude=False))
            self._cache[id(group[0])] = cached
        return cached[1][group.index(layer)]

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        s = layer.bias_scores
        return _top_eligible([s], [torch.ones_like(s, dtype=torch.bool)], layer.bias_k, magnitude=False)[0]


class EdgePopup(TopKMethod):
    """Edge-popup (Ramanujan et al. 2020), per layer or global (``--scope``)."""

    name = "edge-popup"


class AnnealedEdgePopup(TopKMethod):
    """Edge-popup with density ρ^{min(1, e/T)} in epoch e = 1..E; the last T..E epochs train at ρ exactly."""

    name = "annealed-edge-popup"

    def density_at(self, epoch: int) -> float:
        horizon = self.cfg.anneal_epochs or self.cfg.epochs
        if epoch + 1 >= horizon:
            return self.cfg.density
        return self.cfg.density ** ((epoch + 1) / horizon)


class Biprop(TopKMethod):
    """Biprop (Diffenderfer & Kailkhura 2021): edge-popup on binary weights α·sign(W) ⊙ M. The layers' binary
    mode is part of the model (``model_from_config``), so a loaded ticket computes the same way."""

    name = "biprop"
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        super().prepare(model, splits)
        if not all(layer.binary for layer in masked_layers(model)):
            raise ValueError("biprop needs binary layers: build the model with model_from_config(cfg)")


class IteRand(TopKMethod):
    """IteRand (Chijiwa et al. 2021): edge-popup + seeded re-randomization of pruned weights."""

    name = "iterand"

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        super().prepare(model, splits)
        for layer in masked_layers(model):
            layer.enable_redraw()

    def after_step(self, model: nn.Module, step: int) -> None:
        every = self.cfg.rerand_every
        if every and step % every == 0:
            rerandomize(masked_layers(model), step // every, self.cfg.rerand_lambda)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if not self.cfg.rerand_every and epoch + 1 < self.cfg.epochs:
            rerandomize(masked_layers(model), epoch + 1, self.cfg.rerand_lambda)


@torch.no_grad()
def rerandomize(layers: list[MaskedLayer], event: int, probability: float) -> list[int]:
    """Re-randomization event ``event`` (>= 1): each pruned weight is re-drawn with ``probability``, as
    generation ``event`` of its layer's init; the coins are uniform01 of (seed, layer, STREAM_REDRAW,
    generation ``event``). Returns the number of weights re-drawn per layer."""
    counts = []
    for layer in layers:
        rows, cols = matrix_shape(tuple(layer.scores.shape))
        coins = torch.from_numpy(uniform01(layer.seed, layer.layer_index, STREAM_REDRAW, rows, cols, event))
        mask = layer.mask
        where = (coins.view(layer.scores.shape).to(mask.device) < probability) & ~mask
        layer.redraw(where, event)
        counts.append(int(where.sum()))
    return counts
