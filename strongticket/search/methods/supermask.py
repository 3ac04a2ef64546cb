"""Bernoulli supermasks (Zhou et al., NeurIPS 2019).

Evaluation: by default the deterministic mask 1[σ(S) > ½], capped at the ⌈ρ·n⌉ largest scores (``supermask_cap``);
with ``eval_samples`` N > 0 a split is scored as Zhou et al. score their test set, by the mean metric over N masks
each freshly sampled from Bernoulli(σ(S)) (one mask per pass over the split; pass j has its own seeded stream), for
model selection and for the summary's ``test_<metric>``. A ticket holds one mask: the deterministic one, whose test
metric the summary reports as ``ticket_test_<metric>`` (``--save-scores`` keeps σ(S) too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...nn import MaskedLayer, ScoreRule, masked_layers, version_key
from .base import Method, _mix, top_positive

if TYPE_CHECKING:
    from ...data.splits import Split, Splits


class Supermask(Method):
    """Bernoulli supermask (Zhou et al. 2019) with a deterministic (by default density-capped) evaluation mask,
    or sampled evaluation (``eval_samples``)."""

    name = "supermask"
    fused_optimizer = False

    @property
    def samples_in_eval(self) -> bool:
        return self.cfg.eval_samples > 0

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        self.rule = BernoulliRule(layers, self.cfg.seed, cap=self.cfg.supermask_cap)
        if self.cfg.score_init == "constant":
            start = self.cfg.score_constant
        else:  # logit(ρ): expected density ρ
            rho = min(max(self.cfg.density, 1e-6), 1 - 1e-6)
            start = math.log(rho / (1 - rho))
        with torch.no_grad():
            for layer in layers:
                layer.rule = self.rule
                for s in (layer.scores, layer.bias_scores):
                    if s is not None:
                        s.fill_(start)

    def evaluate(self, model: nn.Module, split: Split,
                 measure: Callable[[nn.Module, Split], tuple[float, float]]) -> tuple[float, float]:
        if not self.samples_in_eval:
            return measure(model, split)
        results = []
        self.rule.sample_in_eval = True
        try:
            for j in range(self.cfg.eval_samples):
                self.rule.eval_sample = j
                results.append(measure(model, split))
        finally:
            self.rule.sample_in_eval, self.rule.eval_sample = False, 0
        return (sum(r[0] for r in results) / len(results), sum(r[1] for r in results) / len(results))

    def before_step(self, model: nn.Module, step: int) -> None:
        self.rule.step = step

    @torch.no_grad()
    def epoch_metrics(self, model: nn.Module, val: Split) -> dict[str, Any]:
        from ...evaluate import evaluate, metric_key

        layers = masked_layers(model)
        p = torch.cat([torch.sigmoid(layer.scores.detach()).reshape(-1) for layer in layers])
        expected = {"expected_density": float(p.double().mean())}
        if self.samples_in_eval:  # the validation metric is sampled: log the deterministic mask's
            return {f"rounded_val_{metric_key(val.task)}": evaluate(model, val)[0], **expected}
        self.rule.sample_in_eval = True
        try:
            metric, _ = evaluate(model, val)
        finally:
            self.rule.sample_in_eval = False
        return {f"sampled_val_{metric_key(val.task)}": metric, **expected}


class BernoulliRule(ScoreRule):
    """Supermask's rule: sampled masks in training, the rounded mask (capped with ``cap``) otherwise."""

    def __init__(self, layers: list[MaskedLayer], seed: int, cap: bool = True) -> None:
        self.layers, self.seed, self.cap = layers, seed, cap
        self.step = 0
        self.sample_in_eval = False  # sampled-mask evaluation (its own stream)
        self.eval_sample = 0  # which of several sampled evaluations (0: the stream of a single one)
        self._cache: dict[int, tuple[tuple, list[Tensor]]] = {}

    def _sampled(self, layer: MaskedLayer, scores: Tensor, which: int) -> Tensor:
        p = torch.sigmoid(scores)
        stream = "train" if layer.training else "eval"
        sample = (self.eval_sample,) if self.eval_sample and not layer.training else ()
        gen = torch.Generator(device=scores.device)
        gen.manual_seed(_mix(f"supermask:{stream}", self.seed, layer.layer_index, which, self.step, *sample))
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
        if not self.cap:
            k = sum(lay.scores.numel() for lay in group)
        key = (k, *(version_key(lay.scores) for lay in group))
        cached = self._cache.get(id(group[0]))
        if cached is None or cached[0] != key:
            cached = (key, top_positive([lay.scores for lay in group], k))
            self._cache[id(group[0])] = cached
        return cached[1][group.index(layer)]

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        k = layer.bias_k if self.cap else layer.bias_scores.numel()
        return top_positive([layer.bias_scores], k)[0]
