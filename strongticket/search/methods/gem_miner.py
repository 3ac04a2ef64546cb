"""Gem-Miner (Sreenivasan et al., NeurIPS 2022): clamped scores, iterative freezing."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...masks import keep_count
from ...nn import MaskedLayer, ScoreRule, masked_layers
from ...random import STREAM_BIAS_SCORES, STREAM_SCORES, matrix_shape, uniform01
from .base import Method, _top_eligible

if TYPE_CHECKING:
    from ...config import SearchConfig
    from ...data.splits import Splits


class GemMiner(Method):
    """Gem-Miner (Sreenivasan et al. 2022): rounded scores in [0, 1], L2 penalty, projection, iterative freezing."""

    name = "gem-miner"
    fused_optimizer = False

    def __init__(self, cfg: SearchConfig) -> None:
        super().__init__(cfg)
        if cfg.freeze_every:  # the original's iter_period T: after 1-based epochs T+1, 2T+1, ... (before the last)
            self.freeze_after = list(range(cfg.freeze_every + 1, cfg.epochs, cfg.freeze_every))
        else:
            rounds = cfg.freeze_rounds or cfg.epochs - 1
            self.freeze_after = [math.ceil(j * (cfg.epochs - 1) / rounds) for j in range(1, rounds + 1)]  # 1-based
        self.rounds = len(self.freeze_after)

    def _round_density(self, j: int) -> float:
        return self.cfg.density if j >= self.rounds else self.cfg.density ** (j / self.rounds)

    def density_at(self, epoch: int) -> float:
        done = sum(1 for t in self.freeze_after if t <= epoch)  # rounds finished before 0-based epoch
        return 1.0 if done == 0 else self._round_density(done)

    def score_weight_decay(self) -> float:
        return self.cfg.weight_decay + 2.0 * self.cfg.penalty

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        layers = masked_layers(model)
        self.rule = ThresholdRule(layers)
        with torch.no_grad():
            for layer in layers:
                layer.rule = self.rule
                for s, kind in ((layer.scores, STREAM_SCORES), (layer.bias_scores, STREAM_BIAS_SCORES)):
                    if s is not None:  # U[0, 1] from the words edge-popup's initial scores are made of
                        rows, cols = matrix_shape(tuple(s.shape))
                        u = uniform01(layer.seed, layer.layer_index, kind, rows, cols)
                        s.copy_(torch.from_numpy(u).view(s.shape))

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for layer in self.rule.layers:
                for s in (layer.scores, layer.bias_scores):
                    if s is not None:
                        s.clamp_(0.0, 1.0)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if epoch + 1 in self.freeze_after:
            j = self.freeze_after.index(epoch + 1) + 1
            self.rule.freeze(self._round_density(j), self.cfg.scope == "global")

    def state_dict(self) -> dict[str, Any]:
        return {"active": list(self.rule.active), "bias_active": list(self.rule.bias_active)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("active", "bias_active"):
            for dst, src in zip(getattr(self.rule, name), state[name]):
                if dst is not None:
                    dst.copy_(src)


class ThresholdRule(ScoreRule):
    """Gem-Miner's rule: M = 1[p > 1/2] ⊙ q, straight-through to the active scores."""

    def __init__(self, layers: list[MaskedLayer]) -> None:
        self.layers = layers
        self.active = [torch.ones(lay.scores.shape, dtype=torch.bool, device=lay.scores.device) for lay in layers]
        self.bias_active = [None if lay.bias_scores is None else
                            torch.ones(lay.bias_scores.shape, dtype=torch.bool, device=lay.bias_scores.device)
                            for lay in layers]

    @staticmethod
    def _st(value: Tensor, scores: Tensor, active: Tensor) -> Tensor:
        mask = ((scores.detach() > 0.5) & active).to(value.dtype)
        if scores.requires_grad and torch.is_grad_enabled():
            return value * (mask + (scores - scores.detach()) * active)  # value W ⊙ M; dS = G ⊙ W ⊙ q
        return value * mask

    def weight(self, layer: MaskedLayer) -> Tensor:
        return self._st(layer.current_weight, layer.scores, self.active[self.layers.index(layer)])

    def bias(self, layer: MaskedLayer) -> Tensor | None:
        return self._st(layer.bias, layer.bias_scores, self.bias_active[self.layers.index(layer)])

    def mask(self, layer: MaskedLayer) -> Tensor:
        return (layer.scores.detach() > 0.5) & self.active[self.layers.index(layer)]

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        return (layer.bias_scores.detach() > 0.5) & self.bias_active[self.layers.index(layer)]

    @torch.no_grad()
    def freeze(self, density: float, global_scope: bool) -> None:
        """Keep active only the ⌈density·n⌉ active entries of largest |p| (over all layers when ``global_scope``;
        biases per layer), ties by position."""
        groups = [list(range(len(self.layers)))] if global_scope else [[i] for i in range(len(self.layers))]
        for group in groups:
            n = sum(self.layers[i].scores.numel() for i in group)
            kept = keep_active([self.layers[i].scores for i in group], [self.active[i] for i in group],
                               keep_count(density, n))
            for i, a in zip(group, kept):
                self.active[i] = a
        for i, layer in enumerate(self.layers):
            if layer.bias_scores is not None:
                self.bias_active[i] = keep_active([layer.bias_scores], [self.bias_active[i]],
                                                  layer.bias_keep_count(density))[0]


def keep_active(scores: list[Tensor], active: list[Tensor], k: int) -> list[Tensor]:
    """The ``k`` active entries of largest |score| over ``scores`` together (fewer if fewer are active), ties by
    position (list order, then flat index)."""
    return _top_eligible(scores, active, k, magnitude=True)
