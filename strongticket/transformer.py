"""A small transformer encoder for token sequences, every weight a masked layer over frozen random weights.

``Transformer`` (``--model transformer``): tokens (B, T) int64 → one-hot → token embedding (MaskedLinear V→d)
+ positional embedding (MaskedLinear T→d applied to the identity: one learned-by-mask vector per position) →
``depth`` pre-norm blocks [x + out(attention(qkv(LN(x)))), x + ff2(ReLU(ff1(LN(x))))] → LN → head (MaskedLinear
d→classes) → logits (B, classes, T), torch's layout for per-position cross-entropy. ``widths`` = (d_model, d_ff),
``heads`` attention heads (bidirectional, no mask), no dropout. Every matrix the network computes with — the
embeddings, the packed Q/K/V projection, the attention output, both feed-forward matrices and the head — is a
:class:`~strongticket.nn.MaskedLinear`, so the search, tickets, bake, exports and the Triton path on CUDA cover
the attention projections like any other layer (the linear layers run on (B·T, features) rows). Layer norm is
non-affine (nothing but scores learns, as edge-popup's non-affine batch norm) unless ``learn_bn``.

``share_weights=True`` (Shen et al., "What's Hidden in a One-layer Randomly Weighted Transformer?", EMNLP 2021):
layers of the same shape compute with one frozen random matrix — the weight of the first such layer, one tensor
in memory — each with its own scores and mask; the ticket stores the seed and one mask per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Transformer"]


class _Block(nn.Module):
    def __init__(self, make: Any, d: int, ff: int, heads: int, learn_bn: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=learn_bn)
        self.qkv = make.linear(d, 3 * d)
        self.out = make.linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=learn_bn)
        self.ff1 = make.linear(d, ff)
        self.ff2 = make.linear(ff, d)

    def forward(self, h: Tensor, batch: int, length: int) -> Tensor:
        """``h``: (B·T, d) rows."""
        d = h.shape[1]
        q, k, v = (self.qkv(self.norm1(h)).view(batch, length, 3, self.heads, d // self.heads)
                   .permute(2, 0, 3, 1, 4).unbind(0))  # each (B, heads, T, d_head)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch * length, d)
        h = h + self.out(attended)
        return h + self.ff2(F.relu(self.ff1(self.norm2(h))))


class Transformer(nn.Module):
    """Pre-norm transformer encoder of masked layers; ``widths`` = (d_model, d_ff) (default 64, 128)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (64, 128), *,
                 width: float = 1.0, depth: int = 2, heads: int = 4, vocab: int | None = None,
                 density: float = 0.5, init: str = "signed_constant", seed: int = 0, scale_fan: bool = False,
                 bias: bool = False, bias_scores: bool = False, learn_bn: bool = False, weights: str = "stored",
                 share_weights: bool = False) -> None:
        super().__init__()
        from .models import _Layers, _positive_ints, _scaled

        if len(input_shape) != 1:
            raise ValueError(f"transformer needs token sequences (length,), got input shape {tuple(input_shape)}")
        if len(widths) != 2:
            raise ValueError(f"widths of transformer must be d_model,d_ff (2 values), got {list(widths)}")
        _positive_ints("widths", widths)
        for name, value in (("depth", depth), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f"{name} must be an integer in [1, 64], got {value!r}")
        d, ff = (_scaled(w, width) for w in widths)
        if d % heads:
            raise ValueError(f"d_model ({d}) must be divisible by heads ({heads})")
        self.length = int(input_shape[0])
        self.vocab = num_classes if vocab is None else vocab
        _positive_ints("vocab", [self.vocab])
        make = _Layers(density, init, seed, scale_fan, bias, bias_scores, weights, share_weights)
        self.embed = make.linear(self.vocab, d)
        self.position = make.linear(self.length, d)
        self.blocks = nn.ModuleList(_Block(make, d, ff, heads, learn_bn) for _ in range(depth))
        self.norm = nn.LayerNorm(d, elementwise_affine=learn_bn)
        self.head = make.linear(d, num_classes)
        self.register_buffer("_positions", torch.eye(self.length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.length or x.dtype.is_floating_point or x.dtype == torch.bool:
            raise ValueError(f"input must be integer tokens (batch, {self.length}), got {x.dtype} {tuple(x.shape)}")
        if x.is_cpu and x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab):
            raise ValueError(f"tokens must be in [0, {self.vocab - 1}], got values in [{int(x.min())}, "
                             f"{int(x.max())}]")
        batch, length = x.shape
        rows = F.one_hot(x.reshape(-1), self.vocab).to(self._positions.dtype)
        h = (self.embed(rows).view(batch, length, -1) + self.position(self._positions)).reshape(batch * length, -1)
        for block in self.blocks:
            h = block(h, batch, length)
        return self.head(self.norm(h)).view(batch, length, -1).transpose(1, 2)

