"""Built-in networks made of masked layers over frozen random weights, and their registry.

Every model takes the same keyword arguments (``density``, ``init``, ``seed``, ``scale_fan``, ``bias``,
``bias_scores``, ``learn_bn``) and numbers its masked layers 0, 1, 2, … in construction order: that index, with
the seed, names each layer's random stream, so a model config plus a seed determines every weight bit for bit.

- ``mlp``: flatten → [MaskedLinear → ReLU] × len(widths) → MaskedLinear. No biases, no normalisation.
- ``conv2/4/6/8``: the VGG-like nets of the lottery-ticket and edge-popup papers (Frankle & Carbin 2019;
  Ramanujan et al. 2020): pairs of 3×3 convs (64, 128, 256, 512 channels × ``width``) each followed by a 2×2 max
  pool, then 256-256 fully connected (× ``width``) and the classifier. No normalisation, as in those papers.
- ``resnet20`` (He et al. 2016, CIFAR: 3 stages × 3 basic blocks, 16/32/64 channels) and ``resnet18`` (the
  CIFAR variant: 3×3 stem, 4 stages × 2 blocks, 64…512 channels), for 32×32 inputs; ``width`` > 1 gives wide
  ResNets (Zagoruyko & Komodakis 2016). Batch norm is non-affine by default (nothing but scores learns);
  ``learn_bn=True`` makes it affine and trainable. Shortcuts that change shape are masked 1×1 convs + BN.
- ``transformer``: a pre-norm transformer encoder for token sequences (:mod:`strongticket.transformer`): token and
  positional embeddings, ``depth`` blocks of attention (``heads``) and feed-forward, every matrix masked;
  ``widths`` = (d_model, d_ff), default 64, 128.
- ``share_weights=True`` (every model but planted): layers of the same weight shape compute with one frozen random
  matrix, the first such layer's (its random stream; one tensor in memory), each with its own scores and mask.
- ``planted``: the Plant 'n' Seek mother network of ``data`` ``planted-<task>`` (Fischer & Burkholz 2022) with
  a target ticket planted in it: ``plant_task(task, depth=len(widths) + 2, width=widths[0], seed=seed)``
  (equal hidden widths, default 100, 100, 100), as MaskedLinear(bias=True, bias_scores=True) + ReLU layers whose
  frozen weights and biases are the mother network's (``strongticket.planted.planted_model``), so that a
  searched ticket can be compared with the planted one (``strongticket plant --masks``). ``init``,
  ``scale_fan``, ``bias`` and ``bias_scores`` do not apply: the weights are the planted ones and the biases
  always have scores, as in Plant 'n' Seek (their budget: ``bias_density``, default the weight density). Its
  outputs are raw, as in Plant 'n' Seek's searches, where the planted masks compute the target times the planting
  scale, not the target (one common scale for Circle's 4 logits, so the argmax is the target's; per output for
  the regression tasks; 5e-7 to 4e-3 over seeds 0-2 at depth 5 x width 100).
- ``planted-scaled``: the same network with the fixed read-out outputs / planting scale, in which the planted
  masks compute the target exactly (the planted ticket is a solution of the task searched for).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import nn as _masked_nn
from .nn import MaskedConv2d, MaskedLinear, masked_layers, use_global_topk
from .transformer import Transformer

__all__ = ["MLP", "ConvNet", "ResNet", "MODELS", "build_model", "check_param_budget", "masked_shapes",
           "model_from_config", "planted_network"]


class _Layers:
    """Hands out consecutive layer indices and the shared masked-layer arguments."""

    def __init__(self, density: float, init: str, seed: int, scale_fan: bool, bias: bool, bias_scores: bool,
                 weights: str = "stored", share_weights: bool = False):
        self.kwargs = dict(density=density, init=init, seed=seed, scale_fan=scale_fan, bias=bias,
                           bias_scores=bias_scores)
        self.weights = weights  # "seeded" applies to the linear layers; convs keep stored weights
        self.index = 0
        # share_weights: (kind, weight shape) -> the first layer of that shape, whose frozen weight the later ones use
        self.shared: dict[tuple, MaskedLinear | MaskedConv2d] | None = {} if share_weights else None

    def _source(self, key: tuple) -> MaskedLinear | MaskedConv2d | None:
        return None if self.shared is None else self.shared.get(key)

    def _keep(self, key: tuple, layer: MaskedLinear | MaskedConv2d) -> None:
        if self.shared is not None:
            self.shared.setdefault(key, layer)

    def linear(self, fan_in: int, fan_out: int) -> MaskedLinear:
        self.index += 1
        key = ("linear", fan_out, fan_in)
        layer = MaskedLinear(fan_in, fan_out, layer=self.index - 1, weights=self.weights, share=self._source(key),
                             **self.kwargs)
        self._keep(key, layer)
        return layer

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> MaskedConv2d:
        self.index += 1
        key = ("conv", c_out, c_in, kernel)
        layer = MaskedConv2d(c_in, c_out, kernel, stride=stride, padding=padding, layer=self.index - 1,
                             share=self._source(key), **self.kwargs)
        self._keep(key, layer)
        return layer


def _positive_ints(name: str, values: Sequence[int]) -> None:
    for i, w in enumerate(values):
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"{name}[{i}] must be a positive integer, got {w!r}")


def _scaled(channels: int, width: float) -> int:
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width <= 64):
        raise ValueError(f"width must be a number in (0, 64], got {width!r}")
    return max(1, round(channels * width))


class MLP(nn.Module):
    """Fully connected ReLU network of masked linear layers; ``widths`` are the hidden widths."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (512, 512), *,
                 width: float = 1.0, density: float = 0.5, init: str = "signed_constant", seed: int = 0,
                 scale_fan: bool = False, bias: bool = False, bias_scores: bool = False,
                 learn_bn: bool = False, weights: str = "stored", share_weights: bool = False) -> None:
        super().__init__()
        _positive_ints("widths", widths)
        make = _Layers(density, init, seed, scale_fan, bias, bias_scores, weights, share_weights)
        sizes = [math.prod(input_shape), *(_scaled(w, width) for w in widths), num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(make.linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


_CONV_PLANS = {
    "conv2": (64, 64, "M"),
    "conv4": (64, 64, "M", 128, 128, "M"),
    "conv6": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
    "conv8": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"),
}


class ConvNet(nn.Module):
    """Conv2/4/6/8: 3×3 masked convs with ReLU, 2×2 max pools, then 256-256-classes masked linear layers."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, variant: str = "conv4", *,
                 width: float = 1.0, widths: Sequence[int] = (256, 256), density: float = 0.5,
                 init: str = "signed_constant", seed: int = 0, scale_fan: bool = False, bias: bool = False,
                 bias_scores: bool = False, learn_bn: bool = False, weights: str = "stored",
                 share_weights: bool = False) -> None:
        super().__init__()
        if variant not in _CONV_PLANS:
            raise ValueError(f"variant must be one of {', '.join(_CONV_PLANS)}, got {variant!r}")
        if len(input_shape) != 3:
            raise ValueError(f"{variant} needs image inputs (channels, height, width), got shape {tuple(input_shape)}")
        plan = _CONV_PLANS[variant]
        c, h, w = input_shape
        pools = plan.count("M")
        if min(h, w) < 2**pools:
            raise ValueError(f"{variant} pools {pools} times and needs inputs of at least {2**pools}×{2**pools}, "
                             f"got {h}×{w}")
        make = _Layers(density, init, seed, scale_fan, bias, bias_scores, weights, share_weights)
        features: list[nn.Module] = []
        for step in plan:
            if step == "M":
                features.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            else:
                out = _scaled(step, width)
                features += [make.conv(c, out, 3, padding=1), nn.ReLU()]
                c = out
        self.features = nn.Sequential(*features)
        _positive_ints("widths", widths)
        sizes = [c * h * w, *(_scaled(n, width) for n in widths), num_classes]
        head: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            head.append(make.linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                head.append(nn.ReLU())
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, make: _Layers, c_in: int, c_out: int, stride: int, learn_bn: bool) -> None:
        super().__init__()
        self.conv1 = make.conv(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(c_out, affine=learn_bn)
        self.conv2 = make.conv(c_out, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out, affine=learn_bn)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(make.conv(c_in, c_out, 1, stride=stride),
                                          nn.BatchNorm2d(c_out, affine=learn_bn))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


_RESNET_PLANS = {
    "resnet20": (16, ((16, 3, 1), (32, 3, 2), (64, 3, 2))),
    "resnet18": (64, ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))),
}


class ResNet(nn.Module):
    """CIFAR-style ResNet of masked convs with non-affine batch norm; ``width`` multiplies every channel count."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, variant: str = "resnet20", *,
                 width: float = 1.0, widths: Sequence[int] = (), density: float = 0.5,
                 init: str = "signed_constant", seed: int = 0, scale_fan: bool = False, bias: bool = False,
                 bias_scores: bool = False, learn_bn: bool = False, weights: str = "stored",
                 share_weights: bool = False) -> None:
        super().__init__()
        if variant not in _RESNET_PLANS:
            raise ValueError(f"variant must be one of {', '.join(_RESNET_PLANS)}, got {variant!r}")
        if len(input_shape) != 3:
            raise ValueError(f"{variant} needs image inputs (channels, height, width), got shape {tuple(input_shape)}")
        stem, stages = _RESNET_PLANS[variant]
        make = _Layers(density, init, seed, scale_fan, bias, bias_scores, weights, share_weights)
        c = _scaled(stem, width)
        self.stem = nn.Sequential(make.conv(input_shape[0], c, 3, padding=1),
                                  nn.BatchNorm2d(c, affine=learn_bn), nn.ReLU())
        blocks: list[nn.Module] = []
        for channels, count, stride in stages:
            out = _scaled(channels, width)
            for i in range(count):
                blocks.append(_BasicBlock(make, c, out, stride if i == 0 else 1, learn_bn))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = make.linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))


