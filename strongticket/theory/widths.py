"""Width calculators: the papers' formulas (hidden constants shown as such) and our calibrated block sizes.

Per-weight tolerance of the depth-2l constructions (Pensia et al. 2020, Thm 1): ε_w,i = ε / (2·l·d_{i−1}·d_i).
* Malach et al. 2020 (ICML): width O(d⁵l²/ε² · log(dl/δ)), params O(d⁶l³/ε² · log(dl/δ)), d = max width; and the
  rigorous block of our selection rule: k = ⌈(4/η²)·ln(2N/δ)⌉, η = ε_w/2, ε_w = ε/(2l·max d_{i−1}d_i).
* Pensia et al. 2020 (NeurIPS): n_i = C·ln(4·l·d_{i−1}·d_i / min(ε, δ)) per sign, hidden width 2·d_{i−1}·n_i,
  params Σ_i 2·d_{i−1}·n_i·(d_{i−1} + d_i); C (from Lueker's subset-sum lemma) is not known numerically.
* Burkholz 2022 (NeurIPS): ρ = C·ln(d_{i−1}·d_i·l / min(ε, δ)), widths [d_0, 2ρ·d_0, ρ·d_1, …, ρ·d_{l−1}, d_l].
* Orseau et al. 2020 (NeurIPS): "a logarithmic factor (in all variables but depth) number of neurons per weight of
  the target"; K = 1 + ⌈ln(0.575/ε_w)/ln 1.5⌉ base-3/2 digits, window probability q_win = ln(1.15²)/ln(β/α) and a
  coupon-collector pool M = ⌈4·K·(ln K + ln(1/q))/q_win⌉ per input coordinate (derived from the covering lemma,
  reference §5; the 4 = a > 0 half × sign of b; conservative), paper-level O(log(d l/(ε δ))) with hidden C.
Calibrated (Monte Carlo, reference §3.3/§9; block = neurons per input coordinate):
  Pensia: p_i = ⌈10 + 2·log10(1/ε_w,i)⌉ candidates of one sign fail one instance w.p. 1%, each extra one
  multiplies that by 0.55; a block of m neurons gives each sign Binomial(m, ½) candidates, so m_i is the smallest m
  with E_k[min(1, 0.01·0.55^(k − p_i))] ≤ q, k ~ Binomial(m, ½), q = δ/(2·Σ d_{i−1}d_i) (union bound over the
  instances; ``split_block``). The former m_i = 2·(p_i + ⌈ln(0.01/q)/ln(1/0.55)⌉) assumed m/2 per sign, and the
  split left some halves far shorter (12 instead of 21 at 784-500-10, issue 15);
  Malach k_i = ⌈ln(1/q)/(0.66·ε_w,i)⌉ (the 1/k tail of the nearest of k products, fitted to §2's table);
  Burkholz ρ = max(⌈m_1/2⌉, ⌈8 + 3·log10(1/ε_w)⌉ + ⌈ln(0.01/q)/ln(1/0.52)⌉), m_1 = Pensia's first block (layer 1
  has 2ρ neurons per input, split by sign) — a heuristic, not verified to δ;
  Orseau M_i = ⌈3.0·ln(ρ_i)·(ln K_i + ln(1/q))⌉, ρ_i = 8/ε_w,i (= β/α with the ranges of ``orseau_ranges``): the
  coupon-collector form with its constant fitted by Monte Carlo (greedy failure P(err > ε_w) ≤ 10⁻¹, 10⁻², 10⁻³
  for ε_w = 10⁻²…10⁻⁶, 4000 targets U[−1,1]: fitted constant 2.6–3.0, flat in ε_w: the logarithmic scaling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .targets import check_dims

__all__ = ["ORSEAU_C", "eps_per_weight", "paper_widths", "calibrated_block", "split_block", "orseau_digits",
           "width_report", "random_net_widths",
           "build_bytes"]


def _check(dims: Sequence[int], eps: float, delta: float) -> list[int]:
    for name, v in (("eps", eps), ("delta", delta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    return check_dims(dims)


def eps_per_weight(dims: Sequence[int], eps: float) -> list[float]:
    """ε_w,i = ε / (2·l·d_{i−1}·d_i) per target layer."""
    dims = check_dims(dims)
    n_layers = len(dims) - 1
    return [eps / (2 * n_layers * dims[i] * dims[i + 1]) for i in range(n_layers)]


def _extra(q: float, decay: float) -> int:
    """Variables to add to a 1%-failure block to reach failure q (failure ×decay per extra variable)."""
    return max(0, math.ceil(math.log(0.01 / q) / math.log(1 / decay)))


def split_block(per_sign: int, q: float, decay: float = 0.55) -> int:
    """Smallest m with Σ_k P(Binomial(m, ½) = k) · min(1, 0.01 · decay^(k − ``per_sign``)) ≤ ``q``.

    ``per_sign`` candidates of one sign fail one subset-sum instance with probability 1%, each extra one multiplies
    that by ``decay`` (reference §9); a block of m U[−1,1] neurons gives each sign Binomial(m, ½) of them. The sum
    is the failure probability of one instance under that random split (capped at 1 for short halves).
    """
    from scipy.stats import binom

    if isinstance(per_sign, bool) or not isinstance(per_sign, int) or not 1 <= per_sign <= 1 << 16:
        raise ValueError(f"per_sign must be an integer in [1, 65536], got {per_sign!r}")
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1), got {decay!r}")
    m = per_sign
    while True:
        k = np.arange(m + 1)
        fail = float((binom.pmf(k, m, 0.5) * np.minimum(1.0, 0.01 * decay ** (k - per_sign).astype(float))).sum())
        if fail <= q:
            return m
        m += 1


def calibrated_block(name: str, dims: Sequence[int], eps: float, delta: float) -> list[int]:
    """Calibrated block per target layer: m (pensia), k (malach), or [ρ]·l (burkholz)."""
    dims = _check(dims, eps, delta)
    weights = sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
    q = delta / (2 * weights)
    eps_w = eps_per_weight(dims, eps)
    pensia_p = [math.ceil(10 + 2 * math.log10(1 / e)) for e in eps_w]  # 1% failure per instance
    if name == "pensia":
        return [split_block(p, q) for p in pensia_p]
    if name == "malach":
        return [math.ceil(math.log(1 / q) / (0.66 * e)) for e in eps_w]
    if name == "burkholz":
        u_type = math.ceil(8 + 3 * math.log10(1 / min(eps_w))) + _extra(q, 0.52)
        return [max(-(-split_block(pensia_p[0], q) // 2), u_type)] * (len(dims) - 1)
    if name == "orseau":
        return [math.ceil(ORSEAU_C * math.log(8 / e) * (math.log(orseau_digits(e)) + math.log(1 / q))) for e in eps_w]
    raise ValueError(f"construction must be one of {list(_NAMES)}, got {name!r}")


_NAMES = ("burkholz", "malach", "orseau", "pensia")
# Fitted constant of the calibrated Orseau pool (module docstring).
ORSEAU_C = 3.0


def orseau_digits(eps_w: float) -> int:
    """K = 1 + ⌈ln(0.575/ε_w)/ln 1.5⌉: base-3/2 digits c(2/3)^k, c = w_max/2 = ½, down to the scale of ε_w."""
    return 1 + math.ceil(math.log(0.575 / eps_w) / math.log(1.5))


def random_net_widths(name: str, dims: Sequence[int], block: Sequence[int]) -> list[int]:
    """Layer widths of the random net for a block per target layer (as the constructions build it)."""
    dims = check_dims(dims)
    if name == "burkholz":
        rho = block[0]
        return [dims[0], 2 * rho * dims[0]] + [rho * d for d in dims[1:-1]] + [dims[-1]]
    widths = [dims[0]]
    for i in range(len(dims) - 1):
        widths += [dims[i] * block[i], dims[i + 1]]
    return widths


# Bytes per random weight of the built model (float32 weight and scores, bool mask, slack) and per element of the
# widest layer while a construction picks its mask (float64 weights and products, Philox words, bool masks).
_MODEL_BYTES_PER_WEIGHT = 12
_CONSTRUCT_BYTES_PER_ELEMENT = 48


def build_bytes(name: str, dims: Sequence[int], block: Sequence[int]) -> int:
    """Estimated peak bytes to construct and build the random net (an upper estimate: 20.8M-weight Malach [5,10,1]
    measured 534 MB resident in all, this gives 765 MB). Verification adds little: dead neurons are dropped first."""
    widths = random_net_widths(name, dims, block)
    layers = [widths[k] * widths[k + 1] for k in range(len(widths) - 1)]
    return _MODEL_BYTES_PER_WEIGHT * sum(layers) + _CONSTRUCT_BYTES_PER_ELEMENT * max(layers)


def _params(widths: Sequence[float]) -> float:
    return sum(widths[k] * widths[k + 1] for k in range(len(widths) - 1))


def paper_widths(name: str, dims: Sequence[int], eps: float, delta: float) -> dict[str, Any]:
    """The paper's width formula; O(·)/C constants are left symbolic (values are per unit constant)."""
    dims = _check(dims, eps, delta)
    n_layers = len(dims) - 1
    if name == "malach":
        d = max(dims)
        log_term = math.log(d * n_layers / delta)
        eps_w = eps / (2 * n_layers * max(dims[i] * dims[i + 1] for i in range(n_layers)))
        eta = eps_w / 2
        n_weights = sum(dims[i] * dims[i + 1] for i in range(n_layers))
        k = math.ceil((4 / eta**2) * math.log(2 * n_weights / delta))
        rigorous = random_net_widths("malach", dims, [k] * n_layers)
        return {
            "formula": "width = O(d^5 l^2 / eps^2 * log(d l / delta)), params = O(d^6 l^3 / eps^2 * log(d l / delta))",
            "hidden_constant": "O(.) constant (not given)",
            "width_per_unit_constant": d**5 * n_layers**2 / eps**2 * log_term,
            "params_per_unit_constant": d**6 * n_layers**3 / eps**2 * log_term,
            "rigorous_block": k,
            "rigorous_block_formula": "k = ceil((4/eta^2) ln(2N/delta)), eta = eps_w/2 (derived, no hidden constant)",
            "rigorous_params": _params(rigorous),
        }
    if name == "pensia":
        n = [math.log(4 * n_layers * dims[i] * dims[i + 1] / min(eps, delta)) for i in range(n_layers)]
        return {
            "formula": "n_i = C ln(4 l d_{i-1} d_i / min(eps, delta)); hidden width 2 d_{i-1} n_i",
            "hidden_constant": "C (Lueker's constant, not given numerically)",
            "n_per_unit_constant": n,
            "hidden_widths_per_unit_constant": [2 * dims[i] * n[i] for i in range(n_layers)],
            "params_per_unit_constant": sum(2 * dims[i] * n[i] * (dims[i] + dims[i + 1]) for i in range(n_layers)),
        }
    if name == "burkholz":
        rho = max(math.log(dims[i] * dims[i + 1] * n_layers / min(eps, delta)) for i in range(n_layers))
        return {
            "formula": "rho = C ln(d_{i-1} d_i l / min(eps, delta)); widths [d0, 2 rho d0, rho d1, ..., d_l]",
            "hidden_constant": "C (not given numerically)",
            "rho_per_unit_constant": rho,
            "params_approx": "2 rho d0^2 + 2 rho^2 d0 d1 + rho^2 sum d_i d_{i+1} + rho d_{l-1} d_l (~rho^2 x target)",
        }
    if name == "orseau":
        eps_w = eps_per_weight(dims, eps)
        weights = sum(dims[i] * dims[i + 1] for i in range(n_layers))
        q = delta / (2 * weights)
        digits = [orseau_digits(e) for e in eps_w]
        q_win = [math.log(1.15**2) / math.log(8 / e) for e in eps_w]
        pool = [math.ceil(4 * k * (math.log(k) + math.log(1 / q)) / qw) for k, qw in zip(digits, q_win)]
        log_term = [math.log(n_layers * dims[i] * dims[i + 1] / (eps * delta)) for i in range(n_layers)]
        covering = random_net_widths("orseau", dims, pool)
        return {
            "formula": "M_i = C log(l d_{i-1} d_i / (eps delta)) x polylog neurons per input coordinate "
                       "(logarithmic in all variables but depth); hidden width d_{i-1} M_i, depth 2l",
            "hidden_constant": "C and the exact log powers (abstract-level statement; not verified numerically)",
            "n_per_unit_constant": log_term,
            "hidden_widths_per_unit_constant": [dims[i] * log_term[i] for i in range(n_layers)],
            "digits_K": digits,
            "window_probability": q_win,
            "rigorous_block": pool,
            "rigorous_block_formula": "M = ceil(4 K (ln K + ln(1/q)) / q_win), K = 1 + ceil(ln(0.575/eps_w)/ln 1.5), "
                                      "q_win = ln(1.15^2)/ln(8/eps_w), q = delta/(2N) (covering lemma + coupon "
                                      "collector, derived; products assumed log-uniform on [eps_w/4, 2])",
            "rigorous_params": _params(covering),
        }
    raise ValueError(f"construction must be one of {list(_NAMES)}, got {name!r}")


def width_report(name: str, dims: Sequence[int], eps: float, delta: float) -> dict[str, Any]:
    """Paper formula and calibrated block with the random-net widths and parameters it gives."""
    dims = _check(dims, eps, delta)
    block = calibrated_block(name, dims, eps, delta)
    widths = random_net_widths(name, dims, block)
    return {
        "construction": name,
        "target_widths": dims,
        "eps": eps,
        "delta": delta,
        "eps_per_weight": eps_per_weight(dims, eps),
        "paper": paper_widths(name, dims, eps, delta),
        "calibrated_block": block,
        "calibrated_widths": widths,
        "calibrated_params": _params(widths),
        "target_params": _params(dims),
        "depth": len(widths) - 1,
    }
