"""Constructive strong-lottery-ticket proofs as strongticket tickets, and their verification.

Given a bias-free ReLU target f(x) = W_l σ(… σ(W_1 x)) with ‖W_i‖₂ ≤ 1, sample a larger random U[−1,1] network
(frozen, seeded, ``strongticket.random``) and choose its mask by the proof — no training — so that the pruned
net g_S satisfies sup_{‖x‖≤1} ‖f(x) − g_S(x)‖ ≤ ε: Malach et al. (ICML 2020), Pensia et al. (NeurIPS 2020),
Orseau et al. (NeurIPS 2020; hyperbolic weights, greedy base-3/2 sums), Burkholz (NeurIPS 2022). ``verify`` checks
the exact identity, the certified bound and the empirical sup-error;
``widths`` gives the papers' formulas and our calibrated block sizes; ``sweep`` compares the constructions;
``trained`` turns a trained MLP file (biases allowed) into a target, keeping the scale to undo at the output.
"""

from .constructions import CONSTRUCTIONS, Construction, build_model, burkholz, construct, malach, orseau, pensia
from .subset_sum import best_subsets, brute_force_subsets, smallest_subset
from .targets import random_target, target_from_sequential, target_from_ticket
from .ticket import evaluate_theory_ticket, load_theory_ticket, save_theory_ticket
from .trained import ScaledTarget, load_target_file, read_mlp, scale_target
from .verify import certified_bound, clopper_pearson, empirical_sup_error, identity_check, verify_construction
from .widths import calibrated_block, paper_widths, width_report

__all__ = [
    "CONSTRUCTIONS",
    "Construction",
    "build_model",
    "burkholz",
    "construct",
    "malach",
    "orseau",
    "pensia",
    "best_subsets",
    "brute_force_subsets",
    "smallest_subset",
    "random_target",
    "target_from_sequential",
    "target_from_ticket",
    "evaluate_theory_ticket",
    "load_theory_ticket",
    "save_theory_ticket",
    "ScaledTarget",
    "load_target_file",
    "read_mlp",
    "scale_target",
    "certified_bound",
    "clopper_pearson",
    "empirical_sup_error",
    "identity_check",
    "verify_construction",
    "calibrated_block",
    "paper_widths",
    "width_report",
]
