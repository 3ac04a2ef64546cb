"""Built-in networks made of masked layers over frozen random weights, and their registry.

Every model takes the same keyword arguments (``density``, ``init``, ``seed``, ``scale_fan``) and numbers its
masked layers 0, 1, 2, … in forward order: that index, with the seed, names each layer's random stream, so a
model config plus a seed determines every weight bit for bit.

``mlp``: x (B, *input_shape) → flatten → [MaskedLinear → ReLU] × len(widths) → MaskedLinear → logits (B, classes).
No biases and no normalisation by default: nothing but the scores learns (Ramanujan et al. 2020, §4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from .nn import MaskedLinear, use_global_topk

__all__ = ["MLP", "MODELS", "build_model", "model_from_config"]


class MLP(nn.Module):
    """Fully connected ReLU network of masked linear layers; ``widths`` are the hidden widths."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (256, 256),
        *,
        density: float = 0.5,
        init: str = "signed_constant",
        seed: int = 0,
        scale_fan: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for i, w in enumerate(widths):
            if isinstance(w, bool) or not isinstance(w, int) or w < 1:
                raise ValueError(f"widths[{i}] must be a positive integer, got {w!r}")
        sizes = [math.prod(input_shape), *widths, num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(MaskedLinear(fan_in, fan_out, bias=bias, density=density, init=init, seed=seed,
                                       layer=index, scale_fan=scale_fan))
            if index < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Build the registered model ``name``; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, got {name!r}")
    return MODELS[name](input_shape, num_classes, **kwargs)


def model_from_config(cfg: Any, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model a search config describes (``model``, ``widths``, ``density``, ``init``, ``seed``,
    ``scale_fan``, ``scope``), with a global threshold when ``scope == "global"``."""
    model = build_model(cfg.model, input_shape, num_classes, widths=tuple(cfg.widths), density=cfg.density,
                        init=cfg.init, seed=cfg.seed, scale_fan=cfg.scale_fan)
    if cfg.scope == "global":
        use_global_topk(model, cfg.density)
    return model
