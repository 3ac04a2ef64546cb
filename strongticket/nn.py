"""Masked layers over frozen seeded random weights, with learnable popup scores.

A masked layer computes y = layer(x; W ⊙ M) with
  W  frozen random weight (``requires_grad=False``), regenerated bit for bit from (seed, layer index),
  S  learnable scores of W's shape,
  M  = top-k(|S|) with k = ⌈density·n⌉, ties by index (``strongticket.masks``),
and trains S only, through the straight-through gradient dS = G ⊙ W ⊙ sign(S) (``strongticket.ops``).

The mask is recomputed only when the scores change (tracked through the tensor version counter), never in
evaluation with frozen scores. It comes from one of four places:
  * per layer: the layer's own top-k at its own density;
  * global: a :class:`GlobalTopK` shared by several layers, one threshold across all of them;
  * a score rule (:class:`ScoreRule`, ``layer.rule``) of a search method whose mask is not a top-k of |S|
    (Bernoulli supermasks, Gem-Miner's rounded scores): it gives the training weight and the deterministic mask;
  * fixed: a mask loaded from a ticket (:meth:`MaskedLayer.fix_mask`), scores no longer used.

Where the Triton backend runs (CUDA by default), a top-k mask (per layer or global) is never materialised in the
forward: ``ops.topk_thresholds`` gives (τ, cut) per layer (one launch set for all layers of a GlobalTopK),
cached by the same version keys, and ``MaskedLinear`` runs ``ops.masked_linear_threshold`` (or its seeded twin),
whose kernel builds M in registers and emits it bit-packed for dx; dS comes from the fused dS GEMM. When a
:class:`strongticket.optim.ScoreSGD` owns the scores, the ``_sgd`` variants of the linear and conv ops run the
scores' SGD step inside the backward pass instead (no ``.grad``). The bool :attr:`MaskedLayer.mask` stays for
statistics, tickets and bake. On the torch backend (the CPU) a top-k mask comes as the same (τ, cut) rows, from
a :class:`strongticket.masks.WindowTopK` that re-selects near the last threshold each step, and ``MaskedLinear``
keeps W ⊙ M (``ops.threshold_masked_weight``) until the mask changes, for ``ops.premasked_linear``: forward, dx
and every evaluation batch share it.

Two weight variants, both reproducible from the seed and carried by a ticket:
  * binary (biprop, Diffenderfer & Kailkhura 2021): the layer computes with α·sign(W) ⊙ M, α = mean |W| over
    the kept weights (their actual count); the score gradient stays edge-popup's G ⊙ W ⊙ sign(S);
  * re-drawn (IteRand, Chijiwa et al. 2021): ``generation`` counts, per weight, the re-randomization event that
    last re-drew it (0: never); its value is generation g of the same seeded init (``init_weight(...,
    generation=g)``), so seed + generations + mask give the network back. ``weight`` itself never changes.

A layer built with ``share=other`` computes with ``other``'s frozen weight — the same Parameter, one tensor in memory
(``weight_stream`` names the random stream it came from; ``layer_index`` still names the layer's own scores) — with
its own scores and mask (shared random weights, Shen et al. 2021).

Paper: Ramanujan et al., "What's Hidden in a Randomly Weighted Neural Network?", CVPR 2020.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks, ops, optim
from .random import STREAM_BIAS, STREAM_BIAS_SCORES, init_scores, init_weight

WEIGHTS = ("stored", "seeded")

__all__ = [
    "WEIGHTS",
    "ScoreRule",
    "binary_alpha",
    "MaskedLayer",
    "MaskedLinear",
    "MaskedConv2d",
    "GlobalTopK",
    "masked_layers",
    "version_key",
    "use_global_topk",
    "other_state",
    "trainable_state",
]


class GlobalTopK:
    """One top-k threshold over the scores of several layers: ⌈density·n_total⌉ kept in total."""

    def __init__(self, layers: Sequence[MaskedLayer], density: float) -> None:
        if len(layers) == 0:
            raise ValueError("global top-k needs at least one masked layer, got none")
        self.layers = list(layers)
        self.density = masks.validate_density(density)
        self.k = masks.keep_count(self.density, sum(layer.weight.numel() for layer in self.layers))
        self._topk = _TopK()

    def mask_of(self, layer: MaskedLayer) -> Tensor:
        return self._topk.masks([lay.scores for lay in self.layers], self.k)[self.layers.index(layer)]

    def threshold_of(self, layer: MaskedLayer) -> Tensor:
        """The (τ, cut) row of ``layer``: one selection (one launch set on the Triton path) for all the layers."""
        return self._topk.thresholds([lay.scores for lay in self.layers], self.k)[self.layers.index(layer)]

    def set_density(self, density: float) -> None:
        """Keep ⌈density·n_total⌉ from now on (density schedules, rounds of pruning); the next mask is recomputed."""
        self.density = masks.validate_density(density)
        self.k = masks.keep_count(self.density, sum(layer.scores.numel() for layer in self.layers))


class _TopK:
    """The top ``k`` |S| over a group of score tensors together, cached by their version keys and ``k``: the
    thresholds (τ, cut) per tensor and the bool masks, each computed on first use after a change, so evaluation
    with frozen scores selects once. Masks come from the radix-select kernels where the Triton backend runs (no
    host sync), from the reference of ``strongticket.masks`` otherwise — the same masks."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._thresholds: Tensor | None = None
        self._masks: list[Tensor] | None = None
        self._window = masks.WindowTopK()  # the CPU's selection, which keeps state from step to step
        # where the masks may differ from those of the key before (CPU): (that key, offsets, flat indices)
        self.changed: tuple[tuple | None, list[int], np.ndarray] | None = None

    def _refresh(self, scores: list[Tensor], k: int) -> None:
        key = (k, *(version_key(s) for s in scores))
        if key != self._key:
            self._key, self._thresholds, self._masks, self.changed = key, None, None, (self._key, [], None)

    def thresholds(self, scores: list[Tensor], k: int) -> Tensor:
        """(L, 2) int64 rows (τ bits, tie cut), ``ops.topk_thresholds`` of the group (one slot)."""
        self._refresh(scores, k)
        if self._thresholds is None:
            with torch.no_grad():
                self._select([s.detach() for s in scores], k)
        return self._thresholds

    def _select(self, detached: list[Tensor], k: int) -> None:
        if _cpu_float32(detached):
            previous = self.changed[0] if self.changed is not None else None
            self._thresholds = self._window.thresholds(detached, k)
            self.changed = (previous, self._window._offsets, self._window.changed)
        else:
            self._thresholds = ops.topk_thresholds([s.contiguous() for s in detached], [k], [0] * len(detached))

    @torch.no_grad()
    def masks(self, scores: list[Tensor], k: int) -> list[Tensor]:
        self._refresh(scores, k)
        if self._masks is None:
            detached = [s.detach() for s in scores]
            on_triton = all(s.dtype == torch.float32 for s in detached) and ops._use_triton(*detached)
            if on_triton or _cpu_float32(detached):
                self._masks = [ops.threshold_mask(s, t) for s, t in zip(detached, self.thresholds(scores, k))]
            else:
                self._masks = masks.global_topk_masks(detached, k)
        return self._masks


