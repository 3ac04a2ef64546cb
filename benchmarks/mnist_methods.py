"""Every search method on real MNIST, on the fully connected networks of the papers, beside the dense network
trained normally (CPU, resumable, runs in pieces).

    python benchmarks/mnist_methods.py --data-root ../shared/data --out /path/to/mnist-methods \\
        [--nets lenet,wide] [--methods edge-popup,dense,...] [--protocols ours,original] \\
        [--densities 0.5,0.3,0.1,0.05,0.01] [--seeds 0,1,2] [--epochs 10] [--report-only]

Networks: ``lenet`` = LeNet-300-100 (784-300-100-10), ``wide`` = 784-1024-1024-10; no biases (as every masked
network here). Densities 0.5, 0.3, 0.1, 0.05, 0.01 (per layer, or the method's own scope under its preset).

Methods (``--methods``): the trained search methods and the pruning-at-initialization baselines of
``benchmarks/digits_methods.py``, under the same two protocols (``--protocols``):
  ours      every method under our defaults (lr 0.2, batch 64, cosine per step, best validation epoch) with init
            kaiming_normal + scale_fan; supermask at lr 100, synflow with 100 rounds (``OURS_EXTRA``);
  original  every method under its preset (``docs/presets.md``), its batch size, lr, weight decay, schedule per epoch
            and last-epoch selection; IteRand's re-randomization period, 300 iterations of a 352-iteration CIFAR-10
            epoch in the original, becomes the same fraction of an MNIST epoch at batch 128 (the digits mapping of
            the presets, applied to MNIST).
and ``dense``: the same network, every weight trained (SGD lr 0.05, momentum 0.9, batch 64, cosine per step, torch's
default Linear init from ``torch.manual_seed(seed)``), its epoch chosen on validation accuracy as the search chooses.

Budget: every trained run (both protocols, and dense) gets ``--epochs`` passes over the 54,000 training images (the
presets' own epoch counts, 10-2,000, are replaced); the presets keep their batch size, so their step counts differ
(the table's "steps" column). A Gem-Miner freezing period longer than a run allows is shortened to fit.

A cell is the test accuracy on the 10,000 MNIST test images, mean ± the half-width of the 95% t-interval over the
seeds (t, n − 1 degrees of freedom); the test set's own binomial SE, √(p(1 − p)/10000), is 0.0014 at p = 0.98.
"found" is the density the tickets actually keep (supermask and gem-miner threshold their scores).

Every search is an ordinary run folder under ``--out/<protocol>/<net>/<algo>-d<density>-e<epochs>-s<seed>``
(``strongticket.search.run_search``: resumes from its checkpoint, reuses a finished run); a dense run writes
``--out/dense/<net>-e<epochs>-s<seed>/summary.json`` when it finishes (about a minute; an interrupted one starts
over). Runs go in a fixed order, headline cells first (edge-popup under our protocol, dense, the pruning-at-init
baselines, then the other trained methods), so a run cut short leaves the most useful cells done; ``--report-only``
runs nothing and tabulates what has finished. Writes ``--out/mnist_methods.md``, ``.json`` and ``.png`` (accuracy
against density, one line per method and protocol, the dense network as a horizontal band; left the full range,
right 0.94-0.99).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from strongticket.config import SearchConfig
from strongticket.data.splits import load_splits
from strongticket.files import atomic_write
from strongticket.search import run_search
from strongticket.search.loop import lr_factor
from strongticket.search.presets import PRESET_OF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dense_baseline import train_selected  # noqa: E402
from digits_methods import BASELINES, OURS_EXTRA, TRAINED, binomial_se, t_half_width  # noqa: E402

NETS = {"lenet": (300, 100), "wide": (1024, 1024)}
DENSITIES = (0.5, 0.3, 0.1, 0.05, 0.01)
METHODS = ("dense", *TRAINED, *BASELINES)
PROTOCOLS = ("ours", "original")
DEFAULT_EPOCHS = 10
TRAIN_EXAMPLES = 54_000  # MNIST's 60,000 training images less the validation split (val_fraction 0.1)
OURS_BASE = dict(data="mnist", model="mlp", init="kaiming_normal", scale_fan=True, device="cpu")
DENSE = dict(lr=0.05, momentum=0.9, batch_size=64)  # plain SGD training of every weight, cosine per step
IR_FRACTION = 300 / 352  # IteRand's re-randomization period as a fraction of an epoch (CIFAR-10, batch 128)


def search_config(protocol: str, algo: str, net: str, density: float, seed: int, epochs: int, out: str,
                  data_root: str) -> SearchConfig:
    """The run of ``algo`` under ``protocol`` on ``net`` at ``density``, ``epochs`` passes over the data."""
    if protocol == "ours":
        base: dict[str, Any] = {**OURS_BASE, "algo": algo, **OURS_EXTRA.get(algo, {})}
    else:
        base = {"preset": PRESET_OF[algo], "algo": algo, "data": "mnist", "device": "cpu"}
        if algo in ("random", "magnitude"):
            base["rounds"] = 1
    probe = SearchConfig(density=density, **base)
    if algo == "gem-miner":
        epochs = max(epochs, 2)
        if probe.freeze_every > epochs - 2:
            base["freeze_every"] = epochs - 2
    if algo == "iterand" and protocol == "original":
        base["rerand_every"] = round(IR_FRACTION * -(-TRAIN_EXAMPLES // probe.batch_size))
    name = f"{algo}-d{density:g}-e{epochs}-s{seed}"
    return SearchConfig(density=density, widths=NETS[net], seed=seed, epochs=epochs, data_root=data_root,
                        out=f"{out}/{protocol}/{net}/{name}", **base)


def dense_folder(out: str, net: str, epochs: int, seed: int) -> Path:
    return Path(out) / "dense" / f"{net}-e{epochs}-s{seed}"


def train_dense(net: str, seed: int, epochs: int, data_root: str) -> dict[str, Any]:
    """The network ``net`` with every weight trained (``DENSE``), the epoch chosen on validation accuracy."""
    splits = load_splits("mnist", root=data_root)
    torch.manual_seed(seed)
    sizes = [784, *NETS[net], 10]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(fan_in, fan_out, bias=False)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=DENSE["lr"], momentum=DENSE["momentum"])
    steps_per_epoch = -(-len(splits.train) // DENSE["batch_size"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor("cosine-step", steps_per_epoch, epochs))
    chosen = train_selected(model, splits, optimizer, epochs=epochs, batch_size=DENSE["batch_size"], seed=seed,
                            schedule=schedule)
    return {**chosen, "epochs": epochs, "steps": epochs * steps_per_epoch, "seed": seed, "density": 1.0, **DENSE}


def runs(args: argparse.Namespace) -> list[tuple[str, str, str, float, int]]:
    """Every (protocol, method, net, density, seed) asked for, headline cells first: edge-popup under our protocol,
    dense, the (cheap) pruning-at-init baselines, then the other trained methods, ours before the original protocol;
    within a method, densities from 0.5 down, every seed of a cell before the next cell."""
    def rank(item: tuple[str, str, str, float, int]) -> tuple:
        protocol, algo, net, density, seed = item
        head = (0 if (algo, protocol) == ("edge-popup", "ours") else 1 if algo == "dense" else
                2 if algo in BASELINES else 3)
        return (head, list(NETS).index(net), PROTOCOLS.index(protocol), METHODS.index(algo), -density, seed)

    items = []
    for net in args.nets:
        for algo in args.methods:
            for protocol in (["ours"] if algo == "dense" else args.protocols):
                for density in ([1.0] if algo == "dense" else args.densities):
                    items += [(protocol, algo, net, density, seed) for seed in args.seeds]
    return sorted(items, key=rank)


def summary_of(item: tuple[str, str, str, float, int], args: argparse.Namespace, run: bool) -> dict[str, Any] | None:
    """The summary of run ``item`` with its optimizer steps: run (or resumed, or reused) when ``run``, else read from
    its folder if it has finished (None if not)."""
    protocol, algo, net, density, seed = item
    if algo == "dense":
        path = dense_folder(args.out, net, args.epochs, seed) / "summary.json"
        if run and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(train_dense(net, seed, args.epochs, args.data_root), indent=2) + "\n")
        return json.loads(path.read_text()) if path.exists() else None
    cfg = search_config(protocol, algo, net, density, seed, args.epochs, args.out, args.data_root)
    path = Path(cfg.out) / "summary.json"
    if run:
        summary = dict(run_search(cfg, progress=False))
    elif path.exists():
        summary = json.loads(path.read_text())
    else:
        return None
    summary["steps"] = cfg.epochs * -(-TRAIN_EXAMPLES // cfg.batch_size) if summary["best_epoch"] else 0
    return summary


def tabulate(results: dict[tuple, list[dict[str, Any]]], args: argparse.Namespace) -> tuple[str, list[dict]]:
    """The markdown tables (one per network) and the cells as records."""
    records = []
    for (protocol, algo, net, density), summaries in results.items():
        accs = [s["test_acc"] for s in summaries]
        records.append({"net": net, "algo": algo, "protocol": protocol, "density": density, "n": len(accs),
                        "acc": statistics.fmean(accs), "half": t_half_width(accs),
                        "found": statistics.fmean(s["density"] for s in summaries),
                        "seconds": statistics.fmean(s["seconds"] for s in summaries),
                        "steps": summaries[0].get("steps", 0), "seeds": [s["seed"] for s in summaries]})
    lines = [f"MNIST, {args.epochs} epochs per trained run: test accuracy, mean ± 95% t-interval half-width over the "
             f"seeds (n = seeds finished; a cell with n < 2 has no interval); found = mean density kept"]
    for net in args.nets:
        rows = [r for r in records if r["net"] == net]
        if not rows:
            continue
        lines += ["", f"**{net}** (784-{'-'.join(map(str, NETS[net]))}-10)", "",
                  "| method | protocol | steps | " + " | ".join(f"d = {d:g}" for d in args.densities) + " |",
                  "|---|---|---|" + "---|" * len(args.densities)]
        for algo in METHODS:
            for protocol in PROTOCOLS:
                cells = {r["density"]: r for r in rows if r["algo"] == algo and r["protocol"] == protocol}
                if not cells:
                    continue
                label = {"ours": "ours" + "".join(f" ({k} {v:g})" for k, v in OURS_EXTRA.get(algo, {}).items()),
                         "original": PRESET_OF.get(algo, "")}[protocol]
                if algo == "dense":
                    c = cells[1.0]
                    lines.append(f"| dense (every weight trained) | SGD lr {DENSE['lr']:g} | {c['steps']} | "
                                 + " | ".join([f"{_fmt(c)}"] * len(args.densities)) + " |")
                    continue
                texts = []
                for d in args.densities:
                    c = cells.get(d)
                    found = f" (found {c['found']:.3f})" if c and abs(c["found"] - d) > 0.1 * d else ""
                    texts.append(f"{_fmt(c)}{found}" if c else "—")
                steps = next(iter(cells.values()))["steps"]
                lines.append(f"| {algo} | {label} | {steps} | " + " | ".join(texts) + " |")
    lines += ["", f"Test-set sampling error (the same 10,000 images for every seed): binomial SE "
              f"{binomial_se(0.98, 10000):.4f} at 0.98, {binomial_se(0.9, 10000):.4f} at 0.9."]
    return "\n".join(lines), records


def _fmt(c: dict[str, Any]) -> str:
    half = f" ± {c['half']:.4f}" if c["n"] > 1 else ""
    return f"{c['acc']:.4f}{half} (n={c['n']})"


def _draw(ax: Any, records: list[dict]) -> None:
    """One line per method and protocol (error bars: the 95% intervals), dense trained as a horizontal band."""
    for algo in METHODS:
        for protocol in PROTOCOLS:
            rows = sorted((r for r in records if r["algo"] == algo and r["protocol"] == protocol),
                          key=lambda r: r["density"])
            if not rows:
                continue
            halves = [r["half"] if r["n"] > 1 else 0.0 for r in rows]
            if algo == "dense":
                r = rows[0]
                ax.axhline(r["acc"], color="black", lw=1, label=f"dense, every weight trained (n={r['n']})")
                ax.axhspan(r["acc"] - halves[0], r["acc"] + halves[0], color="black", alpha=0.1)
                continue
            ax.errorbar([r["density"] for r in rows], [r["acc"] for r in rows], yerr=halves,
                        ls="-" if protocol == "ours" else "--", marker="o", ms=3, capsize=2,
                        label=f"{algo} ({protocol})")


def plot(records: list[dict], path: Path, nets: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = [n for n in nets if any(r["net"] == n for r in records)]
    fig, axes = plt.subplots(len(nets), 2, figsize=(13, 4.5 * len(nets)), squeeze=False)
    ticks = sorted({r["density"] for r in records if r["density"] < 1})
    for row, net in zip(axes, nets):
        for ax, zoom in zip(row, (False, True)):
            _draw(ax, [r for r in records if r["net"] == net])
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{d:g}" for d in ticks])
            ax.minorticks_off()
            ax.set_xlabel("density (fraction of weights kept)")
            ax.set_ylabel("test accuracy")
            ax.set_title(f"MNIST, {net} (784-{'-'.join(map(str, NETS[net]))}-10)" + (", top" if zoom else ""))
            if zoom:
                ax.set_ylim(0.94, 0.99)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _list(kind: type, choices: tuple | None = None):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v.strip()]
        bad = [v for v in values if choices is not None and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"must be a comma-separated list of {', '.join(map(str, choices))}"
                                             if choices else "must be a comma-separated list")
        return values
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--out", default="runs/mnist-methods")
    parser.add_argument("--nets", type=_list(str, tuple(NETS)), default=list(NETS))
    parser.add_argument("--methods", type=_list(str, METHODS), default=list(METHODS))
    parser.add_argument("--protocols", type=_list(str, PROTOCOLS), default=list(PROTOCOLS))
    parser.add_argument("--densities", type=_list(float), default=list(DENSITIES))
    parser.add_argument("--seeds", type=_list(int), default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--report-only", action="store_true", help="run nothing; tabulate the finished runs")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be an integer in [1, 100000], got {args.epochs}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results: dict[tuple, list[dict[str, Any]]] = {}
    for item in runs(args):
        t_run = time.perf_counter()
        summary = summary_of(item, args, run=not args.report_only)
        if summary is None:
            continue
        if not args.report_only:
            print(f"{'/'.join(map(str, item))}: test acc {summary['test_acc']:.4f} "
                  f"({time.perf_counter() - t_run:.0f} s)", flush=True)
        results.setdefault(item[:4], []).append(summary)
    table, records = tabulate(results, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    footer = (f"\n\nwall time of this invocation {time.perf_counter() - t0:.0f} s (finished runs reused); "
              f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    atomic_write(out / "mnist_methods.md", table + footer + "\n")
    atomic_write(out / "mnist_methods.json", json.dumps(records, indent=1) + "\n")
    if records:
        plot(records, out / "mnist_methods.png", args.nets)
    print(table + footer)


if __name__ == "__main__":
    main()
