"""Error vs random-network size, the constructions side by side: CSV rows, a markdown table, a PNG.

For each construction and block size (k for Malach, m = 2n for Pensia, ρ for Burkholz, M for Orseau) and each draw r
(target seed 1000 + r, net seed r) we construct, verify (``verify.verify_construction``) and write one CSV row.
Malach's per-weight error falls like 1/k, Pensia's exponentially in m, Burkholz trades one layer of depth for
≈ρ²× the parameters, and Orseau's greedy error collapses once the hyperbolic pool fills its K = O(log 1/ε)
windows (M = O(K log K), no subset search). The plot is drawn from the CSV (matplotlib, Agg, imported lazily:
not a dependency).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from .constructions import construct
from .targets import check_dims, random_target
from .verify import clopper_pearson, verify_construction

__all__ = ["DEFAULT_BLOCKS", "CSV_FIELDS", "run_sweep", "write_csv", "read_csv", "summary_table", "plot_sweep"]

DEFAULT_BLOCKS = {
    "malach": (10, 30, 100, 300, 1000, 3000),
    "pensia": (8, 16, 24, 32, 40, 48),
    "burkholz": (8, 12, 16, 20, 24),
    "orseau": (40, 80, 160, 320, 640),
}
CSV_FIELDS = ("construction", "block", "draw", "depth", "random_params", "kept", "target_params", "empirical",
              "certified", "identity_max_diff", "success", "construct_seconds")


def run_sweep(dims: Sequence[int], eps: float, draws: int, blocks: dict[str, Sequence[int]] | None = None, *,
              samples: int = 5000, steps: int = 60, progress: Any = None) -> list[dict[str, Any]]:
    """One row per (construction, block, draw)."""
    dims = check_dims(dims)
    blocks = DEFAULT_BLOCKS if blocks is None else blocks
    for name in blocks:
        if name not in DEFAULT_BLOCKS:
            raise ValueError(f"construction must be one of {sorted(DEFAULT_BLOCKS)}, got {name!r}")
    rows = []
    for name, sizes in blocks.items():
        for block in sizes:
            for r in range(draws):
                kwargs = {"eps": eps} if name == "orseau" else {}
                c = construct(name, random_target(dims, 1000 + r), r, int(block), **kwargs)
                res = verify_construction(c, eps, samples=samples, steps=steps, identity_samples=512, seed=r)
                rows.append({"construction": name, "block": int(block), "draw": r, "depth": c.depth,
                             "random_params": c.random_params, "kept": c.kept, "target_params": c.target_params,
                             "empirical": res["empirical"], "certified": res["certified"],
                             "identity_max_diff": res["identity_max_diff"], "success": int(res["success"]),
                             "construct_seconds": round(c.seconds, 4)})
                if progress is not None:
                    progress(rows[-1])
    return rows


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(Path(path), text.getvalue())


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    ints = ("block", "draw", "depth", "random_params", "kept", "target_params", "success")
    floats = ("empirical", "certified", "identity_max_diff", "construct_seconds")
    return [{k: int(v) if k in ints else float(v) if k in floats else v for k, v in row.items()} for row in rows]


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["construction"], row["block"]), []).append(row)
    return groups


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: construction, block, depth, random params, kept, median/max sup-error, success rate (CI95)."""
    lines = ["| construction | block | depth | random-net params | kept weights (median) | median sup-error "
             "| max sup-error | certified (median) | success (95% CI) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, block), group in _groups(rows).items():
        emp = np.array([r["empirical"] for r in group])
        cert = np.array([r["certified"] for r in group])
        ok = sum(int(r["success"]) for r in group)
        lo, hi = clopper_pearson(ok, len(group))
        lines.append(f"| {name} | {block} | {group[0]['depth']} | {group[0]['random_params']:,} | "
                     f"{int(np.median([r['kept'] for r in group])):,} | {np.median(emp):.2e} | {emp.max():.2e} | "
                     f"{np.median(cert):.2e} | {ok}/{len(group)} [{lo:.2f}, {hi:.2f}] |")
    return "\n".join(lines)


def plot_sweep(rows: list[dict[str, Any]], path: str | Path, eps: float | None = None) -> Path:
    """Median sup-error (min–max band) vs random-net parameters per construction, log-log, as a PNG."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("the sweep plot needs matplotlib, which is not installed; pip install matplotlib "
                         "(the CSV and the table were written without it)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_name: dict[str, list[tuple[int, float, float, float]]] = {}
    for (name, _), group in _groups(rows).items():
        emp = np.array([r["empirical"] for r in group])
        by_name.setdefault(name, []).append((group[0]["random_params"], float(np.median(emp)), float(emp.min()),
                                             float(emp.max())))
    for name, pts in by_name.items():
        pts.sort()
        x = [p[0] for p in pts]
        depth = next(r["depth"] for r in rows if r["construction"] == name)
        ax.plot(x, [p[1] for p in pts], marker="o", label=f"{name} (depth {depth})")
        ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], alpha=0.2)
    if eps is not None:
        ax.axhline(eps, color="gray", linestyle="--", linewidth=1, label=f"eps = {eps:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("random-network parameters")
    ax.set_ylabel("sup-error on the unit sphere")
    ax.set_title("strong-LTH constructions: error vs over-parameterisation")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
