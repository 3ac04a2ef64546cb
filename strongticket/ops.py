"""Masked linear and conv2d as ``torch.library`` custom ops, with the edge-popup straight-through gradient.

Forward: y = x (W ⊙ M)ᵀ (+ b) for linear, y = conv2d(x, W ⊙ M) (+ b) for conv.
Backward (Ramanujan et al. 2020, "What's hidden in a randomly weighted neural network?"):
    dx = dy (W ⊙ M)                    (ordinary gradient through the masked weight)
    dS = G ⊙ W ⊙ sign(S),  G = dyᵀ x   (straight-through top-k; sign from differentiating |S|)
G is the gradient of the *unmasked* effective weight: pruned edges receive a score gradient too, which is how
they "pop up". The frozen weight gets no gradient; a bias gets one only if it requires grad.

Shapes: x (..., K), weight/scores/mask (N, K), bias (N,) → y (..., N);
conv: x (B, C, H, W), weight/scores/mask (O, C/groups, kh, kw).

Further ops, each with a plain-PyTorch reference body, a fake (meta) implementation and, where differentiable,
an autograd formula:
  masked_linear_threshold(x, W, S, thresholds, b) -> (y, mask_bits)   mask from τ/cut, bit-packed for backward
  masked_linear_dx(dy, W, mask) -> dx                                 mask bool (N, K) or int32 words (N, ⌈K/32⌉)
  masked_linear_dscores(dy, x, W, S) -> dS                            dS = (dyᵀx) ⊙ W ⊙ sign(S)
  masked_weight(W, mask, dtype) -> (W ⊙ M).to(dtype)                  the conv mask-apply
  score_grad(G, W, S) -> G ⊙ W ⊙ sign(S)                              the conv score-gradient epilogue
  topk_thresholds([S_l], ks, slots) -> (L, 2) int64                   exact radix select, per layer or global
  threshold_mask(S, thresholds) -> bool mask                          the mask those thresholds define
  packed_linear / seeded_packed_linear / seeded_linear (+ _dx, _dscores)   weightless signed-constant layers
                                                                      (section "weightless" below)
Bit-packed masks: int32 word w of row n holds M[n, 32w + j] in bit j (rows = dim 0, the rest flattened).

This module is the only importer of ``strongticket.kernels``. Every op body dispatches through
:func:`_use_triton`: the fused Triton kernels where ``strongticket.backend`` selects Triton (CUDA by default;
CPU tensors inside ``backend.interpret_on_cpu()``) and the inputs are fp32/bf16 with fp32 scores; the PyTorch
reference otherwise (the CPU path, float64 and the oracle of the tests).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from .backend import backend_name

__all__ = [
    "masked_linear",
    "masked_conv2d",
    "masked_linear_threshold",
    "masked_linear_dx",
    "masked_linear_dscores",
    "masked_weight",
    "score_grad",
    "topk_thresholds",
    "threshold_mask",
    "pack_bits",
    "unpack_bits",
    "thresholds_mask_ref",
    "packed_linear",
    "seeded_packed_linear",
    "seeded_linear",
    "seeded_linear_dx",
    "seeded_linear_dscores",
    "seeded_weight",
    "signed_constant_scale",
]

_FLOATS = (torch.float32, torch.bfloat16)
# fp32 dots in the kernels: "ieee" (exact fp32 products) unless STRONGTICKET_INPUT_PRECISION says "tf32".
_INPUT_PRECISION = os.environ.get("STRONGTICKET_INPUT_PRECISION", "ieee")


def _kernels(name: str) -> ModuleType:
    """``strongticket.kernels.<name>`` (installed), or, from a source tree on PYTHONPATH (the GPU check runs so),
    ``kernels.<name>`` — but only the ``kernels/`` folder beside this package, never another project's."""
    try:
        return importlib.import_module(f"strongticket.kernels.{name}")
    except ModuleNotFoundError:
        module = importlib.import_module(f"kernels.{name}")
        beside = Path(__file__).resolve().parent.parent / "kernels"
        if Path(module.__file__).resolve().parent != beside:
            raise ImportError(f"strongticket.kernels is not installed and the 'kernels' on the path "
                              f"({module.__file__}) is not the one beside strongticket; reinstall") from None
        return module


