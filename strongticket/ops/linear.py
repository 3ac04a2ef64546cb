"""Masked linear ops: y = x (W ⊙ M)ᵀ (+ b) with the edge-popup straight-through gradient, and its fused variants.

  masked_linear(x, W, S, mask, b) -> y                           mask bool (N, K); backward dx, dS, db
  masked_linear_threshold(x, W, S, thresholds, b) -> (y, bits)   M from (τ, cut) in the kernel, bit-packed out
  masked_linear_threshold_sgd(x, W, S, thr, b, buf, lr, μ, λ)    the same forward; its backward applies the SGD
                                                                 step of S (masked_linear_sgd) instead of returning dS
  masked_linear_dx(dy, W, mask) -> dx                            mask bool (N, K) or int32 words (N, ⌈K/32⌉)
  masked_linear_dscores(dy, x, W, S) -> dS                       dS = (dyᵀx) ⊙ W ⊙ sign(S)
  masked_linear_sgd(dy, x, W, S!, buf!, lr, μ, λ) -> None        buf = μ·buf + dS + λ·S; S −= lr·buf, in place
  premasked_linear(x, W ⊙ M, W, S, b) -> y                       the torch backend's layer: W ⊙ M given (cached
                                                                 by the layer), dx = dy (W ⊙ M), dS as above

Shapes: x (..., K), weight/scores/mask (N, K), bias (N,) → y (..., N); the leading dims of x flatten into the batch.

On the Triton backend each op runs one of two paths (``ops._common._gemm_path``, ``STRONGTICKET_GEMM``): the fused
GEMM kernels, or W ⊙ M written once by an elementwise kernel and multiplied by the library GEMM (cuBLAS on a GPU)
with the score gradient / SGD step in one elementwise pass over G = dyᵀx. Same masks, bits and semantics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _cpu
from ._common import (
    _as_mask_arg,
    _check_sgd,
    _gemm_path,
    _grad_weight,
    _input_precision,
    _kernels,
    _masked_weight,
    _sgd_ref,
    _use_triton,
    pack_bits,
    thresholds_mask_ref,
    unpack_bits,
)
from .conv import masked_weight, score_grad, score_grad_sgd  # the elementwise ops of the materialize path

__all__ = [
    "masked_linear",
    "masked_linear_threshold",
    "masked_linear_threshold_sgd",
    "masked_linear_dx",
    "masked_linear_dscores",
    "masked_linear_sgd",
    "premasked_linear",
]


@torch.library.custom_op("strongticket::masked_linear", mutates_args=())
def masked_linear(x: Tensor, weight: Tensor, scores: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    """y = x (W ⊙ M)ᵀ + b; ``scores`` only routes the straight-through gradient dS = (dyᵀx) ⊙ W ⊙ sign(S)."""
    if _use_triton(x, weight, bias) and _gemm_path(x.device, weight.numel()) == "materialize":
        b = None if bias is None else bias.to(x.dtype)
        return F.linear(x, masked_weight(weight, mask, x.dtype), b)
    if _use_triton(x, weight, bias):
        ml = _kernels("masked_linear")
        x2 = x.reshape(-1, x.shape[-1])
        y, _ = ml.masked_linear_forward(x2, weight, mask=_as_mask_arg(mask), bias=bias,
                                        input_precision=_input_precision())
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


def _threshold_forward(x: Tensor, weight: Tensor, scores: Tensor, threshold: Tensor,
                       bias: Tensor | None) -> tuple[Tensor, Tensor]:
    if (_use_triton(x, weight, scores, bias) and scores.dtype == torch.float32
            and _gemm_path(x.device, weight.numel()) == "materialize"):
        _, bits = _kernels("select").threshold_mask(scores.contiguous(), threshold, want_mask=False, want_bits=True)
        b = None if bias is None else bias.to(x.dtype)
        return F.linear(x, masked_weight(weight, bits, x.dtype), b), bits
    if _use_triton(x, weight, scores, bias) and scores.dtype == torch.float32:
        ml = _kernels("masked_linear")
        x2 = x.reshape(-1, x.shape[-1])
        if x2.shape[0] > 0:
            y, bits = ml.masked_linear_forward(x2, weight, scores=scores.contiguous(), threshold=threshold,
                                               bias=bias, write_bits=True, input_precision=_input_precision())
            return y.view(*x.shape[:-1], weight.shape[0]), bits
    mask = thresholds_mask_ref(scores, threshold)
    b = None if bias is None else bias.to(x.dtype)
    return F.linear(x, _masked_weight(weight, mask, x.dtype), b), pack_bits(mask)


def _threshold_fake(x, weight, scores, threshold, bias):
    n, k = weight.shape
    return x.new_empty((*x.shape[:-1], n)), x.new_empty((n, (k + 31) // 32), dtype=torch.int32)


@torch.library.custom_op("strongticket::masked_linear_threshold", mutates_args=())
def masked_linear_threshold(
    x: Tensor, weight: Tensor, scores: Tensor, threshold: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(y, mask_bits): y = x (W ⊙ M)ᵀ + b with M from ``threshold`` = (τ, cut) (a row of ``topk_thresholds``),
    and M bit-packed (N, ⌈K/32⌉) int32 for the backward pass."""
    return _threshold_forward(x, weight, scores, threshold, bias)


