"""Verification of a construction: exact identity, certified bound, empirical sup-error, success rates.

* Identity: the pruned random net g_S (masked float32 weights cast to float64) equals the effective target-shaped
  net of the construction, max |g_S(x) − ĝ(x)| ≈ 1e−13 on random inputs — catches every wiring bug.
* Certified bound on sup_{‖x‖≤1} ‖f(x) − g_S(x)‖₂ (derived, propagated layer by layer):
  depth 2l (Malach, Pensia, Orseau): e_1 = ‖[Ŵ⁺_1 − W_1, Ŵ⁻_1 − W_1]‖₂, e_i = ‖Ŵ_i‖₂ e_{i−1} + ‖Ŵ_i − W_i‖₂ B_{i−1},
  B_i = Π_{k≤i} ‖W_k‖₂ (uses ‖σ(x)‖² + ‖σ(−x)‖² = ‖x‖² and ReLU 1-Lipschitz);
  depth l+1 (Burkholz, per copy r): E_{1,r} = ‖[ΔW⁺_r, ΔW⁻_r]‖₂,
  E_{i,r} = ‖ΔW_r‖₂ B_{i−1} + Σ_{(j,c)∈S_r} |M_{r,(j,c)}| E_{i−1,(j,c)} (|σ(a) − σ(b)| ≤ |a − b| per copy);
  output ≤ ‖E_l‖₂. (The former ℓ∞ form, max_r and √d_l·max, weighted every copy by the worst one: 10.6 against
  0.30 measured in issue 15.)
* Empirical sup-error (a lower estimate): bias-free ReLU nets are 1-homogeneous, so the sup over the ball is on
  the unit sphere: N sphere samples (normalised Gaussians from the DATA stream), then projected gradient ascent
  from the worst few (x ← normalize(x + η ĝ_tangent), η from 0.3 halved on non-improvement).
* Success over R independent draws with a Clopper–Pearson interval: "meets" 1 − δ only when the interval's lower
  end does, "below" when its upper end is under it, else "undecided" (too few draws); universality: one
  random net, many targets (Pensia's theorem holds for all f at once).
Shapes: x (B, d_0) float64 → outputs (B, d_l). Recipe: Pensia et al. NeurIPS 2020; reference §8.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..random import STREAM_DATA, standard_normal
from .constructions import Construction, build_model, construct
from .targets import Target, check_dims, random_target, target_forward

__all__ = [
    "Forward",
    "effective_forward",
    "alive_neurons",
    "pruned_forward",
    "target_function",
    "sphere_points",
    "identity_check",
    "certified_bound",
    "empirical_sup_error",
    "clopper_pearson",
    "verify_construction",
    "success_rate",
    "universality",
]

Forward = Callable[[torch.Tensor], torch.Tensor]

# DATA-stream layers of the verification samples: above the target streams (2**20 + i).
_SPHERE_LAYER = 1 << 22
# Layers above this many weights are evaluated as sparse CSR (float64 dense would not fit / be slow).
_DENSE_LIMIT = 1 << 22


def target_function(target: Target) -> Forward:
    ws = [torch.from_numpy(np.asarray(w, dtype=np.float64)) for w in target]
    return lambda x: target_forward(ws, x)


def effective_forward(construction: Construction) -> Forward:
    """ĝ(x): Ŵ⁺σ(x) − Ŵ⁻σ(−x), then Ŵ_i σ(·) per later layer (float64)."""
    layers = [(torch.from_numpy(p), None if m is None else torch.from_numpy(m)) for p, m in construction.effective]

    def forward(x: torch.Tensor) -> torch.Tensor:
        plus, minus = layers[0]
        h = torch.relu(x) @ plus.T - torch.relu(-x) @ minus.T
        for plus, _ in layers[1:]:
            h = torch.relu(h) @ plus.T
        return h

    return forward


def alive_neurons(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Indices of the neurons of every level [d_0, h_1, ..., d_l] that can change the output: all inputs and outputs,
    and each hidden neuron with a kept incoming weight and a kept outgoing weight to an alive neuron.

    A hidden neuron without kept incoming weights outputs σ(0) = 0; one without kept outgoing weights is never read:
    dropping both (and their weights) leaves the function unchanged exactly. masks: bool (out, in) per layer.
    """
    keep = [torch.ones(masks[0].shape[1], dtype=torch.bool)]
    for mask in masks[:-1]:
        keep.append(mask[:, keep[-1]].any(dim=1))
    keep.append(torch.ones(masks[-1].shape[0], dtype=torch.bool))
    for k in range(len(masks) - 1, 0, -1):  # backwards: read by an alive neuron of the next level
        keep[k] &= masks[k][keep[k + 1]].any(dim=0)
    return [torch.nonzero(k).flatten() for k in keep]


