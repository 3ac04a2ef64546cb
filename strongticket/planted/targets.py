"""Hand-built target tickets of Plant 'n' Seek (Fischer & Burkholz, "Plant 'n' Seek: can you find the winning
ticket?", ICLR 2022): small ReLU networks, float64, that a planted mother network contains exactly.

A target is a list of layers ``y = W x + b`` with ``W: (n_out, n_in)`` (``nn.Linear`` layout) and ReLU between
layers, none after the last. ``depth`` counts the input layer, so depth L has L - 1 weight layers.

- ``relu``: relu(x) as one path of unit weights, zero biases (1 -> 1 -> ... -> 1).
- ``circle``: 4 logits increasing in g(x) ~ x1^2 + x2^2 so that argmax = #{B_k < g} for B = (0.2, 0.5, 0.7):
  logit_j = a_j g + beta_j, a_j = 5 * 2^j, beta_j = beta_{j-1} + (a_{j-1} - a_j) B_{j-1}. depth 3: g is a
  sum of two 10-knot interpolants of t^2 on [-1, 1]; depth 4: layer 1 folds x -> (relu(x_i), relu(-x_i)), the
  knots read |x_i| on [0, 1]; depth >= 5: a second layer forms |x_i|; depth > 5 passes (|x1|, |x2|) through
  identity layers (the paper's rotating mirror layers are not built, so densities there differ from its).
- ``helix``: (f1, f2, f3) = (y cos y, y sin y, y) / (8 pi), y = 5 pi + 3 pi x, by a 30-knot univariate
  interpolant per output; depth >= 4 first maps x -> x + 1 in [0, 2], depth >= 5 adds 1 to the outputs to
  pass them through identity ReLU layers and subtracts it in the last bias.

Knot block (``_knot_block``): hidden h_j = relu(p_j (t - s_j)), p alternating +-1 with p_0 = +1, output
sum_j c_j h_j + c0 with c_j the slope change at s_j (c_0 corrected for the p_j = -1 neurons), slopes taken from
the function at the knots. The slope changes of the linear f3 are zero in exact arithmetic; their float64
rounding residues are kept as weights, which is what gives the published Helix density (115 / 400 at depth 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CIRCLE_BOUNDARIES", "CIRCLE_KNOTS", "CLASSIFICATION_TASKS", "HELIX_KNOTS", "TASKS", "Target",
           "circle_logits", "helix", "make_target"]

TASKS = ("circle", "relu", "helix")
CLASSIFICATION_TASKS = ("circle",)  # outputs are logits, the metric is the argmax's accuracy
CIRCLE_BOUNDARIES = (0.2, 0.5, 0.7)
CIRCLE_KNOTS = 10
HELIX_KNOTS = 30
_CIRCLE_SLOPE0 = 5.0


@dataclass(frozen=True)
class Target:
    """A target ticket: ``weights[l]`` (n_out, n_in) and ``biases[l]`` (n_out,) float64, ReLU between layers."""

    task: str
    depth: int
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        """Neurons per layer, input first."""
        return (self.weights[0].shape[1], *(w.shape[0] for w in self.weights))

    @property
    def classification(self) -> bool:
        """Whether the outputs are class logits (only their argmax matters)."""
        return self.task in CLASSIFICATION_TASKS

    @property
    def nonzeros(self) -> tuple[int, ...]:
        """Non-zero weights per layer (the planted edges)."""
        return tuple(int(np.count_nonzero(w)) for w in self.weights)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Forward pass in float64: x (B, d_in) -> (B, d_out)."""
        h = np.asarray(x, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h


def helix(x: np.ndarray) -> np.ndarray:
    """The helix (y cos y, y sin y, y) / (8 pi), y = 5 pi + 3 pi x: x (B,) -> (B, 3)."""
    return np.stack([_helix1(x), _helix2(x), _helix3(x)], axis=-1)


def _helix1(x):
    y = 5 * np.pi + 3 * np.pi * x
    return y * np.cos(y) / (8 * np.pi)


def _helix2(x):
    y = 5 * np.pi + 3 * np.pi * x
    return y * np.sin(y) / (8 * np.pi)


def _helix3(x):
    return (5 * np.pi + 3 * np.pi * x) / (8 * np.pi)


def circle_logits(g: np.ndarray, slope0: float = _CIRCLE_SLOPE0) -> np.ndarray:
    """Piecewise-linear class scores of g = x1^2 + x2^2: g (B,) -> (B, 4), argmax = #{B_k < g}."""
    slopes, offsets = _circle_head(slope0)
    return np.asarray(g, dtype=np.float64)[:, None] * slopes + offsets


def _circle_head(slope0: float) -> tuple[np.ndarray, np.ndarray]:
    """(a_j, beta_j) of logit_j = a_j g + beta_j: neighbouring logits cross at the class boundaries."""
    slopes = slope0 * 2.0 ** np.arange(len(CIRCLE_BOUNDARIES) + 1)
    offsets = np.zeros_like(slopes)
    for j in range(1, len(slopes)):
        offsets[j] = offsets[j - 1] + (slopes[j - 1] - slopes[j]) * CIRCLE_BOUNDARIES[j - 1]
    return slopes, offsets


def _knot_block(knots: np.ndarray, signs: np.ndarray, fun) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Two-layer interpolant of ``fun`` at ascending ``knots``: (w1, b1, w2, b2), all (n,) but b2 scalar."""
    signs = signs.astype(np.float64).copy()
    signs[0] = 1.0  # the first knot must open upwards: it carries the initial slope
    w1 = signs
    b1 = -knots * signs
    step = knots[1] - knots[0]
    xt = np.concatenate([knots, [knots[-1] + step]])
    yt = np.asarray(fun(xt), dtype=np.float64)
    slopes = (yt[1:] - yt[:-1]) / (xt[1:] - xt[:-1])
    changes = slopes[1:] - slopes[:-1]
    # relu(-(t - s)) = relu(t - s) - (t - s): a p = -1 neuron adds slope -c_j left of its knot, undone here
    w2 = np.concatenate([[slopes[0] + np.sum(changes[signs[1:] == -1])], changes])
    b2 = float(fun(knots[:1])[0] - np.sum(np.maximum(knots[0] * w1 + b1, 0.0) * w2))
    return w1, b1, w2, b2


def _alternating(n: int, last: float | None = None) -> np.ndarray:
    signs = np.ones(n)
    signs[1::2] = -1.0
    if last is not None:
        signs[-1] = last
    return signs


def _relu_target(depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.ones((1, 1)), np.zeros(1)) for _ in range(depth - 1)]


def _helix_target(depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    funs = (_helix1, _helix2, _helix3)
    if depth == 3:
        knots = np.linspace(-1, 1, HELIX_KNOTS)
        blocks = [_knot_block(knots, _alternating(HELIX_KNOTS), f) for f in funs]
        head_b = np.array([b[3] for b in blocks])
        return [(blocks[0][0][:, None], blocks[0][1]), (np.stack([b[2] for b in blocks]), head_b)]
    knots = np.linspace(0, 2, HELIX_KNOTS)
    blocks = [_knot_block(knots, _alternating(HELIX_KNOTS), lambda t, f=f: f(t - 1)) for f in funs]
    head_b = np.array([b[3] for b in blocks])
    layers = [(np.ones((1, 1)), np.ones(1)), (blocks[0][0][:, None], blocks[0][1])]
    if depth == 4:
        return [*layers, (np.stack([b[2] for b in blocks]), head_b)]
    layers.append((np.stack([b[2] for b in blocks]), head_b + 1.0))  # |f_i| <= 1: f_i + 1 >= 0 passes the ReLU
    layers += [(np.eye(3), np.zeros(3)) for _ in range(depth - 5)]
    layers.append((np.eye(3), -np.ones(3)))
    return layers


def _circle_target(depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n = CIRCLE_KNOTS
    slopes, offsets = _circle_head(_CIRCLE_SLOPE0)
    sq = np.square
    if depth == 3:
        w1, b1, w2, b2 = _knot_block(np.linspace(-1, 1, n), _alternating(n, last=-1.0), sq)
        first = (np.kron(np.eye(2), w1[:, None]), np.concatenate([b1, b1]))  # (2n, 2): x_i -> its n knots
    else:
        w1, b1, w2, b2 = _knot_block(np.linspace(0, 1, n), _alternating(n, last=-1.0 if depth == 4 else 1.0), sq)
    head = (slopes[:, None] * np.concatenate([w2, w2])[None, :], slopes * 2 * b2 + offsets)
    if depth == 3:
        return [first, head]
    fold = (np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]]), np.zeros(4))  # (relu(x1), relu(-x1), relu(x2), ...)
    if depth == 4:
        knots = (np.kron(np.eye(2), np.outer(w1, [1.0, 1.0])), np.concatenate([b1, b1]))  # knots of |x_i|
        return [fold, knots, head]
    absolute = (np.kron(np.eye(2), np.ones((1, 2))), np.zeros(2))  # (|x1|, |x2|)
    identity = [(np.eye(2), np.zeros(2)) for _ in range(depth - 5)]
    knots = (np.kron(np.eye(2), w1[:, None]), np.concatenate([b1, b1]))
    return [fold, absolute, *identity, knots, head]


_BUILDERS = {"circle": _circle_target, "relu": _relu_target, "helix": _helix_target}


def make_target(task: str, depth: int) -> Target:
    """The target ticket of ``task`` for a network of ``depth`` layers (input layer counted, depth >= 3)."""
    if task not in _BUILDERS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 3:
        raise ValueError(f"depth must be an integer >= 3 (input layer counted), got {depth!r}")
    layers = _BUILDERS[task](depth)
    assert len(layers) == depth - 1 and math.isfinite(sum(float(np.abs(w).sum()) for w, _ in layers))
    return Target(task, depth, tuple(w for w, _ in layers), tuple(b for _, b in layers))
