"""strongticket for any PyTorch model: ``convert`` to masked layers, ``bake`` back to plain ones, export to prune.

``convert(model)`` masks every weight the model computes with. Every ``nn.Linear`` and ``nn.Conv2d`` becomes a
:class:`~strongticket.nn.MaskedLinear` / :class:`~strongticket.nn.MaskedConv2d` over fresh frozen seeded random
weights (``init="signed_constant"`` etc.) or over the model's own weights (``init="keep"``); every other weight
tensor of two or more dimensions — ``nn.MultiheadAttention``'s packed ``in_proj_weight`` (or its separate
``q/k/v_proj_weight``) and ``out_proj`` (a Linear subclass whose weight the attention reads directly), embeddings,
Conv1d/Conv3d kernels, positional-embedding parameters — gets a ``torch.nn.utils.parametrize`` parametrization
W ↦ W ⊙ top-k(|S|) with the same straight-through score gradient G ⊙ W ⊙ sign(S), so the module keeps its own
forward (``other="skip"`` leaves those alone). Masked tensors are numbered 0, 1, … in module order: the index
that names each one's random stream. Everything else is frozen, so only scores learn.

The one-dimensional parameters follow an explicit policy:
  * ``bias`` — "zero" (default for random weights: the literature's choice; edge-popup's layers and Shen et
    al.'s transformer, ``--need-bias`` off, have none), "random" (frozen seeded random biases), "mask" (random
    biases with their own scores, top-k at the density, as Plant 'n' Seek), "keep" (the model's own, frozen;
    default with ``init="keep"``). Attention's ``in_proj_bias`` and ``bias_k``/``bias_v`` are biases.
  * ``norm`` (LayerNorm, BatchNorm, GroupNorm, InstanceNorm, RMSNorm affine parameters) — "identity" (default for
    random weights: gain 1, shift 0, frozen, i.e. non-affine, as edge-popup's batch norm and Shen et al.'s
    ``masked_layernorm``), "keep" (frozen as they are; default with ``init="keep"``), "learn" (trained with the
    scores).
Whatever no rule covers (a 0-d or 1-d parameter that is neither, weights under ``other="skip"``, biases or norms
kept or random) computes unmasked: a one-line ``UserWarning`` names every such parameter, and ``strict=True``
refuses instead. Modules named in ``skip`` are the caller's choice and are not listed.

``share_weights=True``: tensors of the same shape compute with one frozen random matrix (the first one's stream,
one tensor in memory), each with its own scores and mask (Shen et al., EMNLP 2021).

``bake(model)`` returns plain ``nn.Linear`` / ``nn.Conv2d`` layers holding W ⊙ M and makes every parametrization
permanent (identical outputs); ``to_torch_prune(model)`` returns the ``<name>_orig`` / ``<name>_mask`` form of
``torch.nn.utils.prune``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from . import masks
from .nn import MaskedConv2d, MaskedLayer, MaskedLinear, use_global_topk
from .random import INITS, STREAM_BIAS, init_scores, init_weight

__all__ = ["TopKMask", "convert", "bake", "to_torch_prune", "CONVERT_INITS", "BIAS_POLICIES", "NORM_POLICIES"]

CONVERT_INITS = (*INITS, "keep")
BIAS_POLICIES = ("zero", "random", "mask", "keep")
NORM_POLICIES = ("identity", "keep", "learn")
_OTHER = ("skip", "parametrize")
# modules that read their Linear children's .weight directly (attention's out_proj; the transformer layers' fast
# path in evaluation): those children are parametrized in place, never replaced, so .weight is W ⊙ M everywhere
_READS_WEIGHTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
          *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def convert(
    model: nn.Module,
    *,
    density: float = 0.5,
    init: str = "signed_constant",
    seed: int = 0,
    scale_fan: bool = False,
    skip: Iterable[str] = (),
    scope: str = "layer",
    other: str = "parametrize",
    bias: str | None = None,
    norm: str | None = None,
    share_weights: bool = False,
    strict: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """Mask every weight of ``model`` (see the module docstring for the rules and policies).

    ``skip`` names modules (as in ``named_modules``) to leave untouched; ``scope="global"`` shares one threshold
    over the MaskedLinear/MaskedConv2d layers. ``bias`` defaults to "zero" ("keep" with ``init="keep"``), ``norm``
    to "identity" ("keep" with ``init="keep"``). Returns the converted model (a copy unless ``inplace``); warns
    naming every parameter left unmasked, or raises with ``strict=True``.
    """
    density = masks.validate_density(density)
    _choice("init", init, CONVERT_INITS)
    _choice("scope", scope, ("layer", "global"))
    _choice("other", other, _OTHER)
    keep = init == "keep"
    bias = ("keep" if keep else "zero") if bias is None else bias
    norm = ("keep" if keep else "identity") if norm is None else norm
    _choice("bias", bias, BIAS_POLICIES)
    _choice("norm", norm, NORM_POLICIES)
    if share_weights and keep:
        raise ValueError("share_weights needs random weights (one seeded matrix per shape), got init='keep'")
    skip = set(skip)
    names = {name for name, _ in model.named_modules()}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(f"skip names a module the model does not have: {unknown[0]!r}")
    if not inplace:
        model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)

    state = _Converter(density, init, seed, scale_fan, bias, share_weights)
    unmasked: list[str] = []
    for name, module in list(model.named_modules()):
        if name in skip or any(name.startswith(s + ".") for s in skip) or isinstance(module, MaskedLayer) \
                or "parametrizations" in name.split("."):
            continue
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        new = None if isinstance(parent, _READS_WEIGHTS) else state.replacement(name, module)
        if new is not None:
            _replace(model, name, new)
            if module.bias is not None and bias in ("keep", "random"):
                unmasked.append(f"{name}.bias")
            continue
        for pname, param in list(module.named_parameters(recurse=False)):
            full = f"{name}.{pname}" if name else pname
            if isinstance(module, _NORMS):
                _apply_norm(param, pname, norm)
                if norm == "keep":
                    unmasked.append(full)
            elif param.dim() >= 2:
                if other == "parametrize":
                    state.parametrize(module, pname)
                else:
                    unmasked.append(full)
            elif "bias" in pname:  # bias, in_proj_bias, bias_k, bias_v (norms were handled above)
                if state.bias_param(module, pname) in ("keep", "random"):
                    unmasked.append(full)
            else:
                unmasked.append(full)
    if state.index == 0:
        raise ValueError("convert found no weight to mask (all skipped or none present)")
    if scope == "global":
        use_global_topk(model, density)
    if unmasked:
        message = (f"convert left {len(unmasked)} parameter{'s' if len(unmasked) > 1 else ''} unmasked (they compute "
                   f"as frozen values the masks do not control): {', '.join(unmasked)}")
        if strict:
            raise ValueError(message + " (strict=True)")
        warnings.warn(message, UserWarning, stacklevel=2)
    return model


def _apply_norm(param: nn.Parameter, pname: str, policy: str) -> None:
    """A norm's affine parameter under ``policy``: identity (gain 1, shift 0, frozen), keep (frozen), learn."""
    if policy == "identity":
        with torch.no_grad():
            param.fill_(1.0 if pname == "weight" else 0.0)
    param.requires_grad_(policy == "learn")


