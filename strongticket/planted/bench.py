"""The planted-ticket benchmark: does a search method find the planted ticket, or a ticket as good?

Every method of :data:`strongticket.search.methods.METHODS` searches the planted mother network itself
(``--model planted``: raw outputs, Plant 'n' Seek's network; ``--scaled``: ``planted-scaled``) of each task (Circle,
ReLU, Helix) at depth 5 × width 100 (hidden widths 100,100,100), at densities {0.5, 0.1, 0.01, planted} over seeds,
as Fischer & Burkholz, "Plant 'n' Seek: can you find the winning ticket?", ICLR 2022, §3. Seed s plants the
network (``plant_task(task, 5, 100, s)``) and seeds the search; the data are the fixed ``planted-<task>`` split.
A run is :func:`strongticket.search.run_search` in ``<out>/runs/<task>/<method>/d<label>-s<seed>``; a finished
run is re-reported from its folder without recomputation, so re-running the same command resumes the benchmark.

Budget (:func:`strongticket.planted.budget.budget_rule`, the config fields ``density``, ``scope``,
``bias_density``): a numeric density d keeps ⌈d·n⌉ weights per layer; "planted" keeps ⌈ρ·N⌉ weights under one
global threshold, ρ the planted ticket's density, weights only (Circle 108 / 20,600 = 0.0052, ReLU 4 / 20,200 =
0.0002, Helix 120 / 20,400 = 0.0059), the only budget of that size that holds the planted ticket; every bias may be
kept (``bias_density`` 1: the planted output layers need all their biases). Within these budgets the planted ticket
is representable in every cell except Circle at 0.1 and 0.01 (its head keeps 80 of 400 weights; see
:mod:`strongticket.planted.budget`).

Reference, per seed and cell: the planted ticket of that seed cut to the cell's budget
(:func:`~strongticket.planted.budget.best_within_budget`; the planted ticket itself where it is representable),
on the test split the searches are tested on, in the network as searched: raw outputs for ``planted``, outputs /
planting scale for ``planted-scaled``. In the raw network the planted masks compute scale × target (one common
scale for Circle's logits, so its accuracy is the target's; per output for ReLU and Helix, so their raw MSE is
that of outputs ≈ 0, not the target's); divided by the scale they compute the target. ``results.jsonl`` carries
both (``planted_test_metric`` = outputs / scale, ``planted_test_metric_raw`` = raw outputs, ``best_within_budget``
and ``best_within_budget_raw`` likewise, ``*_as_searched`` the one of the searched network).

Per run: the test metric (accuracy for Circle, MSE for ReLU / Helix), achieved density, collapsed layers, search
seconds, and the recovery of the planted ticket (:func:`strongticket.planted.cli.plant_report`): per-layer
precision / recall / Jaccard of the weight masks and their lifts over a random mask of the same per-layer density
(recall − density, Jaccard − its expectation; :mod:`strongticket.planted.recovery`), means over the layers that hold
planted entries, the same for the bias masks (``bias_*``; None where no bias is planted, as for ReLU), planted path
kept, input-output path. Written to ``<out>``: ``results.jsonl`` (one line per run), ``bench.md`` (per task the
planted ticket's metrics over the seeds, then a table method × density: first row the reference, mean ± std over
the seeds and how many seeds' budgets hold the planted ticket; cells test metric mean ± std over seeds · the gap to
the reference, seed by seed (Δ = metric − reference for accuracy, ratio metric / reference for MSE, averaged
over seeds; geometric mean for the ratio) · J+ / R+ the Jaccard and recall lifts of the weight masks · bR+ the bias
masks' recall lift) and, when matplotlib is importable, ``<task>.png`` (test metric and Jaccard lift against
density, log x, one line per method).

Protocols (``protocol``, ``--protocol``): "ours" runs every method under our defaults (SearchConfig: lr 0.2,
batch 64, cosine per step, best validation epoch, no weight decay) and :data:`OURS` (supermask at lr 100: σ' ≤ 1/4
scales its gradient down; synflow's 100 rounds, as Tanaka et al.); "original" runs each method under its paper's
preset (``strongticket.search.presets.PRESET_OF``, docs/presets.md: Plant 'n' Seek's fischer2022 for annealed
edge-popup, ramanujan2020 for edge-popup, ...; last epoch). In both the budget (density, scope, bias density) is
the benchmark's, so every method competes for the masks the reference is cut to, and every trained method gets the
same step budget: ``epochs`` epochs at batch 64 (:data:`STEP_BATCH`), a method with another batch size running
as many epochs as fit (``bench.md`` lists each method's epochs and batch size).
No setting was tuned on these tasks. A method named here that is not registered is skipped and listed.
snip and grasp score with a cross-entropy saliency and refuse the regression tasks: "n/a: needs
classification". Methods that do not train ignore ``epochs`` (it is pinned to 1, so changing ``--epochs`` keeps
their finished runs). Sizes: full = seeds 0,1,2,3,4 and 10 epochs; quick (:data:`QUICK`) = seed 0, 2 epochs,
batch 256, a smoke test that finishes in minutes on 2 cores. One out folder holds one configuration: a run
folder of another configuration is refused (choose another ``--out``).

    run_bench("runs/plant-bench-quick", quick=True)      # == strongticket plant --bench --quick
"""

