"""Pensia et al. (NeurIPS 2020) construction for a 784-500-10 random target: the shape of the paper's MNIST run.

The paper approximated each of the 397k target weights by a subset sum of 21 coefficients with a Gurobi MIP:
21.5 hours on 36 cores. Here each weight is the *exact best* subset (meet in the middle) of the products a·b of
its block, with m = 42 neurons per input coordinate (n = 21 per sign, as in Pensia's M_{2i−1} ∈ R^{2·d·n × d}),
on a frozen U[−1,1] random network 784 → 32,928 → 500 → 21,000 → 10 (53M weights).

    /work/venv/bin/python benchmarks/theory_pensia_mnist.py [--block 42] [--exact 40] [--seed 0] [--target-seed 1000]
        [--ticket runs/theory-mnist.safetensors] [--json out.json]

Prints the construction time, the per-weight error distribution, the certified bound, the empirical
sup-error (sphere samples + ascent on the effective net) and the identity check on the materialised model.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from strongticket.theory.constructions import build_model, pensia
from strongticket.theory.targets import random_target
from strongticket.theory.verify import (
    certified_bound,
    effective_forward,
    empirical_sup_error,
    identity_check,
    target_function,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=42, help="neurons per input coordinate m = 2n (default 42)")
    p.add_argument("--exact", type=int, default=40,
                   help="candidates searched exactly per subset sum (default 40: every one at block 42)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-seed", type=int, default=1000)
    p.add_argument("--dims", default="784,500,10")
    p.add_argument("--samples", type=int, default=2000, help="sphere samples for the sup-error")
    p.add_argument("--steps", type=int, default=40, help="ascent steps")
    p.add_argument("--no-model", action="store_true", help="skip materialising the model (identity check, ticket)")
    p.add_argument("--ticket", default=None, help="save the construction as a ticket")
    p.add_argument("--json", default=None, help="write the numbers as JSON")
    a = p.parse_args()
    dims = [int(d) for d in a.dims.split(",")]
    out: dict = {"dims": dims, "block": a.block, "seed": a.seed, "target_seed": a.target_seed}

    t0 = time.perf_counter()
    target = random_target(dims, a.target_seed)
    c = pensia(target, a.seed, a.block, exact=a.exact)
    out["construct_seconds"] = time.perf_counter() - t0
    print(f"constructed in {out['construct_seconds']:.1f} s: random net {c.widths}, "
          f"{c.random_params:,} params, kept {c.kept:,}, target {c.target_params:,} weights")
    for i, err in enumerate(c.weight_errors):
        qs = np.quantile(err, [0.5, 0.9, 0.99, 0.999, 1.0])
        out[f"layer{i + 1}_weight_error_quantiles_50_90_99_999_max"] = qs.tolist()
        print(f"layer {i + 1}: {err.size:,} realised weights (per sign), |W_hat - W| median {qs[0]:.2e}  "
              f"q90 {qs[1]:.2e}"
              f"  q99 {qs[2]:.2e}  q99.9 {qs[3]:.2e}  max {qs[4]:.2e}")
    out["positive_candidates_min_max"] = c.info["positive_candidates_min_max"]
    out["random_params"], out["kept"], out["target_params"] = c.random_params, c.kept, c.target_params
    out["eps_w_layer1"] = 0.01 / (2 * 2 * dims[0] * dims[1])

    t1 = time.perf_counter()
    out["certified"] = certified_bound(c)
    emp = empirical_sup_error(target_function(target), effective_forward(c), dims[0], samples=a.samples,
                              steps=a.steps)
    out["empirical"] = emp["sup"]
    out["verify_seconds"] = time.perf_counter() - t1
    print(f"certified sup-error bound {out['certified']:.3e}; empirical sup-error {out['empirical']:.3e} "
          f"({a.samples} samples + {a.steps} ascent steps, {out['verify_seconds']:.1f} s)")
    if not a.no_model:
        t2 = time.perf_counter()
        model = build_model(c)
        out["model_seconds"] = time.perf_counter() - t2
        out["identity_max_diff"] = identity_check(c, model, samples=256)
        print(f"model materialised in {out['model_seconds']:.1f} s; identity max diff {out['identity_max_diff']:.1e}")
        if a.ticket:
            from strongticket.theory.ticket import save_theory_ticket

            save_theory_ticket(a.ticket, c, summary={"certified": out["certified"], "empirical": out["empirical"]},
                               target_source={"source": "random", "seed": a.target_seed}, model=model)
            print(f"ticket: {a.ticket}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
