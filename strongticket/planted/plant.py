"""Planting a target ticket into a random He-initialised mother network (Fischer & Burkholz, "Plant 'n' Seek",
ICLR 2022, Algorithm 1), and the planted network as an ordinary strongticket model.

Mother network: widths [d_in, w, ..., w, d_out] (``depth`` counts the input layer), layer l (1-based)
W^(l): (n_l, n_{l-1}) ~ N(0, 2 / n_{l-1}), b^(l) ~ N(0, prod_{i<=l} 2 / n_{i-1}) (std = prod sqrt(2 / n_{i-1})),
drawn from ``strongticket.random.standard_normal`` (weight stream ``layer = l - 1``, bias stream likewise).

Planting, layer by layer from the input, with c_prev the scales of the matched neurons of the layer below
(1 for inputs): target neuron i has theta = (b_i, W_i,S / c_prev,S) over its support S. Each unmatched mother
neuron j offers m_j = (b_j, W_j,prev(S)); c_j = theta . m_j / |theta|^2; admissible iff c_j > 0 and the signs
of m_j agree with theta on theta's non-zeros; the best j minimises |m_j - c_j theta|_1 (lowest index on ties).
Its parameters are overwritten by c_j theta (so they keep a random-looking magnitude) and its output is c_j
times the target neuron's. No admissible neuron: the first unmatched one, c = |W_j,first / theta_first|.
The output rows are then permuted into target order, so planted(x) masked by the ground truth equals
``scale * target(x)`` per output (float64, up to rounding).

Classification targets (Circle) get one common output scale: the output neurons are matched as above, then all
of them are written with c = the geometric mean of their c_j, so the raw planted logits are c * the target's and
their argmax is the target's (Plant 'n' Seek keeps a scale per output, ``find_ind``'s ``scaleNew``,
plant_lottery_tickets/plant.py:28,46, and its Circle network has no read-out dividing by it,
edgepopup_benchmarkdata/ticket_models.py:185-192: the argmax of its raw planted ticket is not the target's). The
geometric mean, because the c_j are products of per-layer factors spread over orders of magnitude. Regression
outputs keep their own c_j (no common factor makes the raw MSE the target's).

As a model (:func:`planted_model`) the network's outputs are either raw (``scaled=False``: the network Plant 'n'
Seek's searches run on, where the planted masks compute ``scale * target``, not the target) or divided by ``scale``
by a fixed read-out :class:`OutputScale` (``scaled=True``: the planted masks compute the target itself, so the
planted ticket is an exact solution of the task a search on this network is asked to solve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..nn import MaskedLinear
from ..random import STREAM_BIAS, STREAM_WEIGHT, standard_normal
from .targets import Target, make_target
from .tasks import task_dims

__all__ = ["Planted", "mother_network", "plant", "plant_task", "planted_model"]


@dataclass(frozen=True)
class Planted:
    """A planted mother network and its ground truth.

    ``weights[l]`` (n_out, n_in), ``biases[l]`` (n_out,) float64; ``masks[l]`` bool like ``weights[l]`` (the
    planted edges); ``bias_masks[l]`` bool (matched neurons with a non-zero target bias; a matched neuron with a
    zero target bias has bias exactly 0, so keeping it changes nothing); ``scale`` (d_out,): masked output =
    scale * target output (all equal for classification targets); ``neurons[l]``: mother index of each target
    neuron of layer l + 1.
    """

    task: str
    depth: int
    width: int
    seed: int
    target: Target
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    bias_masks: tuple[np.ndarray, ...]
    scale: np.ndarray
    neurons: tuple[np.ndarray, ...]
    fallbacks: int

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.weights[0].shape[1], *(w.shape[0] for w in self.weights))

    @property
    def planted_counts(self) -> tuple[int, ...]:
        """Planted (kept) weights per layer."""
        return tuple(int(m.sum()) for m in self.masks)

    @property
    def total_counts(self) -> tuple[int, ...]:
        """All weights per layer."""
        return tuple(int(m.size) for m in self.masks)

    @property
    def planted_bias_counts(self) -> tuple[int, ...]:
        """Planted (non-zero, kept) biases per layer."""
        return tuple(int(m.sum()) for m in self.bias_masks)

    @property
    def density(self) -> float:
        """Planted weights / all weights (biases not counted, as the paper)."""
        return sum(self.planted_counts) / sum(self.total_counts)

    def forward(self, x: np.ndarray, *, masked: bool = True) -> np.ndarray:
        """Float64 forward of the mother net (``masked``: the planted ticket only), x (B, d_in) -> (B, d_out)."""
        h = np.asarray(x, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if masked:
                w, b = w * self.masks[i], b * self.bias_masks[i]
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value >= high):
        rng = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")
    return value


def mother_network(widths: tuple[int, ...], seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """He-normal weights W^(l) (n_l, n_{l-1}) and product-std biases, float64, from ``seed``."""
    weights, biases = [], []
    bias_std = 1.0
    for layer, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        std = math.sqrt(2.0 / n_in)
        bias_std *= std
        weights.append(std * standard_normal(seed, layer, STREAM_WEIGHT, n_out, n_in))
        biases.append(bias_std * standard_normal(seed, layer, STREAM_BIAS, 1, n_out)[0])
    return weights, biases


def plant(target: Target, width: int, seed: int = 0) -> Planted:
    """Plant ``target`` into a fresh mother network of hidden ``width`` drawn from ``seed`` (Algorithm 1)."""
    _check_int("seed", seed, 0, 1 << 32)
    _check_int("width", width, 1)
    need = max(target.widths[1:-1], default=1)
    if width < need:
        raise ValueError(f"width must be >= {need} to hold the {target.task} target at depth {target.depth}, "
                         f"got {width}")
    widths = (target.widths[0], *([width] * (target.depth - 2)), target.widths[-1])
    weights, biases = mother_network(widths, seed)
    masks = [np.zeros(w.shape, dtype=bool) for w in weights]
    bias_masks = [np.zeros(b.shape, dtype=bool) for b in biases]
    prev = np.arange(widths[0])
    prev_scale = np.ones(widths[0])
    neurons, fallbacks = [], 0
    for layer, (tw, tb) in enumerate(zip(target.weights, target.biases, strict=True)):
        w, b = weights[layer], biases[layer]
        used = np.zeros(w.shape[0], dtype=bool)
        index, scale = np.empty(tw.shape[0], dtype=np.int64), np.empty(tw.shape[0])
        planted = []  # (columns, theta) per target neuron, written once the layer's scales are final
        for i in range(tw.shape[0]):
            support = np.flatnonzero(tw[i])
            cols = prev[support]
            theta = np.concatenate([[tb[i]], tw[i, support] / prev_scale[support]])  # (1 + |S|,)
            cand = np.concatenate([b[:, None], w[:, cols]], axis=1)  # (n_l, 1 + |S|)
            c = cand @ theta / (theta @ theta)
            nz = theta != 0
            ok = (c > 0) & np.all(np.sign(cand[:, nz]) == np.sign(theta[nz]), axis=1) & ~used
            if ok.any():
                err = np.where(ok, np.abs(cand - c[:, None] * theta).sum(axis=1), np.inf)
                j = int(np.argmin(err))
                cj = float(c[j])
            else:
                fallbacks += 1
                j = int(np.flatnonzero(~used)[0])
                ref = (w[j, cols[0]], theta[1]) if support.size else (b[j], theta[0])
                cj = abs(ref[0] / ref[1]) if ref[0] != 0 and ref[1] != 0 else 1.0
            used[j] = True  # only unused rows are read above, so writing after the loop matches the same way
            index[i], scale[i] = j, cj
            planted.append((cols, theta))
        if layer == len(target.weights) - 1 and target.classification:
            scale[:] = np.exp(np.mean(np.log(scale)))  # one common output scale: argmax(raw) = argmax(target)
        for j, cj, (cols, theta) in zip(index, scale, planted, strict=True):
            w[j, cols] = cj * theta[1:]
            b[j] = cj * theta[0]
            masks[layer][j, cols] = True
            bias_masks[layer][j] = theta[0] != 0
        neurons.append(index)
        prev, prev_scale = index, scale
    out = neurons[-1]  # output rows into target order
    weights[-1], biases[-1] = weights[-1][out], biases[-1][out]
    masks[-1], bias_masks[-1] = masks[-1][out], bias_masks[-1][out]
    neurons[-1] = np.arange(len(out))
    return Planted(target.task, target.depth, width, seed, target, tuple(weights), tuple(biases), tuple(masks),
                   tuple(bias_masks), prev_scale, tuple(neurons), fallbacks)


def plant_task(task: str, depth: int = 5, width: int = 100, seed: int = 0) -> Planted:
    """``plant(make_target(task, depth), width, seed)``."""
    task_dims(task)
    return plant(make_target(task, depth), width, seed)


class OutputScale(nn.Module):
    """The planted network's fixed read-out: outputs divided by the planting scale (float32; not learned, not in
    the state dict — it is rebuilt from the seed with the network)."""

    def __init__(self, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale, dtype=np.float32).copy()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.scale

    def extra_repr(self) -> str:
        return f"outputs={self.scale.numel()}"


def planted_model(planted: Planted, *, density: float | None = None, seed: int | None = None,
                  scaled: bool = True) -> nn.Sequential:
    """The planted network as MaskedLinear(bias=True, bias_scores=True) + ReLU layers, float32, with the planted
    weights and biases as the frozen weights and biases, then (``scaled``) :class:`OutputScale` (outputs / scale).

    ``density=None``: the ground-truth masks are fixed, so ``model(x)`` is the target (``scale * target`` when not
    ``scaled``). A ``density`` in
    (0, 1]: nothing is fixed; every layer keeps that fraction of its weights (and of its biases, until
    ``MaskedLayer.set_bias_density`` gives them their own budget, as ``model_from_config`` does for
    ``bias_density``) by scores drawn from ``seed`` (default ``planted.seed``), ready for a search (the ``planted`` /
    ``planted-scaled`` models of the registry).
    """
    layers: list[nn.Module] = []
    for layer, (w, b, m, bm) in enumerate(zip(planted.weights, planted.biases, planted.masks, planted.bias_masks,
                                              strict=True)):
        keep = max(float(m.mean()), 1.0 / m.size) if density is None else density
        lin = MaskedLinear(w.shape[1], w.shape[0], bias=True, bias_scores=True, density=keep,
                           init="kaiming_normal", seed=planted.seed if seed is None else seed, layer=layer)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        if density is None:
            lin.fix_mask(torch.from_numpy(m), torch.from_numpy(bm))
        layers.append(lin)
        if layer < len(planted.weights) - 1:
            layers.append(nn.ReLU())
    if scaled:
        layers.append(OutputScale(planted.scale))
    return nn.Sequential(*layers)
