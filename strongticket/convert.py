"""strongticket for any PyTorch model: ``convert`` to masked layers, ``bake`` back to plain ones, export to prune.

``convert(model)`` swaps every ``nn.Linear`` and ``nn.Conv2d`` for a :class:`~strongticket.nn.MaskedLinear` /
:class:`~strongticket.nn.MaskedConv2d` over fresh frozen seeded random weights (``init="signed_constant"`` etc.)
or over the model's own weights (``init="keep"``), numbering the masked layers 0, 1, … in module order (the index
that names each layer's random stream). Other modules with a ``weight`` (Conv1d, Embedding, …) can be masked too
(``other="parametrize"``): a ``torch.nn.utils.parametrize`` parametrization W ↦ W ⊙ top-k(|S|) with the same
straight-through score gradient G ⊙ W ⊙ sign(S). Every other parameter is frozen, so only scores learn.

``bake(model)`` returns plain ``nn.Linear`` / ``nn.Conv2d`` layers holding W ⊙ M (identical logits);
``to_torch_prune(model)`` returns the ``weight_orig`` / ``weight_mask`` form of ``torch.nn.utils.prune``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from . import masks
from .nn import MaskedConv2d, MaskedLayer, MaskedLinear, use_global_topk
from .random import INITS, init_scores, init_weight

__all__ = ["TopKMask", "convert", "bake", "to_torch_prune", "CONVERT_INITS"]

CONVERT_INITS = (*INITS, "keep")
_OTHER = ("skip", "parametrize")


class TopKMask(nn.Module):
    """Parametrization W ↦ W ⊙ top-k(|S|), straight-through: dS = dW_eff ⊙ W ⊙ sign(S)."""

    def __init__(self, shape: torch.Size, density: float, seed: int, layer: int) -> None:
        super().__init__()
        self.density = masks.validate_density(density)
        self.k = masks.keep_count(self.density, shape.numel())
        self.scores = nn.Parameter(init_scores(tuple(shape), seed, layer))

    @property
    def mask(self) -> Tensor:
        return masks.topk_mask(self.scores.detach(), self.k)

    def forward(self, weight: Tensor) -> Tensor:
        s = self.scores.abs()
        # value exactly W ⊙ M ((m + s) - s would round); gradient W ⊙ d|S| through the zero term
        return weight * self.mask.to(weight.dtype) + weight * (s - s.detach())


def convert(
    model: nn.Module,
    *,
    density: float = 0.5,
    init: str = "signed_constant",
    seed: int = 0,
    scale_fan: bool = False,
    skip: Iterable[str] = (),
    scope: str = "layer",
    other: str = "skip",
    inplace: bool = False,
) -> nn.Module:
    """Mask ``model``'s Linear/Conv2d layers (and, with ``other="parametrize"``, any other ``weight``).

    ``skip`` names modules (as in ``named_modules``) to leave untouched; ``scope="global"`` shares one threshold
    over all masked layers. All parameters but the scores are frozen. Returns the converted model (a copy unless
    ``inplace``).
    """
    density = masks.validate_density(density)
    if init not in CONVERT_INITS:
        raise ValueError(f"init must be one of {', '.join(CONVERT_INITS)}, got {init!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be one of layer, global, got {scope!r}")
    if other not in _OTHER:
        raise ValueError(f"other must be one of {', '.join(_OTHER)}, got {other!r}")
    skip = set(skip)
    names = {name for name, _ in model.named_modules()}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(f"skip names a module the model does not have: {unknown[0]!r}")
    if not inplace:
        model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)

    index = 0
    for name, module in list(model.named_modules()):
        if name in skip or any(name.startswith(s + ".") for s in skip) or isinstance(module, MaskedLayer):
            continue
        new: nn.Module | None = None
        kwargs = dict(density=density, init="uniform" if init == "keep" else init, seed=seed, layer=index,
                      scale_fan=scale_fan)
        if type(module) is nn.Linear:
            new = MaskedLinear(module.in_features, module.out_features, bias=module.bias is not None, **kwargs)
        elif type(module) is nn.Conv2d:
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ValueError(f"{name}: only numeric zero padding is supported, got padding={module.padding!r}, "
                                 f"padding_mode={module.padding_mode!r}")
            new = MaskedConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                               padding=module.padding, dilation=module.dilation, groups=module.groups,
                               bias=module.bias is not None, **kwargs)
        elif other == "parametrize" and isinstance(getattr(module, "weight", None), nn.Parameter) \
                and not parametrize.is_parametrized(module):
            weight = module.weight
            if init != "keep":
                with torch.no_grad():
                    weight.copy_(init_weight(tuple(weight.shape), init, seed, index, density=density,
                                             scale_fan=scale_fan))
            weight.requires_grad_(False)
            parametrize.register_parametrization(module, "weight", TopKMask(weight.shape, density, seed, index))
            index += 1
            continue
        if new is None:
            continue
        new.to(module.weight.device)
        if init == "keep":
            with torch.no_grad():
                new.weight.copy_(module.weight)
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            new.init = "keep"
        _replace(model, name, new)
        index += 1
    if index == 0:
        raise ValueError("convert found no nn.Linear or nn.Conv2d layer to mask (all skipped or none present)")
    if scope == "global":
        use_global_topk(model, density)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _plain(module: MaskedLayer) -> nn.Module:
    if isinstance(module, MaskedLinear):
        plain: nn.Module = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    else:
        assert isinstance(module, MaskedConv2d)
        plain = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                          padding=module.padding, dilation=module.dilation, groups=module.groups,
                          bias=module.bias is not None)
    return plain.to(module.weight.device, module.weight.dtype)


def bake(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with plain layers holding W ⊙ M (and parametrizations made permanent): same logits."""
    baked = copy.deepcopy(model)
    for name, module in list(baked.named_modules()):
        if isinstance(module, MaskedLayer):
            plain = _plain(module)
            with torch.no_grad():
                plain.weight.copy_(module.baked_weight())
                if module.bias is not None:
                    plain.bias.copy_(module.effective_bias())
            _replace(baked, name, plain)
        elif parametrize.is_parametrized(module, "weight"):
            _unparametrize(module)
    return baked


def _unparametrize(module: nn.Module) -> None:
    """Make a parametrized weight permanent on this instance only.

    ``parametrize.remove_parametrizations`` deletes the property from the parametrized *class*, which a deepcopy
    shares with the original module, and so breaks the original; this swaps the instance's class instead.
    """
    with torch.no_grad():
        effective = module.weight.detach().clone()
    module.__class__ = parametrize.type_before_parametrizations(module)
    del module._modules["parametrizations"]
    module.weight = nn.Parameter(effective, requires_grad=False)


def to_torch_prune(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in ``torch.nn.utils.prune`` form: ``weight_orig`` parameter + ``weight_mask`` buffer."""
    exported = bake(model)
    source = {name: m for name, m in model.named_modules()}
    for name, module in list(exported.named_modules()):
        src = source.get(name)
        if isinstance(src, MaskedLayer):
            mask, weight = src.mask, src.unmasked_weight()
        elif src is not None and parametrize.is_parametrized(src, "weight"):
            param = src.parametrizations.weight
            mask, weight = param[0].mask, param.original
        else:
            continue
        with torch.no_grad():
            module.weight.copy_(weight)
        prune.custom_from_mask(module, "weight", mask.to(weight.dtype))
    return exported