def _cpu_float32(scores: list[Tensor]) -> bool:
    """Whether a group's selection runs in numpy (:class:`strongticket.masks.WindowTopK`): float32 CPU scores on
    the torch backend."""
    return all(s.dtype is torch.float32 and s.is_cpu for s in scores) and not ops._use_triton(*scores)


def version_key(scores: Tensor) -> tuple:
    # The version counter moves on every in-place update (optimizer step, load_state_dict's copy_, and the fused
    # SGD step of ops.masked_linear_sgd, a custom op that declares its mutation of the scores).
    return (scores.data_ptr(), scores._version, scores.device, scores.dtype)


class ScoreRule:
    """How a search method turns a layer's scores into its weight and mask when that is not edge-popup's top-k.

    Installed as ``layer.rule``; used only while the mask is not fixed. ``weight``/``bias`` are differentiable in
    the scores (their straight-through estimator) and may sample in training mode; ``mask``/``bias_mask`` are the
    deterministic masks that evaluation, statistics and tickets use.
    """

    def weight(self, layer: MaskedLayer) -> Tensor:
        raise NotImplementedError

    def bias(self, layer: MaskedLayer) -> Tensor | None:
        raise NotImplementedError

    def mask(self, layer: MaskedLayer) -> Tensor:
        raise NotImplementedError

    def bias_mask(self, layer: MaskedLayer) -> Tensor | None:
        raise NotImplementedError


