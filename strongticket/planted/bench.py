"""The planted-ticket benchmark: does a search method find the planted ticket, or a ticket as good?

Every method of :data:`strongticket.search.methods.METHODS` searches the planted mother network itself
(``--model planted``) of each task (Circle, ReLU, Helix) at depth 5 × width 100 (hidden widths 100,100,100), at
densities {0.5, 0.1, 0.01, planted} over seeds, as Fischer & Burkholz, "Plant 'n' Seek: can you find the winning
ticket?", ICLR 2022, §3. "planted" is the planted ticket's own density, weights only
(``plant_task(task, 5, 100, seed).density``: Circle 108 / 20,600 = 0.0052, ReLU 4 / 20,200 = 0.0002, Helix
120 / 20,400 = 0.0059), kept per layer (``scope`` layer, ⌈d·n⌉ per layer) like every other density. A run is
:func:`strongticket.search.run_search` in ``<out>/runs/<task>/<method>/d<label>-s<seed>``; a finished
run is re-reported from its folder without recomputation, so re-running the same command resumes the benchmark.
Per run: the test metric (accuracy for Circle, MSE for ReLU / Helix), achieved density, collapsed layers, search
seconds, and the recovery of the planted edges (:func:`strongticket.planted.cli.plant_report`: per-layer
precision / recall / Jaccard averaged over layers, planted path kept, input-output path). Written to ``<out>``:
``results.jsonl`` (one line per run), ``bench.md`` (per task a table method × density of test metric
mean ± std over seeds, mean Jaccard and recall; the command, the machine, the wall time, the settings) and, when
matplotlib is importable, ``<task>.png`` (test metric and Jaccard against density, log x, one line per method).

Reference metric per task: the planted ticket on the test split the searches are tested on. The planted network
ends in the fixed read-out outputs / planting scale (:class:`strongticket.planted.plant.OutputScale`), so the
planted masks are an exact solution of the task every method searches for.

Settings (:data:`SETTINGS`, SearchConfig fields per algo on top of the defaults; printed in ``bench.md``):
  edge-popup, annealed-edge-popup   SGD momentum 0.9, weight decay 5e-4, cosine, 10 epochs as the paper; lr 0.1
                                    (edge-popup's) and batch 64 are ours (the paper does not say); the annealed
                                    density falls over all epochs. ≈ 4.5 s a run on 2 CPU cores.
  random, magnitude, snip, grasp    single shot, no training.
  synflow                           100 rounds, as Tanaka et al. (NeurIPS 2020); ≈ 0.3 s a run on 2 CPU cores.
  biprop, iterand                   as edge-popup (iterand: re-randomization after every epoch, probability 0.1).
  supermask                         lr 100 (Zhou et al.'s MNIST example; σ' ≤ 1/4 scales its gradient down),
                                    no weight decay, batch 64.
  gem-miner                         lr 0.1, batch 64, penalty 1e-4 (its default), a freezing round after every
                                    epoch but the last.
No setting was tuned on these tasks. A method named here that is not registered is skipped and listed.
snip and grasp score with a cross-entropy saliency and refuse the regression tasks: "n/a: needs
classification". Methods that do not train ignore ``epochs`` (it is pinned to 1, so changing ``--epochs`` keeps
their finished runs). Sizes: full = seeds 0,1,2 and 10 epochs; quick (:data:`QUICK`) = seed 0, 2 epochs,
batch 256, a smoke test that finishes in minutes on 2 cores. One out folder holds one configuration: a run
folder of another configuration is refused (choose another ``--out``).

    run_bench("runs/plant-bench-quick", quick=True)      # == strongticket plant --bench --quick
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import SearchConfig
from ..data.splits import PLANTED_TASK_SEED
from ..report import mean_std
from ..search import run_search
from ..search.methods import METHODS
from .cli import plant_report
from .plant import plant_task
from .recovery import masked_task_metric, task_metric_name
from .targets import TASKS
from .tasks import make_task

__all__ = ["DENSITIES", "DEPTH", "FULL", "QUICK", "SETTINGS", "WIDTH", "default_methods", "run_bench"]

DEPTH, WIDTH = 5, 100
DENSITIES: tuple[float | str, ...] = (0.5, 0.1, 0.01, "planted")
FULL: dict[str, Any] = {"seeds": (0, 1, 2), "epochs": 10}
QUICK: dict[str, Any] = {"seeds": (0,), "epochs": 2, "batch_size": 256}

_EDGE_POPUP = {"lr": 0.1, "weight_decay": 5e-4, "batch_size": 64}
SETTINGS: dict[str, dict[str, Any]] = {
    "edge-popup": dict(_EDGE_POPUP),
    "annealed-edge-popup": dict(_EDGE_POPUP),
    "random": {},
    "magnitude": {},
    "snip": {},
    "grasp": {},
    "synflow": {"rounds": 100},
    "supermask": {"lr": 100.0, "batch_size": 64},
    "biprop": dict(_EDGE_POPUP),
    "iterand": dict(_EDGE_POPUP),
    "gem-miner": {"lr": 0.1, "batch_size": 64},
}

# run_search refuses these on regression data: their saliency is a cross-entropy
_NEEDS_CLASSIFICATION = ("snip", "grasp")
_NOT_REGISTERED = "not registered in strongticket.search.methods.METHODS"
_MARKERS = "osD^v<>ph*X"


def default_methods() -> tuple[str, ...]:
    """Every registered method, then the methods :data:`SETTINGS` prepares for that are not registered yet."""
    return (*METHODS, *(name for name in SETTINGS if name not in METHODS))


def _label(density: float | str) -> str:
    return density if isinstance(density, str) else f"{density:g}"


def _check(tasks: Sequence[str], algos: Sequence[str], densities: Sequence[float | str], seeds: Sequence[int],
           epochs: int) -> None:
    """One-line ValueErrors naming the field, what it allows and the value."""
    for name, values in (("tasks", tasks), ("algos", algos), ("densities", densities), ("seeds", seeds)):
        if len(values) == 0:
            raise ValueError(f"{name} must list at least one value, got none")
        if len(set(map(str, values))) != len(values):
            raise ValueError(f"{name} must not repeat a value, got {','.join(map(str, values))}")
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"tasks must be among {', '.join(TASKS)}, got {task!r}")
    known = default_methods()
    for algo in algos:
        if algo not in known:
            raise ValueError(f"algos must be among {', '.join(known)}, got {algo!r}")
    for d in densities:
        ok = d == "planted" or (isinstance(d, (int, float)) and not isinstance(d, bool) and 0 < d <= 1)
        if not ok:
            raise ValueError(f"densities must be numbers in (0, 1] or 'planted', got {d!r}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - 1:
            raise ValueError(f"seeds must be integers in [0, 4294967295], got {seed!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 100_000:
        raise ValueError(f"epochs must be an integer in [1, 100000], got {epochs!r}")


def _config(task: str, algo: str, density: float, seed: int, epochs: int, quick: bool, folder: Path,
            device: str, scaled: bool = False) -> SearchConfig:
    trains = METHODS[algo].trains
    values: dict[str, Any] = {
        "data": f"planted-{task}", "model": "planted-scaled" if scaled else "planted",
        "widths": (WIDTH,) * (DEPTH - 2), "algo": algo,
        "density": density, "seed": seed, "epochs": epochs if trains else 1, "out": str(folder), "device": device,
        **SETTINGS.get(algo, {}),
    }
    if quick and trains:
        values["batch_size"] = QUICK["batch_size"]
    return SearchConfig.from_dict(values, source=f"bench settings of {algo}")


def _references(task: str, seed: int, scaled: bool = False) -> dict[str, float]:
    """The planted ticket's density and test metrics on the split the search is tested on: rescaled (the target)
    and in the network as searched (raw outputs unless ``scaled``)."""
    p = plant_task(task, DEPTH, WIDTH, seed)
    data = make_task(task, seed=PLANTED_TASK_SEED, n=10_000)
    args = (p, list(p.masks), data.x_test, data.y_test, list(p.bias_masks))
    return {
        "planted_density": p.density,
        "planted_test_metric": masked_task_metric(*args, scaled=True),
        "planted_test_metric_as_searched": masked_task_metric(*args, scaled=scaled),
    }


def _recovery(task: str, ticket: Path) -> dict[str, Any]:
    r = plant_report(task, masks_path=str(ticket))
    layers = r["recovery"]
    return {
        **{key: sum(rec[key] for rec in layers) / len(layers) for key in ("precision", "recall", "jaccard")},
        "layer_jaccard": [rec["jaccard"] for rec in layers],
        "planted_path_survives": r["planted_path_survives"],
        "has_path": r["has_path"],
        "found_test_metric": r["found_test_metric"],
    }


def _run_one(task: str, algo: str, label: str, density: float, seed: int, epochs: int, quick: bool, out: Path,
             device: str, scaled: bool = False) -> dict[str, Any]:
    folder = out / "runs" / task / algo / f"d{label}-s{seed}"
    record: dict[str, Any] = {"task": task, "method": algo, "density_label": label, "density": density,
                              "seed": seed, "metric": task_metric_name(task), "run_dir": str(folder)}
    if algo not in METHODS:
        return {**record, "status": "skipped", "note": _NOT_REGISTERED}
    cfg = _config(task, algo, density, seed, epochs, quick, folder, device, scaled)
    cached = (folder / "summary.json").is_file()
    try:
        with warnings.catch_warnings():  # collapsed layers are recorded per run instead
            warnings.filterwarnings("ignore", message=".*collapsed masked layer", category=RuntimeWarning)
            summary = run_search(cfg, progress=False)
    except ValueError:
        if algo in _NEEDS_CLASSIFICATION and task_metric_name(task) == "mse":
            return {**record, "status": "n/a", "note": "needs classification"}
        raise
    return {
        **record, "status": "ok", "cached": cached, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "test_metric": summary["test_acc" if task == "circle" else "test_mse"],
        "achieved_density": summary["density"], "collapsed_layers": summary["collapsed_layers"],
        "seconds": summary["seconds"], **_recovery(task, folder / "ticket.safetensors"),
    }


def _fmt(value: float, metric: str) -> str:
    return f"{value:.3f}" if metric == "accuracy" else f"{value:.3g}"


def _progress_line(r: dict[str, Any]) -> str:
    head = f"{r['task']:<6} {r['method']:<19} d={r['density_label']:<7} seed {r['seed']}"
    if r["status"] != "ok":
        return f"{head}  {r['status']}: {r['note']}"
    metric = "acc" if r["metric"] == "accuracy" else "mse"
    return (f"{head}  {metric} {_fmt(r['test_metric'], r['metric'])}  jaccard {r['jaccard']:.4f}  "
            f"{r['seconds']:.1f} s{'  (finished before)' if r['cached'] else ''}")


def _command(out: Path, tasks: Sequence[str], algos: Sequence[str], densities: Sequence[float | str],
             seeds: Sequence[int], epochs: int, quick: bool, scaled: bool = False) -> str:
    args = ["strongticket", "plant", "--bench", *(["--quick"] if quick else []),
            *(["--scaled"] if scaled else []), "--out", str(out),
            "--tasks", ",".join(tasks), "--algos", ",".join(algos),
            "--densities", ",".join(_label(d) for d in densities), "--seeds", ",".join(map(str, seeds)),
            "--epochs", str(epochs)]
    return shlex.join(args)


def run_bench(out_dir: str | Path, *, tasks: Sequence[str] = TASKS, methods: Sequence[str] | None = None,
              densities: Sequence[float | str] = DENSITIES, seeds: Sequence[int] | None = None,
              epochs: int | None = None, quick: bool = False, progress: bool = True,
              device: str = "cpu", scaled: bool = False) -> Path:
    """Run (or resume) the benchmark into ``out_dir``; returns the path of ``bench.md``.

    ``scaled``: search ``planted-scaled`` (outputs / planting scale: the planted masks solve the task exactly)
    instead of ``planted`` (raw outputs, Plant 'n' Seek's network).
    ``methods`` defaults to :func:`default_methods`, ``seeds`` and ``epochs`` to the full or quick size.
    ``progress`` prints one line per run. ``device`` "cpu": these 20k-weight networks gain nothing on a GPU.
    The runs use one torch thread (restored afterwards): as fast as two on an idle 2-core machine, and 14× faster
    (4 s instead of 60 s a run) when another process keeps a core busy.
    """
    size = QUICK if quick else FULL
    algos = tuple(default_methods() if methods is None else methods)
    seeds = tuple(size["seeds"] if seeds is None else seeds)
    epochs = size["epochs"] if epochs is None else epochs
    tasks, densities = tuple(tasks), tuple(densities)
    _check(tasks, algos, densities, seeds, epochs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    references = {(task, seed): _references(task, seed, scaled) for task in tasks for seed in seeds}
    records = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for task in tasks:
            for algo in algos:
                for d in densities:
                    for seed in seeds:
                        ref = references[task, seed]
                        density = ref["planted_density"] if d == "planted" else float(d)
                        r = {**_run_one(task, algo, _label(d), density, seed, epochs, quick, out, device, scaled),
                             **ref}
                        records.append(r)
                        if progress:
                            print(_progress_line(r), flush=True)
    finally:
        torch.set_num_threads(threads)
    with open(out / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    meta = {"command": _command(out, tasks, algos, densities, seeds, epochs, quick, scaled),
            "wall_seconds": time.perf_counter() - start, "device": device, "quick": quick, "scaled": scaled}
    path = _write_report(out, records, meta)
    if progress:
        print(f"wrote {path}")
    return path


def _cell(runs: list[dict[str, Any]]) -> str:
    if runs[0]["status"] != "ok":
        return f"{runs[0]['status']}: {runs[0]['note']}"
    metric = runs[0]["metric"]
    m, s = mean_std([r["test_metric"] for r in runs])
    jaccard = mean_std([r["jaccard"] for r in runs])[0]
    recall = mean_std([r["recall"] for r in runs])[0]
    collapsed = sum(bool(r["collapsed_layers"]) for r in runs)
    text = f"{_fmt(m, metric)} ± {_fmt(s, metric)} · J {jaccard:.3f} · R {recall:.2f}"
    return text + (f" · collapsed {collapsed}/{len(runs)}" if collapsed else "")


def _groups(records: list[dict[str, Any]], task: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["task"] == task:
            groups.setdefault((r["method"], r["density_label"]), []).append(r)
    return groups


def _write_report(out: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    tasks = list(dict.fromkeys(r["task"] for r in records))
    algos = list(dict.fromkeys(r["method"] for r in records))
    labels = list(dict.fromkeys(r["density_label"] for r in records))
    ok = [r for r in records if r["status"] == "ok"]
    seeds = sorted({r["seed"] for r in records})
    lines = [
        "# Planted-ticket benchmark", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} (1 thread), device "
        f"{meta['device']}. Wall time {meta['wall_seconds']:.1f} s ({sum(not r['cached'] for r in ok)} runs searched "
        f"now, {sum(r['cached'] for r in ok)} finished before); search time over all runs "
        f"{sum(r['seconds'] for r in ok):.1f} s.", "",
        f"Network: depth {DEPTH} × width {WIDTH} (`--model {'planted-scaled' if meta['scaled'] else 'planted'}`); "
        f"seeds {','.join(map(str, seeds))}; "
        f"{'quick size' if meta['quick'] else 'full size'}. Cells: test metric mean ± std over seeds · J Jaccard "
        f"and R recall of the found vs the planted edges (per layer, averaged over layers and seeds); collapsed: "
        f"runs with a layer that keeps no weight.",
    ]
    skipped = [a for a in algos if any(r["method"] == a and r["status"] == "skipped" for r in records)]
    if skipped:
        lines += ["", f"Skipped, {_NOT_REGISTERED}: {', '.join(skipped)}."]
    shown = [a for a in algos if a not in skipped]
    for task in tasks:
        groups = _groups(records, task)
        ref = next(r for r in records if r["task"] == task)
        metric = ref["metric"]
        planted = [r["planted_density"] for r in records if r["task"] == task]
        heads = [f"planted ({min(planted):.4f})" if label == "planted" else label for label in labels]
        lines += ["", f"## {task}: test {metric}", "",
                  f"Planted ticket (weight and bias masks of the planting, {ref['planted_density']:.4f} of the "
                  f"weights): {_fmt(ref['planted_test_metric'], metric)} with outputs / planting scale (the target); "
                  f"in the network as searched ({'outputs / scale' if meta['scaled'] else 'raw outputs'}): "
                  f"{_fmt(ref['planted_test_metric_as_searched'], metric)}.", "",
                  f"| method | {' | '.join(heads)} |", f"|---|{'---|' * len(labels)}"]
        for algo in shown:
            cells = [_cell(groups[algo, label]) for label in labels]
            lines.append(f"| {algo} | {' | '.join(cells)} |")
    lines += ["", "## Settings", "", "SearchConfig fields per method on top of its defaults"
              f"{' (quick: batch ' + str(QUICK['batch_size']) + ' for methods that train)' if meta['quick'] else ''}:",
              "", "| method | settings |", "|---|---|"]
    lines += [f"| {a} | {json.dumps(SETTINGS.get(a, {}))} |" for a in algos]
    plots = _plots(out, ok)
    if plots is None:
        lines += ["", "(plots skipped: matplotlib is not installed; `pip install matplotlib`)"]
    else:
        lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    path = out / "bench.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(out: Path, ok: list[dict[str, Any]]) -> list[Path] | None:
    """Per task: test metric and Jaccard against density (log x), one line per method, error bars = std; None
    without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    paths = []
    for task in dict.fromkeys(r["task"] for r in ok):
        runs = [r for r in ok if r["task"] == task]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, algo in enumerate(dict.fromkeys(r["method"] for r in runs)):
            points = []
            for label in dict.fromkeys(r["density_label"] for r in runs if r["method"] == algo):
                group = [r for r in runs if r["method"] == algo and r["density_label"] == label]
                points.append((sum(r["density"] for r in group) / len(group),
                               mean_std([r["test_metric"] for r in group]), mean_std([r["jaccard"] for r in group])))
            points.sort()
            xs = [p[0] for p in points]
            colour = plt.get_cmap("tab20")(i % 20)  # 20 colours: every method its own, and its own marker
            for ax, k in zip(axes, (1, 2)):
                ax.errorbar(xs, [p[k][0] for p in points], yerr=[p[k][1] for p in points], capsize=2, label=algo,
                            marker=_MARKERS[i % len(_MARKERS)], color=colour)
        planted = runs[0]["planted_density"]
        for ax, ylabel in zip(axes, (f"test {runs[0]['metric']}", "Jaccard (found vs planted edges)")):
            ax.axvline(planted, color="grey", linestyle=":", linewidth=1)
            ax.set(xscale="log", xlabel="density (dotted: planted)", ylabel=ylabel)
            ax.grid(alpha=0.3)
        if runs[0]["metric"] == "mse":
            axes[0].set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Planted {task} ticket, depth {DEPTH} × width {WIDTH}")
        fig.tight_layout()
        path = out / f"{task}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths

