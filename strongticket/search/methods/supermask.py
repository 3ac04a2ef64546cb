"""Bernoulli supermasks (Zhou et al., NeurIPS 2019)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...nn import MaskedLayer, ScoreRule, masked_layers, version_key
from .base import Method, _mix, top_positive

if TYPE_CHECKING:
    from ...data.splits import Split, Splits


class Supermask(Method):
    """Bernoulli supermask (Zhou et al. 2019) with a deterministic, density-capped evaluation mask."""

    name = "supermask"
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        self.rule = BernoulliRule(layers, self.cfg.seed)
        rho = min(max(self.cfg.density, 1e-6), 1 - 1e-6)
        logit = math.log(rho / (1 - rho))
        with torch.no_grad():
            for layer in layers:
                layer.rule = self.rule
                for s in (layer.scores, layer.bias_scores):
                    if s is not None:
                        s.fill_(logit)

    def before_step(self, model: nn.Module, step: int) -> None:
        self.rule.step = step

    @torch.no_grad()
    def epoch_metrics(self, model: nn.Module, val: Split) -> dict[str, Any]:
        from ...evaluate import evaluate, metric_key

        layers = masked_layers(model)
        p = torch.cat([torch.sigmoid(layer.scores.detach()).reshape(-1) for layer in layers])
        self.rule.sample_in_eval = True
        try:
            metric, _ = evaluate(model, val)
        finally:
            self.rule.sample_in_eval = False
        return {f"sampled_val_{metric_key(val.task)}": metric, "expected_density": float(p.double().mean())}


class BernoulliRule(ScoreRule):
    """Supermask's rule: sampled masks in training, the capped rounded mask otherwise."""

    def __init__(self, layers: list[MaskedLayer], seed: int) -> None:
        self.layers, self.seed = layers, seed
        self.step = 0
        self.sample_in_eval = False  # sampled-mask evaluation (its own stream)
        self._cache: dict[int, tuple[tuple, list[Tensor]]] = {}

    def _sampled(self, layer: MaskedLayer, scores: Tensor, which: int) -> Tensor:
        p = torch.sigmoid(scores)
        stream = "train" if layer.training else "eval"
        gen = torch.Generator(device=scores.device)
        gen.manual_seed(_mix(f"supermask:{stream}", self.seed, layer.layer_index, which, self.step))
        u = torch.rand(scores.shape, generator=gen, device=scores.device)
        return (u < p.detach()).to(p.dtype) + (p - p.detach())  # value M exactly; gradient σ'(S)

    def _sampling(self, layer: MaskedLayer) -> bool:
        return layer.training or self.sample_in_eval

    def weight(self, layer: MaskedLayer) -> Tensor:
        w = layer.current_weight
        if self._sampling(layer):
            return w * self._sampled(layer, layer.scores, 0)
        return w * self.mask(layer)

    def bias(self, layer: MaskedLayer) -> Tensor | None:
        if self._sampling(layer):
            return layer.bias * self._sampled(layer, layer.bias_scores, 1)
        return layer.bias * self.bias_mask(layer)

    def mask(self, layer: MaskedLayer) -> Tensor:
        group = self.layers if layer._selector is not None else [layer]
        k = layer._selector.k if layer._selector is not None else layer.k
        key = (k, *(version_key(lay.scores) for lay in group))
        cached = self._cache.get(id(group[0]))
        if cached is None or cached[0] != key:
            cached = (key, top_positive([lay.scores for lay in group], k))
            self._cache[id(group[0])] = cached
        return cached[1][group.index(layer)]

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        return top_positive([layer.bias_scores], layer.bias_k)[0]
