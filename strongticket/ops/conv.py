"""Masked conv2d: y = conv2d(x, W ⊙ M) (+ b) with the edge-popup straight-through gradient, around cuDNN.

  masked_weight(W, mask, dtype) -> (W ⊙ M).to(dtype)   the mask-apply kernel (one pass)
  score_grad(G, W, S) -> G ⊙ W ⊙ sign(S)               the score-gradient epilogue, G = conv2d_weight(x, dy)
  score_grad_sgd(G, W, S!, buf!, lr, μ, λ) -> None        the same epilogue running SGD on S in place, dS unwritten
  masked_conv2d(x, W, S, mask, b, stride, padding, dilation, groups) -> y
  masked_conv2d_sgd(..., buf, lr, μ, λ) -> y              the same forward; its backward runs score_grad_sgd

Shapes: x (B, C, H, W), weight/scores/mask (O, C/groups, kh, kw); bit-packed masks run along C/groups·kh·kw.
masked_weight, score_grad and score_grad_sgd serve any layer shape: the linear ops' materialize path uses them too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _cpu
from ._common import _FLOATS, _check_sgd, _kernels, _masked_weight, _sgd_ref, _use_triton, unpack_bits

__all__ = ["masked_weight", "score_grad", "score_grad_sgd", "masked_conv2d", "masked_conv2d_sgd"]


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
    if _cpu.usable(grad_weight, weight, scores):
        return _cpu.score_grad(grad_weight, weight, scores, torch.empty_like(scores))
    return grad_weight.to(scores.dtype) * weight.to(scores.dtype) * torch.sign(scores)


@score_grad.register_fake
def _(grad_weight, weight, scores):
    return torch.empty_like(scores)


@torch.library.custom_op("strongticket::score_grad_sgd", mutates_args=("scores", "momentum_buffer"))
def score_grad_sgd(grad_weight: Tensor, weight: Tensor, scores: Tensor, momentum_buffer: Tensor | None, lr: float,
                   momentum: float, weight_decay: float) -> None:
    """One ``torch.optim.SGD`` step on ``scores`` with dS = G ⊙ W ⊙ sign(S), in place: buf = μ·buf + dS + λ·S;
    S −= lr·buf (``momentum_buffer`` None: μ = 0). On the Triton path one elementwise pass; dS is never written."""
    _check_sgd(lr, momentum, weight_decay, momentum_buffer)
    if (_use_triton(grad_weight, weight, scores) and scores.dtype == torch.float32 and scores.is_contiguous()
            and (momentum_buffer is None or momentum_buffer.is_contiguous())):
        _kernels("mask_apply").score_grad(grad_weight.contiguous(), weight.contiguous(), scores, write_grad=False,
                                          lr=lr, momentum_buffer=momentum_buffer, momentum=momentum,
                                          weight_decay=weight_decay)
        return
    score_sgd_eager(grad_weight, weight, scores, momentum_buffer, lr, momentum, weight_decay)


def score_sgd_eager(grad_weight: Tensor, weight: Tensor, scores: Tensor, momentum_buffer: Tensor | None, lr: float,
                    momentum: float, weight_decay: float) -> None:
    """:func:`score_grad_sgd` off the Triton path, without a custom op's dispatch: the compiled CPU loop
    (``ops._cpu``) where it runs, else dS by torch ops and ``torch.optim.SGD``'s step in its own order — the same
    bits either way. The caller accounts for the in-place writes (version counters)."""
    buffers = () if momentum_buffer is None else (momentum_buffer,)
    if _cpu.usable(grad_weight, weight, scores, *buffers):
        _cpu.score_sgd(grad_weight, weight, scores, momentum_buffer, lr, momentum, weight_decay)
        return
    grad = grad_weight.to(scores.dtype) * weight.to(scores.dtype) * torch.sign(scores)
    _sgd_ref(grad, scores, momentum_buffer, lr, momentum, weight_decay)


@score_grad_sgd.register_fake
def _(grad_weight, weight, scores, momentum_buffer, lr, momentum, weight_decay):
    return None


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
    """conv2d(x, W ⊙ M) + b with the same straight-through score gradient as ``masked_linear``."""
    return _conv_forward(x, weight, mask, bias, stride, padding, dilation, groups)


def _conv_forward(x, weight, mask, bias, stride, padding, dilation, groups) -> Tensor:
    b = None if bias is None else bias.to(x.dtype)
    return F.conv2d(x, masked_weight(weight, mask, x.dtype), b, stride, padding, dilation, groups)


@masked_conv2d.register_fake
def _(x, weight, scores, mask, bias, stride, padding, dilation, groups):
    return _conv_fake(x, weight, padding, stride, dilation)


def _conv_fake(x, weight, padding, stride, dilation) -> Tensor:
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


def _conv_input_grad(ctx, dy, x, weight, mask):
    stride, padding, dilation, groups = ctx.conv_args
    dx = dbias = None
    if ctx.needs_input_grad[0]:
        dx = torch.nn.grad.conv2d_input(
            x.shape, masked_weight(weight, mask, dy.dtype), dy, stride, padding, dilation, groups
        )
    if ctx.has_bias and ctx.needs_input_grad[4]:
        dbias = dy.sum((0, 2, 3))
    return dx, dbias


def _conv_weight_grad(ctx, dy, x, weight, scores):
    """G = conv2d_weight(x, dy): the gradient of the effective weight W ⊙ M, in the scores' dtype."""
    stride, padding, dilation, groups = ctx.conv_args
    return torch.nn.grad.conv2d_weight(
        x.to(scores.dtype), weight.shape, dy.to(scores.dtype), stride, padding, dilation, groups
    )


