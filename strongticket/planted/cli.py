"""``strongticket plant``: build a planted network and print its ground truth, or run the planted benchmark.

    strongticket plant --task circle|relu|helix [--depth 5] [--width 100] [--seed 0] [--quick] [--json]
                       [--density D|planted [--scope layer|global] [--bias-density DB]]
                       [--masks FOUND.npz|TICKET.safetensors]
    strongticket plant --bench [--quick] [--scaled] [--out DIR] [--tasks circle,relu,helix] [--algos a,b,...]
                       [--densities 0.5,0.1,0.01,planted] [--seeds 0,1,2] [--epochs 10]

Prints the planted weights and density per layer and in total (weights only, as the paper), the planted biases,
and the planted ticket's test metric (accuracy / MSE): ``planted_metric`` = the planted masks' outputs divided by
the planting scale (the target's metric), float64; ``planted_metric_float32`` the same through strongticket's
MaskedLinear layers; ``raw_metric`` = the raw outputs (the network as ``--model planted`` searches it), float64
(equal to ``planted_metric`` for Circle, whose logits share one scale). ``--density`` adds the budget of a search at
that density (:mod:`strongticket.planted.budget`; default the benchmark's rule: per layer for a number, one global
threshold at the planted density for ``planted``, every bias kept; ``--scope`` / ``--bias-density`` override it),
``representable`` (the planted ticket fits in it) and ``best_within_budget`` (the planted ticket cut to it, test
metric with outputs / scale; ``best_within_budget_raw`` with raw outputs).
``--masks`` takes an ``.npz`` with arrays ``mask0 .. mask{L-1}`` (bool, (n_out, n_in)) and optionally
``bias_mask0 ..`` (bool, (n_out,)), or a ticket (``.safetensors``) searched on ``planted-<task>``, and adds their
recovery metrics (per layer, and summarised with lifts over a random mask of the same density:
:mod:`strongticket.planted.recovery`; the same for the bias masks when there are some) and task metric (the found
masks applied to the mother network, outputs / planting scale). A ticket searched with ``--model planted`` or
``planted-scaled`` masks this very mother network: depth, width and seed default to the ticket's own (the mother
network is drawn from the ticket's seed; giving other values is an error), and its task metric is the ticket's own
network (weight and bias masks; raw outputs for ``planted``, outputs / scale for ``planted-scaled``) on the test
split it was searched on (data seed ``PLANTED_TASK_SEED``), i.e. ``strongticket eval``'s metric up to float32
rounding, printed next to the planted masks' metric in that same network. A ticket searched with an mlp of
matching hidden widths (``depth - 2`` layers of ``width``) masks strongticket's own frozen random weights, not
this mother network, so its recovery is that of an unplanted search (a baseline). Without a planted ticket,
depth, width and seed default to 5, 100 and 0.
``--quick`` uses n = 2,000 samples.

``--bench`` runs :func:`strongticket.planted.bench.run_bench` instead: every method at each density on each task
(depth 5 × width 100, ``--model planted``, or ``planted-scaled`` with ``--scaled``), one progress line per run,
then ``results.jsonl``, ``bench.md`` and plots in ``--out`` (default ``runs/plant-bench[-scaled][-quick]``);
``--quick`` then means the quick size (seed 0, 2 epochs). Running the same command again skips the finished runs.
``--algos`` defaults to every registered method (and lists those the benchmark has settings for that are not
registered yet as skipped); ``--seeds`` / ``--epochs`` to the size's. The single-network
options (``--task``, ``--depth``, ``--width``, ``--seed``, ``--density``, ``--scope``, ``--bias-density``,
``--masks``, ``--json``) do not combine with
``--bench``, nor the bench options with it absent. ``add_plant_parser(subparsers)`` registers the command;
a bad value raises a one-line ValueError (``cli.main`` prints it and exits 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.splits import PLANTED_TASK_SEED
from .budget import SCOPES, best_within_budget, budget, budget_rule
from .plant import Planted, plant_task, planted_model
from .recovery import (
    has_path,
    mask_recovery,
    masked_task_metric,
    planted_path_survives,
    recovery_summary,
    task_metric,
    task_metric_name,
)
from .targets import TASKS
from .tasks import make_task

__all__ = ["PLANTED_MODELS", "add_plant_parser", "plant_report"]

PLANTED_MODELS = ("planted", "planted-scaled")


def _load_masks(path: str, p: Planted) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Weight masks per layer, bool (n_out, n_in), and bias masks (bool (n_out,), None when the file has none), from
    an ``.npz`` (``mask0..``, ``bias_mask0..``) or a ticket ``.safetensors``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"masks file not found: {path}")
    if path.endswith(".safetensors"):
        return _ticket_masks(path, p), _ticket_bias_masks(path)
    from ..files import check_zip

    weights = sum(int(np.asarray(m).size) + int(np.asarray(m).shape[0]) for m in p.masks)
    check_zip(Path(path), 8 * weights + (1 << 20), ValueError, "masks file")  # at most 8 bytes per mask entry
    with np.load(path, allow_pickle=False) as z:
        missing = [f"mask{i}" for i in range(len(p.masks)) if f"mask{i}" not in z]
        if missing:
            raise ValueError(f"masks file must hold mask0..mask{len(p.masks) - 1}, missing {', '.join(missing)}")
        masks = [z[f"mask{i}"].astype(bool) for i in range(len(p.masks))]
        if not any(key.startswith("bias_mask") for key in z):
            return masks, None
        missing = [f"bias_mask{i}" for i in range(len(p.masks)) if f"bias_mask{i}" not in z]
        if missing:
            raise ValueError(f"masks file with bias masks must hold bias_mask0..bias_mask{len(p.masks) - 1}, "
                             f"missing {', '.join(missing)}")
        return masks, [z[f"bias_mask{i}"].astype(bool) for i in range(len(p.masks))]


def _planted_ticket(path: str | None) -> dict[str, Any] | None:
    """The config of ``path`` if it is a ticket searched with ``--model planted`` or ``planted-scaled``, else None."""
    if path is None or not path.endswith(".safetensors") or not Path(path).is_file():
        return None
    from ..ticket import read_ticket

    config = read_ticket(path).config
    return config if config.get("model") in PLANTED_MODELS else None


def _ticket_bias_masks(path: str) -> list[np.ndarray] | None:
    """The ticket's bias masks, or None unless every layer has one (a ticket searched without masked biases)."""
    from ..ticket import read_ticket

    masks = read_ticket(path).bias_masks
    return None if any(m is None for m in masks) else [m.cpu().numpy().astype(bool) for m in masks]


