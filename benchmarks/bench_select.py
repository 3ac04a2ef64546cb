"""Radix-select variants on one GPU: digit widths × CTA spans, timed side by side, exactness checked.

    python benchmarks/bench_select.py [--sizes 20,22,24] [--out DIR]      # a CUDA GPU
    TRITON_INTERPRET=1 python benchmarks/bench_select.py --cpu-smoke        # tiny sizes, the CPU interpreter

Why: Triton <= 3.6 lowers ``tl.histogram`` to warp ballots and one ``popc`` per bin and score, so a pass costs in
proportion to its bins, while each extra pass reads |S| once more. The shipped plan (kernels.select._PASSES) is
the row to beat; every variant must give the same (τ, cut) rows as it (the exactness against strongticket.masks
is pinned in tests/). Prints a table (median µs, p20-p80, GB/s of the |S| reads) and writes select.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strongticket import masks, ops  # noqa: E402

sel = ops._kernels("select")


def _plan(widths: tuple[int, ...]) -> tuple[tuple[tuple[int, int], ...], int]:
    assert sum(widths) == 31, widths
    shifts, top = [], 31
    for w in widths:
        top -= w
        shifts.append((top, w))
    return tuple(shifts), 1 << max(widths)


DIGITS = {"11/10/10": (11, 10, 10), "8/8/8/7": (8, 8, 8, 7), "7/6/6/6/6": (7, 6, 6, 6, 6),
          "6/5/5/5/5/5": (6, 5, 5, 5, 5, 5)}


def _log2_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or not all(10 <= v <= 30 for v in sizes):
        raise argparse.ArgumentTypeError(f"must be comma-separated integers in [10, 30], got {text!r}")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,22,24", type=_log2_sizes,
                        help="comma-separated log2 of the score counts, each in [10, 30]")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU: use --cpu-smoke with TRITON_INTERPRET=1")
    sizes = [10, 12] if smoke else args.sizes
    if smoke:
        def bench(fn):
            fn()
            return 0.0, 0.0, 0.0
    else:
        import triton.testing

        def bench(fn):
            return tuple(triton.testing.do_bench(fn, warmup=20, rep=100, quantiles=[0.5, 0.2, 0.8]))

    shipped = (sel._PASSES, sel._HIST_BINS)
    rows = []
    try:
        for log2n in sizes:
            n = 2**log2n
            s = torch.randn(n, generator=torch.Generator().manual_seed(log2n)).to(device)
            k = masks.keep_count(0.5, n)
            base = sel.make_select_plan([n], [k], device=device)
            spans = sorted({max(base.block, base.span // 4), base.span, base.span * 4}) if not smoke else [base.span]
            want = None
            for name, widths in DIGITS.items():
                sel._PASSES, sel._HIST_BINS = _plan(widths)
                for span in spans:
                    plan = sel.make_select_plan([n], [k], span=span, device=device)
                    got = sel.select_thresholds([s], plan)
                    if want is None:
                        want = ops._topk_thresholds_ref([s.cpu()], [k], [0]).to(device)
                    exact = bool(torch.equal(got, want))
                    med, p20, p80 = bench(lambda plan=plan, s=s: sel.select_thresholds([s], plan))
                    ctas = plan.blk_layer.numel()
                    gbps = 4 * n * len(widths) / (med * 1e-3) / 1e9 if med else 0.0
                    rows.append(dict(n=f"2^{log2n}", digits=name, span=span, ctas=ctas, median_us=1e3 * med,
                                     p20_us=1e3 * p20, p80_us=1e3 * p80, gbps=gbps, exact=exact,
                                     shipped=(sel._PASSES, span) == (shipped[0], base.span)))
    finally:
        sel._PASSES, sel._HIST_BINS = shipped
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "select.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)"
    import triton

    print(f"torch {torch.__version__}, triton {triton.__version__}, {name}; * = the shipped plan")
    print(f"{'n':>5} | {'digits':<12} | {'span':>7} | {'CTAs':>5} | {'median µs':>9} | {'p20-p80 µs':>13} | "
          f"{'GB/s':>6} | exact")
    for r in rows:
        mark = "*" if r["shipped"] else " "
        print(f"{r['n']:>5} | {r['digits']:<12} | {r['span']:>7} | {r['ctas']:>5} | {r['median_us']:>8.1f}{mark} | "
              f"{r['p20_us']:>6.1f}-{r['p80_us']:<6.1f} | {r['gbps']:>6.0f} | {r['exact']}")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
