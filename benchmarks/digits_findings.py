"""The relative findings of the edge-popup paper, re-run on the bundled digits data (CPU, a few minutes).

    python benchmarks/digits_findings.py [--seeds 0,1,2] [--out runs/findings]

Ramanujan et al. (CVPR 2020) report, for subnetworks of random networks found by edge-popup: accuracy peaks at
an intermediate density (≈ 0.3–0.7); signed-constant weights are at least as good as Kaiming normal; wider
random networks hold better subnetworks. Each cell is the mean ± sample std of the test accuracy over the seeds
(default model: mlp 512-512, 40 epochs), with the init's fan_in as is and scaled by the density (``--scale-fan``).
Every run is an ordinary resumable run folder under ``--out``: re-running reuses the finished ones.
"""

from __future__ import annotations

import argparse
import dataclasses

from strongticket.config import SearchConfig
from strongticket.report import mean_std
from strongticket.search import run_search


def _cell(base: SearchConfig, seeds: list[int], out: str, **changes) -> tuple[float, float]:
    accs = []
    for seed in seeds:
        name = "-".join(f"{k}{v if not isinstance(v, tuple) else 'x'.join(map(str, v))}" for k, v in changes.items())
        cfg = dataclasses.replace(base, seed=seed, out=f"{out}/{name}-s{seed}", **changes)
        accs.append(run_search(cfg, progress=False)["test_acc"])
    return mean_std(accs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/findings")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base = SearchConfig()
    rows = []
    for density in (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        plain = _cell(base, seeds, args.out, density=density)
        scaled = _cell(base, seeds, args.out, density=density, scale_fan=True)
        rows.append(("density", f"{density}", plain, scaled))
    for init in ("signed_constant", "kaiming_normal", "kaiming_uniform"):
        for density in (0.1, 0.5):
            plain = _cell(base, seeds, args.out, init=init, density=density)
            scaled = _cell(base, seeds, args.out, init=init, density=density, scale_fan=True)
            rows.append((f"init (density {density})", init, plain, scaled))
    for widths in ((32, 32), (128, 128), (512, 512), (1024, 1024)):
        plain = _cell(base, seeds, args.out, widths=widths)
        scaled = _cell(base, seeds, args.out, widths=widths, scale_fan=True)
        rows.append(("hidden widths (density 0.5)", "-".join(map(str, widths)), plain, scaled))
    print(f"edge-popup on digits, mlp 512-512 and signed constant unless varied, test accuracy mean ± std over "
          f"seeds {args.seeds}")
    print("| varied | value | fan_in | fan_in × density (--scale-fan) |")
    print("|---|---|---|---|")
    for what, value, (m1, s1), (m2, s2) in rows:
        print(f"| {what} | {value} | {m1:.4f} ± {s1:.4f} | {m2:.4f} ± {s2:.4f} |")


if __name__ == "__main__":
    main()