from __future__ import annotations

import json
import math
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
from ..data.splits import PLANTED_TASK_SEED, load_splits
from ..files import atomic_write
from ..report import mean_std
from ..search import run_search
from ..search.methods import METHODS
from ..search.presets import PRESET_OF
from .budget import best_within_budget, budget, budget_rule
from .cli import plant_report
from .plant import plant_task
from .recovery import masked_task_metric, task_metric_name
from .targets import TASKS
from .tasks import make_task

__all__ = ["DENSITIES", "DEPTH", "FULL", "OURS", "PROTOCOLS", "QUICK", "WIDTH", "default_methods", "run_bench"]

DEPTH, WIDTH = 5, 100
DENSITIES: tuple[float | str, ...] = (0.5, 0.1, 0.01, "planted")
FULL: dict[str, Any] = {"seeds": (0, 1, 2, 3, 4), "epochs": 10}
QUICK: dict[str, Any] = {"seeds": (0,), "epochs": 2, "batch_size": 256}

PROTOCOLS = ("ours", "original")
# "ours": our defaults (SearchConfig), and the two per-method values every benchmark gives these methods
OURS: dict[str, dict[str, Any]] = {"supermask": {"lr": 100.0}, "synflow": {"rounds": 100}}
STEP_BATCH = 64  # the step budget is ``epochs`` epochs at this batch size, the same for every method


# run_search refuses these on regression data: their saliency is a cross-entropy
_NEEDS_CLASSIFICATION = ("snip", "grasp")
_NOT_REGISTERED = "not registered in strongticket.search.methods.METHODS"
_MARKERS = "osD^v<>ph*X"


def default_methods() -> tuple[str, ...]:
    """Every registered method, then the methods :data:`OURS` prepares for that are not registered yet."""
    return (*METHODS, *(name for name in OURS if name not in METHODS))


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