def _variant(cls: type, name: str) -> Callable[..., nn.Module]:
    def build(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
        return cls(input_shape, num_classes, name, **kwargs)

    return build


def planted_network(input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (100, 100, 100), *,
                    data: str | None = None, width: float = 1.0, density: float = 0.5, seed: int = 0,
                    weights: str = "stored", scaled: bool = False, share_weights: bool = False,
                    **_ignored: Any) -> nn.Module:
    """The planted mother network of ``data`` (``planted-<task>``), ready for a search at ``density``; raw outputs
    (Plant 'n' Seek's network), or divided by the planting scale with ``scaled`` (``planted-scaled``)."""
    from .planted.plant import plant_task, planted_model
    from .planted.targets import TASKS

    tasks = tuple(f"planted-{t}" for t in TASKS)
    if data not in tasks:
        raise ValueError(f"model planted needs data {' or '.join(tasks)}, got {data!r}")
    _positive_ints("widths", widths)
    if len(set(widths)) != 1:
        raise ValueError(f"model planted needs equal hidden widths, got {list(widths)}")
    if width != 1:
        raise ValueError(f"model planted takes no width multiplier (set --widths), got width {width!r}")
    if weights != "stored":
        raise ValueError(f"model planted needs stored weights (the planted ones), got weights {weights!r}")
    if share_weights:
        raise ValueError("model planted has its planted weights, one per layer: share_weights must be false, got true")
    planted = plant_task(data.removeprefix("planted-"), depth=len(widths) + 2, width=widths[0], seed=seed)
    model = planted_model(planted, density=density, seed=seed, scaled=scaled)
    if (tuple(input_shape), num_classes) != ((planted.widths[0],), planted.widths[-1]):
        raise ValueError(f"model planted for {data} needs input shape ({planted.widths[0]},) and "
                         f"{planted.widths[-1]} outputs, got {tuple(input_shape)} and {num_classes}")
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    **{name: _variant(ConvNet, name) for name in _CONV_PLANS},
    "planted": planted_network,
    "planted-scaled": functools.partial(planted_network, scaled=True),
    **{name: _variant(ResNet, name) for name in _RESNET_PLANS},
    "transformer": Transformer,
}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    return MODELS[name](input_shape, num_classes, **kwargs)


