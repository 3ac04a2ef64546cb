"""Constructions as ordinary strongticket tickets: save, rebuild (weights regenerated, SHA-256 checked), evaluate.

config = {"kind": "theory", "construction", "widths" (random-net widths), "seed", "init": "uniform" (or
"hyperbolic" with "init_ranges": [[low, high]] per random layer, Orseau; "init_scales": a power of two per layer
where a uniform layer is U[−s, s], Burkholz's first), "block", "subset", "target": {"widths",
"source", "seed" (random targets), "sha256"}}; the target's float64 weights
travel in the summary as nested lists when it has at most ``MAX_STORED_TARGET`` weights (random targets can
always be rebuilt from their seed). ``evaluate_theory_ticket`` measures sup_{‖x‖=1} ‖f(x) − g_S(x)‖₂ of the
rebuilt pruned net against the target (sphere samples + projected gradient ascent, float64).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..ticket import Ticket, TicketError, check_ticket_shapes, read_ticket
from .constructions import CONSTRUCTIONS, Construction, build_model
from .targets import Target, random_target, target_sha256

__all__ = ["MAX_STORED_TARGET", "ticket_config", "save_theory_ticket", "load_theory_ticket", "evaluate_theory_ticket",
           "scaled_target_of"]

MAX_STORED_TARGET = 100_000


def ticket_config(construction: Construction, target_source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ticket config of a construction; ``target_source`` e.g. {"source": "random", "seed": 1000}."""
    dims = [construction.target[0].shape[1]] + [w.shape[0] for w in construction.target]
    target = {"widths": dims, "sha256": target_sha256(construction.target), "source": "given"}
    target.update(target_source or {})
    config = {
        "kind": "theory",
        "construction": construction.name,
        "widths": construction.widths,
        "seed": construction.seed,
        "init": construction.init,
        "bias": False,
        "block": construction.block,
        "subset": construction.subset,
        "target": target,
    }
    if construction.init == "hyperbolic":
        config["init_ranges"] = [None if r is None else [float(r[0]), float(r[1])] for r in construction.init_ranges]
    if construction.init_scales is not None and any(v != 1.0 for v in construction.init_scales):
        config["init_scales"] = [float(v) for v in construction.init_scales]
    return config


def save_theory_ticket(path: str | Path, construction: Construction, summary: dict[str, Any] | None = None,
                       target_source: dict[str, Any] | None = None, model: nn.Module | None = None) -> Path:
    """Write the construction as a ticket (the model is built unless given)."""
    from ..ticket import save_ticket

    model = build_model(construction) if model is None else model
    summary = dict(summary or {})
    summary.update({"kept_weights": construction.kept, "random_params": construction.random_params,
                    "target_params": construction.target_params})
    if construction.target_params <= MAX_STORED_TARGET:
        summary["target_weights"] = [w.tolist() for w in construction.target]
    return save_ticket(path, model, ticket_config(construction, target_source), summary)


def _init_ranges(config: dict[str, Any], layers: int, path: Path) -> list[tuple[float, float] | None]:
    if config.get("init") == "uniform":
        return [None] * layers
    ranges = config.get("init_ranges")
    try:
        out = [None if r is None else (float(r[0]), float(r[1])) for r in ranges]
    except (TypeError, ValueError, IndexError):
        out = []
    if len(out) != layers or any(r is not None and not 0 < r[0] <= r[1] for r in out):
        raise TicketError(f"{path}: corrupted ticket (init 'hyperbolic' needs init_ranges, one [low, high] per layer)")
    return out


def _init_scales(config: dict[str, Any], layers: int, path: Path) -> list[float]:
    """Per-layer U[−s, s] scales (Burkholz's first layer: 2); absent means 1 everywhere."""
    scales = config.get("init_scales")
    if scales is None:
        return [1.0] * layers
    try:
        out = [float(v) for v in scales]
    except (TypeError, ValueError):
        out = []
    # powers of two only: the scaled weights must be bit-exact on every machine
    if len(out) != layers or any(not (v > 0 and math.isfinite(v) and math.frexp(v)[0] == 0.5) for v in out):
        raise TicketError(f"{path}: corrupted ticket (init_scales must be one power of two per layer)")
    return out


