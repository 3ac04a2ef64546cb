"""Masked linear and conv2d as ``torch.library`` custom ops, with the edge-popup straight-through gradient.

Forward: y = x (W ⊙ M)ᵀ (+ b) for linear, y = conv2d(x, W ⊙ M) (+ b) for conv.
Backward (Ramanujan et al. 2020, "What's hidden in a randomly weighted neural network?"):
    dx = dy (W ⊙ M)                    (ordinary gradient through the masked weight)
    dS = G ⊙ W ⊙ sign(S),  G = dyᵀ x   (straight-through top-k; sign from differentiating |S|)
G is the gradient of the *unmasked* effective weight: pruned edges receive a score gradient too, which is how
they "pop up". The frozen weight gets no gradient; a bias gets one only if it requires grad.

Shapes: x (..., K), weight/scores/mask (N, K), bias (N,) → y (..., N);
conv: x (B, C, H, W), weight/scores/mask (O, C/groups, kh, kw).

Layout (one module per concern; each op has a plain-PyTorch reference body, a fake (meta) implementation and,
where differentiable, an autograd formula):
  linear.py      masked_linear, masked_linear_threshold (mask from τ/cut in the kernel, bit-packed for backward),
                 masked_linear_threshold_sgd (its backward runs the scores' SGD step: masked_linear_sgd, which
                 mutates scores and momentum buffer in the dS GEMM's epilogue), masked_linear_dx, _dscores;
                 premasked_linear (an autograd.Function: the torch backend's layer, W ⊙ M given and cached)
  conv.py        masked_conv2d, masked_weight (the mask-apply), score_grad (the score-gradient epilogue),
                 masked_conv2d_sgd (its backward runs the scores' SGD step in that epilogue: score_grad_sgd)
  select.py      topk_thresholds([S_l], ks, slots) -> (L, 2) int64 (exact radix select, per layer or global),
                 threshold_mask(S, thresholds) -> bool mask, threshold_masked_weight -> W ⊙ M (numpy on CPU)
  weightless.py  packed_linear / seeded_packed_linear / seeded_linear (+ _threshold, _threshold_sgd, _dx,
                 _dscores, _sgd): signed-constant layers whose weight is regenerated from the seed
  _common.py     the kernel import, the dispatch test, the dot precision, pack_bits / unpack_bits
Bit-packed masks: int32 word w of row n holds M[n, 32w + j] in bit j (rows = dim 0, the rest flattened).

This package is the only importer of ``strongticket.kernels``. Every op body dispatches through
:func:`_use_triton`: the fused Triton kernels where ``strongticket.backend`` selects Triton (CUDA by default;
CPU tensors inside ``backend.interpret_on_cpu()``) and the inputs are fp32/bf16 with fp32 scores; the PyTorch
reference otherwise (the CPU path, float64 and the oracle of the tests). fp32 dots in the kernels run at the
kernels' default precision (``kernels.tiles.DEFAULT_PRECISION``) unless ``STRONGTICKET_INPUT_PRECISION`` names
another (tf32x3, tf32, ieee). Tile sizes are always the kernels' choice.
"""

from __future__ import annotations

from ._common import _kernels, _use_triton, pack_bits, thresholds_mask_ref, unpack_bits
from .conv import masked_conv2d, masked_conv2d_sgd, masked_weight, score_grad, score_grad_sgd, score_sgd_eager
from .linear import (
    masked_linear,
    masked_linear_dscores,
    masked_linear_dx,
    masked_linear_sgd,
    masked_linear_threshold,
    masked_linear_threshold_sgd,
    premasked_linear,
)
from .select import (
    _topk_thresholds_ref,
    patch_masked_weight,
    threshold_mask,
    threshold_masked_weight,
    topk_thresholds,
)
from .weightless import (
    packed_linear,
    seeded_linear,
    seeded_linear_dscores,
    seeded_linear_dx,
    seeded_linear_sgd,
    seeded_linear_threshold,
    seeded_linear_threshold_sgd,
    seeded_packed_linear,
    seeded_weight,
    signed_constant_scale,
)

__all__ = [
    "masked_linear",
    "masked_conv2d",
    "masked_conv2d_sgd",
    "masked_linear_threshold",
    "masked_linear_threshold_sgd",
    "masked_linear_dx",
    "masked_linear_dscores",
    "masked_linear_sgd",
    "premasked_linear",
    "masked_weight",
    "score_grad",
    "score_grad_sgd",
    "score_sgd_eager",
    "topk_thresholds",
    "threshold_mask",
    "threshold_masked_weight",
    "patch_masked_weight",
    "pack_bits",
    "unpack_bits",
    "thresholds_mask_ref",
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

_PRIVATE = (_kernels, _use_triton, _topk_thresholds_ref)  # used as ops._kernels(...) etc. by benches and tests
