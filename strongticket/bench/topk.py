"""Threshold selection vs the full sort of the original edge-popup code, on the CPU.

    strongticket bench topk [--sizes 20,22] [--densities 0.5,0.05] [--repeats 7] [--csv out.csv]

Baseline ("sort"): allenai/hidden-networks' ``GetSubnet`` — sort all |S|, zero the lowest ⌊(1−d)·n⌋ and set the
rest to one with two scatters, every forward. Ours ("select"): ``strongticket.masks.topk_mask`` — on the CPU
numpy's introselect over the |S| bit patterns (elsewhere an 11-bit radix histogram and the exact order statistic
inside the boundary bin), index tie-break. (A search step selects with ``masks.WindowTopK`` instead: see
``strongticket bench cpu``.)
Both are timed side by side in one run (median of ``--repeats`` after one warm-up); the masks are compared
bit for bit against the definition (stable descending sort, ties by index). The table is printed last.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time

import torch

from strongticket.masks import keep_count, topk_mask


def original_edge_popup_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """hidden-networks GetSubnet.forward: full sort of |S|, two scatters (float mask)."""
    out = scores.abs().clone()
    _, idx = out.flatten().sort()
    j = int((1 - density) * out.numel())
    flat = out.flatten()
    flat[idx[:j]] = 0
    flat[idx[j:]] = 1
    return out


def definition_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(scores.abs().flatten(), descending=True, stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view(scores.shape)


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,22", help="log2 of the score counts (default: 20,22)")
    parser.add_argument("--densities", default="0.5,0.05", help="fractions kept (default: 0.5,0.05)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    args = parser.parse_args(argv)

    rows = []
    for log2n in (int(s) for s in args.sizes.split(",")):
        n = 1 << log2n
        scores = torch.randn(n, generator=torch.Generator().manual_seed(log2n)).view(1024, n // 1024)
        for density in (float(d) for d in args.densities.split(",")):
            k = keep_count(density, n)
            ours = topk_mask(scores, k)
            identical = torch.equal(ours, definition_mask(scores, k))
            original = original_edge_popup_mask(scores, density).bool()
            t_sort = _median_ms(lambda s=scores, d=density: original_edge_popup_mask(s, d), args.repeats)
            t_ours = _median_ms(lambda s=scores, k=k: topk_mask(s, k), args.repeats)
            rows.append({
                "n": f"2^{log2n}", "density": density, "kept": k, "sort_ms": round(t_sort, 2),
                "radix_select_ms": round(t_ours, 2), "speedup": round(t_sort / t_ours, 2),
                "mask_equals_definition": identical,
                "original_mask_mismatches": int((original != ours).sum()),
            })
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"CPU threshold selection, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    header = "| n | density | kept | sort ms | select ms | speedup | identical mask | original's mask differs |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        print(f"| {r['n']} | {r['density']} | {r['kept']:,} | {r['sort_ms']} | {r['radix_select_ms']} | "
              f"{r['speedup']}x | {r['mask_equals_definition']} | {r['original_mask_mismatches']} |")


if __name__ == "__main__":
    main()