@masked_linear_threshold.register_fake
def _(x, weight, scores, threshold, bias):
    return _threshold_fake(x, weight, scores, threshold, bias)


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


@torch.library.custom_op("strongticket::masked_linear_threshold_sgd", mutates_args=())
def masked_linear_threshold_sgd(
    x: Tensor, weight: Tensor, scores: Tensor, threshold: Tensor, bias: Tensor | None,
    momentum_buffer: Tensor | None, lr: float, momentum: float, weight_decay: float,
) -> tuple[Tensor, Tensor]:
    """:func:`masked_linear_threshold` whose backward runs one SGD step on ``scores`` (and ``momentum_buffer``)
    through :func:`masked_linear_sgd` instead of returning dS: the scores get no ``.grad``."""
    _check_sgd(lr, momentum, weight_decay, momentum_buffer)
    return _threshold_forward(x, weight, scores, threshold, bias)


@masked_linear_threshold_sgd.register_fake
def _(x, weight, scores, threshold, bias, momentum_buffer, lr, momentum, weight_decay):
    return _threshold_fake(x, weight, scores, threshold, bias)


def _threshold_sgd_setup_context(ctx, inputs, output):
    x, weight, scores, threshold, bias, momentum_buffer, lr, momentum, weight_decay = inputs
    ctx.save_for_backward(x, weight, scores, output[1], momentum_buffer)
    ctx.has_bias = bias is not None
    ctx.sgd = (lr, momentum, weight_decay)
    ctx.mark_non_differentiable(output[1])


def _threshold_sgd_backward(ctx, dy, _dbits):
    x, weight, scores, bits, momentum_buffer = ctx.saved_tensors
    dx = dbias = None
    if ctx.needs_input_grad[0]:
        dx = masked_linear_dx(dy, weight, bits)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
    if ctx.needs_input_grad[2]:  # last: dx reads the bits, never S, so the order is free; S is read before written
        masked_linear_sgd(dy, x, weight, scores.detach(), momentum_buffer, *ctx.sgd)
    return dx, None, None, None, dbias, None, None, None, None


masked_linear_threshold_sgd.register_autograd(_threshold_sgd_backward, setup_context=_threshold_sgd_setup_context)


