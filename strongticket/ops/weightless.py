"""Signed-constant layers without a stored weight: W = ±scale with the signs of Philox stream (seed, layer,
STREAM_WEIGHT) (``random.sign_bits``), scale = fp32(gain / sqrt(fan)) (:func:`signed_constant_scale`).

  packed_linear(x, sign_bits, mask_bits, scale, b)          inference from 2 bits per weight (sign, keep)
  seeded_packed_linear(x, mask_bits, seed, layer, scale, b)  inference from 1 bit per weight + the seed
  seeded_linear(x, scores, mask, b, seed, layer, scale, weight_dtype)   training: same values as masked_linear
      on W = init_weight(...).to(weight_dtype), straight-through dS; backward through seeded_linear_dx /
      seeded_linear_dscores. The Triton path regenerates W in registers (no (N, K) weight on the device).
  seeded_linear_threshold(x, scores, threshold, b, ...) -> (y, bits)   the mask from (τ, cut) in the kernel,
      as ``masked_linear_threshold``; seeded_linear_threshold_sgd(..., buf, lr, μ, λ) runs the scores' SGD step
      in its backward (seeded_linear_sgd), as ``masked_linear_threshold_sgd``.
The reference bodies regenerate W on the host (``random.sign_bits``) and run the stored-weight reference:
on the torch backend the seeded ops equal masked_linear bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import (
    _FLOATS,
    _as_mask_arg,
    _check_sgd,
    _input_precision,
    _kernels,
    _masked_weight,
    _sgd_ref,
    _use_triton,
    pack_bits,
    thresholds_mask_ref,
    unpack_bits,
)

__all__ = [
    "packed_linear",
    "seeded_packed_linear",
    "seeded_linear",
    "seeded_linear_threshold",
    "seeded_linear_threshold_sgd",
    "seeded_linear_dx",
    "seeded_linear_dscores",
    "seeded_linear_sgd",
    "seeded_weight",
    "signed_constant_scale",
]


def signed_constant_scale(fan_in: int, *, density: float = 1.0, scale_fan: bool = False,
                          nonlinearity: str = "relu") -> float:
    """|W| of a ``signed_constant`` init as the fp32 value ``random.init_weight`` stores (a Python float)."""
    import numpy as np

    from ..random import NONLINEARITIES

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
    from ..random import STREAM_WEIGHT, sign_bits

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
    from ..random import STREAM_WEIGHT, stream_seed

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
                                                  bias=bias, input_precision=_input_precision())
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
                                                  bias=bias, input_precision=_input_precision())
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
    """``masked_linear`` with W = ±scale of stream (seed, layer) in ``weight_dtype`` never stored; ``scores``
    (N, K) give the shape and route dS = (dyᵀx) ⊙ W ⊙ sign(S)."""
    n, k = scores.shape
    if _use_triton(x, bias) and weight_dtype in _FLOATS:
        x2 = x.reshape(-1, k)
        y, _ = _kernels("seeded").seeded_linear_forward(
            x2, _stream(seed, layer), scale, n, weight_dtype=weight_dtype, mask=_as_mask_arg(mask), bias=bias,
            input_precision=_input_precision())
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
            input_precision=_input_precision())
        return dx.view(*dy.shape[:-1], k)
    if mask.dtype != torch.bool:
        mask = unpack_bits(mask, (n, k))
    return dy @ _masked_weight(seeded_weight(seed, layer, (n, k), scale, weight_dtype, dy.device), mask, dy.dtype)


@seeded_linear_dx.register_fake
def _(dy, mask, seed, layer, scale, in_features, weight_dtype):
    return dy.new_empty((*dy.shape[:-1], in_features))


def _seeded_dscores_ref(dy2: Tensor, x2: Tensor, scores: Tensor, seed: int, layer: int, scale: float,
                        weight_dtype: torch.dtype) -> Tensor:
    w = seeded_weight(seed, layer, tuple(scores.shape), scale, weight_dtype, scores.device)
    g = dy2.t().to(scores.dtype) @ x2.to(scores.dtype)
    return g * w.to(scores.dtype) * torch.sign(scores)


def _seeded_triton(scores: Tensor, weight_dtype: torch.dtype, *tensors: Tensor | None) -> bool:
    return _use_triton(*tensors, scores) and scores.dtype == torch.float32 and weight_dtype in _FLOATS


@torch.library.custom_op("strongticket::seeded_linear_dscores", mutates_args=())
def seeded_linear_dscores(dy: Tensor, x: Tensor, scores: Tensor, seed: int, layer: int, scale: float,
                          weight_dtype: torch.dtype) -> Tensor:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) over the flattened batch, W regenerated; dense, pruned edges included."""
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    if _seeded_triton(scores, weight_dtype, dy, x):
        return _kernels("seeded").seeded_linear_dscores(
            dy2, x2, _stream(seed, layer), scale, scores.contiguous(), weight_dtype=weight_dtype,
            input_precision=_input_precision())
    return _seeded_dscores_ref(dy2, x2, scores, seed, layer, scale, weight_dtype)


