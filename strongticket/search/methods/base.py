"""The method interface (hooks the search loop calls), and the helpers several methods share."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ...masks import validate_density
from ...nn import MaskedLayer

if TYPE_CHECKING:
    from ...config import SearchConfig
    from ...data.splits import Split, Splits


class Method:
    """Base strategy: train the popup scores at the config's density (edge-popup's behaviour)."""

    name = "edge-popup"
    trains = True
    fused_optimizer = True

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg

    def prepare(self, model: nn.Module, splits: Splits) -> None:
        """Called once before training (and before a resumed run continues), splits already on the device."""

    def density_at(self, epoch: int) -> float:
        """The density trained at in 0-based ``epoch``."""
        return self.cfg.density

    @property
    def samples_in_eval(self) -> bool:
        """Whether :meth:`evaluate` scores sampled masks (so the selected epoch's scores must be kept)."""
        return False

    def evaluate(self, model: nn.Module, split: Split,
                 measure: Callable[[nn.Module, Split], tuple[float, float]]) -> tuple[float, float]:
        """(metric, mean loss) of ``model`` on ``split`` as the method scores it, for model selection and the test
        number; ``measure(model, split)`` is the loop's plain evaluation of the current masks."""
        return measure(model, split)

    def score_weight_decay(self) -> float:
        """Weight decay of the scores' optimizer group."""
        return self.cfg.weight_decay

    def before_step(self, model: nn.Module, step: int) -> None:
        """Called before optimizer step ``step`` (0-based count of the steps already done)."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after every optimizer step; ``step`` steps are done (1-based)."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after every epoch (0-based), before validation."""

    def epoch_metrics(self, model: nn.Module, val: Split) -> dict[str, Any]:
        """Extra keys for the epoch's record (after validation)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must carry besides the model and optimizer."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume (called after :meth:`prepare`)."""


def top_positive(scores: list[Tensor], k: int) -> list[Tensor]:
    """Masks of the (at most) ``k`` largest positive entries over ``scores`` together (σ(S) > 1/2 ⇔ S > 0),
    ties broken by position (list order, then flat index)."""
    return _top_eligible(scores, [s.detach() > 0 for s in scores], k, magnitude=False)


@torch.no_grad()
def _top_eligible(scores: list[Tensor], eligible: list[Tensor], k: int, *, magnitude: bool) -> list[Tensor]:
    """Masks of the (at most) ``k`` eligible entries of largest score (|score| with ``magnitude``) over ``scores``
    together; never an ineligible one; ties by position (list order, then flat index), exact in float64."""
    flat = torch.cat([s.detach().reshape(-1) for s in scores])
    ok = torch.cat([e.reshape(-1) for e in eligible])
    key = torch.where(ok, (flat.abs() if magnitude else flat).double(), -math.inf)
    keep = torch.zeros_like(ok)
    keep[torch.sort(key, descending=True, stable=True).indices[:k]] = True
    keep &= ok
    return [part.view(s.shape) for part, s in zip(keep.split([s.numel() for s in scores]), scores)]


def _mix(*parts: Any) -> int:
    """A 63-bit generator seed from ``parts`` (SHA-256): independent streams for every (seed, layer, step)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
