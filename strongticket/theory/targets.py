"""Target networks for the constructions: bias-free ReLU MLPs given as a list of float64 weight matrices.

f(x) = W_l σ(W_{l−1} … σ(W_1 x)), σ = ReLU, W_i of shape (d_i, d_{i−1}) (rows = outputs), linear last layer;
the theorems (Malach et al. 2020, Pensia et al. 2020, Burkholz 2022) assume ‖W_i‖₂ ≤ 1 and ‖x‖₂ ≤ 1.

Sources: ``random_target`` (Gaussian entries from the DATA stream of ``strongticket.random``, each layer scaled
to spectral norm ``spectral_norm``: reproducible bit for bit from (widths, seed)); ``target_from_sequential``
(an ``nn.Sequential`` of bias-free Linear/ReLU); ``target_from_ticket`` (a search ticket baked to dense).
A target whose layers violate ‖W_i‖₂ ≤ 1 is rejected, or rescaled layer by layer with ``scale=True``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..random import STREAM_DATA, standard_normal

__all__ = [
    "Target",
    "check_dims",
    "random_target",
    "target_from_sequential",
    "target_from_ticket",
    "target_forward",
    "target_sha256",
    "dims_of",
]

Target = list[np.ndarray]  # [W_1, ..., W_l], W_i float64 (d_i, d_{i-1})

_MAX_DIM = 1 << 20
# Target streams live far above the layer indices a network uses, so a target never shares a net's stream.
_TARGET_LAYER_BASE = 1 << 20


def check_dims(dims: Sequence[int], field: str = "target widths") -> list[int]:
    """``dims`` = [d_0, d_1, ..., d_l] as ints (at least 2 entries, each in [1, 2**20]), else ValueError."""
    dims = list(dims)
    if len(dims) < 2:
        raise ValueError(f"{field} must list at least 2 widths (input, ..., output), got {dims}")
    for i, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= _MAX_DIM:
            raise ValueError(f"{field}[{i}] must be an integer in [1, {_MAX_DIM}], got {d!r}")
    return [int(d) for d in dims]


def dims_of(target: Target) -> list[int]:
    """[d_0, ..., d_l] of a target."""
    return [target[0].shape[1]] + [w.shape[0] for w in target]


def random_target(dims: Sequence[int], seed: int, spectral_norm: float = 1.0) -> Target:
    """Gaussian layers, each scaled to spectral norm ``spectral_norm`` (exactly, up to rounding)."""
    dims = check_dims(dims)
    if not 0.0 < spectral_norm <= 1e6:
        raise ValueError(f"spectral_norm must be in (0, 1e6], got {spectral_norm}")
    weights = []
    for i in range(1, len(dims)):
        g = standard_normal(seed, _TARGET_LAYER_BASE + i, STREAM_DATA, dims[i], dims[i - 1])
        weights.append(g * (spectral_norm / np.linalg.norm(g, 2)))
    return weights


def _checked(weights: list[np.ndarray], scale: bool, what: str) -> Target:
    for i in range(1, len(weights)):
        if weights[i].shape[1] != weights[i - 1].shape[0]:
            raise ValueError(f"{what}: layer {i + 1} takes {weights[i].shape[1]} inputs, layer {i} gives "
                             f"{weights[i - 1].shape[0]}")
    out = []
    for i, w in enumerate(weights):
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{what}: layer {i + 1} has non-finite weights")
        norm = float(np.linalg.norm(w, 2))
        if norm > 1.0 + 1e-9:
            if not scale:
                raise ValueError(f"{what}: spectral norm of layer {i + 1} must be in [0, 1] (the theorems' "
                                 f"assumption), got {norm:.4g}; pass scale=True to rescale each layer (theory "
                                 f"verify --target rescales and undoes it at the output)")
            w = w / norm
        out.append(w)
    return out


def target_from_sequential(model: nn.Module, scale: bool = False) -> Target:
    """Weights of an ``nn.Sequential`` of bias-free (or zero-bias) Linear layers with ReLU between them.

    A leading ``nn.Flatten`` is allowed. With ``scale`` each layer with ‖W‖₂ > 1 is divided by its norm (the
    function changes by the product of those factors); otherwise such a model is rejected.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"model must be an nn.Sequential of Linear/ReLU, got {type(model).__name__}")
    mods = [m for m in model if not (isinstance(m, nn.Flatten))]
    weights: list[np.ndarray] = []
    expect_linear = True
    for m in mods:
        if expect_linear:
            weight = _linear_weight(m)
            weights.append(weight)
        elif not isinstance(m, nn.ReLU):
            raise ValueError(f"model must alternate Linear and ReLU, got {type(m).__name__} after a Linear")
        expect_linear = not expect_linear
    if not weights or expect_linear:
        raise ValueError("model must start and end with a Linear layer (Linear, ReLU, ..., Linear)")
    return _checked(weights, scale, "target model")


def _linear_weight(m: nn.Module) -> np.ndarray:
    from ..nn import MaskedLinear

    if isinstance(m, MaskedLinear):
        weight, bias = m.baked_weight(), m.bias
    elif isinstance(m, nn.Linear):
        weight, bias = m.weight, m.bias
    else:
        raise ValueError(f"model must alternate Linear and ReLU, got {type(m).__name__} where a Linear belongs")
    if bias is not None and bool(torch.any(bias != 0)):
        raise ValueError("target layers must be bias-free (the constructions are for bias-free ReLU nets), "
                         "got a non-zero bias")
    return weight.detach().to("cpu", torch.float64).numpy().copy()


def target_from_ticket(path: str | Path, scale: bool = False) -> Target:
    """A search ticket's MLP baked to dense (W ⊙ M per layer) as a target."""
    from ..evaluate import load_ticket_model

    model, _, _ = load_ticket_model(path, device="cpu")
    # The ticket's model in forward order, leaves only; anything but Flatten/Linear/ReLU is rejected below.
    inner = nn.Sequential(*[m for m in model.modules() if not list(m.children())])
    return target_from_sequential(inner, scale=scale)


def target_forward(target: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """f(x) for x (B, d_0) → (B, d_l), in the dtype of the weights (torch tensors)."""
    h = x
    for i, w in enumerate(target):
        h = h @ w.T
        if i < len(target) - 1:
            h = torch.relu(h)
    return h


def target_sha256(target: Target) -> str:
    """SHA-256 of the float64 little-endian bytes of every layer, with its shape, in order."""
    h = hashlib.sha256()
    for w in target:
        h.update(np.asarray(w.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(w, dtype="<f8").tobytes())
    return h.hexdigest()