def _ticket_masks(path: str, p: Planted) -> list[np.ndarray]:
    """The masks of a ticket searched on ``planted-<p.task>``; its layer shapes must be the mother network's."""
    from ..ticket import read_ticket

    ticket = read_ticket(path)
    data = ticket.config.get("data")
    if data != f"planted-{p.task}":
        raise ValueError(f"ticket {path} must be searched on planted-{p.task}, got data {data!r}")
    if ticket.config.get("model") in PLANTED_MODELS and ticket.config.get("seed") != p.seed:
        raise ValueError(f"ticket {path} was searched on the network planted with seed {ticket.config.get('seed')}, "
                         f"got seed {p.seed}")
    masks = [m.cpu().numpy().astype(bool) for m in ticket.masks]
    shapes = [tuple(m.shape) for m in masks]
    want = [tuple(w.shape) for w in p.weights]
    if shapes != want:
        raise ValueError(f"ticket {path} must have layer shapes {want} (depth {p.depth}, width {p.width}), "
                         f"got {shapes}")
    return masks


def _resolve(name: str, given: int | None, from_ticket: int | None, default: int, path: str | None) -> int:
    if from_ticket is None:
        return default if given is None else given
    if given is not None and given != from_ticket:
        raise ValueError(f"ticket {path} was searched with --model planted at {name} {from_ticket}, got {name} {given}")
    return from_ticket


MAX_PLANTED_WEIGHTS = 1 << 26
"""Most weights a mother network may have (float64 planting: 8 bytes each, several copies)."""