@seeded_linear_dscores.register_fake
def _(dy, x, scores, seed, layer, scale, weight_dtype):
    return torch.empty_like(scores)


@torch.library.custom_op("strongticket::seeded_linear_sgd", mutates_args=("scores", "momentum_buffer"))
def seeded_linear_sgd(dy: Tensor, x: Tensor, scores: Tensor, momentum_buffer: Tensor | None, seed: int, layer: int,
                      scale: float, weight_dtype: torch.dtype, lr: float, momentum: float,
                      weight_decay: float) -> None:
    """``masked_linear_sgd`` with W regenerated: one in-place SGD step on ``scores`` (and ``momentum_buffer``)."""
    _check_sgd(lr, momentum, weight_decay, momentum_buffer)
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    if (_seeded_triton(scores, weight_dtype, dy, x) and scores.is_contiguous()
            and (momentum_buffer is None or momentum_buffer.is_contiguous())):
        _kernels("seeded").seeded_linear_dscores(
            dy2, x2, _stream(seed, layer), scale, scores, weight_dtype=weight_dtype, write_grad=False, lr=lr,
            momentum_buffer=momentum_buffer, momentum=momentum, weight_decay=weight_decay,
            input_precision=_input_precision())
        return
    grad = _seeded_dscores_ref(dy2, x2, scores, seed, layer, scale, weight_dtype)
    _sgd_ref(grad, scores, momentum_buffer, lr, momentum, weight_decay)


@seeded_linear_sgd.register_fake
def _(dy, x, scores, momentum_buffer, seed, layer, scale, weight_dtype, lr, momentum, weight_decay):
    return None


def _seeded_setup_context(ctx, inputs, output):
    x, scores, mask, bias, seed, layer, scale, weight_dtype = inputs
    ctx.save_for_backward(x, scores, mask)
    ctx.seeded = (seed, layer, scale, weight_dtype)
    ctx.has_bias = bias is not None


def _seeded_grads(ctx, dy, x, scores, mask):
    seed, layer, scale, weight_dtype = ctx.seeded
    dx = dscores = dbias = None
    if ctx.needs_input_grad[0]:
        dx = seeded_linear_dx(dy, mask, seed, layer, scale, x.shape[-1], weight_dtype)
    if ctx.needs_input_grad[1]:
        dscores = seeded_linear_dscores(dy, x, scores, seed, layer, scale, weight_dtype)
    if ctx.has_bias and ctx.needs_input_grad[3]:
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
    return dx, dscores, dbias


def _seeded_backward(ctx, dy):
    x, scores, mask = ctx.saved_tensors
    dx, dscores, dbias = _seeded_grads(ctx, dy, x, scores, mask)
    return dx, dscores, None, dbias, None, None, None, None


seeded_linear.register_autograd(_seeded_backward, setup_context=_seeded_setup_context)