def pruned_forward(model: nn.Module) -> Forward:
    """g_S(x) of a strongticket model (MaskedLinear layers, ReLU between) in float64: (W ⊙ M) cast exactly.

    Dead neurons (``alive_neurons``) are removed before any forward, so memory scales with the kept weights, not
    with the random net's width (Malach's 10⁶-wide layers keep a few hundred weights).
    """
    from ..nn import masked_layers

    layers = masked_layers(model)
    alive = alive_neurons([layer.mask.detach().bool().cpu() for layer in layers])
    weights = []
    for k, layer in enumerate(layers):
        rows, cols = alive[k + 1], alive[k]
        w = (layer.weight.detach().cpu()[rows][:, cols].double() * layer.mask.detach().cpu()[rows][:, cols])
        if w.numel() > _DENSE_LIMIT:  # still wide after pruning: block sparse
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                w = w.to_sparse_csr()
        weights.append(w)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x.T  # (d_0, B): sparse (out, in) @ dense (in, B)
        for k, w in enumerate(weights):
            h = w @ h
            if k < len(weights) - 1:
                h = torch.relu(h)
        return h.T

    return forward


def sphere_points(d: int, n: int, seed: int = 0) -> torch.Tensor:
    """n points uniform on S^{d−1} (normalised Gaussians, reproducible bit for bit): (n, d) float64."""
    g = torch.from_numpy(standard_normal(seed, _SPHERE_LAYER, STREAM_DATA, n, d))
    return g / g.norm(dim=1, keepdim=True)


def identity_check(construction: Construction, model: nn.Module | None = None, samples: int = 10000,
                   seed: int = 0, chunk: int = 2048) -> float:
    """max |g_S(x) − ĝ(x)| over ``samples`` Gaussian inputs (float64, ``chunk`` at a time); builds the model if not
    given."""
    model = build_model(construction) if model is None else model
    x = torch.from_numpy(standard_normal(seed, _SPHERE_LAYER + 1, STREAM_DATA, samples, construction.widths[0]))
    g, g_hat = pruned_forward(model), effective_forward(construction)
    with torch.no_grad():
        return max(float((g(c) - g_hat(c)).abs().max()) for c in x.split(chunk))


def _norm2(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2)) if a.size else 0.0