def _check_size(task: str, depth: Any, width: Any, ticket: str | None) -> None:
    """Before anything is planted: sizes within :data:`MAX_PLANTED_WEIGHTS`, and a ticket's config (which chose
    depth and width) must describe the masks it stores."""
    from .tasks import task_dims

    for name, value in (("depth", depth), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    d_in, d_out = task_dims(task)
    dims = [d_in, *[width] * (depth - 2), d_out]
    shapes = [(dims[k + 1], dims[k]) for k in range(len(dims) - 1)]
    weights = sum(a * b for a, b in shapes)
    if ticket is not None:
        from ..ticket import check_ticket_shapes, read_ticket

        check_ticket_shapes(read_ticket(ticket), shapes)
    if weights > MAX_PLANTED_WEIGHTS:
        raise ValueError(f"a planted network of depth {depth} and width {width} has {weights:,} weights, more than "
                         f"the {MAX_PLANTED_WEIGHTS:,} allowed (MAX_PLANTED_WEIGHTS)")


def plant_report(task: str, depth: int | None = None, width: int | None = None, seed: int | None = None, *,
                 quick: bool = False, masks_path: str | None = None, density: float | str | None = None,
                 scope: str | None = None, bias_density: float | None = None) -> dict[str, Any]:
    """Everything ``strongticket plant`` prints, as a dict (None: the planted ticket's value, else the default).
    ``density`` (a number or ``"planted"``) adds the budget there: :func:`~strongticket.planted.budget.budget_rule`,
    with ``scope`` / ``bias_density`` overriding it."""
    if density is None and (scope is not None or bias_density is not None):
        raise ValueError("scope and bias_density need a density (--density)")
    cfg = _planted_ticket(masks_path)
    widths = cfg.get("widths") or (100, 100, 100) if cfg is not None else None
    depth = _resolve("depth", depth, None if cfg is None else len(widths) + 2, 5, masks_path)
    width = _resolve("width", width, None if cfg is None else widths[0], 100, masks_path)
    seed = _resolve("seed", seed, None if cfg is None else cfg.get("seed"), 0, masks_path)
    _check_size(task, depth, width, masks_path if cfg is not None else None)
    p = plant_task(task, depth, width, seed)
    data = make_task(task, seed=seed, n=2_000 if quick else 10_000)
    model = planted_model(p)
    with torch.no_grad():
        out32 = model(torch.from_numpy(data.x_test).float()).double().numpy()
    raw = p.forward(data.x_test)
    report: dict[str, Any] = {
        "task": task, "depth": depth, "width": width, "seed": seed, "widths": list(p.widths),
        "layers": [{"layer": i, "planted": k, "total": n, "density": k / n, "planted_biases": kb, "biases": nb}
                   for i, (k, n, kb, nb) in enumerate(zip(p.planted_counts, p.total_counts, p.planted_bias_counts,
                                                          p.widths[1:]))],
        "planted": sum(p.planted_counts), "total": sum(p.total_counts), "planted_density": p.density,
        "planted_biases": sum(p.planted_bias_counts), "fallbacks": p.fallbacks, "scale": p.scale.tolist(),
        "metric": task_metric_name(task), "test_size": len(data.y_test),
        "planted_metric": task_metric(task, raw / p.scale, data.y_test),
        "planted_metric_float32": task_metric(task, out32, data.y_test),  # the model's read-out divides by scale
        "raw_metric": task_metric(task, raw, data.y_test),
    }
    if density is not None:
        rule = budget_rule(density, p.density)
        rule["scope"] = rule["scope"] if scope is None else scope
        rule["bias_density"] = rule["bias_density"] if bias_density is None else bias_density
        b = budget(p, **rule)
        best = best_within_budget(p, b, data)
        report.update({"budget": b.as_dict(), "representable": best["representable"],
                       "best_within_budget": best["metric"], "best_within_budget_raw": best["raw_metric"],
                       "cut_weights": best["cut_weights"], "cut_biases": best["cut_biases"]})
    if masks_path is not None:
        found, found_bias = _load_masks(masks_path, p)
        layers = mask_recovery(found, p.masks)
        report["recovery"] = [r.as_dict() for r in layers]
        report["recovery_summary"] = recovery_summary(layers)
        if found_bias is not None:
            bias_layers = mask_recovery(found_bias, p.bias_masks)
            report["bias_recovery"] = [r.as_dict() for r in bias_layers]
            report["bias_recovery_summary"] = recovery_summary(bias_layers)
        report["planted_path_survives"] = planted_path_survives(found, p.masks)
        report["has_path"] = has_path(found)
        if cfg is None:
            report["found_test_metric"] = masked_task_metric(p, found, data.x_test, data.y_test, found_bias)
        else:  # the ticket's own network on the test split it was searched on
            searched = make_task(task, seed=PLANTED_TASK_SEED, n=10_000)
            scaled = cfg["model"] == "planted-scaled"
            report["found_test_metric"] = masked_task_metric(p, found, searched.x_test, searched.y_test, found_bias,
                                                             scaled=scaled)
            report["planted_test_metric_as_searched"] = masked_task_metric(
                p, list(p.masks), searched.x_test, searched.y_test, list(p.bias_masks), scaled=scaled)
            report["scaled_outputs"] = scaled
        report["found_on_planted_network"] = cfg is not None
    return report


def _lift(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _print(r: dict[str, Any]) -> None:
    print(f"planted {r['task']} ticket in widths {r['widths']} (depth {r['depth']}, seed {r['seed']})")
    for layer in r["layers"]:
        print(f"  layer {layer['layer']}: {layer['planted']:>6} / {layer['total']:>6}  density {layer['density']:.4f}"
              f"  biases {layer['planted_biases']} / {layer['biases']}")
    print(f"  total  : {r['planted']:>6} / {r['total']:>6}  density {r['planted_density']:.4f}  "
          f"(fallbacks {r['fallbacks']})")
    print(f"  planted ticket test {r['metric']} (n={r['test_size']}): outputs / scale {r['planted_metric']:.6g} "
          f"(MaskedLinear float32 {r['planted_metric_float32']:.6g}), raw outputs {r['raw_metric']:.6g}")
    if "budget" in r:
        b = r["budget"]
        kept = (f"weights {b['weights']} per layer" if b["scope"] == "layer" else f"{b['total']} weights in all")
        print(f"  budget at density {b['density']:.4g} ({b['scope']}): {kept}, biases {b['biases']}; planted ticket "
              f"representable: {r['representable']}; best within budget (the planted ticket cut by "
              f"{r['cut_weights']} weights, {r['cut_biases']} biases): {r['best_within_budget']:.6g}, raw outputs "
              f"{r['best_within_budget_raw']:.6g}")
    if "recovery" in r:
        for rec in r["recovery"]:
            print(f"  found layer {rec['layer']}: precision {rec['precision']:.4f} recall {rec['recall']:.4f} "
                  f"jaccard {rec['jaccard']:.4f}  lift over random: recall {_lift(rec['recall_lift'])} "
                  f"jaccard {_lift(rec['jaccard_lift'])}")
        for name in ("recovery_summary", "bias_recovery_summary"):
            if name in r:
                m = r[name]
                what = "biases" if name.startswith("bias") else "weights"
                print(f"  {what}, mean over layers with planted entries: recall lift {_lift(m['recall_lift'])}, "
                      f"jaccard lift {_lift(m['jaccard_lift'])}")
        print(f"  planted path survives: {r['planted_path_survives']}; input-output path: {r['has_path']}; "
              f"found ticket test {r['metric']}: {r['found_test_metric']:.6g}")
        if "planted_test_metric_as_searched" in r:
            readout = "outputs / scale" if r["scaled_outputs"] else "raw outputs, as Plant 'n' Seek"
            print(f"  the planted masks in the searched network ({readout}): test {r['metric']} "
                  f"{r['planted_test_metric_as_searched']:.6g}")


def _ticket_task(path: str) -> str | None:
    """The task a ticket was searched on (``planted-<task>``), or None for .npz masks and other tickets."""
    if not str(path).endswith(".safetensors"):
        return None
    from ..ticket import read_ticket

    data = str(read_ticket(path).config.get("data", ""))
    return data[len("planted-"):] if data.startswith("planted-") else None


_SINGLE = ("task", "depth", "width", "seed", "density", "scope", "bias_density", "masks")
_BENCH = ("out", "tasks", "algos", "densities", "seeds", "epochs", "scaled", "protocol")


def _csv(text: str, name: str, kind: type) -> tuple[Any, ...]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(kind(item) for item in items)
    except ValueError:
        kinds = {int: "integers", str: "names"}[kind]
        raise ValueError(f"{name} must be comma-separated {kinds}, got {text!r}") from None


def _density(item: str, name: str = "densities") -> float | str:
    if item == "planted":
        return item
    try:
        return float(item)
    except ValueError:
        what = "densities must be numbers" if name == "densities" else f"{name} must be a number"
        raise ValueError(f"{what} in (0, 1] or 'planted', got {item!r}") from None


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number in (0, 1], got {text!r}") from None


def _epochs(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"epochs must be an integer in [1, 100000], got {text!r}") from None


def _run_bench(ns: argparse.Namespace) -> int:
    from .bench import run_bench

    given = [f"--{name}" for name in _SINGLE if getattr(ns, name) is not None] + (["--json"] if ns.json else [])
    if given:
        raise ValueError(f"--bench takes --tasks, --algos, --densities, --seeds, --epochs, --scaled, --protocol and "
                         f"--out, not "
                         f"{', '.join(given)}")
    kwargs: dict[str, Any] = {}
    if ns.tasks is not None:
        kwargs["tasks"] = _csv(ns.tasks, "tasks", str)
    if ns.algos is not None:
        kwargs["methods"] = _csv(ns.algos, "algos", str)
    if ns.densities is not None:
        kwargs["densities"] = tuple(_density(d) for d in _csv(ns.densities, "densities", str))
    if ns.seeds is not None:
        kwargs["seeds"] = _csv(ns.seeds, "seeds", int)
    if ns.epochs is not None:
        kwargs["epochs"] = _epochs(ns.epochs)
    protocol = ns.protocol or "ours"
    out = ns.out or ("runs/plant-bench" + ("-original" if protocol == "original" else "")
                     + ("-scaled" if ns.scaled else "") + ("-quick" if ns.quick else ""))
    run_bench(out, quick=ns.quick, progress=True, scaled=bool(ns.scaled), protocol=protocol, **kwargs)
    return 0


def _run(ns: argparse.Namespace) -> int:
    if ns.bench:
        return _run_bench(ns)
    given = [f"--{name}" for name in _BENCH if getattr(ns, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --bench")
    task = ns.task
    if task is None:
        task = (_ticket_task(ns.masks) if ns.masks else None) or "circle"
    density = None if ns.density is None else _density(ns.density, "density")
    bias_density = None if ns.bias_density is None else _number("bias_density", ns.bias_density)
    r = plant_report(task, ns.depth, ns.width, ns.seed, quick=ns.quick, masks_path=ns.masks, density=density,
                     scope=ns.scope, bias_density=bias_density)
    if ns.json:
        print(json.dumps(r))
    else:
        _print(r)
    return 0


def add_plant_parser(subparsers: Any) -> None:
    """Register ``plant`` on an argparse subparsers object."""
    p = subparsers.add_parser("plant", help="plant a Plant 'n' Seek target ticket into a random network",
                              description="Circle / ReLU / Helix target tickets planted into a He-initialised "
                                          "network (Fischer & Burkholz 2022, Algorithm 1).")
    # the task name is checked by make_target/make_task, which say what is wrong in one line (argparse adds usage)
    p.add_argument("--task", default=None,
                   help=f"one of {', '.join(TASKS)} (default: the --masks ticket's task, else circle)")
    p.add_argument("--depth", type=int, default=None,
                   help="layers, input layer counted (default: a --model planted ticket's, else 5)")
    p.add_argument("--width", type=int, default=None, help="hidden width (default: a --model planted ticket's, "
                   "else 100)")
    p.add_argument("--seed", type=int, default=None, help="mother network and data seed (default: a --model "
                   "planted ticket's, else 0)")
    p.add_argument("--quick", action="store_true", help="2,000 samples instead of 10,000; with --bench the quick "
                   "size")
    p.add_argument("--masks", default=None, help=".npz with mask0..mask{L-1}, or a ticket .safetensors searched on "
                   "planted-<task> (--model planted, or an mlp with matching widths): report their recovery")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--density", default=None, help="also report the budget of a search at this density (a number "
                   "in (0, 1], or 'planted'): whether the planted ticket fits, and the planted ticket cut to it")
    # scope is checked by budget(), which says what is wrong in one line (argparse adds usage)
    p.add_argument("--scope", default=None, help=f"with --density: {' or '.join(SCOPES)} budget (default: layer "
                   "for a number, global for planted, as the benchmark)")
    p.add_argument("--bias-density", default=None, help="with --density: fraction of each layer's biases kept "
                   "(default 1, as the benchmark)")
    # the bench options are checked by run_bench, which says what is wrong in one line (argparse adds usage)
    b = p.add_argument_group("benchmark", "every method at each density on the planted tasks (depth 5 x width 100)")
    b.add_argument("--bench", action="store_true", help="run the planted-ticket benchmark instead; with --quick "
                   "its quick size (seed 0, 2 epochs)")
    b.add_argument("--out", default=None, help="benchmark folder (default runs/plant-bench, with --quick "
                   "runs/plant-bench-quick); running the same command again skips the finished runs")
    b.add_argument("--tasks", default=None, help=f"comma-separated tasks (default {','.join(TASKS)})")
    b.add_argument("--algos", default=None, help="comma-separated search methods (default: every registered one)")
    b.add_argument("--densities", default=None, help="comma-separated densities in (0, 1], 'planted' for the "
                   "planted ticket's (default 0.5,0.1,0.01,planted)")
    b.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2,3,4; with --quick 0)")
    b.add_argument("--epochs", default=None, help="step budget: this many epochs at batch 64 for every method "
                   "(default 10; with --quick 2 at batch 256)")
    b.add_argument("--protocol", choices=("ours", "original"), default=None,
                   help="ours (our defaults, the default) or original (each method under its paper's preset, "
                        "docs/presets.md); default out runs/plant-bench-original")
    b.add_argument("--scaled", action="store_const", const=True, default=None,
                   help="search planted-scaled (outputs / planting scale: the planted masks solve the task exactly) "
                        "instead of planted (raw outputs, as Plant 'n' Seek); default out runs/plant-bench-scaled")
    p.set_defaults(run=_run)