def _model_from_config(ticket: Ticket) -> nn.Sequential:
    from .constructions import _masked_linear

    config, path = ticket.config, ticket.path
    try:
        widths, seed = [int(w) for w in config["widths"]], int(config["seed"])
    except (KeyError, TypeError, ValueError):
        raise TicketError(f"{path}: corrupted ticket (theory config lacks widths/seed)") from None
    if config.get("init") not in ("uniform", "hyperbolic") or len(widths) < 2:
        raise TicketError(f"{path}: corrupted ticket (theory tickets use init 'uniform' or 'hyperbolic' and >= 2 "
                          f"widths)")
    ranges = _init_ranges(config, len(widths) - 1, path)
    scales = _init_scales(config, len(widths) - 1, path)
    check_ticket_shapes(ticket, [(widths[k + 1], widths[k]) for k in range(len(widths) - 1)])
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        layers.append(_masked_linear(widths[k], widths[k + 1], seed, k, ranges[k], scales[k]))
        if k < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _stored_target(ticket: Ticket) -> Target | None:
    spec = ticket.config.get("target") or {}
    if not isinstance(spec, dict):
        raise TicketError(f"{ticket.path}: corrupted ticket (config target must be an object)")
    target = None
    try:
        if "target_weights" in ticket.summary:
            target = [np.asarray(w, dtype=np.float64) for w in ticket.summary["target_weights"]]
        elif spec.get("source") == "random" and "seed" in spec:
            dims = [int(d) for d in spec["widths"]]
            # a construction is larger than its target: a target as large as the ticket's net is an edited file
            random_weights = sum(math.prod(lay["shape"]) for lay in ticket.layers)
            if len(dims) < 2 or min(dims) < 1 or sum(a * b for a, b in zip(dims, dims[1:])) > random_weights:
                raise ValueError(f"target widths {dims[:8]} do not fit a net of {random_weights:,} weights")
            target = random_target(dims, int(spec["seed"]), float(spec.get("spectral_norm", 1.0)))
    except (TypeError, ValueError, KeyError) as e:
        raise TicketError(f"{ticket.path}: corrupted ticket (target: {str(e).splitlines()[0][:160]})") from None
    if target is not None and spec.get("sha256") and target_sha256(target) != spec["sha256"]:
        raise TicketError(f"{ticket.path}: the stored target does not match its SHA-256")
    return target


def load_theory_ticket(path: str | Path) -> tuple[nn.Sequential, Ticket, Target | None]:
    """(pruned random net with masks fixed, ticket, target or None); weights checked against the ticket's hash."""
    ticket = read_ticket(path)
    if ticket.config.get("kind") != "theory":
        raise TicketError(f"{path}: not a theory ticket (config kind {ticket.config.get('kind')!r})")
    if ticket.config.get("construction") not in CONSTRUCTIONS:
        raise TicketError(f"{path}: corrupted ticket (construction must be one of {', '.join(sorted(CONSTRUCTIONS))}, "
                          f"got {str(ticket.config.get('construction'))[:40]!r})")
    model = _model_from_config(ticket)
    ticket.apply(model)
    return model, ticket, _stored_target(ticket)


def scaled_target_of(ticket: Ticket, target: Target | None) -> Any:
    """The ``trained.ScaledTarget`` of a ticket built for a target file (None for random or unstored targets)."""
    from .trained import ScaledTarget

    spec = ticket.config.get("target") or {}
    if not isinstance(spec, dict) or spec.get("source") != "file" or target is None:
        return None
    try:
        scale, radius = float(spec["output_scale"]), float(spec["input_radius"])
        augmented = spec["augmented"]
        layer_scales = [float(v) for v in spec.get("layer_scales", [])]
    except (KeyError, TypeError, ValueError):
        raise TicketError(f"{ticket.path}: corrupted ticket (a file target needs output_scale, input_radius and "
                          f"augmented)") from None
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(radius) and radius > 0) or not isinstance(
            augmented, bool):
        raise TicketError(f"{ticket.path}: corrupted ticket (output_scale and input_radius must be positive, "
                          f"augmented a boolean)")
    return ScaledTarget(target, scale, radius, augmented, layer_scales, None, None)


def evaluate_theory_ticket(path: str | Path, samples: int = 20000, steps: int = 150, data: str | None = None,
                           data_root: str | None = None) -> dict[str, Any]:
    """Rebuild and measure: sup-error against the stored target (if any; in the target's units for a file target),
    kept weights, density; with ``data`` (default: the data the ticket was verified on, if any) the test accuracy
    of the target and the pruned net and the fraction of identical predictions (``trained.data_agreement``)."""
    from ..nn import masked_layers
    from .verify import empirical_sup_error, pruned_forward, target_function

    model, ticket, target = load_theory_ticket(path)
    layers = masked_layers(model)
    kept = sum(int(layer.mask.sum()) for layer in layers)
    total = sum(layer.weight.numel() for layer in layers)
    scaled = scaled_target_of(ticket, target)
    scale = 1.0 if scaled is None else scaled.output_scale
    result: dict[str, Any] = {
        "ticket": str(path),
        "kind": "theory",
        "construction": ticket.config.get("construction"),
        "widths": ticket.config.get("widths"),
        "seed": ticket.config.get("seed"),
        "kept_weights": kept,
        "total_weights": total,
        "density": kept / total,
        "weights_sha256": ticket.weights_sha256,
        "output_scale": scale,
        "run_sup_error": ticket.summary.get("empirical_target_units", ticket.summary.get("empirical")),
        "certified": ticket.summary.get("certified_target_units", ticket.summary.get("certified")),
        "sup_error": None,
        "data": None,
    }
    if target is not None:
        emp = empirical_sup_error(target_function(target), pruned_forward(model), target[0].shape[1],
                                  samples=samples, steps=steps)
        result["sup_error"] = emp["sup"] * scale
    stored = (ticket.config.get("target") or {}).get("data")
    if data is None and scaled is not None and isinstance(stored, str):
        data = stored  # the data it was verified on (only where the target travels with the ticket)
    if data is not None:
        if scaled is None:
            raise ValueError(f"data needs a ticket built for a target file with its weights stored (theory verify "
                             f"--target), got {path}")
        from ..data.splits import load_splits
        from .trained import data_agreement

        split = load_splits(data, root=data_root).test
        result["data"] = {"name": data, **data_agreement(scaled, pruned_forward(model), split)}
    return result
