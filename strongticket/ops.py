"""Masked linear and conv2d as ``torch.library`` custom ops, with the edge-popup straight-through gradient.

Forward: y = x (W ⊙ M)ᵀ (+ b) for linear, y = conv2d(x, W ⊙ M) (+ b) for conv.
Backward (Ramanujan et al. 2020, "What's hidden in a randomly weighted neural network?"):
    dx = dy (W ⊙ M)                    (ordinary gradient through the masked weight)
    dS = G ⊙ W ⊙ sign(S),  G = dyᵀ x   (straight-through top-k; sign from differentiating |S|)
G is the gradient of the *unmasked* effective weight: pruned edges receive a score gradient too, which is how
they "pop up". The frozen weight gets no gradient; a bias gets one only if it requires grad.

Shapes: x (..., K), weight/scores/mask (N, K), bias (N,) → y (..., N);
conv: x (B, C, H, W), weight/scores/mask (O, C/groups, kh, kw).

This module is the only place that will import ``strongticket.kernels``: the plain-PyTorch bodies below are the
reference (and the CPU path); Triton kernels register as the CUDA implementation of the same ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["masked_linear", "masked_conv2d"]


def _masked_weight(weight: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    return (weight * mask).to(dtype)


# --------------------------------------------------------------------------------------------- linear


@torch.library.custom_op("strongticket::masked_linear", mutates_args=())
def masked_linear(x: Tensor, weight: Tensor, scores: Tensor, mask: Tensor, bias: Tensor | None) -> Tensor:
    """y = x (W ⊙ M)ᵀ + b; ``scores`` only routes the straight-through gradient dS = (dyᵀx) ⊙ W ⊙ sign(S)."""
    b = None if bias is None else bias.to(x.dtype)
    return F.linear(x, _masked_weight(weight, mask, x.dtype), b)


@masked_linear.register_fake
def _(x, weight, scores, mask, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _linear_setup_context(ctx, inputs, output):
    x, weight, scores, mask, bias = inputs
    ctx.save_for_backward(x, weight, scores, mask)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, dy):
    x, weight, scores, mask = ctx.saved_tensors
    dx = dscores = dbias = None
    if ctx.needs_input_grad[0]:
        dx = dy @ _masked_weight(weight, mask, dy.dtype)  # (..., N) @ (N, K) -> (..., K)
    if ctx.needs_input_grad[2]:
        dy2 = dy.reshape(-1, dy.shape[-1])  # (B, N)
        x2 = x.reshape(-1, x.shape[-1])  # (B, K)
        g = dy2.t().to(scores.dtype) @ x2.to(scores.dtype)  # (N, K): dense, pruned edges included
        dscores = g * weight.to(scores.dtype) * torch.sign(scores)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        dbias = dy.reshape(-1, dy.shape[-1]).sum(0)
    return dx, None, dscores, None, dbias


masked_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


# --------------------------------------------------------------------------------------------- conv2d


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
    return F.conv2d(x, _masked_weight(weight, mask, x.dtype), b, stride, padding, dilation, groups)


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
            x.shape, _masked_weight(weight, mask, dy.dtype), dy, stride, padding, dilation, groups
        )
    if ctx.needs_input_grad[2]:
        g = torch.nn.grad.conv2d_weight(
            x.to(scores.dtype), weight.shape, dy.to(scores.dtype), stride, padding, dilation, groups
        )
        dscores = g * weight.to(scores.dtype) * torch.sign(scores)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        dbias = dy.sum((0, 2, 3))
    return dx, None, dscores, None, dbias, None, None, None, None


masked_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup_context)