def _config(task: str, algo: str, label: float | str, planted_density: float, seed: int, epochs: int, quick: bool,
            folder: Path, device: str, scaled: bool = False, protocol: str = "ours") -> SearchConfig:
    """``algo``'s run: our defaults (+ :data:`OURS`) or its paper's preset (``presets.PRESET_OF``), the benchmark's
    budget (density, scope, bias density) in both, and ``epochs`` epochs at batch :data:`STEP_BATCH` worth of
    optimizer steps whatever the method's batch size (quick: every trained method at batch 256)."""
    trains = METHODS[algo].trains
    values: dict[str, Any] = {
        "data": f"planted-{task}", "model": "planted-scaled" if scaled else "planted",
        "widths": (WIDTH,) * (DEPTH - 2), "algo": algo, **budget_rule(label, planted_density),
        "seed": seed, "out": str(folder), "device": device,
        **({"preset": PRESET_OF[algo]} if protocol == "original" else OURS.get(algo, {})),
    }
    if quick and trains:
        values["batch_size"] = QUICK["batch_size"]
    if not trains:
        return SearchConfig.from_dict({**values, "epochs": 1}, source=f"bench settings of {algo}")
    probe = SearchConfig.from_dict(values, source=f"bench settings of {algo}")
    steps_per_epoch = -(-_train_size(task) // probe.batch_size)
    budget_steps = epochs * -(-_train_size(task) // (QUICK["batch_size"] if quick else STEP_BATCH))
    values["epochs"] = max(1, budget_steps // steps_per_epoch)
    if algo == "gem-miner":  # at least one freezing round and an epoch after it
        values["epochs"] = max(values["epochs"], 2)
        if probe.freeze_every > values["epochs"] - 2:
            values["freeze_every"] = max(values["epochs"] - 2, 0)
    return SearchConfig.from_dict(values, source=f"bench settings of {algo}")


_TRAIN_SIZES: dict[str, int] = {}


def _train_size(task: str) -> int:
    """Training examples of ``planted-<task>`` (the split every search of the benchmark trains on)."""
    if task not in _TRAIN_SIZES:
        _TRAIN_SIZES[task] = len(load_splits(f"planted-{task}").train)
    return _TRAIN_SIZES[task]


def _references(task: str, seed: int, labels: Sequence[float | str], scaled: bool = False) -> dict[str, Any]:
    """Per density label: the planted ticket of ``seed`` on the split the searches are tested on (its density and
    test metrics with outputs / scale, raw, and as searched), whether the label's budget holds it, and the planted
    ticket cut to that budget (outputs / scale, raw, as searched)."""
    p = plant_task(task, DEPTH, WIDTH, seed)
    data = make_task(task, seed=PLANTED_TASK_SEED, n=10_000)
    args = (p, list(p.masks), data.x_test, data.y_test, list(p.bias_masks))
    planted = {
        "planted_density": p.density,
        "planted_test_metric": masked_task_metric(*args, scaled=True),
        "planted_test_metric_raw": masked_task_metric(*args, scaled=False),
    }
    planted["planted_test_metric_as_searched"] = planted["planted_test_metric" if scaled else "planted_test_metric_raw"]
    out = {}
    for label in labels:
        b = budget(p, **budget_rule(label, p.density))
        best = best_within_budget(p, b, data)
        out[_label(label)] = {
            **planted, "scope": b.scope, "bias_density": b.bias_density, "representable": best["representable"],
            "best_within_budget": best["metric"], "best_within_budget_raw": best["raw_metric"],
            "best_within_budget_as_searched": best["metric" if scaled else "raw_metric"],
        }
    return out


def _recovery(task: str, ticket: Path) -> dict[str, Any]:
    r = plant_report(task, masks_path=str(ticket))
    weights = r["recovery_summary"]
    biases = r.get("bias_recovery_summary") or dict.fromkeys(weights)
    return {
        **weights, **{f"bias_{key}": value for key, value in biases.items()},
        "layer_jaccard": [rec["jaccard"] for rec in r["recovery"]],
        "layer_jaccard_lift": [rec["jaccard_lift"] for rec in r["recovery"]],
        "planted_path_survives": r["planted_path_survives"],
        "has_path": r["has_path"],
        "found_test_metric": r["found_test_metric"],
    }


def _run_one(task: str, algo: str, label: float | str, planted_density: float, seed: int, epochs: int, quick: bool,
             out: Path, device: str, scaled: bool = False, protocol: str = "ours") -> dict[str, Any]:
    folder = out / "runs" / task / algo / f"d{_label(label)}-s{seed}"
    density = planted_density if label == "planted" else float(label)
    record: dict[str, Any] = {"task": task, "method": algo, "density_label": _label(label), "density": density,
                              "seed": seed, "metric": task_metric_name(task), "run_dir": str(folder)}
    if algo not in METHODS:
        return {**record, "status": "skipped", "note": _NOT_REGISTERED}
    cfg = _config(task, algo, label, planted_density, seed, epochs, quick, folder, device, scaled, protocol)
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
    return (f"{head}  {metric} {_fmt(r['test_metric'], r['metric'])} (ref "
            f"{_fmt(r['best_within_budget_as_searched'], r['metric'])})  jaccard {r['jaccard']:.4f} (lift "
            f"{r['jaccard_lift']:+.4f})  recall lift {r['recall_lift']:+.3f}  "
            f"{r['seconds']:.1f} s{'  (finished before)' if r['cached'] else ''}")


def _command(out: Path, tasks: Sequence[str], algos: Sequence[str], densities: Sequence[float | str],
             seeds: Sequence[int], epochs: int, quick: bool, scaled: bool = False, protocol: str = "ours") -> str:
    args = ["strongticket", "plant", "--bench", *(["--quick"] if quick else []),
            *(["--scaled"] if scaled else []), "--protocol", protocol, "--out", str(out),
            "--tasks", ",".join(tasks), "--algos", ",".join(algos),
            "--densities", ",".join(_label(d) for d in densities), "--seeds", ",".join(map(str, seeds)),
            "--epochs", str(epochs)]
    return shlex.join(args)


def run_bench(out_dir: str | Path, *, tasks: Sequence[str] = TASKS, methods: Sequence[str] | None = None,
              densities: Sequence[float | str] = DENSITIES, seeds: Sequence[int] | None = None,
              epochs: int | None = None, quick: bool = False, progress: bool = True,
              device: str = "cpu", scaled: bool = False, protocol: str = "ours") -> Path:
    """Run (or resume) the benchmark into ``out_dir``; returns the path of ``bench.md``.

    ``scaled``: search ``planted-scaled`` (outputs / planting scale: the planted masks solve the task exactly)
    instead of ``planted`` (raw outputs, Plant 'n' Seek's network).
    ``protocol``: "ours" (our defaults) or "original" (each method under its paper's preset); ``epochs`` is the step
    budget in epochs at batch :data:`STEP_BATCH` (a method with another batch size runs as many epochs as fit).
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
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    references = {(task, seed): _references(task, seed, densities, scaled) for task in tasks for seed in seeds}
    records = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for task in tasks:
            for algo in algos:
                for d in densities:
                    for seed in seeds:
                        ref = references[task, seed][_label(d)]
                        r = {**_run_one(task, algo, d, ref["planted_density"], seed, epochs, quick, out, device,
                                        scaled, protocol), **ref}
                        records.append(r)
                        if progress:
                            print(_progress_line(r), flush=True)
    finally:
        torch.set_num_threads(threads)
    atomic_write(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    meta = {"command": _command(out, tasks, algos, densities, seeds, epochs, quick, scaled, protocol),
            "wall_seconds": time.perf_counter() - start, "device": device, "quick": quick, "scaled": scaled,
            "protocol": protocol}
    path = _write_report(out, records, meta)
    if progress:
        print(f"wrote {path}")
    return path


def _gap(runs: list[dict[str, Any]]) -> str:
    """The cell's metric against each seed's own reference: mean Δ (accuracy) or geometric-mean ratio (MSE)."""
    pairs = [(r["test_metric"], r["best_within_budget_as_searched"]) for r in runs]
    if runs[0]["metric"] == "accuracy":
        return f"Δ {sum(m - ref for m, ref in pairs) / len(pairs):+.3f}"
    if any(m <= 0 or ref <= 0 for m, ref in pairs):
        return "× n/a"
    return f"× {math.exp(sum(math.log(m / ref) for m, ref in pairs) / len(pairs)):.3g}"


def _mean(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs if r[key] is not None]
    return "n/a" if not values else f"{sum(values) / len(values):+.3f}"


# achieved density above 1.05 × the column's + 0.001: the run ignored the budget. ⌈·⌉ rounding stays far below
# (at the planted density ReLU keeps ⌈ρ·N⌉ = 5 of 20,200 weights for its 4: +5e-5).
_OVER_BUDGET, _OVER_BUDGET_SLACK = 1.05, 1e-3


def _cell(runs: list[dict[str, Any]]) -> str:
    if runs[0]["status"] != "ok":
        return f"{runs[0]['status']}: {runs[0]['note']}"
    metric = runs[0]["metric"]
    m, s = mean_std([r["test_metric"] for r in runs])
    collapsed = sum(bool(r["collapsed_layers"]) for r in runs)
    text = (f"{_fmt(m, metric)} ± {_fmt(s, metric)} · {_gap(runs)} · J+ {_mean(runs, 'jaccard_lift')} · "
            f"R+ {_mean(runs, 'recall_lift')} · bR+ {_mean(runs, 'bias_recall_lift')}")
    text += f" · collapsed {collapsed}/{len(runs)}" if collapsed else ""
    # A method without a density target (supermask under zhou2019: every weight a Bernoulli draw) keeps what it
    # learns: such a cell is not a ticket within the column's budget, and says so with the density it kept.
    over = [r["achieved_density"] for r in runs
            if r["achieved_density"] > _OVER_BUDGET * r["density"] + _OVER_BUDGET_SLACK]
    return text + (f" · **over budget** {len(over)}/{len(runs)}: kept {sum(over) / len(over):.3g}" if over else "")


def _reference_cell(refs: list[dict[str, Any]], metric: str) -> str:
    m, s = mean_std([r["best_within_budget_as_searched"] for r in refs])
    held = sum(r["representable"] for r in refs)
    return f"{_fmt(m, metric)} ± {_fmt(s, metric)} (representable {held}/{len(refs)})"


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
    searched = "outputs / scale" if meta["scaled"] else "raw outputs"
    lines = [
        "# Planted-ticket benchmark", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} (1 thread), device "
        f"{meta['device']}. Wall time {meta['wall_seconds']:.1f} s ({sum(not r['cached'] for r in ok)} runs searched "
        f"now, {sum(r['cached'] for r in ok)} finished before); search time over all runs "
        f"{sum(r['seconds'] for r in ok):.1f} s.", "",
        f"Network: depth {DEPTH} × width {WIDTH} (`--model {'planted-scaled' if meta['scaled'] else 'planted'}`, "
        f"{searched}); seeds {','.join(map(str, seeds))}; {'quick size' if meta['quick'] else 'full size'}. "
        f"Budget: ⌈d·n⌉ weights per layer at a numeric density d, ⌈ρ·N⌉ under one global threshold at the planted "
        f"density ρ; every bias may be kept. Reference row: the planted ticket of each seed cut to the cell's budget "
        f"(itself where representable), test metric in the network as searched, mean ± std over seeds. Cells: test "
        f"metric mean ± std over seeds · gap to the same seed's reference (Δ metric − reference for accuracy, × "
        f"metric / reference for MSE, geometric mean) · J+ / R+ Jaccard and recall of the found vs the planted "
        f"weights minus a random mask's expectation at the same per-layer density (0 = chance; per layer, averaged "
        f"over layers and seeds) · bR+ the same recall lift for the bias masks (n/a: no planted bias); collapsed: "
        f"runs with a layer that keeps no weight; over budget: runs whose mask kept more than the column's density "
        f"(a method with no density target), with the mean density they kept.",
    ]
    skipped = [a for a in algos if any(r["method"] == a and r["status"] == "skipped" for r in records)]
    if skipped:
        lines += ["", f"Skipped, {_NOT_REGISTERED}: {', '.join(skipped)}."]
    shown = [a for a in algos if a not in skipped]
    for task in tasks:
        groups = _groups(records, task)
        metric = next(r["metric"] for r in records if r["task"] == task)
        first = [next(r for r in records if r["task"] == task and r["seed"] == seed) for seed in seeds]
        planted = [r["planted_density"] for r in first]
        heads = [f"planted ({min(planted):.4f})" if label == "planted" else label for label in labels]
        target, raw = mean_std([r["planted_test_metric"] for r in first]), \
            mean_std([r["planted_test_metric_raw"] for r in first])
        refs = {label: [next(r for r in records if r["task"] == task and r["seed"] == seed
                             and r["density_label"] == label) for seed in seeds] for label in labels}
        lines += ["", f"## {task}: test {metric}", "",
                  f"Planted ticket (weight and bias masks of the planting, {min(planted):.4f} of the weights), mean ± "
                  f"std over seeds {','.join(map(str, seeds))}: {_fmt(target[0], metric)} ± {_fmt(target[1], metric)} "
                  f"with outputs / planting scale (the target); {_fmt(raw[0], metric)} ± {_fmt(raw[1], metric)} with "
                  f"raw outputs.", "",
                  f"| method | {' | '.join(heads)} |", f"|---|{'---|' * len(labels)}",
                  f"| planted ticket cut to the budget | "
                  f"{' | '.join(_reference_cell(refs[label], metric) for label in labels)} |"]
        for algo in shown:
            cells = [_cell(groups[algo, label]) for label in labels]
            lines.append(f"| {algo} | {' | '.join(cells)} |")
    protocol = meta.get("protocol", "ours")
    lines += ["", "## Settings", "", f"Protocol {protocol}: "
              + ("each method under its paper's preset (docs/presets.md), " if protocol == "original" else
                 "our defaults (SearchConfig) and the values below, ")
              + "the benchmark's budget (density, scope, bias density) and one step budget; per method the epochs "
              f"and batch size it ran{' (quick: batch ' + str(QUICK['batch_size']) + ')' if meta['quick'] else ''}:",
              "", "| method | settings | epochs | batch |", "|---|---|---|---|"]
    ran = {r["method"]: r for r in ok}
    for a in algos:
        setting = f"preset {PRESET_OF[a]}" if protocol == "original" and a in PRESET_OF else json.dumps(OURS.get(a, {}))
        r = ran.get(a, {})
        lines.append(f"| {a} | {setting} | {r.get('epochs', '-')} | {r.get('batch_size', '-')} |")
    plots = _plots(out, ok)
    if plots is None:
        lines += ["", "(plots skipped: matplotlib is not installed; `pip install matplotlib`)"]
    else:
        lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    return atomic_write(out / "bench.md", "\n".join(lines) + "\n")


def _plots(out: Path, ok: list[dict[str, Any]]) -> list[Path] | None:
    """Per task: test metric and Jaccard lift against density (log x), one line per method, error bars = std; None
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
                               mean_std([r["test_metric"] for r in group]),
                               mean_std([r["jaccard_lift"] for r in group])))
            points.sort()
            xs = [p[0] for p in points]
            colour = plt.get_cmap("tab20")(i % 20)  # 20 colours: every method its own, and its own marker
            for ax, k in zip(axes, (1, 2)):
                ax.errorbar(xs, [p[k][0] for p in points], yerr=[p[k][1] for p in points], capsize=2, label=algo,
                            marker=_MARKERS[i % len(_MARKERS)], color=colour)
        planted = runs[0]["planted_density"]
        for ax, ylabel in zip(axes, (f"test {runs[0]['metric']}", "Jaccard lift (found vs planted, minus chance)")):
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