def binary_alpha(weight: Tensor, mask: Tensor) -> Tensor:
    """α = mean |W| over the kept entries, a 0-d tensor (summed in float64, then cast: exactly |W| when all
    magnitudes are equal, as for signed-constant weights); 0 when nothing is kept."""
    kept = mask.sum().clamp(min=1)
    return ((weight.abs() * mask).double().sum() / kept).to(weight.dtype)


class MaskedLayer(nn.Module):
    """Shared state of masked layers: frozen ``weight``, learnable ``scores``, optional frozen ``bias``.

    With ``bias_scores=True`` the frozen random bias is masked too: its own scores, top-k per layer (even under a
    global threshold), straight-through like the weights. Its budget ``bias_k`` = ⌈d_b·n_out⌉ with d_b the layer's
    ``bias_density`` when one is set (:meth:`set_bias_density`; weight-density schedules leave it alone), else the
    weight density (Plant 'n' Seek's rule: biases at the weights' fraction).
    """

    weight: nn.Parameter
    scores: nn.Parameter
    bias: nn.Parameter | None
    bias_scores: nn.Parameter | None

    def _init_masked(
        self,
        shape: tuple[int, ...],
        *,
        bias: bool,
        density: float,
        init: str,
        seed: int,
        layer: int,
        scale_fan: bool,
        bias_scores: bool = False,
        weights: str = "stored",
        share: MaskedLayer | None = None,
    ) -> None:
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if weights == "seeded" and (init != "signed_constant" or not isinstance(self, MaskedLinear)):
            raise ValueError(f"weights='seeded' needs init='signed_constant' on a linear layer, got init={init!r} "
                             f"on {type(self).__name__}")
        if bias_scores and not bias:
            raise ValueError("bias_scores=True needs bias=True: there is no bias to mask")
        self.density = masks.validate_density(density)
        self.init = init
        self.seed = seed
        self.layer_index = layer
        # the random stream of the frozen weight: the layer's own, or that of the layer whose weight it shares
        self.weight_stream = layer if share is None else share.weight_stream
        self.shares_weight = share is not None
        self.scale_fan = scale_fan
        self._init_density = self.density  # what init_weight drew with (set_density changes only k)
        self.binary = False
        self.rule: ScoreRule | None = None
        self._seeded: tuple | None = None
        if share is not None:
            _check_share(share, tuple(shape), init, seed, density, scale_fan, weights)
        if weights == "seeded":  # W = ±scale regenerated in the kernels; never a device tensor
            scale = ops.signed_constant_scale(math.prod(shape[1:]), density=density, scale_fan=scale_fan)
            self._seeded = (tuple(shape), scale)
        elif share is not None:  # the very same Parameter: one tensor in memory for every layer sharing it
            self.weight = share.weight
        else:
            w = init_weight(shape, init, seed, layer, density=density, scale_fan=scale_fan)
            self.weight = nn.Parameter(w, requires_grad=False)
        self.scores = nn.Parameter(init_scores(shape, seed, layer))
        if bias:
            fan_in = math.prod(shape[1:])
            b = init_weight((shape[0],), "kaiming_uniform", seed, layer, kind=STREAM_BIAS, fan_in=fan_in)
            self.bias = nn.Parameter(b, requires_grad=False)
        else:
            self.register_parameter("bias", None)
        if bias_scores:
            bs = init_scores((shape[0],), seed, layer, fan_in=math.prod(shape[1:]), kind=STREAM_BIAS_SCORES)
            self.bias_scores = nn.Parameter(bs)
        else:
            self.register_parameter("bias_scores", None)
        self.register_buffer("fixed_bias_mask", None)
        self.bias_density: float | None = None
        self.k = masks.keep_count(self.density, math.prod(shape))
        self._set_bias_k()
        self._selector: GlobalTopK | None = None
        self.register_buffer("fixed_mask", None)
        self.register_buffer("generation", None)
        self._redrawn: tuple[tuple, Tensor] | None = None
        self._topk = _TopK()
        self._bias_topk = _TopK()
        self._premasked: tuple | None = None  # (objects, key, W ⊙ M) of _premasked_weight

    @property
    def weight(self) -> Tensor:
        """The frozen weight; for ``weights="seeded"`` a float32 CPU tensor regenerated on demand (cached by
        ``ops.seeded_weight``), for hashing / bake / export only — the forward never reads it."""
        seeded = self.__dict__.get("_seeded")
        if seeded is None:
            if "weight" not in self._parameters:  # during construction: let nn.Module register the Parameter
                raise AttributeError("weight")
            return self._parameters["weight"]
        shape, scale = seeded
        return ops.seeded_weight(self.seed, self.weight_stream, shape, scale)

    def _plain_only(self, what: str) -> None:
        if self._seeded is not None:
            raise ValueError(f"{what} needs stored weights, got weights='seeded' (layer {self.layer_index})")

    def use_binary_weights(self) -> None:
        """Compute with α·sign(W) ⊙ M from now on (biprop)."""
        self._plain_only("binary weights")
        self.binary = True

    def enable_redraw(self) -> None:
        """Start counting re-draws (IteRand): ``generation`` all 0, the weight unchanged."""
        self._plain_only("re-drawing weights")
        self.generation = torch.zeros(self.scores.shape, dtype=torch.int32, device=self.scores.device)
        self._redrawn = None

    @torch.no_grad()
    def redraw(self, where: Tensor, event: int) -> None:
        """Re-draw the weights at ``where`` (bool, weight's shape) as generation ``event`` (>= 1) of the init."""
        if self.generation is None:
            self.enable_redraw()
        if not isinstance(event, int) or event < 1:
            raise ValueError(f"event must be an integer >= 1, got {event!r}")
        current = self.current_weight.clone()
        fresh = self._draw(event).to(current.device)
        current[where] = fresh[where]
        self.generation[where] = event
        self._redrawn = (version_key(self.generation), current)

    def _draw(self, generation: int) -> Tensor:
        return init_weight(tuple(self.scores.shape), self.init, self.seed, self.weight_stream,
                           density=self._init_density, scale_fan=self.scale_fan, generation=generation)

    def load_generation(self, generation: Tensor) -> None:
        """Set every weight's generation (from a ticket or checkpoint); the weights are re-drawn to match."""
        if generation.shape != self.scores.shape:
            raise ValueError(f"generation must have shape {tuple(self.scores.shape)}, got {tuple(generation.shape)}")
        if self.generation is None:
            self.enable_redraw()
        self.generation.copy_(generation)
        self._redrawn = None

    @property
    def current_weight(self) -> Tensor:
        """The weight the mask applies to: ``weight``, with re-drawn entries replaced (IteRand); cached."""
        if self.generation is None:
            return self.weight
        key = version_key(self.generation)
        if self._redrawn is None or self._redrawn[0] != key:
            w = self.weight.detach().clone()
            gen = self.generation.to(w.device)
            for g in torch.unique(gen).tolist():
                if g:
                    w = torch.where(gen == g, self._draw(int(g)).to(w.device), w)
            self._redrawn = (key, w)
        return self._redrawn[1]

    @property
    def mask(self) -> Tensor:
        """The current bool mask (weight's shape)."""
        if self.fixed_mask is not None:
            return self.fixed_mask
        if self.rule is not None:
            return self.rule.mask(self)
        if self._selector is not None:
            return self._selector.mask_of(self)
        return self._topk.masks([self.scores], self.k)[0]

    def threshold(self) -> Tensor:
        """The (2,) int64 row (τ bits, tie cut) of the current top-k of |S| (``ops.topk_thresholds``; per layer,
        or this layer's row of its :class:`GlobalTopK`), cached like :attr:`mask`."""
        if self._selector is not None:
            return self._selector.threshold_of(self)
        return self._topk.thresholds([self.scores], self.k)[0]

    @property
    def bias_mask(self) -> Tensor | None:
        """The bool mask of the bias (``bias_scores=True``), else None."""
        if self.fixed_bias_mask is not None:
            return self.fixed_bias_mask
        if self.bias_scores is None:
            return None
        if self.rule is not None:
            return self.rule.bias_mask(self)
        return self._bias_topk.masks([self.bias_scores], self.bias_k)[0]

    def effective_bias(self) -> Tensor | None:
        """The bias the layer adds: frozen bias, masked (straight-through to ``bias_scores``) when scored."""
        if self.rule is not None and self.fixed_mask is None and self.bias_scores is not None:
            return self.rule.bias(self)
        m = self.bias_mask
        if m is None:
            return self.bias
        if self.bias_scores is None or self.fixed_bias_mask is not None:
            return self.bias * m
        s = self.bias_scores.abs()
        return self.bias * m + self.bias * (s - s.detach())  # value exactly b ⊙ m; straight-through gradient

    def fix_mask(self, mask: Tensor, bias_mask: Tensor | None = None) -> None:
        """Use ``mask`` (and ``bias_mask``) from now on (e.g. from a ticket); the scores no longer matter."""
        if mask.shape != self.weight.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool of shape {tuple(self.weight.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        if (bias_mask is None) != (self.bias_scores is None):
            raise ValueError(f"bias_mask must be given exactly when the layer has bias scores "
                             f"(bias_scores={self.bias_scores is not None}), got {bias_mask is not None}")
        self.fixed_mask = mask.to(self.weight.device)
        if bias_mask is not None:
            self.fixed_bias_mask = bias_mask.to(self.weight.device)

    def set_density(self, density: float) -> None:
        """Keep ⌈density·n⌉ weights (and biases, unless a bias density is set) from now on; under a global threshold
        set the selector's density instead. Only k changes: the frozen weights keep the init they were drawn with."""
        self.density = masks.validate_density(density)
        self.k = masks.keep_count(self.density, self.scores.numel())
        self._set_bias_k()

    def set_bias_density(self, bias_density: float | None) -> None:
        """Keep ⌈bias_density·n_out⌉ biases from now on, whatever the weight density does; None: follow it."""
        if self.bias_scores is None:
            raise ValueError(f"bias_density needs bias scores: layer {self.layer_index} has no masked bias")
        self.bias_density = None if bias_density is None else masks.validate_density(bias_density, "bias_density")
        self._set_bias_k()

    def bias_keep_count(self, density: float) -> int:
        """Biases kept when the weights keep ``density``: ⌈d_b·n_out⌉, d_b = :attr:`bias_density` or ``density``."""
        d = density if self.bias_density is None else self.bias_density
        return masks.keep_count(d, self.bias_scores.numel())

    def _set_bias_k(self) -> None:
        if self.bias_scores is not None:
            self.bias_k = self.bias_keep_count(self.density)

    def kept(self) -> int:
        """Number of weights the current mask keeps."""
        return int(self.mask.sum())

    def unmasked_weight(self) -> Tensor:
        """The weight the current mask is applied to: :attr:`current_weight`, binarised (α·sign) for biprop."""
        w = self.current_weight
        if not self.binary:
            return w
        mask = self.mask
        w = w.to(mask.device)
        return binary_alpha(w, mask) * torch.sign(w)

    def baked_weight(self) -> Tensor:
        """The weight the layer computes with, W ⊙ M (α·sign(W) ⊙ M for binary weights), as a plain tensor."""
        mask = self.mask
        return self.unmasked_weight().to(mask.device) * mask

    def effective_weight(self) -> Tensor:
        """:meth:`baked_weight`, differentiable in the scores while they train: edge-popup's straight-through
        dS = G ⊙ W ⊙ sign(S) (for binary weights too: α is a constant there), or the score rule's weight."""
        if self.fixed_mask is None and self.rule is not None:
            return self.rule.weight(self)
        w_eff = self.baked_weight()
        if self.fixed_mask is None and self.scores.requires_grad and torch.is_grad_enabled():
            s = self.scores.abs()
            w_eff = w_eff + self.current_weight.to(w_eff.device) * (s - s.detach())  # value unchanged (+ exact 0)
        return w_eff

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_native_leaf", None)  # a leaf with a hook bound to this layer: a copy makes its own
        state.pop("_pending_step", None)
        return state

    def _premasked_weight(self, dtype: torch.dtype) -> Tensor:
        """W ⊙ M in ``dtype`` for the torch backend's forward (``ops.premasked_linear``), kept until the mask, the
        weight or the dtype changes: from the (τ, cut) row of the top-k (``ops.threshold_masked_weight``), or from
        the fixed mask."""
        weight = self.current_weight
        if self.fixed_mask is not None:
            objects, key = (weight, self.fixed_mask), (self.fixed_mask._version, self.fixed_mask.data_ptr())
        else:
            threshold = self.threshold()
            topk = self._selector._topk if self._selector is not None else self._topk
            objects, key = (weight, topk), topk._key
        rest = (weight._version, weight.data_ptr(), dtype)
        cached = self._premasked
        if cached is not None and cached[1] == (key, *rest) and all(a is b for a, b in zip(cached[0], objects)):
            return cached[2]
        if self.fixed_mask is not None:
            masked = ops.masked_weight(weight, self.fixed_mask, dtype)
        elif (cached is not None and topk.changed is not None and topk.changed[2] is not None
                and cached[1] == (topk.changed[0], *rest) and all(a is b for a, b in zip(cached[0], objects))):
            masked = self._patch(cached[2], topk, threshold)
        else:
            masked = ops.threshold_masked_weight(weight, self.scores, threshold, dtype)
        self._premasked = (objects, (key, *rest), masked)
        return masked

    def _patch(self, masked: Tensor, topk: _TopK, threshold: Tensor) -> Tensor:
        """W ⊙ M of the last selection brought to this one where only ``topk.changed`` can differ (CPU, float32):
        re-decided there from the new (τ, cut), in place (its version moves: a graph that saved it refuses to
        run its backward pass rather than use the new mask)."""
        _, offsets, changed = topk.changed
        offset = 0
        if self._selector is not None:  # this layer's part of the group's list
            i = self._selector.layers.index(self)
            offset = int(offsets[i])
            end = offset + self.scores.numel()
            changed = changed[np.searchsorted(changed, offset):np.searchsorted(changed, end)]
        if changed.size:
            tau, cut = threshold.tolist()
            ops.patch_masked_weight(masked, self.current_weight, self.scores, changed, offset, tau, cut)
            torch.autograd.graph.increment_version(masked)
        return masked

    def _plain_forward(self) -> bool:
        """Whether the forward materialises :meth:`effective_weight` (score rules, binary weights) instead of
        the masked ops."""
        return self.binary or (self.rule is not None and self.fixed_mask is None)

    def _topk_on_triton(self, x: Tensor) -> bool:
        """Whether the mask is a top-k of |S| (per layer or global; no fixed mask, no score rule, not binary) and the
        Triton backend runs this input: the fused path. The torch backend always keeps the reference path."""
        return (self.fixed_mask is None and not self._plain_forward() and self.scores.dtype == torch.float32
                and ops._use_triton(x, self.scores))

    def _fused_step(self, x: Tensor) -> optim.FusedStep | None:
        """The SGD step of the scores to run inside this forward's backward pass (a ``optim.ScoreSGD`` owns them
        and can fuse it now), or None: the scores then get their gradient as ``.grad``."""
        if not (self.scores.requires_grad and torch.is_grad_enabled() and self._topk_on_triton(x)):
            return None
        return optim.fused_step(self.scores)

    def extra_repr(self) -> str:
        return (
            f"density={self.density}, init={self.init}, seed={self.seed}, layer={self.layer_index}"
            + (f", weight of layer {self.weight_stream}" if self.shares_weight else "")
            + (", mask=fixed" if self.fixed_mask is not None else "")
            + (", global" if self._selector is not None else "")
            + (f", bias_density={self.bias_density}" if self.bias_density is not None else "")
            + (", binary" if self.binary else "")
            + (", redrawn" if self.generation is not None else "")
            + (f", rule={type(self.rule).__name__}" if self.rule is not None else "")
        )


class MaskedLinear(MaskedLayer):
    """Linear layer y = x (W ⊙ M)ᵀ (+ b) over a frozen random W; x (..., in) → y (..., out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        bias_scores: bool = False,
        density: float = 0.5,
        init: str = "signed_constant",
        seed: int = 0,
        layer: int = 0,
        scale_fan: bool = False,
        weights: str = "stored",
        share: MaskedLayer | None = None,
    ) -> None:
        super().__init__()
        _check_positive(in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self._init_masked(
            (out_features, in_features),
            bias=bias, bias_scores=bias_scores, density=density, init=init, seed=seed, layer=layer,
            scale_fan=scale_fan, weights=weights, share=share,
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input must have {self.in_features} features in its last dimension, "
                             f"got shape {tuple(x.shape)}")
        if self._plain_forward():
            return F.linear(x, self.effective_weight(), self.effective_bias())
        if self._topk_on_triton(x):  # the mask built in the kernel from (τ, cut), bit-packed for the backward
            return self._threshold_forward(x)
        if self._seeded is not None:
            _, scale = self._seeded
            return ops.seeded_linear(x, self.scores, self.mask, self.effective_bias(), self.seed, self.weight_stream,
                                     scale, torch.float32)
        masked, bias = self._premasked_weight(x.dtype), self.effective_bias()
        step = None
        if (self.scores.requires_grad and torch.is_grad_enabled() and self.fixed_mask is None
                and x.dtype is torch.float32 and not torch.distributed.is_initialized()):
            step = optim.fused_step(self.scores)
        if step is not None:
            return self._native_fused(x, masked, bias, step)
        return ops.premasked_linear(x, masked, self.current_weight, self.scores, bias)

    def _native_fused(self, x: Tensor, masked: Tensor, bias: Tensor | None, step: optim.FusedStep) -> Tensor:
        """y = F.linear(x, W ⊙ M) through torch's own autograd, the scores' SGD step in a hook on W ⊙ M.

        ``ops.premasked_linear`` is a Python ``autograd.Function``; on the CPU its node costs ~0.3 ms a layer and
        step more than torch's native linear (LeNet-300-100, batch 64: a third of the step). Here the
        cached W ⊙ M is a leaf that requires grad: torch's linear backward computes dx and G = dyᵀx, and the hook
        after G accumulates runs ``ops.score_sgd_eager`` (the same bits) and drops G. Only where the scores take
        the fused step (``optim.ScoreSGD``, no DDP: the scores are not in this graph, so nothing else may want
        their gradient)."""
        leaf = self.__dict__.get("_native_leaf")
        if leaf is None or leaf[0] is not masked:
            leaf = masked.detach().requires_grad_()
            leaf.register_post_accumulate_grad_hook(self._native_step)
            self._native_leaf = (masked, leaf)
        else:
            leaf = leaf[1]
        self._pending_step = step
        return F.linear(x, leaf, None if bias is None else bias.to(x.dtype))

    def _native_step(self, leaf: Tensor) -> None:
        step, self._pending_step = self.__dict__.get("_pending_step"), None
        grad, leaf.grad = leaf.grad, None
        if step is None:
            raise RuntimeError("ScoreSGD: a second backward pass reached fused scores before optimizer.step(); their "
                               "SGD step already ran in the first one: call step() after every backward, or use "
                               "ScoreSGD(..., fuse_backward=False)")
        step.guard(None)
        scores = self.scores.detach()
        ops.score_sgd_eager(grad, self.current_weight, scores, step.momentum_buffer, step.lr, step.momentum,
                            step.weight_decay)
        torch.autograd.graph.increment_version(scores)
        if step.momentum_buffer is not None:
            torch.autograd.graph.increment_version(step.momentum_buffer)

    def _threshold_forward(self, x: Tensor) -> Tensor:
        """y through ``ops.masked_linear_threshold`` (or its seeded twin); when a :class:`~strongticket.optim.ScoreSGD`
        owns the scores and can fuse their step, through the ``_sgd`` variant, whose backward applies that step."""
        threshold, bias = self.threshold(), self.effective_bias()
        step = self._fused_step(x)
        sgd = () if step is None else (step.momentum_buffer, step.lr, step.momentum, step.weight_decay)
        if self._seeded is not None:
            _, scale = self._seeded
            seeded = (self.seed, self.weight_stream, scale, torch.float32)
            op = ops.seeded_linear_threshold if step is None else ops.seeded_linear_threshold_sgd
            y, _ = op(x, self.scores, threshold, bias, *seeded, *sgd)
        else:
            op = ops.masked_linear_threshold if step is None else ops.masked_linear_threshold_sgd
            y, _ = op(x, self.current_weight, self.scores, threshold, bias, *sgd)
        if step is not None:
            y.grad_fn.register_prehook(step.guard)  # before the fused step runs: refuse a second one before step()
        return y

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, " + super().extra_repr()


class MaskedConv2d(MaskedLayer):
    """2-D convolution y = conv2d(x, W ⊙ M) (+ b) over a frozen random W; x (B, C, H, W)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        bias_scores: bool = False,
        density: float = 0.5,
        init: str = "signed_constant",
        seed: int = 0,
        layer: int = 0,
        scale_fan: bool = False,
        share: MaskedLayer | None = None,
    ) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size, "kernel_size")
        _check_positive(in_channels=in_channels, out_channels=out_channels, groups=groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = (kh, kw)
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", minimum=0)
        self.dilation = _pair(dilation, "dilation")
        self._init_masked(
            (out_channels, in_channels // groups, kh, kw),
            bias=bias, bias_scores=bias_scores, density=density, init=init, seed=seed, layer=layer,
            scale_fan=scale_fan, share=share,
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (batch, {self.in_channels}, height, width), got shape {tuple(x.shape)}")
        if self._plain_forward():
            return F.conv2d(x, self.effective_weight(), self.effective_bias(), self.stride, self.padding,
                            self.dilation, self.groups)
        args = (x, self.current_weight, self.scores, self.mask, self.effective_bias(),
                list(self.stride), list(self.padding), list(self.dilation), self.groups)
        step = self._fused_step(x)
        if step is None:
            return ops.masked_conv2d(*args)
        y = ops.masked_conv2d_sgd(*args, step.momentum_buffer, step.lr, step.momentum, step.weight_decay)
        y.grad_fn.register_prehook(step.guard)
        return y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, " + super().extra_repr())


def masked_layers(model: nn.Module) -> list[MaskedLayer]:
    """The masked layers of ``model`` in module order (the order of their layer indices in built-in models)."""
    return [m for m in model.modules() if isinstance(m, MaskedLayer)]


def use_global_topk(model: nn.Module, density: float) -> GlobalTopK:
    """Make all masked layers of ``model`` share one global threshold at ``density``."""
    selector = GlobalTopK(masked_layers(model), density)
    for layer in selector.layers:
        layer._selector = selector
    return selector


def _check_share(share: MaskedLayer, shape: tuple[int, ...], init: str, seed: int, density: float, scale_fan: bool,
                 weights: str) -> None:
    """A layer may share ``share``'s frozen weight only if it would draw the very same one: same shape, init,
    seed, density and fan scaling (the values of the shared stream), and the same storage."""
    if not isinstance(share, MaskedLayer):
        raise ValueError(f"share must be a masked layer, got {type(share).__name__}")
    theirs = (tuple(share.scores.shape), share.init, share.seed, share._init_density, share.scale_fan,
              "seeded" if share._seeded is not None else "stored")
    ours = (shape, init, seed, density, scale_fan, weights)
    if theirs != ours:
        names = ("shape", "init", "seed", "density", "scale_fan", "weights")
        field = next(n for n, a, b in zip(names, ours, theirs) if a != b)
        raise ValueError(f"share: a layer can share the frozen weight of a layer with the same {field} only, got "
                         f"{ours[names.index(field)]!r} and layer {share.layer_index}'s {theirs[names.index(field)]!r}")


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _pair(v: int | Sequence[int], name: str, minimum: int = 1) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < minimum for p in pair):
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, got {v!r}")
    return pair  # type: ignore[return-value]


def _masked_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(name + "." for name, m in model.named_modules() if isinstance(m, MaskedLayer))


def other_state(model: nn.Module) -> dict[str, Tensor]:
    """The state that is neither a masked layer nor derivable from the seed: batch-norm statistics, learned
    affine parameters. A ticket stores it next to the masks."""
    prefixes = _masked_prefixes(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(prefixes)}


def trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """What a search changes: scores and bias scores of masked layers, IteRand's generations, and
    :func:`other_state`."""
    prefixes = _masked_prefixes(model)
    state = other_state(model)
    for k, v in model.state_dict().items():
        if k.startswith(prefixes) and k.rsplit(".", 1)[1] in ("scores", "bias_scores", "generation"):
            state[k] = v.detach().clone()
    return state