def _model_kwargs(cfg: Any, weights: str) -> dict[str, Any]:
    """The builder's keyword arguments from a search config (``depth``/``heads`` for the transformer only)."""
    kwargs: dict[str, Any] = dict(width=cfg.width, density=cfg.density, init=cfg.init, seed=cfg.seed,
                                  scale_fan=cfg.scale_fan, bias=cfg.bias, bias_scores=cfg.bias_scores,
                                  learn_bn=cfg.learn_bn, weights=weights)
    if getattr(cfg, "share_weights", False):
        kwargs["share_weights"] = True
    if cfg.model == "transformer":
        kwargs.update(depth=getattr(cfg, "depth", 2), heads=getattr(cfg, "heads", 4))
    if cfg.widths is not None:
        kwargs["widths"] = tuple(cfg.widths)
    return kwargs


def model_from_config(cfg: Any, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The model a search config describes, with a global threshold when ``cfg.scope == "global"``, the bias budget
    ``cfg.bias_density`` on every masked bias, and binary weights for ``cfg.algo == "biprop"`` (so that a loaded
    biprop ticket computes as it was searched)."""
    kwargs = _model_kwargs(cfg, getattr(cfg, "weights", "stored"))
    if cfg.model.startswith("planted"):
        kwargs["data"] = cfg.data
    model = build_model(cfg.model, input_shape, num_classes, **kwargs)
    bias_density = getattr(cfg, "bias_density", None)
    if bias_density is not None:
        for layer in masked_layers(model):
            if layer.bias_scores is not None:
                layer.set_bias_density(bias_density)
    if cfg.scope == "global":
        use_global_topk(model, cfg.density)
    if getattr(cfg, "algo", None) == "biprop":
        for layer in masked_layers(model):
            layer.use_binary_weights()
    return model


@contextlib.contextmanager
def _shapes_only() -> Iterator[None]:
    """Masked layers built inside draw no weights or scores: both are empty tensors on the meta device.

    The layers draw through ``strongticket.nn.init_weight`` / ``init_scores``; swapping those two names for the
    duration is what lets a config's sizes be known before a byte of them is allocated.
    """
    def meta(shape: Sequence[int], *args: Any, **kwargs: Any) -> Tensor:
        return torch.empty(tuple(shape), device="meta")

    saved = _masked_nn.init_weight, _masked_nn.init_scores
    _masked_nn.init_weight = _masked_nn.init_scores = meta
    try:
        yield
    finally:
        _masked_nn.init_weight, _masked_nn.init_scores = saved


def masked_shapes(cfg: Any, input_shape: Sequence[int], num_classes: int) -> list[tuple[int, ...]]:
    """The weight shapes of the masked layers of ``model_from_config(cfg, ...)``, in order, computed without
    drawing any weight (planted models: from their widths, since planting draws the weights itself)."""
    if cfg.model.startswith("planted"):
        widths = [math.prod(input_shape), *(cfg.widths or (100, 100, 100)), num_classes]
        return [(widths[k + 1], widths[k]) for k in range(len(widths) - 1)]
    kwargs = _model_kwargs(cfg, "stored")
    with _shapes_only():
        model = build_model(cfg.model, input_shape, num_classes, **kwargs)
    return [tuple(layer.scores.shape) for layer in masked_layers(model)]


def check_param_budget(cfg: Any, input_shape: Sequence[int], num_classes: int, max_params: int) -> int:
    """The number of masked weights ``cfg``'s model has; over ``max_params`` raises one line naming the limit."""
    total = sum(math.prod(shape) for shape in masked_shapes(cfg, input_shape, num_classes))
    if total > max_params:
        raise ValueError(f"the model ({cfg.model}, widths {None if cfg.widths is None else list(cfg.widths)}, width "
                         f"{cfg.width:g}) has {total:,} weights, more than max_params {max_params:,} (--max-params)")
    return total