def _use_triton(*tensors: Tensor | None) -> bool:
    """True when the Triton kernels run these inputs: the backend of their device is Triton, every floating
    tensor is fp32/bf16 and none is a fake (meta) tensor."""
    present = [t for t in tensors if t is not None]
    if not present or present[0].device.type == "meta":
        return False
    if backend_name(present[0].device) == "torch":
        return False
    return all(t.dtype in _FLOATS or not t.dtype.is_floating_point for t in present)


def _masked_weight(weight: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    return (weight * mask).to(dtype)


def pack_bits(mask: Tensor) -> Tensor:
    """Bool mask (R, ...) -> int32 words (R, ⌈C/32⌉), C = numel / R; bit j of word w = M[r, 32w + j]."""
    rows = mask.shape[0]
    flat = mask.reshape(rows, -1)
    cols = flat.shape[1]
    n_words = (cols + 31) // 32
    padded = torch.zeros((rows, n_words * 32), dtype=torch.int64, device=mask.device)
    padded[:, :cols] = flat
    shifts = torch.arange(32, device=mask.device, dtype=torch.int64)
    words = (padded.view(rows, n_words, 32) << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_bits(bits: Tensor, shape: list[int] | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits` for a mask of ``shape``."""
    rows = shape[0]
    cols = 1
    for d in shape[1:]:
        cols *= d
    shifts = torch.arange(32, device=bits.device, dtype=torch.int32)
    flat = ((bits.unsqueeze(-1) >> shifts) & 1).reshape(rows, -1)[:, :cols]
    return flat.bool().reshape(shape)


def thresholds_mask_ref(scores: Tensor, threshold: Tensor) -> Tensor:
    """Reference of the threshold rule: |S| bits > τ, or == τ at a flat index <= cut (``threshold`` = (τ, cut))."""
    bits = scores.float().reshape(-1).view(torch.int32) & 0x7FFFFFFF
    tau, cut = threshold[0].to(torch.int32), threshold[1]
    flat = torch.arange(bits.numel(), device=bits.device)
    return ((bits > tau) | ((bits == tau) & (flat <= cut))).view(scores.shape)


def _as_mask_arg(mask: Tensor) -> Tensor:
    """A bool mask as the kernels want it: (rows, rest) contiguous; int32 words pass through."""
    if mask.dtype == torch.bool:
        return mask.reshape(mask.shape[0], -1).contiguous()
    return mask.contiguous()


# --------------------------------------------------------------------------------------------- linear


@torch.library.custom_op("strongticket::masked_linear", mutates_args=())
def masked_linear(x: Tensor, weight: Tensor, scores: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    """y = x (W ⊙ M)ᵀ + b; ``scores`` only routes the straight-through gradient dS = (dyᵀx) ⊙ W ⊙ sign(S)."""
    if _use_triton(x, weight, bias):
        ml = _kernels("masked_linear")
        x2 = x.reshape(-1, x.shape[-1])
        y, _ = ml.masked_linear_forward(x2, weight, mask=_as_mask_arg(mask), bias=bias,
                                        input_precision=_INPUT_PRECISION)
        return y.view(*x.shape[:-1], weight.shape[0])
    b = None if bias is None else bias.to(x.dtype)
    return F.linear(x, _masked_weight(weight, mask, x.dtype), b)


@masked_linear.register_fake
def _(x, weight, scores, mask, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_setup_context(ctx, inputs, output):
    x, weight, scores, mask, bias = inputs
    ctx.save_for_backward(x, weight, scores, mask)
    ctx.has_bias = bias is not None


def _linear_grads(ctx, dy, x, weight, scores, mask):
    dx = dscores = dbias = None
    if ctx.needs_input_grad[0]:
        dx = masked_linear_dx(dy, weight, mask)
    if ctx.needs_input_grad[2]:
        dscores = masked_linear_dscores(dy, x, weight, scores)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
    return dx, dscores, dbias


def _linear_backward(ctx, dy):
    x, weight, scores, mask = ctx.saved_tensors
    dx, dscores, dbias = _linear_grads(ctx, dy, x, weight, scores, mask)
    return dx, None, dscores, None, dbias


masked_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


@torch.library.custom_op("strongticket::masked_linear_threshold", mutates_args=())
def masked_linear_threshold(
    x: Tensor, weight: Tensor, scores: Tensor, threshold: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(y, mask_bits): y = x (W ⊙ M)ᵀ + b with M from ``threshold`` = (τ, cut) (a row of :func:`topk_thresholds`),
    and M bit-packed (N, ⌈K/32⌉) int32 for the backward pass."""
    if _use_triton(x, weight, scores, bias) and scores.dtype == torch.float32:
        ml = _kernels("masked_linear")
        x2 = x.reshape(-1, x.shape[-1])
        if x2.shape[0] > 0:
            y, bits = ml.masked_linear_forward(x2, weight, scores=scores.contiguous(), threshold=threshold,
                                               bias=bias, write_bits=True, input_precision=_INPUT_PRECISION)
            return y.view(*x.shape[:-1], weight.shape[0]), bits
    mask = thresholds_mask_ref(scores, threshold)
    b = None if bias is None else bias.to(x.dtype)
    return F.linear(x, _masked_weight(weight, mask, x.dtype), b), pack_bits(mask)


@masked_linear_threshold.register_fake
def _(x, weight, scores, threshold, bias):
    n, k = weight.shape
    return x.new_empty((*x.shape[:-1], n)), x.new_empty((n, (k + 31) // 32), dtype=torch.int32)


def _threshold_setup_context(ctx, inputs, output):
    x, weight, scores, threshold, bias = inputs
    ctx.save_for_backward(x, weight, scores, output[1])
    ctx.has_bias = bias is not None
    ctx.mark_non_differentiable(output[1])


def _threshold_backward(ctx, dy, _dbits):
    x, weight, scores, bits = ctx.saved_tensors
    dx, dscores, dbias = _linear_grads(ctx, dy, x, weight, scores, bits)
    return dx, None, dscores, None, dbias


masked_linear_threshold.register_autograd(_threshold_backward, setup_context=_threshold_setup_context)


@torch.library.custom_op("strongticket::masked_linear_dx", mutates_args=())
def masked_linear_dx(dy: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """dx = dy (W ⊙ M) for dy (..., N); ``mask``: bool (N, K) or int32 words (N, ⌈K/32⌉)."""
    if _use_triton(dy, weight):
        dx = _kernels("masked_linear").masked_linear_dx(
            dy.reshape(-1, dy.shape[-1]), weight, mask=_as_mask_arg(mask), input_precision=_INPUT_PRECISION)
        return dx.view(*dy.shape[:-1], weight.shape[1])
    if mask.dtype != torch.bool:
        mask = unpack_bits(mask, weight.shape)
    return dy @ _masked_weight(weight, mask, dy.dtype)  # (..., N) @ (N, K) -> (..., K)


@masked_linear_dx.register_fake
def _(dy, weight, mask):
    return dy.new_empty((*dy.shape[:-1], weight.shape[1]))


@torch.library.custom_op("strongticket::masked_linear_dscores", mutates_args=())
def masked_linear_dscores(dy: Tensor, x: Tensor, weight: Tensor, scores: Tensor) -> Tensor:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) over the flattened batch; dense, pruned edges included."""
    dy2 = dy.reshape(-1, dy.shape[-1])  # (B, N)
    x2 = x.reshape(-1, x.shape[-1])  # (B, K)
    if _use_triton(dy, x, weight, scores) and scores.dtype == torch.float32:
        return _kernels("masked_linear").masked_linear_dscores(
            dy2, x2, weight, scores.contiguous(), input_precision=_INPUT_PRECISION)
    g = dy2.t().to(scores.dtype) @ x2.to(scores.dtype)  # (N, K)
    return g * weight.to(scores.dtype) * torch.sign(scores)


@masked_linear_dscores.register_fake
def _(dy, x, weight, scores):
    return torch.empty_like(scores)


# --------------------------------------------------------------------------------------------- conv2d


@torch.library.custom_op("strongticket::masked_weight", mutates_args=())
def masked_weight(weight: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(W ⊙ M).to(dtype) in one pass; ``mask``: bool of W's shape or int32 words (O, ⌈numel/O/32⌉)."""
    if _use_triton(weight) and dtype in _FLOATS:
        return _kernels("mask_apply").mask_apply(weight.contiguous(), mask=mask.contiguous(), dtype=dtype)
    if mask.dtype != torch.bool:
        mask = unpack_bits(mask, weight.shape)
    return _masked_weight(weight, mask, dtype)


@masked_weight.register_fake
def _(weight, mask, dtype):
    return weight.new_empty(weight.shape, dtype=dtype)


@torch.library.custom_op("strongticket::score_grad", mutates_args=())
def score_grad(grad_weight: Tensor, weight: Tensor, scores: Tensor) -> Tensor:
    """dS = G ⊙ W ⊙ sign(S), G the gradient of the effective weight W ⊙ M (pruned entries included)."""
    if _use_triton(grad_weight, weight, scores) and scores.dtype == torch.float32:
        return _kernels("mask_apply").score_grad(grad_weight.contiguous(), weight.contiguous(), scores.contiguous())
    return grad_weight.to(scores.dtype) * weight.to(scores.dtype) * torch.sign(scores)


@score_grad.register_fake
def _(grad_weight, weight, scores):
    return torch.empty_like(scores)


@torch.library.custom_op("strongticket::masked_conv2d", mutates_args=())
def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    scores: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    """conv2d(x, W ⊙ M) + b with the same straight-through score gradient as :func:`masked_linear`."""
    b = None if bias is None else bias.to(x.dtype)
    return F.conv2d(x, masked_weight(weight, mask, x.dtype), b, stride, padding, dilation, groups)


@masked_conv2d.register_fake
def _(x, weight, scores, mask, bias, stride, padding, dilation, groups):
    h, w = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return x.new_empty((x.shape[0], weight.shape[0], oh, ow))


def _conv_setup_context(ctx, inputs, output):
    x, weight, scores, mask, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(x, weight, scores, mask)
    ctx.conv_args = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv_backward(ctx, dy):
    x, weight, scores, mask = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.conv_args
    dx = dscores = dbias = None
    if ctx.needs_input_grad[0]:
        dx = torch.nn.grad.conv2d_input(
            x.shape, masked_weight(weight, mask, dy.dtype), dy, stride, padding, dilation, groups
        )
    if ctx.needs_input_grad[2]:
        g = torch.nn.grad.conv2d_weight(
            x.to(scores.dtype), weight.shape, dy.to(scores.dtype), stride, padding, dilation, groups
        )
        dscores = score_grad(g, weight, scores)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        dbias = dy.sum((0, 2, 3))
    return dx, None, dscores, None, dbias, None, None, None, None


masked_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)


# --------------------------------------------------------------------------------------------- selection


@torch.library.custom_op("strongticket::topk_thresholds", mutates_args=())
def topk_thresholds(scores: list[Tensor], ks: list[int], slots: list[int]) -> Tensor:
    """(L, 2) int64 rows (τ bits, tie cut) of the exact top-k: layer l joins slot ``slots[l]``, slot s keeps
    ``ks[s]`` (per layer: slots = 0..L-1; global: all 0). Same masks as ``strongticket.masks``, ties by index
    in the slot's concatenation; on the Triton path no host synchronisation."""
    if _use_triton(*scores) and all(s.dtype == torch.float32 for s in scores):
        sel = _kernels("select")
        plan = _select_plan(tuple(s.numel() for s in scores), tuple(ks), tuple(slots), scores[0].device)
        return sel.select_thresholds([s.contiguous() for s in scores], plan)
    return _topk_thresholds_ref(scores, ks, slots)


@topk_thresholds.register_fake
def _(scores, ks, slots):
    return scores[0].new_empty((len(scores), 2), dtype=torch.int64)


_PLANS: dict[tuple, object] = {}


def _select_plan(numels: tuple, ks: tuple, slots: tuple, device: torch.device):
    key = (numels, ks, slots, str(device))
    if key not in _PLANS:
        _PLANS[key] = _kernels("select").make_select_plan(numels, ks, slots, device=device)
    return _PLANS[key]


def _topk_thresholds_ref(scores: list[Tensor], ks: list[int], slots: list[int]) -> Tensor:
    from .masks import global_topk_masks, magnitude_bits

    if len(slots) != len(scores) or not scores:
        raise ValueError(f"slots must have one entry per scores tensor ({len(scores)}), got {len(slots)}")
    out = torch.empty((len(scores), 2), dtype=torch.int64, device=scores[0].device)
    for s in sorted(set(slots)):
        layers = [i for i, slot in enumerate(slots) if slot == s]
        group_masks = global_topk_masks([scores[i] for i in layers], ks[s])
        bits = torch.cat([magnitude_bits(scores[i]) for i in layers])
        kept = torch.cat([m.reshape(-1) for m in group_masks])
        tau = bits[kept].min()
        tied_kept = torch.nonzero(kept & (bits == tau)).squeeze(1)
        cut = int(tied_kept.max()) if int((bits == tau).sum()) > tied_kept.numel() else 2**62
        base = 0
        for i in layers:
            out[i, 0], out[i, 1] = int(tau), cut - base
            base += scores[i].numel()
    return out


@torch.library.custom_op("strongticket::threshold_mask", mutates_args=())
def threshold_mask(scores: Tensor, threshold: Tensor) -> Tensor:
    """Bool mask of ``scores``' shape: |S| bits > τ, or == τ at a flat index <= cut (``threshold`` = (τ, cut))."""
    if _use_triton(scores) and scores.dtype == torch.float32 and scores.dim() >= 1:
        mask, _ = _kernels("select").threshold_mask(scores.contiguous(), threshold)
        return mask
    return thresholds_mask_ref(scores, threshold)


@threshold_mask.register_fake
def _(scores, threshold):
    return torch.empty_like(scores, dtype=torch.bool)


# --------------------------------------------------------------------------------------------- weightless
#
# Signed-constant layers without a stored weight: W = ±scale with the signs of Philox stream (seed, layer,
# STREAM_WEIGHT) (``random.sign_bits``), scale = fp32(gain / sqrt(fan)) (:func:`signed_constant_scale`).
#   packed_linear(x, sign_bits, mask_bits, scale, b)          inference from 2 bits per weight (sign, keep)
#   seeded_packed_linear(x, mask_bits, seed, layer, scale, b)  inference from 1 bit per weight + the seed
#   seeded_linear(x, scores, mask, b, seed, layer, scale, weight_dtype)   training: same values as masked_linear
#       on W = init_weight(...).to(weight_dtype), straight-through dS; backward through seeded_linear_dx /
#       seeded_linear_dscores. The Triton path regenerates W in registers (no (N, K) weight on the device).
# The reference bodies regenerate W on the host (``random.sign_bits``) and run the stored-weight reference:
# on the torch backend the seeded ops equal masked_linear bit for bit.


def signed_constant_scale(fan_in: int, *, density: float = 1.0, scale_fan: bool = False,
                          nonlinearity: str = "relu") -> float:
    """|W| of a ``signed_constant`` init as the fp32 value ``random.init_weight`` stores (a Python float)."""
    import math

    import numpy as np

    from .random import NONLINEARITIES

    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}")
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 1:
        raise ValueError(f"fan_in must be an int >= 1, got {fan_in!r}")
    fan = fan_in * float(density) if scale_fan else float(fan_in)
    return float(np.float32(NONLINEARITIES[nonlinearity] / math.sqrt(fan)))


_SEEDED_WEIGHTS: dict[tuple, Tensor] = {}
_SEEDED_CACHE_SIZE = 16


def seeded_weight(seed: int, layer: int, shape: tuple[int, int], scale: float, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> Tensor:
    """The (N, K) weight ±scale of stream (seed, layer) on the host path (cached: the reference bodies reuse it).

    Equals ``random.init_weight(shape, "signed_constant", seed, layer, ...)`` bit for bit when ``scale`` is
    :func:`signed_constant_scale` of that layer.
    """
    from .random import STREAM_WEIGHT, sign_bits

    key = (seed, layer, tuple(shape), float(scale), dtype, str(device))
    w = _SEEDED_WEIGHTS.get(key)
    if w is None:
        neg = torch.from_numpy(sign_bits(seed, layer, STREAM_WEIGHT, shape[0], shape[1]))
        c = torch.tensor(float(scale), dtype=torch.float32)
        w = torch.where(neg, -c, c).to(device=device, dtype=dtype)
        if len(_SEEDED_WEIGHTS) >= _SEEDED_CACHE_SIZE:
            _SEEDED_WEIGHTS.pop(next(iter(_SEEDED_WEIGHTS)))
        _SEEDED_WEIGHTS[key] = w
    return w


def _stream(seed: int, layer: int) -> int:
    from .random import STREAM_WEIGHT, stream_seed

    return stream_seed(seed, layer, STREAM_WEIGHT)


def _unit_weight(sign_bits: Tensor, mask_bits: Tensor, n: int, k: int, scale: float) -> Tensor:
    """fp32 (N, K) W ⊙ M = where(M, ±scale, 0) from packed words (reference path only)."""
    neg = unpack_bits(sign_bits, (n, k))
    keep = unpack_bits(mask_bits, (n, k))
    c = torch.tensor(float(scale), dtype=torch.float32, device=sign_bits.device)
    return torch.where(keep, torch.where(neg, -c, c), torch.zeros((), device=sign_bits.device))


@torch.library.custom_op("strongticket::packed_linear", mutates_args=())
def packed_linear(x: Tensor, sign_bits: Tensor, mask_bits: Tensor, scale: float, bias: Tensor | None) -> Tensor:
    """y = scale · x (Σ ⊙ M)ᵀ + b from int32 words (N, ⌈K/32⌉): sign (1 = negative) and keep bits."""
    n, k = mask_bits.shape[0], x.shape[-1]
    if _use_triton(x, bias):
        x2 = x.reshape(-1, k).contiguous()
        y = _kernels("packed_gemm").packed_linear(x2, mask_bits.contiguous(), scale, sign_bits=sign_bits.contiguous(),
                                                  bias=bias, input_precision=_INPUT_PRECISION)
        return y.view(*x.shape[:-1], n)
    b = None if bias is None else bias.to(x.dtype)
    return F.linear(x, _unit_weight(sign_bits, mask_bits, n, k, scale).to(x.dtype), b)


@packed_linear.register_fake
def _(x, sign_bits, mask_bits, scale, bias):
    return x.new_empty((*x.shape[:-1], mask_bits.shape[0]))


@torch.library.custom_op("strongticket::seeded_packed_linear", mutates_args=())
def seeded_packed_linear(x: Tensor, mask_bits: Tensor, seed: int, layer: int, scale: float,
                         bias: Tensor | None) -> Tensor:
    """:func:`packed_linear` with the sign bits regenerated from (seed, layer): 1 bit per weight + the seed."""
    n, k = mask_bits.shape[0], x.shape[-1]
    if _use_triton(x, bias):
        x2 = x.reshape(-1, k).contiguous()
        y = _kernels("packed_gemm").packed_linear(x2, mask_bits.contiguous(), scale, seed=_stream(seed, layer),
                                                  bias=bias, input_precision=_INPUT_PRECISION)
        return y.view(*x.shape[:-1], n)
    keep = unpack_bits(mask_bits, (n, k))
    w = seeded_weight(seed, layer, (n, k), scale, torch.float32, x.device) * keep
    b = None if bias is None else bias.to(x.dtype)
    return F.linear(x, w.to(x.dtype), b)


@seeded_packed_linear.register_fake
def _(x, mask_bits, seed, layer, scale, bias):
    return x.new_empty((*x.shape[:-1], mask_bits.shape[0]))


@torch.library.custom_op("strongticket::seeded_linear", mutates_args=())
def seeded_linear(x: Tensor, scores: Tensor, mask: Tensor, bias: Tensor | None, seed: int, layer: int, scale: float,
                  weight_dtype: torch.dtype) -> Tensor:
    """:func:`masked_linear` with W = ±scale of stream (seed, layer) in ``weight_dtype`` never stored; ``scores``
    (N, K) give the shape and route dS = (dyᵀx) ⊙ W ⊙ sign(S)."""
    n, k = scores.shape
    if _use_triton(x, bias) and weight_dtype in _FLOATS:
        x2 = x.reshape(-1, k)
        y, _ = _kernels("seeded").seeded_linear_forward(
            x2, _stream(seed, layer), scale, n, weight_dtype=weight_dtype, mask=_as_mask_arg(mask), bias=bias,
            input_precision=_INPUT_PRECISION)
        return y.view(*x.shape[:-1], n)
    b = None if bias is None else bias.to(x.dtype)
    w = seeded_weight(seed, layer, (n, k), scale, weight_dtype, x.device)
    return F.linear(x, _masked_weight(w, mask, x.dtype), b)


@seeded_linear.register_fake
def _(x, scores, mask, bias, seed, layer, scale, weight_dtype):
    return x.new_empty((*x.shape[:-1], scores.shape[0]))


@torch.library.custom_op("strongticket::seeded_linear_dx", mutates_args=())
def seeded_linear_dx(dy: Tensor, mask: Tensor, seed: int, layer: int, scale: float, in_features: int,
                     weight_dtype: torch.dtype) -> Tensor:
    """dx = dy (W ⊙ M), W regenerated; ``mask``: bool (N, K) or int32 words (N, ⌈K/32⌉)."""
    n, k = dy.shape[-1], in_features
    if _use_triton(dy) and weight_dtype in _FLOATS:
        dx = _kernels("seeded").seeded_linear_dx(
            dy.reshape(-1, n), _stream(seed, layer), scale, k, weight_dtype=weight_dtype, mask=_as_mask_arg(mask),
            input_precision=_INPUT_PRECISION)
        return dx.view(*dy.shape[:-1], k)
    if mask.dtype != torch.bool:
        mask = unpack_bits(mask, (n, k))
    return dy @ _masked_weight(seeded_weight(seed, layer, (n, k), scale, weight_dtype, dy.device), mask, dy.dtype)


@seeded_linear_dx.register_fake
def _(dy, mask, seed, layer, scale, in_features, weight_dtype):
    return dy.new_empty((*dy.shape[:-1], in_features))


@torch.library.custom_op("strongticket::seeded_linear_dscores", mutates_args=())
def seeded_linear_dscores(dy: Tensor, x: Tensor, scores: Tensor, seed: int, layer: int, scale: float,
                          weight_dtype: torch.dtype) -> Tensor:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) over the flattened batch, W regenerated; dense, pruned edges included."""
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    if _use_triton(dy, x, scores) and scores.dtype == torch.float32 and weight_dtype in _FLOATS:
        return _kernels("seeded").seeded_linear_dscores(
            dy2, x2, _stream(seed, layer), scale, scores.contiguous(), weight_dtype=weight_dtype,
            input_precision=_INPUT_PRECISION)
    w = seeded_weight(seed, layer, tuple(scores.shape), scale, weight_dtype, scores.device)
    g = dy2.t().to(scores.dtype) @ x2.to(scores.dtype)
    return g * w.to(scores.dtype) * torch.sign(scores)


@seeded_linear_dscores.register_fake
def _(dy, x, scores, seed, layer, scale, weight_dtype):
    return torch.empty_like(scores)


def _seeded_setup_context(ctx, inputs, output):
    x, scores, mask, bias, seed, layer, scale, weight_dtype = inputs
    ctx.save_for_backward(x, scores, mask)
    ctx.seeded = (seed, layer, scale, weight_dtype)
    ctx.has_bias = bias is not None


def _seeded_backward(ctx, dy):
    x, scores, mask = ctx.saved_tensors
    seed, layer, scale, weight_dtype = ctx.seeded
    dx = dscores = dbias = None
    if ctx.needs_input_grad[0]:
        dx = seeded_linear_dx(dy, mask, seed, layer, scale, x.shape[-1], weight_dtype)
    if ctx.needs_input_grad[1]:
        dscores = seeded_linear_dscores(dy, x, scores, seed, layer, scale, weight_dtype)
    if ctx.has_bias and ctx.needs_input_grad[3]:
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
    return dx, dscores, None, dbias, None, None, None, None


seeded_linear.register_autograd(_seeded_backward, setup_context=_seeded_setup_context)