class _Converter:
    """The state of one conversion: the next stream index, the policy, and the shared matrices by shape."""

    def __init__(self, density: float, init: str, seed: int, scale_fan: bool, bias: str, share: bool) -> None:
        self.density, self.init, self.seed, self.scale_fan, self.bias = density, init, seed, scale_fan, bias
        self.index = 0
        self.owner: dict[int, int] = {}  # id(module) -> the stream index of its first masked weight (its biases')
        # share_weights: weight shape -> (the MaskedLayer or parametrization original holding it, its stream)
        self.shared: dict[tuple[int, ...], tuple[nn.Module | nn.Parameter, int]] | None = {} if share else None

    def _source(self, shape: tuple[int, ...]) -> tuple[nn.Module | nn.Parameter, int] | None:
        return None if self.shared is None else self.shared.get(shape)

    def replacement(self, name: str, module: nn.Module) -> MaskedLayer | None:
        """The masked layer replacing an exact ``nn.Linear`` / ``nn.Conv2d`` (subclasses keep their forward and are
        parametrized instead: ``MultiheadAttention.out_proj`` is read by its parent, not called)."""
        if type(module) not in (nn.Linear, nn.Conv2d):
            return None
        shape = tuple(module.weight.shape)
        source = self._source(shape)
        share = source[0] if source is not None and isinstance(source[0], MaskedLayer) else None
        has_bias = module.bias is not None and self.bias != "zero"
        kwargs = dict(density=self.density, init="uniform" if self.init == "keep" else self.init, seed=self.seed,
                      layer=self.index, scale_fan=self.scale_fan, bias=has_bias, bias_scores=self.bias == "mask",
                      share=share)
        if type(module) is nn.Linear:
            new: MaskedLayer = MaskedLinear(module.in_features, module.out_features, **kwargs)
        else:
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ValueError(f"{name}: only numeric zero padding is supported, got padding={module.padding!r}, "
                                 f"padding_mode={module.padding_mode!r}")
            new = MaskedConv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                               padding=module.padding, dilation=module.dilation, groups=module.groups, **kwargs)
        new.to(module.weight.device)
        if source is not None and share is None:  # the first of this shape was a parametrized tensor
            new.weight = source[0]
            new.weight_stream, new.shares_weight = source[1], True
        with torch.no_grad():
            if self.init == "keep":
                new.weight.copy_(module.weight)
                new.init = "keep"
            if has_bias and self.bias == "keep":
                new.bias.copy_(module.bias)
        if self.shared is not None:
            self.shared.setdefault(shape, (new, new.weight_stream))
        self.index += 1
        return new

    def parametrize(self, module: nn.Module, pname: str) -> None:
        """Mask ``module.<pname>`` in place: W ↦ W ⊙ top-k(|S|), W re-drawn from the seed unless init is keep."""
        weight = getattr(module, pname)
        shape = tuple(weight.shape)
        source = self._source(shape)
        if self.init != "keep" and source is None:
            with torch.no_grad():
                weight.copy_(init_weight(shape, self.init, self.seed, self.index, density=self.density,
                                         scale_fan=self.scale_fan))
        weight.requires_grad_(False)
        parametrize.register_parametrization(module, pname, TopKMask(weight.shape, self.density, self.seed,
                                                                     self.index))
        plist = module.parametrizations[pname]
        if source is not None:
            shared = source[0].weight if isinstance(source[0], MaskedLayer) else source[0]
            plist.original = shared  # the very same Parameter: one tensor in memory
        elif self.shared is not None:
            self.shared[shape] = (plist.original, self.index)
        self.owner.setdefault(id(module), self.index)
        self.index += 1

    def bias_param(self, module: nn.Module, pname: str) -> str:
        """Apply the bias policy to a 1-d bias of a module that is not replaced; returns the policy."""
        param = getattr(module, pname)
        if self.bias == "zero":
            with torch.no_grad():
                param.zero_()
        elif self.bias in ("random", "mask"):
            weight_name = pname.replace("bias", "weight")
            w = getattr(module, weight_name, None)
            fan_in = math.prod(w.shape[1:]) if isinstance(w, Tensor) and w.dim() >= 2 else param.numel()
            stream = self.owner.get(id(module), self.index)
            with torch.no_grad():
                param.copy_(init_weight(tuple(param.shape), "kaiming_uniform", self.seed, stream,
                                        kind=STREAM_BIAS, fan_in=fan_in).reshape(param.shape))
            if self.bias == "mask":
                parametrize.register_parametrization(module, pname, TopKMask(param.shape, self.density, self.seed,
                                                                             self.index))
                self.index += 1
        return self.bias


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
        elif parametrize.is_parametrized(module):
            _unparametrize(module)
    return baked


