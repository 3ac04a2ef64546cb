"""Top-k of |S| methods: edge-popup (Ramanujan et al. 2020), annealed edge-popup (Fischer & Burkholz 2022),
biprop (Diffenderfer & Kailkhura 2021), IteRand (Chijiwa et al. 2021)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...nn import MaskedLayer, masked_layers
from ...random import STREAM_REDRAW, matrix_shape, uniform01
from .base import Method

if TYPE_CHECKING:
    from ...data.splits import Splits


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


class Biprop(Method):
    """Biprop (Diffenderfer & Kailkhura 2021): edge-popup on binary weights α·sign(W) ⊙ M. The layers' binary
    mode is part of the model (``model_from_config``), so a loaded ticket computes the same way."""

    name = "biprop"
    fused_optimizer = False

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        if not all(layer.binary for layer in masked_layers(model)):
            raise ValueError("biprop needs binary layers: build the model with model_from_config(cfg)")


class IteRand(Method):
    """IteRand (Chijiwa et al. 2021): edge-popup + seeded re-randomization of pruned weights."""

    name = "iterand"

    def prepare(self, model: nn.Module, splits: Splits) -> None:
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