def _seeded_threshold_forward(x: Tensor, scores: Tensor, threshold: Tensor, bias: Tensor | None, seed: int,
                              layer: int, scale: float, weight_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    n, k = scores.shape
    if _seeded_triton(scores, weight_dtype, x, bias):
        x2 = x.reshape(-1, k)
        if x2.shape[0] > 0:
            y, bits = _kernels("seeded").seeded_linear_forward(
                x2, _stream(seed, layer), scale, n, weight_dtype=weight_dtype, scores=scores.contiguous(),
                threshold=threshold, bias=bias, write_bits=True, input_precision=_input_precision())
            return y.view(*x.shape[:-1], n), bits
    mask = thresholds_mask_ref(scores, threshold)
    b = None if bias is None else bias.to(x.dtype)
    w = seeded_weight(seed, layer, (n, k), scale, weight_dtype, x.device)
    return F.linear(x, _masked_weight(w, mask, x.dtype), b), pack_bits(mask)


def _seeded_threshold_fake(x, scores, bias):
    n, k = scores.shape
    return x.new_empty((*x.shape[:-1], n)), x.new_empty((n, (k + 31) // 32), dtype=torch.int32)


@torch.library.custom_op("strongticket::seeded_linear_threshold", mutates_args=())
def seeded_linear_threshold(x: Tensor, scores: Tensor, threshold: Tensor, bias: Tensor | None, seed: int, layer: int,
                            scale: float, weight_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(y, mask_bits): :func:`seeded_linear` with M from ``threshold`` = (τ, cut), bit-packed for the backward."""
    return _seeded_threshold_forward(x, scores, threshold, bias, seed, layer, scale, weight_dtype)


@seeded_linear_threshold.register_fake
def _(x, scores, threshold, bias, seed, layer, scale, weight_dtype):
    return _seeded_threshold_fake(x, scores, bias)


def _seeded_threshold_setup_context(ctx, inputs, output):
    x, scores, threshold, bias, seed, layer, scale, weight_dtype = inputs
    ctx.save_for_backward(x, scores, output[1])
    ctx.seeded = (seed, layer, scale, weight_dtype)
    ctx.has_bias = bias is not None
    ctx.mark_non_differentiable(output[1])


def _seeded_threshold_backward(ctx, dy, _dbits):
    x, scores, bits = ctx.saved_tensors
    dx, dscores, dbias = _seeded_grads(ctx, dy, x, scores, bits)
    return dx, dscores, None, dbias, None, None, None, None


seeded_linear_threshold.register_autograd(_seeded_threshold_backward, setup_context=_seeded_threshold_setup_context)


@torch.library.custom_op("strongticket::seeded_linear_threshold_sgd", mutates_args=())
def seeded_linear_threshold_sgd(
    x: Tensor, scores: Tensor, threshold: Tensor, bias: Tensor | None, seed: int, layer: int, scale: float,
    weight_dtype: torch.dtype, momentum_buffer: Tensor | None, lr: float, momentum: float, weight_decay: float,
) -> tuple[Tensor, Tensor]:
    """:func:`seeded_linear_threshold` whose backward runs the SGD step of ``scores`` (:func:`seeded_linear_sgd`)
    instead of returning dS."""
    _check_sgd(lr, momentum, weight_decay, momentum_buffer)
    return _seeded_threshold_forward(x, scores, threshold, bias, seed, layer, scale, weight_dtype)


@seeded_linear_threshold_sgd.register_fake
def _(x, scores, threshold, bias, seed, layer, scale, weight_dtype, momentum_buffer, lr, momentum, weight_decay):
    return _seeded_threshold_fake(x, scores, bias)


def _seeded_threshold_sgd_setup_context(ctx, inputs, output):
    x, scores, threshold, bias, seed, layer, scale, weight_dtype, momentum_buffer, lr, momentum, weight_decay = inputs
    ctx.save_for_backward(x, scores, output[1], momentum_buffer)
    ctx.seeded = (seed, layer, scale, weight_dtype)
    ctx.sgd = (lr, momentum, weight_decay)
    ctx.has_bias = bias is not None
    ctx.mark_non_differentiable(output[1])


def _seeded_threshold_sgd_backward(ctx, dy, _dbits):
    x, scores, bits, momentum_buffer = ctx.saved_tensors
    seed, layer, scale, weight_dtype = ctx.seeded
    dx = dbias = None
    if ctx.needs_input_grad[0]:
        dx = seeded_linear_dx(dy, bits, seed, layer, scale, x.shape[-1], weight_dtype)
    if ctx.has_bias and ctx.needs_input_grad[3]:
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
    if ctx.needs_input_grad[1]:
        seeded_linear_sgd(dy, x, scores.detach(), momentum_buffer, seed, layer, scale, weight_dtype, *ctx.sgd)
    return dx, None, None, dbias, None, None, None, None, None, None, None, None


seeded_linear_threshold_sgd.register_autograd(_seeded_threshold_sgd_backward,
                                              setup_context=_seeded_threshold_sgd_setup_context)
