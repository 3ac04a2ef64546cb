"""Growth of the random network with the target's width and with 1/ε: logarithmic (Pensia, Orseau) against
polynomial (Malach) — the central claim of Pensia et al. and Orseau et al. (NeurIPS 2020) — built and measured.

For every (construction, target widths, ε): the calibrated block (``theory.widths.calibrated_block``, δ = 0.1), the
random net's parameter count, and — when the net fits ``--max-params`` — one construction on a random target,
verified (sup-error on the unit sphere, certified bound). Rows that would not fit are written with their parameter
count and ``built = 0``: the polynomial growth is what refuses them.

    python benchmarks/theory_growth.py --out runs/theory-growth        # growth.csv
    python benchmarks/theory_growth.py --plot runs/theory-growth/growth.csv --png docs/theory_growth.png

The plot is drawn from the CSV only (never inside the measuring loop).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from strongticket.files import atomic_write
from strongticket.theory.constructions import construct
from strongticket.theory.targets import random_target
from strongticket.theory.verify import verify_construction
from strongticket.theory.widths import calibrated_block, random_net_widths

NAMES = ("malach", "pensia", "orseau")
EPS_SWEEP = (0.1, 0.03, 0.01, 0.003, 0.001)  # at target [5, 10, 1]
WIDTH_SWEEP = (2, 4, 8, 16, 32)  # target [d, d, 1] at eps 0.01
FIELDS = ("sweep", "construction", "target_widths", "eps", "block", "random_params", "built", "kept", "empirical",
          "certified", "seconds")


def _row(name: str, dims: list[int], eps: float, sweep: str, max_params: int, samples: int) -> dict:
    block = calibrated_block(name, dims, eps, 0.1)
    widths = random_net_widths(name, dims, block)
    params = sum(a * b for a, b in zip(widths, widths[1:]))
    row = {"sweep": sweep, "construction": name, "target_widths": "-".join(map(str, dims)), "eps": eps,
           "block": "/".join(map(str, block)), "random_params": params, "built": 0, "kept": "", "empirical": "",
           "certified": "", "seconds": ""}
    if params > max_params:
        return row
    start = time.perf_counter()
    kwargs = {"eps": eps} if name == "orseau" else {}
    c = construct(name, random_target(dims, 1000), 0, block, **kwargs)
    res = verify_construction(c, eps, samples=samples, steps=40, identity_samples=512)
    row.update({"built": 1, "kept": c.kept, "empirical": res["empirical"], "certified": res["certified"],
                "seconds": round(time.perf_counter() - start, 2)})
    return row


def measure(out: Path, max_params: int, samples: int) -> Path:
    rows = []
    cases = [("eps", [5, 10, 1], eps) for eps in EPS_SWEEP] + [("width", [d, d, 1], 0.01) for d in WIDTH_SWEEP]
    for sweep, dims, eps in cases:
        for name in NAMES:
            row = _row(name, dims, eps, sweep, max_params, samples)
            rows.append(row)
            print(", ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
    out.mkdir(parents=True, exist_ok=True)

    def write(path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)

    return atomic_write(out / "growth.csv", write)


def _target_params(widths: str) -> int:
    dims = [int(d) for d in widths.split("-")]
    return sum(a * b for a, b in zip(dims, dims[1:]))


def plot(csv_path: Path, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = ((axes[0], "eps", "1/ε (target [5,10,1])"), (axes[1], "width", "d (target [d,d,1], ε = 0.01)"))
    for ax, sweep, xlabel in panels:
        for name, marker in zip(NAMES, "osD"):
            pts = [r for r in rows if r["sweep"] == sweep and r["construction"] == name]
            xs = [1 / float(r["eps"]) if sweep == "eps" else int(r["target_widths"].split("-")[0]) for r in pts]
            ys = [int(r["random_params"]) / _target_params(r["target_widths"]) for r in pts]
            built = [r["built"] == "1" for r in pts]
            line = ax.plot(xs, ys, marker=marker, label=name)[0]
            ax.scatter([x for x, b in zip(xs, built) if not b], [y for y, b in zip(ys, built) if not b],
                       facecolors="white", edgecolors=line.get_color(), zorder=3, s=60)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("random params / target params")
        if sweep == "width":
            ax.set_xticks(list(WIDTH_SWEEP), [str(d) for d in WIDTH_SWEEP])
            ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(title="open marker: not built (too large)")
    fig.suptitle("Calibrated over-parameterization (δ = 0.1) for sup-error ≤ ε: Malach polynomial, Pensia and Orseau "
                 "logarithmic")
    fig.tight_layout()
    atomic_write(png, lambda path: fig.savefig(path, format="png", dpi=110))
    plt.close(fig)
    return png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/theory-growth", help="folder for growth.csv")
    p.add_argument("--max-params", type=int, default=40_000_000, help="build only nets up to this many weights")
    p.add_argument("--samples", type=int, default=2000, help="sphere samples per verification")
    p.add_argument("--plot", default=None, help="draw this growth.csv instead of measuring")
    p.add_argument("--png", default="docs/theory_growth.png")
    a = p.parse_args()
    if a.plot:
        print(f"plot: {plot(Path(a.plot), Path(a.png))}")
        return
    print(f"csv: {measure(Path(a.out), a.max_params, a.samples)}")


if __name__ == "__main__":
    main()