@torch.library.custom_op("strongticket::masked_linear_dx", mutates_args=())
def masked_linear_dx(dy: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """dx = dy (W ⊙ M) for dy (..., N); ``mask``: bool (N, K) or int32 words (N, ⌈K/32⌉)."""
    if _use_triton(dy, weight) and _gemm_path(dy.device, weight.numel()) == "materialize":
        return dy @ masked_weight(weight, mask, dy.dtype)
    if _use_triton(dy, weight):
        dx = _kernels("masked_linear").masked_linear_dx(
            dy.reshape(-1, dy.shape[-1]), weight, mask=_as_mask_arg(mask), input_precision=_input_precision())
        return dx.view(*dy.shape[:-1], weight.shape[1])
    if mask.dtype != torch.bool:
        mask = unpack_bits(mask, weight.shape)
    return dy @ _masked_weight(weight, mask, dy.dtype)  # (..., N) @ (N, K) -> (..., K)


@masked_linear_dx.register_fake
def _(dy, weight, mask):
    return dy.new_empty((*dy.shape[:-1], weight.shape[1]))


def _dscores_ref(dy2: Tensor, x2: Tensor, weight: Tensor, scores: Tensor) -> Tensor:
    g = dy2.t().to(scores.dtype) @ x2.to(scores.dtype)  # (N, K)
    return g * weight.to(scores.dtype) * torch.sign(scores)


@torch.library.custom_op("strongticket::masked_linear_dscores", mutates_args=())
def masked_linear_dscores(dy: Tensor, x: Tensor, weight: Tensor, scores: Tensor) -> Tensor:
    """dS = (dyᵀ x) ⊙ W ⊙ sign(S) over the flattened batch; dense, pruned edges included."""
    dy2 = dy.reshape(-1, dy.shape[-1])  # (B, N)
    x2 = x.reshape(-1, x.shape[-1])  # (B, K)
    if (_use_triton(dy, x, weight, scores) and scores.dtype == torch.float32
            and _gemm_path(dy.device, weight.numel()) == "materialize"):
        return score_grad(_grad_weight(dy2, x2), weight, scores)
    if _use_triton(dy, x, weight, scores) and scores.dtype == torch.float32:
        return _kernels("masked_linear").masked_linear_dscores(
            dy2, x2, weight, scores.contiguous(), input_precision=_input_precision())
    return _dscores_ref(dy2, x2, weight, scores)


@masked_linear_dscores.register_fake
def _(dy, x, weight, scores):
    return torch.empty_like(scores)


@torch.library.custom_op("strongticket::masked_linear_sgd", mutates_args=("scores", "momentum_buffer"))
def masked_linear_sgd(dy: Tensor, x: Tensor, weight: Tensor, scores: Tensor, momentum_buffer: Tensor | None,
                      lr: float, momentum: float, weight_decay: float) -> None:
    """One ``torch.optim.SGD`` step (dampening 0, no Nesterov) on ``scores`` with dS = (dyᵀx) ⊙ W ⊙ sign(S), in
    place: buf = μ·buf + dS + λ·S; S −= lr·buf (``momentum_buffer`` None: μ = 0, no buffer). On the Triton path
    the step runs in the dS GEMM's epilogue and dS is never written; a zero buffer reproduces SGD's first step."""
    _check_sgd(lr, momentum, weight_decay, momentum_buffer)
    dy2 = dy.reshape(-1, dy.shape[-1])
    x2 = x.reshape(-1, x.shape[-1])
    if (_use_triton(dy, x, weight, scores) and scores.dtype == torch.float32 and scores.is_contiguous()
            and (momentum_buffer is None or momentum_buffer.is_contiguous())):
        if _gemm_path(dy.device, weight.numel()) == "materialize":
            score_grad_sgd(_grad_weight(dy2, x2), weight, scores, momentum_buffer, lr, momentum, weight_decay)
            return
        _kernels("masked_linear").masked_linear_dscores(
            dy2, x2, weight, scores, write_grad=False, lr=lr, momentum_buffer=momentum_buffer, momentum=momentum,
            weight_decay=weight_decay, input_precision=_input_precision())
        return
    _sgd_ref(_dscores_ref(dy2, x2, weight, scores), scores, momentum_buffer, lr, momentum, weight_decay)


@masked_linear_sgd.register_fake
def _(dy, x, weight, scores, momentum_buffer, lr, momentum, weight_decay):
    return None


class _PremaskedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, masked_weight, weight, scores, bias):
        ctx.save_for_backward(x, masked_weight, weight, scores)
        ctx.has_bias = bias is not None
        return F.linear(x, masked_weight, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, dy):
        x, masked_weight, weight, scores = ctx.saved_tensors
        dx = dscores = dbias = None
        if ctx.needs_input_grad[0]:
            dx = dy @ masked_weight.to(dy.dtype)
        dy2 = dy.reshape(-1, dy.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[4]:
            dbias = dy2.sum(0)
        if ctx.needs_input_grad[3]:
            g = dy2.t().to(scores.dtype) @ x.reshape(-1, x.shape[-1]).to(scores.dtype)  # G = dyᵀx
            if _cpu.usable(g, weight, scores):
                dscores = _cpu.score_grad(g, weight, scores, out=g)
            else:  # (dyᵀx) ⊙ W ⊙ sign(S) in _dscores_ref's order, in place on the fresh product
                dscores = g.mul_(weight.to(scores.dtype)).mul_(torch.sign(scores))
        return dx, None, None, dscores, dbias


def premasked_linear(x: Tensor, masked_weight: Tensor, weight: Tensor, scores: Tensor,
                     bias: Tensor | None) -> Tensor:
    """y = x (W ⊙ M)ᵀ + b for a W ⊙ M computed by the caller (``masked_weight``, in x's dtype, no gradient),
    with the straight-through dS = (dyᵀx) ⊙ W ⊙ sign(S) of :func:`masked_linear` and dx = dy (W ⊙ M).

    The torch backend's masked linear layer: the layer keeps W ⊙ M until its mask changes (forward, dx and every
    evaluation batch share it), and this is an ``autograd.Function`` of plain torch ops and the CPU loops of
    ``ops._cpu``, not a custom op: on the CPU a custom op's dispatch costs ~0.1 ms per layer and step
    (2026-11-29, 2-core EPYC), a third of a LeNet-300-100 step. Same values as :func:`masked_linear`. (When
    ``optim.ScoreSGD`` fuses the scores' step, ``MaskedLinear`` uses torch's native linear instead.)"""
    return _PremaskedLinear.apply(x, masked_weight, weight, scores, bias)