def certified_bound(construction: Construction) -> float:
    """Upper bound on sup_{‖x‖₂ ≤ 1} ‖f(x) − g_S(x)‖₂ (module docstring: formula P or L)."""
    target = construction.target
    b_prev = 1.0  # B_{i-1} = Π_{k<i} ‖W_k‖₂
    if construction.name != "burkholz":
        plus, minus = construction.effective[0]
        err = _norm2(np.hstack([plus - target[0], minus - target[0]]))
        for i in range(1, len(target)):
            b_prev *= _norm2(target[i - 1])
            plus = construction.effective[i][0]
            err = _norm2(plus) * err + _norm2(plus - target[i]) * b_prev
        return err
    rows0 = construction.row_copies[0]
    plus, minus = construction.effective[0]
    w_rows = target[0][np.arange(plus.shape[0]) // rows0]
    err = np.sqrt(((plus - w_rows) ** 2 + (minus - w_rows) ** 2).sum(axis=1))  # E_r per copy r: (rows,)
    for i in range(1, len(target)):
        b_prev *= _norm2(target[i - 1])
        e = construction.effective[i][0]  # (rows, d_in·ρ); column j·ρ + c reads copy c of input j = row j·ρ + c
        rho = construction.col_copies[i]
        rows, d_in = e.shape[0], target[i].shape[1]
        w_rows = target[i][np.arange(rows) // construction.row_copies[i]]
        delta = e.reshape(rows, d_in, rho).sum(axis=2) - w_rows
        err = np.linalg.norm(delta, axis=1) * b_prev + np.abs(e) @ err  # each copy weighted by its own error
    return float(np.linalg.norm(err))  # the last layer has one copy per output


def empirical_sup_error(f: Forward, g: Forward, d0: int, *, samples: int = 20000, starts: int = 20,
                        steps: int = 150, seed: int = 0, chunk: int = 4096) -> dict[str, float]:
    """Lower estimate of sup_{‖x‖=1} ‖f(x) − g(x)‖₂: ``{"sampled", "ascent", "sup"}`` (sup = max of both)."""
    x = sphere_points(d0, samples, seed)
    with torch.no_grad():
        err = torch.cat([(f(c) - g(c)).norm(dim=1) for c in x.split(chunk)])
    sampled = float(err.max())
    top = torch.argsort(err, descending=True, stable=True)[: min(starts, samples)]
    xs, best = x[top].clone(), err[top].clone()
    step = torch.full_like(best, 0.3)
    for _ in range(steps):
        xr = xs.clone().requires_grad_(True)
        e2 = ((f(xr) - g(xr)) ** 2).sum()
        (grad,) = torch.autograd.grad(e2, xr)
        with torch.no_grad():
            tangent = grad - (grad * xs).sum(dim=1, keepdim=True) * xs
            norm = tangent.norm(dim=1, keepdim=True)
            direction = torch.where(norm > 0, tangent / norm.clamp_min(1e-300), torch.zeros_like(tangent))
            cand = xs + step[:, None] * direction
            cand = cand / cand.norm(dim=1, keepdim=True)
            e = (f(cand) - g(cand)).norm(dim=1)
            better = e > best
            xs = torch.where(better[:, None], cand, xs)
            best = torch.where(better, e, best)
            step = torch.where(better, step, step / 2)
    ascent = float(best.max())
    return {"sampled": sampled, "ascent": ascent, "sup": max(sampled, ascent)}


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval for a binomial proportion."""
    from scipy.stats import beta

    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"successes must be in [0, trials] with trials >= 1, got {successes}/{trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1 - confidence
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def verify_construction(construction: Construction, eps: float, *, model: nn.Module | None = None,
                        samples: int = 20000, steps: int = 150, identity_samples: int = 10000,
                        seed: int = 0) -> dict[str, Any]:
    """Identity, certified and empirical error of one construction, and whether each is within ``eps``."""
    start = time.perf_counter()
    identity = identity_check(construction, model, samples=identity_samples, seed=seed)
    certified = certified_bound(construction)
    emp = empirical_sup_error(target_function(construction.target), effective_forward(construction),
                              construction.widths[0], samples=samples, steps=steps, seed=seed)
    errors = np.concatenate(construction.weight_errors)
    return {
        "construction": construction.name,
        "seed": construction.seed,
        "depth": construction.depth,
        "block": construction.block,
        "widths": construction.widths,
        "random_params": construction.random_params,
        "kept": construction.kept,
        "target_params": construction.target_params,
        "identity_max_diff": identity,
        "certified": certified,
        "empirical": emp["sup"],
        "empirical_sampled": emp["sampled"],
        "certified_ge_empirical": certified >= emp["sup"],
        "success": emp["sup"] <= eps,
        "certified_success": certified <= eps,
        "weight_error_median": float(np.median(errors)),
        "weight_error_max": float(errors.max()),
        "construct_seconds": construction.seconds,
        "verify_seconds": time.perf_counter() - start,
    }


def success_rate(name: str, dims: Sequence[int], eps: float, delta: float, draws: int, block: int | Sequence[int],
                 *, seed: int = 0, target_seed: int = 1000, samples: int = 20000, steps: int = 150,
                 **kwargs: Any) -> dict[str, Any]:
    """R = ``draws`` independent (target, net) draws: target seed ``target_seed + r``, net seed ``seed + r``."""
    dims = check_dims(dims)
    _check_unit("eps", eps)
    _check_unit("delta", delta)
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= 100000:
        raise ValueError(f"draws must be an integer in [1, 100000], got {draws!r}")
    rows = []
    for r in range(draws):
        target = random_target(dims, target_seed + r)
        c = construct(name, target, seed + r, block, **kwargs)
        rows.append(verify_construction(c, eps, samples=samples, steps=steps, seed=r))
    return _summarise(rows, eps, delta)


def _summarise(rows: list[dict[str, Any]], eps: float, delta: float) -> dict[str, Any]:
    n = len(rows)
    ok = sum(r["success"] for r in rows)
    ok_cert = sum(r["certified_success"] for r in rows)
    lo, hi = clopper_pearson(ok, n)
    emp = np.array([r["empirical"] for r in rows])
    cert = np.array([r["certified"] for r in rows])
    return {
        "draws": n,
        "eps": eps,
        "delta": delta,
        "successes": ok,
        "certified_successes": ok_cert,
        "success_rate": ok / n,
        "success_ci95": [lo, hi],
        # judged on the Clopper–Pearson interval, not the point estimate: 1/1 success proves nothing about 1 − δ
        "meets_one_minus_delta": lo >= 1 - delta,
        "verdict": "meets" if lo >= 1 - delta else ("below" if hi < 1 - delta else "undecided"),
        "certified_ge_empirical_all": all(r["certified_ge_empirical"] for r in rows),
        "identity_max_diff": max(r["identity_max_diff"] for r in rows),
        "empirical_median": float(np.median(emp)),
        "empirical_max": float(emp.max()),
        "certified_median": float(np.median(cert)),
        "certified_max": float(cert.max()),
        "rows": rows,
    }


def universality(name: str, dims: Sequence[int], eps: float, targets: int, block: int | Sequence[int], *,
                 seed: int = 0, target_seed: int = 5000, samples: int = 5000, steps: int = 50,
                 **kwargs: Any) -> dict[str, Any]:
    """One random net (``seed``), ``targets`` random targets: the fraction it approximates within ``eps``."""
    dims = check_dims(dims)
    rows = []
    for t in range(targets):
        c = construct(name, random_target(dims, target_seed + t), seed, block, **kwargs)
        rows.append(verify_construction(c, eps, samples=samples, steps=steps, identity_samples=256, seed=t))
    ok = sum(r["success"] for r in rows)
    return {"targets": targets, "successes": ok, "all_succeed": ok == targets,
            "empirical_max": max(r["empirical"] for r in rows), "rows": rows}


def _check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