def _unparametrize(module: nn.Module) -> None:
    """Make every parametrized tensor of ``module`` permanent, on this instance only.

    ``parametrize.remove_parametrizations`` deletes the properties from the parametrized *class*, which a deepcopy
    shares with the original module, and so breaks the original; this swaps the instance's class instead.
    """
    with torch.no_grad():
        effective = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    module.__class__ = parametrize.type_before_parametrizations(module)
    del module._modules["parametrizations"]
    for name, value in effective.items():
        setattr(module, name, nn.Parameter(value, requires_grad=False))


def to_torch_prune(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in ``torch.nn.utils.prune`` form: ``<name>_orig`` parameter + ``<name>_mask`` buffer for
    every masked tensor (``weight``, attention's ``in_proj_weight``, masked biases, …)."""
    exported = bake(model)
    source = {name: m for name, m in model.named_modules()}
    for name, module in list(exported.named_modules()):
        src = source.get(name)
        if isinstance(src, MaskedLayer):
            masked = [("weight", src.mask, src.unmasked_weight())]
        elif src is not None and parametrize.is_parametrized(src):
            masked = [(pname, plist[0].mask, plist.original) for pname, plist in src.parametrizations.items()]
        else:
            continue
        for pname, mask, weight in masked:
            with torch.no_grad():
                getattr(module, pname).copy_(weight)
            prune.custom_from_mask(module, pname, mask.to(weight.dtype))
    return exported