def _conv_backward(ctx, dy):
    x, weight, scores, mask = ctx.saved_tensors
    dx, dbias = _conv_input_grad(ctx, dy, x, weight, mask)
    dscores = None
    if ctx.needs_input_grad[2]:
        dscores = score_grad(_conv_weight_grad(ctx, dy, x, weight, scores), weight, scores)
    return dx, None, dscores, None, dbias, None, None, None, None


masked_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)


@torch.library.custom_op("strongticket::masked_conv2d_sgd", mutates_args=())
def masked_conv2d_sgd(
    x: Tensor,
    weight: Tensor,
    scores: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    momentum_buffer: Tensor | None,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> Tensor:
    """:func:`masked_conv2d` whose backward runs one SGD step on ``scores`` (and ``momentum_buffer``) through
    :func:`score_grad_sgd` instead of returning dS: the scores get no ``.grad``."""
    _check_sgd(lr, momentum, weight_decay, momentum_buffer)
    return _conv_forward(x, weight, mask, bias, stride, padding, dilation, groups)


@masked_conv2d_sgd.register_fake
def _(x, weight, scores, mask, bias, stride, padding, dilation, groups, momentum_buffer, lr, momentum, weight_decay):
    return _conv_fake(x, weight, padding, stride, dilation)


def _conv_sgd_setup_context(ctx, inputs, output):
    x, weight, scores, mask, bias, stride, padding, dilation, groups, momentum_buffer, lr, momentum, wd = inputs
    ctx.save_for_backward(x, weight, scores, mask, momentum_buffer)
    ctx.conv_args = (stride, padding, dilation, groups)
    ctx.sgd = (lr, momentum, wd)
    ctx.has_bias = bias is not None


def _conv_sgd_backward(ctx, dy):
    x, weight, scores, mask, momentum_buffer = ctx.saved_tensors
    dx, dbias = _conv_input_grad(ctx, dy, x, weight, mask)
    if ctx.needs_input_grad[2]:
        score_grad_sgd(_conv_weight_grad(ctx, dy, x, weight, scores), weight, scores.detach(), momentum_buffer,
                       *ctx.sgd)
    return dx, None, None, None, dbias, None, None, None, None, None, None, None, None


masked_conv2d_sgd.register_autograd(_conv_sgd_backward, setup_context=_conv_sgd_setup_context)
