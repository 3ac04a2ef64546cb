"""Trained targets: an MLP file of Linear/ReLU layers (biases allowed) made into a target the constructions accept.

A file is a safetensors file or a ``torch.save`` state_dict (read with ``weights_only=True``: no code runs) whose
keys are ``<layer>.weight`` (out, in) and optionally ``<layer>.bias`` (out,), layers in natural key order
("0", "2", "10"; "fc1", "fc2"), Linear layers with ReLU between them and a linear last layer.

Biases (the constant-neuron device; Burkholz 2022 builds its biases from constant neurons too): the input gets a
constant coordinate, x' = (x, 1); hidden layer i becomes [[W_i, b_i], [0, 1]] (its extra neuron σ(1) = 1 carries
the constant on) and the last layer [W_l, b_l]. Then f'(x') = f(x) exactly and f' is a bias-free ReLU net, so every
construction applies to it unchanged; the random net gets one more input, set to 1.
Scale, kept and undone: layer i is divided by s_i = max(1, ‖W'_i‖₂) (the theorems assume ‖W_i‖₂ ≤ 1) and inputs
by R, the radius of the input domain (‖x'‖ ≤ R; R = √(r² + 1) with a constant coordinate, r = max ‖x‖). By positive
homogeneity f'(x') = S·R·f_s(x'/R) with S = Π s_i, so an error e of a construction for f_s on the unit ball is an
error S·R·e in the target's units on the whole domain (a ball that contains every (x, 1) with ‖x‖ ≤ r): a
construction asked for ε in target units is built for ε / (S·R), and every error it reports is multiplied back.

Shapes: weights[i] float64 (d_i, d_{i−1}), biases[i] float64 (d_i,) or None; x (B, d_0) → outputs (B, d_l).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .targets import Target, target_forward, target_sha256

__all__ = ["MAX_TARGET_FILE_BYTES", "ScaledTarget", "read_mlp", "scale_target", "load_target_file", "data_agreement",
           "input_norm_max"]

# A 784-500-500-10 float32 MLP is 2.6 MB; refuse files that cannot be a reasonable MLP before reading them.
MAX_TARGET_FILE_BYTES = 1 << 30


@dataclass
class ScaledTarget:
    """A target in the theorems' units and the factors back to the original network's units.

    ``target``: bias-free layers with ‖W‖₂ ≤ 1 on the unit ball (input d_0 + 1 when ``augmented``);
    ``output_scale`` = S·R: original output = output_scale · target(x' / R); ``input_radius`` = R;
    ``layer_scales`` = [s_i]; ``weights``/``biases``: the original network (float64), or None when rebuilt from
    a ticket (which stores the scaled target and the factors).
    """

    target: Target
    output_scale: float
    input_radius: float
    augmented: bool
    layer_scales: list[float]
    weights: list[np.ndarray] | None
    biases: list[np.ndarray | None] | None

    def unit_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, d_0) in the original units → x'/R (B, d_0 [+1]) for the scaled target (float64)."""
        x = x.to(torch.float64).reshape(x.shape[0], -1)
        if self.augmented:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        return x / self.input_radius

    def original(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) of the original network with its biases, float64: (B, d_0) → (B, d_l); from the scaled target
        (output_scale · f_s(x'/R), equal up to rounding) when the original layers are not at hand (a ticket)."""
        if self.weights is None:
            ws = [torch.from_numpy(np.asarray(w, dtype=np.float64)) for w in self.target]
            return target_forward(ws, self.unit_inputs(x)) * self.output_scale
        h = x.to(torch.float64).reshape(x.shape[0], -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ torch.from_numpy(w).T
            if b is not None:
                h = h + torch.from_numpy(b)
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h

    def source(self, path: str | Path | None = None) -> dict[str, Any]:
        """What a ticket records about this target (JSON-able)."""
        out = {"source": "file", "output_scale": self.output_scale, "input_radius": self.input_radius,
               "augmented": self.augmented, "layer_scales": self.layer_scales}
        if self.weights is not None:
            out["original_sha256"] = target_sha256(self.weights + [b for b in self.biases or [] if b is not None])
        if path is not None:
            out["path"] = str(path)
        return out


def _natural(name: str) -> list[Any]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from ..files import check_zip

    if not path.is_file():
        raise ValueError(f"target file not found: {path}")
    size = path.stat().st_size
    if size > MAX_TARGET_FILE_BYTES:
        raise ValueError(f"target file must be at most {MAX_TARGET_FILE_BYTES:,} bytes, got {size:,} ({path})")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from ..ticket import safetensors_header

        safetensors_header(path, ValueError, "target file")  # truncation and a malformed table, before reading
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path}: unreadable target file ({str(e).splitlines()[0][:160]})") from None
    check_zip(path, 4 * MAX_TARGET_FILE_BYTES, ValueError, "target file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal is one line for the user
        raise ValueError(f"{path}: unreadable target file (torch.load with weights_only=True: "
                         f"{str(e).splitlines()[0][:160]})") from None
    if isinstance(blob, dict) and "state_dict" in blob and isinstance(blob["state_dict"], dict):
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise ValueError(f"{path}: a target file must hold a state_dict of tensors (layer.weight, layer.bias)")
    return {str(k): v.detach().to(torch.float64).numpy() for k, v in blob.items()}


def read_mlp(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """(weights, biases) of an MLP file, layers in natural key order; checked shapes, finite float values."""
    path = Path(path)
    tensors = _read_tensors(path)
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        prefix, _, kind = key.rpartition(".")
        if kind not in ("weight", "bias"):
            raise ValueError(f"{path}: keys must end in .weight or .bias (Linear layers only), got {key!r}")
        layers.setdefault(prefix, {})[kind] = np.asarray(value, dtype=np.float64)
    if not layers:
        raise ValueError(f"{path}: no layers (expected keys like 0.weight, 0.bias, 2.weight)")
    weights, biases = [], []
    for prefix in sorted(layers, key=_natural):
        parts = layers[prefix]
        if "weight" not in parts:
            raise ValueError(f"{path}: layer {prefix!r} has a bias but no weight")
        w, b = parts["weight"], parts.get("bias")
        if w.ndim != 2 or min(w.shape) < 1:
            raise ValueError(f"{path}: {prefix}.weight must be 2-D (out, in), got shape {w.shape}")
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"{path}: {prefix}.bias must have shape ({w.shape[0]},), got {b.shape}")
        if weights and w.shape[1] != weights[-1].shape[0]:
            raise ValueError(f"{path}: layer {prefix!r} takes {w.shape[1]} inputs, the layer before gives "
                             f"{weights[-1].shape[0]}")
        if not np.all(np.isfinite(w)) or (b is not None and not np.all(np.isfinite(b))):
            raise ValueError(f"{path}: layer {prefix!r} has non-finite values")
        weights.append(w)
        biases.append(None if b is None or not np.any(b) else b)
    return weights, biases


def scale_target(weights: list[np.ndarray], biases: list[np.ndarray | None], input_radius: float = 1.0
                 ) -> ScaledTarget:
    """The bias-free, norm-≤1 target on the unit ball and its factors (module docstring); ``input_radius`` = r."""
    if isinstance(input_radius, bool) or not isinstance(input_radius, (int, float)) or not 0 < input_radius < 1e12:
        raise ValueError(f"input_radius must be in (0, 1e12), got {input_radius!r}")
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"weights and biases must be non-empty lists of one length, got {len(weights)} and "
                         f"{len(biases)}")
    augmented = any(b is not None for b in biases)
    layers = []
    n = len(weights)
    for i, (w, b) in enumerate(zip(weights, biases)):
        if not augmented:
            layers.append(np.array(w, dtype=np.float64))
            continue
        col = np.zeros(w.shape[0]) if b is None else b
        top = np.hstack([w, col[:, None]])  # (d_i, d_{i-1} + 1)
        if i < n - 1:
            const = np.zeros((1, top.shape[1]))
            const[0, -1] = 1.0  # the constant neuron: σ(1) = 1
            top = np.vstack([top, const])
        layers.append(top)
    scales = [max(1.0, float(np.linalg.norm(w, 2))) for w in layers]
    radius = math.sqrt(input_radius**2 + 1) if augmented else float(input_radius)
    target = [w / s for w, s in zip(layers, scales)]
    return ScaledTarget(target, float(math.prod(scales) * radius), radius, augmented, scales,
                        [np.asarray(w, dtype=np.float64) for w in weights],
                        [None if b is None else np.asarray(b, dtype=np.float64) for b in biases])


def load_target_file(path: str | Path, input_radius: float = 1.0) -> ScaledTarget:
    """``read_mlp`` then ``scale_target``."""
    weights, biases = read_mlp(path)
    return scale_target(weights, biases, input_radius)


def data_agreement(scaled: ScaledTarget, pruned: Any, split: Any, batch_size: int = 1024) -> dict[str, float]:
    """Test accuracy of the original network and of the pruned random net ``pruned`` (a forward on x'/R, output
    multiplied by ``output_scale``), the fraction of identical predictions and the largest output difference
    (target units) over a classification ``split`` (``strongticket.data`` batches, float32 inputs)."""
    from ..data.splits import batches

    n = correct_f = correct_g = same = 0
    max_diff = 0.0
    with torch.no_grad():
        for b in batches(split, batch_size):
            f = scaled.original(b.x)
            g = pruned(scaled.unit_inputs(b.x)) * scaled.output_scale
            labels = b.labels.cpu()
            pf, pg = f.argmax(1), g.argmax(1)
            n += labels.shape[0]
            correct_f += int((pf == labels).sum())
            correct_g += int((pg == labels).sum())
            same += int((pf == pg).sum())
            max_diff = max(max_diff, float((f - g).norm(dim=1).max()))
    return {"examples": n, "target_accuracy": correct_f / n, "pruned_accuracy": correct_g / n,
            "same_predictions": same / n, "max_output_diff": max_diff}


def input_norm_max(split: Any, batch_size: int = 4096) -> float:
    """max ‖x‖₂ over a split's (float32, normalized, flattened) inputs."""
    from ..data.splits import batches

    return max(float(b.x.reshape(b.x.shape[0], -1).to(torch.float64).norm(dim=1).max())
               for b in batches(split, batch_size))
