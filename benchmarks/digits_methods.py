"""Relative claims about the trained search methods, re-run on the bundled digits data, under our protocol or under
each method's original one (CPU).

    python benchmarks/digits_methods.py [--protocol ours|original] [--seeds 0,1,2,3,4] [--steps 1100]
                                        [--out runs/digits-methods]

Claims from the literature, each checked by a rule fixed before the run and printed as "holds" / "does not hold" /
"inconclusive":
  * EP > Bernoulli supermask (Ramanujan et al. 2020, against Zhou et al. 2019);
  * biprop ≈ EP (Diffenderfer & Kailkhura 2021: binary weights α·sign(W) lose nothing against the full weights);
  * IteRand matches EP at smaller width (Chijiwa et al. 2021: edge-popup needs a wider network than IteRand for the
    same accuracy);
  * Gem-Miner holds up at very low density where EP collapses (Sreenivasan et al. 2022).

Protocols (``--protocol``):
  ours      every method under our defaults (lr 0.2, batch 64, cosine per step, best validation epoch), data
            digits, model mlp, init kaiming_normal with scale_fan (with signed-constant weights α = |W| and biprop is
            edge-popup by construction, so the comparison would be empty); supermask at lr 100 (Zhou et al.'s value:
            its score gradient is scaled by σ'(S) ≤ 1/4 and at lr 0.2 its scores barely move); synflow with 100
            rounds (Tanaka et al.); no other method is tuned.
  original  every method under its preset (``strongticket.search.presets``, ``docs/presets.md``): edge-popup
            ramanujan2020, annealed-edge-popup fischer2022, supermask zhou2019 (10 sampled masks at evaluation),
            biprop diffenderfer2021, iterand chijiwa2021, gem-miner sreenivasan2022, snip lee2019, synflow
            tanaka2020; random and magnitude as Synaptic-Flow's single-shot baselines (tanaka2020 with rounds 1).
            Each keeps its init, lr, batch size, weight decay, schedule per epoch and last-epoch selection.
In both, every trained method gets the same step budget (``--steps``, default 1,100 = the ramanujan2020 preset's 100
epochs of 11 steps): epochs = ⌊steps / steps per epoch at the method's batch size⌋ (at least 1), so every run is
within one epoch of the budget (the "steps" column says how many it ran). A Gem-Miner freezing period longer than a
run allows is shortened to fit. Every trained method of a protocol selects its epoch by the same rule (ours: best
validation accuracy, ties to the later epoch; original: the last epoch), which the script checks. The report says
how much the last quarter of the epochs still added to validation accuracy (the plateau check; at 1,100 steps at
most one validation example in the worst cell).

Table 1: every method at densities 0.5, 0.1, 0.01 on hidden widths 128-128. Table 2: edge-popup against IteRand at
density 0.1 (chosen before the run) on hidden widths 16, 32, 64, 128 (two layers each). A cell is the test accuracy,
mean ± the half-width of its 95% t-interval over the seeds (t with n − 1 degrees of freedom); "found" is the mean
density the ticket actually keeps (supermask and gem-miner threshold their scores; zhou2019's supermask has no
density target at all).

The test set's own sampling error is stated apart: every seed is scored on the same 359 test images, so the seed
interval does not contain it; the binomial SE at accuracy p is √(p(1 − p)/359) (0.011 at p = 0.95, 0.026 at 0.5).

Rules (I = a cell's 95% interval; chance = what a constant prediction scores, between the rarest and the commonest
class's share of the test images, about 0.09-0.10 on digits: a collapsed network scores exactly one of those):
  A > B   holds if I_A lies entirely above I_B, does not hold if mean_A <= mean_B, else "not shown" (A ahead,
          the intervals overlap);
  A ≈ B   holds if each mean lies inside the other's interval;
  A ≥ B   holds if mean_A is not below I_B;
  a comparison where both intervals reach the chance band is "inconclusive" (it compares two failures); one where a
  side's ticket kept a density more than 10% away from the target is "not comparable" (zhou2019's supermask, which
  has no density target); a claim checked at several points holds if it holds at every comparable point, does not
  hold if it fails at one, else is "not shown" or inconclusive.
  * EP > supermask at each of the three densities.
  * biprop ≈ EP at each density.
  * IteRand at width w ≥ EP at width 2w, for w = 16, 32, 64 (density 0.1).
  * Gem-Miner > EP at density 0.01, printed with its premise "EP collapses at 0.01": I_EP(0.01) lies entirely below
    I_EP(0.5).
The pruning-at-init baselines prune frozen random weights and train nothing, so they are expected at chance; they
show what the trained scores add.

Cost (2-core CPU, one torch thread, another one-thread job on the other core, 2026-11-29): 5 seeds, 180 runs per
protocol: ours 671 s, original 790 s.

Every run is an ordinary resumable run folder under ``--out/<protocol>`` (``<algo>-d<density>-w<widths>-e<epochs>
-s<seed>``): re-running reuses the finished ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from strongticket.config import SearchConfig
from strongticket.data.splits import load_splits
from strongticket.search import methods, run_search
from strongticket.search.presets import PRESET_OF

DENSITIES = (0.5, 0.1, 0.01)
WIDTH_DENSITY = 0.1  # Table 2's density, fixed in advance
WIDTHS = ((16, 16), (32, 32), (64, 64), (128, 128))
TABLE1_WIDTHS = (128, 128)
TRAINED = ("edge-popup", "annealed-edge-popup", "supermask", "biprop", "iterand", "gem-miner")
BASELINES = ("random", "magnitude", "snip", "synflow")
OURS_EXTRA = {"supermask": {"lr": 100.0}, "synflow": {"rounds": 100}}  # the only per-method settings of "ours"
DEFAULT_STEPS = 1100
OURS_BASE = dict(data="digits", model="mlp", init="kaiming_normal", scale_fan=True, device="cpu")


@dataclasses.dataclass(frozen=True)
class Cell:
    acc: float
    half: float  # half-width of the 95% t-interval over seeds (inf for one seed)
    found: float  # mean achieved density
    collapsed: int  # runs with a layer that keeps no weight
    steps: int  # optimizer steps each run took (0: pruning at init)
    select: str  # the epoch-selection rule of the runs
    late_gain: float = 0.0  # mean over seeds: best validation accuracy minus the best of the first 75% of epochs

    @property
    def low(self) -> float:
        return self.acc - self.half

    @property
    def high(self) -> float:
        return self.acc + self.half

    def has_chance(self, chance: tuple[float, float]) -> bool:
        """Whether the interval reaches the band ``chance`` (what constant predictions score)."""
        return self.low <= chance[1] and chance[0] <= self.high


def t_half_width(values: list[float]) -> float:
    """Half-width of the 95% t-interval of the mean of ``values`` (inf for fewer than two)."""
    n = len(values)
    if n < 2:
        return math.inf
    return float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n test images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def config(protocol: str, algo: str, density: float, widths: tuple[int, ...], seed: int, steps: int,
           train_size: int, out: str) -> SearchConfig:
    """The run of ``algo`` under ``protocol``, its epochs set by the step budget."""
    if protocol == "ours":
        base: dict[str, Any] = {**OURS_BASE, "algo": algo, **OURS_EXTRA.get(algo, {})}
    else:
        base = {"preset": PRESET_OF[algo], "algo": algo, "device": "cpu"}
        if algo in ("random", "magnitude"):
            base["rounds"] = 1
    probe = SearchConfig(density=density, **base)
    epochs = max(1, steps // -(-train_size // probe.batch_size))
    if algo == "gem-miner":
        epochs = max(epochs, 2)
        if probe.freeze_every > epochs - 2:
            base["freeze_every"] = max(epochs - 2, 0)
    cfg = SearchConfig(density=density, widths=widths, seed=seed, epochs=epochs, **base)
    name = f"{algo}-d{density:g}-w{'x'.join(map(str, widths))}-e{epochs}-s{seed}"
    return dataclasses.replace(cfg, out=f"{out}/{protocol}/{name}")


def cell(protocol: str, out: str, seeds: list[int], algo: str, density: float, widths: tuple[int, ...], steps: int,
         train_size: int) -> Cell:
    summaries, cfg, gains = [], None, []
    for seed in seeds:
        cfg = config(protocol, algo, density, widths, seed, steps, train_size, out)
        summaries.append(run_search(cfg, progress=False))
        gains.append(late_gain(Path(cfg.out) / "metrics.jsonl"))
    accs = [s["test_acc"] for s in summaries]
    trains = methods.get(algo).trains
    per_epoch = -(-train_size // cfg.batch_size)
    return Cell(statistics.fmean(accs), t_half_width(accs), statistics.fmean(s["density"] for s in summaries),
                sum(bool(s.get("collapsed_layers")) for s in summaries), cfg.epochs * per_epoch if trains else 0,
                cfg.select_epoch if trains else "-", statistics.fmean(gains))


def late_gain(metrics: Path) -> float:
    """How much the last quarter of training added: the best validation accuracy minus the best over the first 75%
    of the epochs (0 for an untrained method's single epoch). Near 0: the step budget reached a plateau."""
    vals = [json.loads(line)["val_acc"] for line in metrics.read_text().splitlines() if line.strip()]
    return max(vals) - max(vals[:max(1, int(0.75 * len(vals)))]) if vals else 0.0


def _verdict(ok: bool, a: Cell, b: Cell, chance: tuple[float, float]) -> str:
    if a.has_chance(chance) and b.has_chance(chance):
        return "inconclusive"
    return "holds" if ok else "does not hold"


def greater(a: Cell, b: Cell, chance: tuple[float, float]) -> str:
    """A > B: holds when I_A lies above I_B, does not hold when mean_A <= mean_B; in between (A ahead, intervals
    overlapping) the seeds do not show it either way: "not shown"."""
    verdict = _verdict(a.low > b.high, a, b, chance)
    return "not shown" if verdict == "does not hold" and a.acc > b.acc else verdict


def approx(a: Cell, b: Cell, chance: tuple[float, float]) -> str:
    return _verdict(b.low <= a.acc <= b.high and a.low <= b.acc <= a.high, a, b, chance)


def at_least(a: Cell, b: Cell, chance: tuple[float, float]) -> str:
    return _verdict(a.acc >= b.low, a, b, chance)


def overall(verdicts: list[str]) -> str:
    judged = [v for v in verdicts if v != "not comparable"]
    if not judged:
        return "not comparable"
    if all(v == "holds" for v in judged):
        return "holds"
    if "does not hold" in judged:
        return "does not hold"
    return "not shown" if "not shown" in judged else "inconclusive"


def at_density(a: Cell, b: Cell, density: float, verdict) -> str:
    """``verdict(a, b)`` where both cells kept their target density (within 10%), else "not comparable": zhou2019's
    supermask has no density target, and a mask at 0.53 says nothing about edge-popup at 0.01."""
    if all(abs(c.found - density) <= 0.1 * density for c in (a, b)):
        return verdict(a, b)
    return "not comparable"


def _fmt(c: Cell) -> str:
    return f"{c.acc:.4f} ± {c.half:.4f}"


def _point(a: Cell, b: Cell, verdict: str, n_test: int) -> str:
    found = f"; found {a.found:.3f} / {b.found:.3f}" if verdict == "not comparable" else ""
    return (f"{verdict} ({a.acc - b.acc:+.4f}; [{a.low:.3f}, {a.high:.3f}] vs [{b.low:.3f}, {b.high:.3f}]; "
            f"test SE {binomial_se(a.acc, n_test):.3f} / {binomial_se(b.acc, n_test):.3f}{found})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("ours", "original"), default="ours")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per trained run (budget)")
    parser.add_argument("--out", default="runs/digits-methods")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    splits = load_splits("digits")
    train_size, n_test, val_size = len(splits.train), len(splits.test), len(splits.val)
    shares = torch.bincount(splits.test.labels, minlength=splits.num_classes).double() / n_test
    chance = (float(shares.min()), float(shares.max()))  # what constant predictions score

    def run(algo: str, density: float, widths: tuple[int, ...]) -> Cell:
        return cell(args.protocol, args.out, seeds, algo, density, widths, args.steps, train_size)

    t1 = {(algo, d): run(algo, d, TABLE1_WIDTHS) for algo in TRAINED + BASELINES for d in DENSITIES}
    t2 = {(algo, w): run(algo, WIDTH_DENSITY, w) for algo in ("edge-popup", "iterand") for w in WIDTHS}
    rules = {c.select for c in list(t1.values()) + list(t2.values()) if c.select != "-"}
    if len(rules) != 1:
        raise RuntimeError(f"the trained methods of protocol {args.protocol} select epochs by different rules: {rules}")

    print(f"digits, mlp {'-'.join(map(str, TABLE1_WIDTHS))}, protocol {args.protocol}, step budget {args.steps}, "
          f"epoch selection {rules.pop()} for every trained method, seeds {args.seeds}: test accuracy mean ± 95% "
          f"t-interval half-width; found = mean density kept; steps = optimizer steps per run")
    print()
    head = " | ".join(f"acc @ {d:g} | found @ {d:g}" for d in DENSITIES)
    print(f"| method | steps | {head} |")
    print("|---|---|" + "---|---|" * len(DENSITIES))
    for algo in TRAINED + BASELINES:
        cells = []
        for d in DENSITIES:
            c = t1[algo, d]
            mark = f" ({c.collapsed} collapsed)" if c.collapsed else ""
            cells.append(f"{_fmt(c)}{mark} | {c.found:.4f}")
        label = algo + (f" ({PRESET_OF[algo]})" if args.protocol == "original" else
                        "".join(f" ({k} {v:g})" for k, v in OURS_EXTRA.get(algo, {}).items()))
        print(f"| {label} | {t1[algo, DENSITIES[0]].steps} | {' | '.join(cells)} |")
    print()
    print(f"edge-popup vs iterand at density {WIDTH_DENSITY:g}, hidden widths varied (same protocol and budget)")
    print()
    print("| hidden widths | edge-popup | iterand | iterand − edge-popup |")
    print("|---|---|---|---|")
    for w in WIDTHS:
        ep, ir = t2["edge-popup", w], t2["iterand", w]
        print(f"| {'-'.join(map(str, w))} | {_fmt(ep)} | {_fmt(ir)} | {ir.acc - ep.acc:+.4f} |")
    print()
    print(f"Test-set sampling error: binomial SE √(p(1 − p)/{n_test}) at the observed accuracy p (the same "
          f"{n_test} test images for every seed), e.g. {binomial_se(0.95, n_test):.3f} at 0.95, "
          f"{binomial_se(0.5, n_test):.3f} at 0.5, {binomial_se(0.1, n_test):.3f} at 0.1.")
    if len(seeds) < 2:
        print("One seed: no interval; every comparison is inconclusive or compares point values only.")
    worst = max(t1.values(), key=lambda c: c.late_gain)
    print(f"Plateau: the last quarter of each run's epochs adds at most {worst.late_gain:.4f} validation accuracy "
          f"(mean over seeds, worst Table-1 cell); one validation example is {1 / val_size:.4f}.")
    print()
    print(f"Claims (I = 95% t-interval over seeds; inconclusive where both intervals reach chance, the "
          f"{chance[0]:.3f}-{chance[1]:.3f} a constant prediction scores):")
    per = {d: at_density(t1["edge-popup", d], t1["supermask", d], d, lambda a, b: greater(a, b, chance))
           for d in DENSITIES}
    print(f"- EP > supermask (I_EP above I_SM at every density): {overall(list(per.values()))}; "
          + "; ".join(f"{d:g}: {_point(t1['edge-popup', d], t1['supermask', d], v, n_test)}" for d, v in per.items()))
    per = {d: at_density(t1["biprop", d], t1["edge-popup", d], d, lambda a, b: approx(a, b, chance))
           for d in DENSITIES}
    print(f"- biprop ≈ EP (each mean inside the other's interval at every density): {overall(list(per.values()))}; "
          + "; ".join(f"{d:g}: {_point(t1['biprop', d], t1['edge-popup', d], v, n_test)}" for d, v in per.items()))
    pairs = list(zip(WIDTHS, WIDTHS[1:]))
    per_w = {w: at_least(t2["iterand", w], t2["edge-popup", w2], chance) for w, w2 in pairs}
    print(f"- IteRand at width w ≥ EP at width 2w (mean_IR not below I_EP; density {WIDTH_DENSITY:g}): "
          f"{overall(list(per_w.values()))}; "
          + "; ".join(f"IR {w[0]} vs EP {w2[0]}: {_point(t2['iterand', w], t2['edge-popup', w2], per_w[w], n_test)}"
                      for w, w2 in pairs))
    low, high = min(DENSITIES), max(DENSITIES)
    gm, ep, ep_high = t1["gem-miner", low], t1["edge-popup", low], t1["edge-popup", high]
    print(f"- Gem-Miner > EP at density {low:g}: {_point(gm, ep, greater(gm, ep, chance), n_test)}")
    collapsed = "holds" if ep.high < ep_high.low else "does not hold"
    print(f"  premise, EP collapses at {low:g} (I_EP({low:g}) below I_EP({high:g})): {collapsed} "
          f"([{ep.low:.3f}, {ep.high:.3f}] vs [{ep_high.low:.3f}, {ep_high.high:.3f}])")
    print()
    print(f"wall time {time.perf_counter() - t0:.0f} s (finished runs reused), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread")


if __name__ == "__main__":
    main()
