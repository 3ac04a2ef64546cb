"""Relative claims about the trained search methods, re-run on the bundled digits data (CPU: ≈ 1 min).

    python benchmarks/digits_methods.py [--seeds 0,1,2] [--out runs/digits-methods]

Claims from the literature, each checked by a rule fixed before the run and printed as "holds" / "does not hold":
  * EP > Bernoulli supermask (Ramanujan et al. 2020, against Zhou et al. 2019);
  * biprop ≈ EP (Diffenderfer & Kailkhura 2021: binary weights α·sign(W) lose nothing against the full weights);
  * IteRand matches EP at smaller width (Chijiwa et al. 2021: edge-popup needs a wider network than IteRand for the
    same accuracy);
  * Gem-Miner holds up at very low density where EP collapses (Sreenivasan et al. 2022).

Base of every run: data digits, model mlp, init kaiming_normal, scale_fan True, 20 epochs, batch 64, lr 0.2 (the
config's default) with SGD momentum 0.9 and a cosine schedule, device cpu, one torch thread. Kaiming normal, not
signed constant: with signed-constant weights α = |W| and biprop is edge-popup by construction (identical masks),
so the comparison would be empty. No method is tuned, except supermask, which runs at lr 100 (Zhou et al.'s value):
its score gradient is scaled by σ'(S) ≤ 1/4 and its scores start at logit(ρ) (−4.6 at ρ = 0.01), so at lr 0.2 they
barely move. IteRand, Gem-Miner and annealed edge-popup run with their defaults (IteRand: re-draw after every epoch
but the last, λ = 0.1; Gem-Miner: penalty 1e-4, a freezing round after every epoch but the last; annealing over
all epochs). The pruning-at-init baselines (random, magnitude, snip single shot; synflow with 100 rounds, as Tanaka
et al.) train nothing.

Table 1: every method at densities 0.5, 0.1, 0.01 on hidden widths 128-128. Table 2: edge-popup against IteRand at
density 0.1 (chosen before the run) on hidden widths 16, 32, 64, 128 (two layers each). A cell is the test accuracy,
mean ± sample std over the seeds; "found" is the mean density the ticket actually keeps (supermask and gem-miner
threshold their scores and may keep fewer than ⌈d·n⌉ weights; the others keep exactly that many).

Rules, with tol = max(std_A, std_B, 0.005) (0.005 ≈ 2 of the 360 test examples, a floor for 3-seed stds):
  A > B   holds if mean_A − mean_B > tol;
  A ≈ B   holds if |mean_A − mean_B| ≤ tol;
  A ≥ B   holds if mean_A ≥ mean_B − tol.
  * EP > supermask: A > B at each of the three densities; the claim holds if it holds at all three.
  * biprop ≈ EP: A ≈ B at each density; holds if at all three.
  * IteRand at width w ≥ EP at width 2w, for w = 16, 32, 64 (density 0.1); holds if at all three.
  * Gem-Miner > EP at density 0.01 (A > B), printed with its premise "EP collapses at 0.01", computed as
    mean EP(0.5) − mean EP(0.01) > 0.05.
A comparison whose two means are both below 0.2 (chance is 0.1, ten classes) is flagged "near chance": a verdict
there compares two failures. The pruning-at-init baselines prune frozen random weights and train nothing, so they
are expected at chance; they show what the trained scores add.

Cost: 108 runs of about a second each (20 epochs × 21 steps of a small MLP); the whole script took 62 s on a 2-core
CPU (torch 2.13.0+cpu, one thread, another job on the other core), so the full 20 epochs and all four widths stay.

Every run is an ordinary resumable run folder under ``--out`` (``<algo>-d<density>-w<widths>-s<seed>``):
re-running reuses the finished ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from strongticket.config import SearchConfig
from strongticket.report import mean_std
from strongticket.search import run_search

DENSITIES = (0.5, 0.1, 0.01)
WIDTH_DENSITY = 0.1  # Table 2's density, fixed in advance
WIDTHS = ((16, 16), (32, 32), (64, 64), (128, 128))
TABLE1_WIDTHS = (128, 128)
TRAINED = ("edge-popup", "annealed-edge-popup", "supermask", "biprop", "iterand", "gem-miner")
BASELINES = ("random", "magnitude", "snip", "synflow")
EXTRA = {"supermask": {"lr": 100.0}, "synflow": {"rounds": 100}}  # the only per-method settings
TOL_FLOOR = 0.005
NEAR_CHANCE = 0.2
COLLAPSE_DROP = 0.05

BASE = SearchConfig(data="digits", model="mlp", init="kaiming_normal", scale_fan=True, epochs=20, device="cpu")


@dataclasses.dataclass(frozen=True)
class Cell:
    acc: float
    std: float
    found: float  # mean achieved density
    collapsed: int  # runs with a layer that keeps no weight


def cell(out: str, seeds: list[int], algo: str, density: float, widths: tuple[int, ...]) -> Cell:
    summaries = []
    extra = EXTRA.get(algo, {})
    tag = "".join(f"-{k}{v:g}" for k, v in extra.items())
    for seed in seeds:
        name = f"{algo}-d{density:g}-w{'x'.join(map(str, widths))}{tag}-s{seed}"
        cfg = dataclasses.replace(BASE, algo=algo, density=density, widths=widths, seed=seed, out=f"{out}/{name}",
                                  **extra)
        summaries.append(run_search(cfg, progress=False))
    acc, std = mean_std([s["test_acc"] for s in summaries])
    return Cell(acc, std, statistics.fmean(s["density"] for s in summaries),
                sum(bool(s.get("collapsed_layers")) for s in summaries))


def _tol(a: Cell, b: Cell) -> float:
    return max(a.std, b.std, TOL_FLOOR)


def greater(a: Cell, b: Cell) -> bool:
    return a.acc - b.acc > _tol(a, b)


def approx(a: Cell, b: Cell) -> bool:
    return abs(a.acc - b.acc) <= _tol(a, b)


def at_least(a: Cell, b: Cell) -> bool:
    return a.acc >= b.acc - _tol(a, b)


def verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def flag(a: Cell, b: Cell) -> str:
    return ", near chance" if a.acc < NEAR_CHANCE and b.acc < NEAR_CHANCE else ""


def _fmt(c: Cell) -> str:
    return f"{c.acc:.4f} ± {c.std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/digits-methods")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    t1 = {(algo, d): cell(args.out, seeds, algo, d, TABLE1_WIDTHS) for algo in TRAINED + BASELINES for d in DENSITIES}
    t2 = {(algo, w): cell(args.out, seeds, algo, WIDTH_DENSITY, w) for algo in ("edge-popup", "iterand")
          for w in WIDTHS}

    print(f"digits, mlp {'-'.join(map(str, TABLE1_WIDTHS))}, kaiming_normal, scale_fan, {BASE.epochs} epochs, lr "
          f"{BASE.lr:g} (supermask 100), seeds {args.seeds}: test accuracy mean ± std; found = mean density kept")
    print()
    head = " | ".join(f"acc @ {d:g} | found @ {d:g}" for d in DENSITIES)
    print(f"| method | {head} |")
    print("|---|" + "---|---|" * len(DENSITIES))
    for algo in TRAINED + BASELINES:
        cells = []
        for d in DENSITIES:
            c = t1[algo, d]
            mark = f" ({c.collapsed} collapsed)" if c.collapsed else ""
            cells.append(f"{_fmt(c)}{mark} | {c.found:.4f}")
        label = algo + "".join(f" ({k} {v:g})" for k, v in EXTRA.get(algo, {}).items())
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    print(f"edge-popup vs iterand at density {WIDTH_DENSITY:g}, hidden widths varied (same base)")
    print()
    print("| hidden widths | edge-popup | iterand | iterand − edge-popup |")
    print("|---|---|---|---|")
    for w in WIDTHS:
        ep, ir = t2["edge-popup", w], t2["iterand", w]
        print(f"| {'-'.join(map(str, w))} | {_fmt(ep)} | {_fmt(ir)} | {ir.acc - ep.acc:+.4f} |")
    print()

    print(f"Claims (tol = max(std_A, std_B, {TOL_FLOOR})):")
    per = {d: greater(t1["edge-popup", d], t1["supermask", d]) for d in DENSITIES}
    print(f"- EP > supermask (A − B > tol at every density): {verdict(all(per.values()))}; "
          + ", ".join(f"{d:g}: {verdict(ok)} ({t1['edge-popup', d].acc - t1['supermask', d].acc:+.4f}"
                      f"{flag(t1['edge-popup', d], t1['supermask', d])})" for d, ok in per.items()))
    per = {d: approx(t1["biprop", d], t1["edge-popup", d]) for d in DENSITIES}
    print(f"- biprop ≈ EP (|A − B| ≤ tol at every density): {verdict(all(per.values()))}; "
          + ", ".join(f"{d:g}: {verdict(ok)} ({t1['biprop', d].acc - t1['edge-popup', d].acc:+.4f}"
                      f"{flag(t1['biprop', d], t1['edge-popup', d])})"
                      for d, ok in per.items()))
    pairs = list(zip(WIDTHS, WIDTHS[1:]))
    per_w = {w: at_least(t2["iterand", w], t2["edge-popup", w2]) for w, w2 in pairs}
    print(f"- IteRand at width w ≥ EP at width 2w − tol (density {WIDTH_DENSITY:g}): {verdict(all(per_w.values()))}; "
          + ", ".join(f"IR {w[0]} vs EP {w2[0]}: {verdict(per_w[w])} "
                      f"({t2['iterand', w].acc - t2['edge-popup', w2].acc:+.4f}"
                      f"{flag(t2['iterand', w], t2['edge-popup', w2])})" for w, w2 in pairs))
    low, high = min(DENSITIES), max(DENSITIES)
    gm, ep = t1["gem-miner", low], t1["edge-popup", low]
    drop = t1["edge-popup", high].acc - ep.acc
    print(f"- Gem-Miner > EP at density {low:g} (A − B > tol): {verdict(greater(gm, ep))} "
          f"({gm.acc - ep.acc:+.4f}, tol {_tol(gm, ep):.4f}{flag(gm, ep)})")
    print(f"  premise, EP collapses at {low:g} (mean EP({high:g}) − EP({low:g}) > {COLLAPSE_DROP}): "
          f"{verdict(drop > COLLAPSE_DROP)} (drop {drop:.4f})")
    print()
    print(f"wall time {time.perf_counter() - t0:.0f} s (finished runs reused), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread")


if __name__ == "__main__":
    main()
