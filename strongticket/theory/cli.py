"""``strongticket theory verify | width | sweep``: the constructive proofs from the command line.

    strongticket theory verify --construction pensia --target-widths 5,10,1 --eps 0.01 --delta 0.1 --draws 20
                               [--block calibrated|M|M1,M2] [--subset best|smallest --tol T] [--exact auto|K]
                               [--ticket PATH] [--json]
    strongticket theory verify --construction pensia --target mlp.safetensors [--data mnist --data-root DIR]
                               [--input-radius R]       # a trained MLP, biases allowed; eps in its units
    strongticket theory width  --construction pensia --target-widths 5,10,1 --eps 0.01 --delta 0.1 [--json]
    strongticket theory sweep  --target-widths 5,10,1 --eps 0.01 --draws 5 --out runs/theory-sweep

``add_theory_parser(subparsers)`` registers the group; each handler returns an exit code, a bad value raises a
one-line ValueError naming the field, its allowed range and the value (``cli.main`` prints it and exits 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .constructions import CONSTRUCTIONS, SUBSET_RULES
from .subset_sum import MAX_VALUES

__all__ = ["add_theory_parser"]

_NAMES = tuple(sorted(CONSTRUCTIONS))


def _int_list(text: str, field: str, low: int = 1, high: int = 1 << 20) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{field} must be comma-separated integers, got {text!r}") from None
    for i, v in enumerate(values):
        if not low <= v <= high:
            raise ValueError(f"{field}[{i}] must be an integer in [{low}, {high}], got {v}")
    return values


def _unit(value: float, field: str) -> float:
    if not (0 < value < 1):  # also rejects NaN
        raise ValueError(f"{field} must be in (0, 1), got {value}")
    return value


def _int_in(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"{field} must be an integer in [{low}, {high}], got {value}")
    return value


def _block(text: str, name: str, dims: list[int], eps: float, delta: float) -> list[int]:
    from .widths import calibrated_block

    if text == "calibrated":
        return calibrated_block(name, dims, eps, delta)
    block = _int_list(text, "block", 1 if name == "burkholz" else 2, 1 << 24)
    if len(block) not in (1, len(dims) - 1):
        raise ValueError(f"block must be 'calibrated', one integer or {len(dims) - 1} (one per target layer), "
                         f"got {text!r}")
    return block * (len(dims) - 1) if len(block) == 1 else block


def _available_bytes() -> int | None:
    """Physical memory available now (Linux/macOS ``sysconf``), or None where it cannot be read."""
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_params(name: str, dims: list[int], block: list[int], max_params: int) -> None:
    """The random net of ``name`` at ``block`` must have at most ``max_params`` weights and fit in the memory available
    now: checked before anything is drawn, one line naming both."""
    from .widths import build_bytes, random_net_widths

    widths = random_net_widths(name, dims, block)
    params = sum(a * b for a, b in zip(widths, widths[1:]))
    need = build_bytes(name, dims, block)
    have = _available_bytes()
    if params > max_params or (have is not None and need > have):
        limit = (f"more than max_params {max_params:,} (--max-params)" if params > max_params
                 else f"more than the {_size(have)} of memory available")
        raise ValueError(f"the {name} random net for target {dims} at block {block} has {params:,} weights and needs "
                         f"about {_size(need)} to build, {limit}")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else (f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n:,} bytes")


def _file_target(ns: argparse.Namespace) -> tuple[Any, Any]:
    """(ScaledTarget, test split or None) of ``--target FILE`` [``--data``]; the input radius covers the data."""
    from .trained import input_norm_max, load_target_file

    if ns.target_widths is not None:
        raise ValueError(f"target_widths must not be given with --target (the file fixes them), got "
                         f"{ns.target_widths!r}")
    split = None
    radius = ns.input_radius
    if radius is not None and not 0 < radius < 1e12:  # also rejects NaN
        raise ValueError(f"input_radius must be in (0, 1e12), got {radius}")
    if ns.data is not None:
        from ..data.splits import load_splits

        split = load_splits(ns.data, root=ns.data_root).test
        largest = input_norm_max(split)
        if radius is None:
            radius = largest
        elif radius < largest:
            raise ValueError(f"input_radius must cover the {ns.data} test inputs (max norm {largest:.4g}), "
                             f"got {radius}")
    scaled = load_target_file(ns.target, 1.0 if radius is None else radius)
    return scaled, split


def _verify(ns: argparse.Namespace) -> int:
    from .constructions import build_model, construct
    from .targets import dims_of, random_target
    from .verify import _summarise, pruned_forward, verify_construction

    eps, delta = _unit(ns.eps, "eps"), _unit(ns.delta, "delta")
    if ns.data is not None and ns.target is None:
        raise ValueError(f"data needs --target (the accuracy of a trained target and its ticket), got {ns.data!r}")
    scaled, split = (None, None) if ns.target is None else _file_target(ns)
    if scaled is None:
        dims = _int_list(ns.target_widths or "5,10,1", "target_widths")
        if len(dims) < 2:
            raise ValueError(f"target_widths must list at least 2 widths (input, ..., output), "
                             f"got {ns.target_widths!r}")
    else:
        dims = dims_of(scaled.target)
    # Errors in the target's units: the construction is asked for eps / (S·R) (theory.trained).
    scale = 1.0 if scaled is None else scaled.output_scale
    eps_unit = eps / scale
    if not 0 < eps_unit < 1:
        raise ValueError(f"eps / output_scale must be in (0, 1), got {eps_unit:.3g} (eps {eps}, scale {scale:.4g})")
    draws = _int_in(ns.draws, "draws", 1, 100000)
    _int_in(ns.seed, "seed", 0, 2**32 - 1 - draws)
    _int_in(ns.target_seed, "target_seed", 0, 2**32 - 1 - draws)
    block = _block(ns.block, ns.construction, dims, eps_unit, delta)
    _check_params(ns.construction, dims, block, ns.max_params)
    kwargs: dict[str, Any] = {}
    if ns.construction == "burkholz":
        block = block[0]
    if ns.subset != "best":
        if ns.construction in ("malach", "orseau"):
            raise ValueError(f"subset must be 'best' for {ns.construction} (no subset search), got {ns.subset!r}")
        kwargs = {"subset": ns.subset, "tol": ns.tol}
    if ns.exact != "auto":
        if ns.construction in ("malach", "orseau"):
            raise ValueError(f"exact must be 'auto' for {ns.construction} (no subset search), got {ns.exact!r}")
        try:
            exact = int(ns.exact)
        except ValueError:
            raise ValueError(f"exact must be 'auto' or an integer in [1, {MAX_VALUES}], got {ns.exact!r}") from None
        kwargs["exact"] = _int_in(exact, "exact", 1, MAX_VALUES)
    if ns.construction == "orseau":
        kwargs = {"eps": eps_unit}  # the hyperbolic ranges follow eps (products cover [eps_w/4, 2])
    if scaled is not None and not ns.json:
        note = " (with the constant input of its biases)" if scaled.augmented else ""
        layer_scales = ", ".join(f"{s:.4g}" for s in scaled.layer_scales)
        print(f"target {ns.target}: widths {dims}{note}, layer scales {layer_scales}, input radius "
              f"{scaled.input_radius:.4g}: errors x {scale:.4g} in target units, construction built for eps "
              f"{eps_unit:.3g}")
    rows = []
    for r in range(draws):
        target = random_target(dims, ns.target_seed + r) if scaled is None else scaled.target
        c = construct(ns.construction, target, ns.seed + r, block, **kwargs)
        model = build_model(c)
        res = verify_construction(c, eps_unit, model=model, samples=ns.samples, steps=ns.steps, seed=r)
        res.update({"output_scale": scale, "empirical_target_units": res["empirical"] * scale,
                    "certified_target_units": res["certified"] * scale})
        search = c.info.get("subset_search")
        if search is not None:
            res["subset_search"] = search
        if split is not None:
            from .trained import data_agreement

            res["data"] = {"name": ns.data, **data_agreement(scaled, pruned_forward(model), split)}
        if ns.ticket and r == 0:
            from .ticket import save_theory_ticket

            source = ({"source": "random", "seed": ns.target_seed} if scaled is None
                      else {**scaled.source(ns.target), **({"data": ns.data} if ns.data else {})})
            save_theory_ticket(ns.ticket, c, summary=res, target_source=source, model=model)
        if not ns.json:
            if search is not None:
                print(f"draw {r:3d}  subset sums: {search['instances']:,} instances, exact over all candidates for "
                      f"{search['instances_exact']:,}, over the first {search['exact']} of up to "
                      f"{search['candidates_max']} for {search['instances_prefix']:,} (errors measured, not assumed)")
            print(f"draw {r:3d}  seed {c.seed}  sup-error {res['empirical_target_units']:.3e}  certified "
                  f"{res['certified_target_units']:.3e}  identity {res['identity_max_diff']:.1e}  "
                  f"kept {res['kept']:,}/{res['random_params']:,}  {'ok' if res['success'] else 'FAIL'}  "
                  f"{res['construct_seconds'] + res['verify_seconds']:.2f} s")
            if "data" in res:
                d = res["data"]
                print(f"draw {r:3d}  {ns.data} test ({d['examples']:,}): target accuracy {d['target_accuracy']:.2%}, "
                      f"pruned net {d['pruned_accuracy']:.2%}, identical predictions {d['same_predictions']:.2%}, "
                      f"max output difference {d['max_output_diff']:.3e}")
        rows.append(res)
    summary = _summarise(rows, eps_unit, delta)
    summary.update({"construction": ns.construction, "target_widths": dims, "block": block, "eps": eps,
                    "output_scale": scale, "random_widths": rows[0]["widths"]})
    for key in ("empirical_median", "empirical_max", "certified_median", "certified_max"):
        summary[key] *= scale  # target units
    if ns.json:
        print(json.dumps(summary, sort_keys=True, default=float))
        return 0
    lo, hi = summary["success_ci95"]
    print(f"{ns.construction} target {dims} block {block} -> random net {rows[0]['widths']} "
          f"({rows[0]['random_params']:,} params, depth {rows[0]['depth']})")
    print(f"success (sup-error <= {eps:g}) {summary['successes']}/{draws} = {summary['success_rate']:.2f} "
          f"[95% CI {lo:.2f}, {hi:.2f}]  vs 1 - delta = {1 - delta:.2f}: "
          f"{summary['verdict']} (judged on the interval)")
    print(f"certified <= {eps:g} on {summary['certified_successes']}/{draws}; certified >= empirical on every draw: "
          f"{summary['certified_ge_empirical_all']}; identity max diff {summary['identity_max_diff']:.1e}")
    print(f"sup-error median {summary['empirical_median']:.3e} max {summary['empirical_max']:.3e}; "
          f"certified median {summary['certified_median']:.3e} max {summary['certified_max']:.3e}")
    if ns.ticket:
        print(f"ticket (draw 0): {ns.ticket}")
    return 0 if summary["certified_ge_empirical_all"] and summary["identity_max_diff"] <= 1e-10 else 1


def _width(ns: argparse.Namespace) -> int:
    from .widths import width_report

    dims = _int_list(ns.target_widths, "target_widths")
    if len(dims) < 2:
        raise ValueError(f"target_widths must list at least 2 widths (input, ..., output), got {ns.target_widths!r}")
    eps, delta = _unit(ns.eps, "eps"), _unit(ns.delta, "delta")
    names = _NAMES if ns.construction == "all" else (ns.construction,)
    reports = [width_report(name, dims, eps, delta) for name in names]
    if ns.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], sort_keys=True))
        return 0
    for rep in reports:
        paper = rep["paper"]
        print(f"{rep['construction']}: target {dims}, eps {eps:g}, delta {delta:g}, "
              f"eps per weight {', '.join(f'{e:.2e}' for e in rep['eps_per_weight'])}")
        print(f"  paper: {paper['formula']}   [{paper['hidden_constant']}]")
        for key in ("width_per_unit_constant", "params_per_unit_constant", "n_per_unit_constant",
                    "hidden_widths_per_unit_constant", "rho_per_unit_constant", "digits_K", "window_probability",
                    "rigorous_block", "rigorous_params"):
            if key in paper:
                value = paper[key]
                shown = ", ".join(_fmt(v) for v in value) if isinstance(value, list) else _fmt(value)
                print(f"    {key.replace('_', ' ')}: {shown}")
        print(f"  calibrated block {rep['calibrated_block']} -> widths {rep['calibrated_widths']}, "
              f"depth {rep['depth']}, "
              f"{rep['calibrated_params']:,} params ({rep['calibrated_params'] / rep['target_params']:.0f}x target)")
    return 0


def _fmt(v: float) -> str:
    return f"{v:,}" if isinstance(v, int) else (f"{v:.3g}" if abs(v) < 1e6 else f"{v:.3e}")


def _sweep(ns: argparse.Namespace) -> int:
    from ..files import atomic_write
    from .sweep import DEFAULT_BLOCKS, plot_sweep, run_sweep, summary_table, write_csv

    dims = _int_list(ns.target_widths, "target_widths")
    if len(dims) < 2:
        raise ValueError(f"target_widths must list at least 2 widths (input, ..., output), got {ns.target_widths!r}")
    eps = _unit(ns.eps, "eps")
    draws = _int_in(ns.draws, "draws", 1, 10000)
    names = ns.constructions.split(",")
    for name in names:
        if name not in DEFAULT_BLOCKS:
            raise ValueError(f"constructions must be a comma-separated subset of {list(DEFAULT_BLOCKS)}, got {name!r}")
        _check_params(name, dims, [max(DEFAULT_BLOCKS[name])] * (len(dims) - 1), ns.max_params)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)

    def progress(row: dict[str, Any]) -> None:
        print(f"{row['construction']:9s} block {row['block']:5d} draw {row['draw']}  params {row['random_params']:>9,}"
              f"  sup-error {row['empirical']:.3e}", flush=True)

    rows = run_sweep(dims, eps, draws, {n: DEFAULT_BLOCKS[n] for n in names}, samples=ns.samples, steps=ns.steps,
                     progress=None if ns.quiet else progress)
    write_csv(out / "sweep.csv", rows)
    table = summary_table(rows)
    atomic_write(out / "sweep.md", table + "\n")
    print(table)
    print(f"csv: {out / 'sweep.csv'}  table: {out / 'sweep.md'}")
    try:
        print(f"plot: {plot_sweep(rows, out / 'sweep.png', eps)}")
    except ValueError as e:
        print(f"plot skipped: {e}")
    return 0


def _common(p: argparse.ArgumentParser, eps: float = 0.01) -> None:
    p.add_argument("--target-widths", default="5,10,1", help="target widths d0,...,dl (default: 5,10,1)")
    p.add_argument("--eps", type=float, default=eps, help=f"sup-error tolerance on the unit ball (default: {eps})")


def _max_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-params", type=int, default=1 << 28,
                   help="refuse a random net with more weights than this, before it is drawn (default: 2**28)")


def add_theory_parser(subparsers: Any) -> None:
    """Register ``theory`` with ``verify``, ``width`` and ``sweep`` on an argparse subparsers object."""
    theory = subparsers.add_parser("theory", help="build and verify the constructive strong-LTH proofs",
                                   description="Constructions of Malach et al. 2020, Pensia et al. 2020, Orseau et "
                                               "al. 2020, Burkholz 2022 as strongticket tickets, checked against "
                                               "their bounds.")
    sub = theory.add_subparsers(dest="theory_command", required=True, metavar="THEORY_COMMAND")

    ver = sub.add_parser("verify", help="construct on random targets and verify (identity, bound, sup-error)")
    ver.add_argument("--construction", choices=_NAMES, default="pensia")
    ver.add_argument("--target-widths", default=None, help="random target widths d0,...,dl (default: 5,10,1)")
    ver.add_argument("--eps", type=float, default=0.01,
                     help="sup-error tolerance on the input domain, in the target's units (default: 0.01)")
    ver.add_argument("--target", default=None,
                     help="a trained MLP (safetensors or torch state_dict of Linear layers, biases allowed) instead "
                          "of random targets")
    ver.add_argument("--input-radius", type=float, default=None,
                     help="inputs of --target lie in the ball of this radius (default: 1, or the --data test "
                          "inputs' largest norm)")
    ver.add_argument("--data", default=None, help="report the --target's and the ticket's test accuracy on this data")
    ver.add_argument("--data-root", default=None, help="folder of the --data files (mnist, cifar10, ...)")
    ver.add_argument("--delta", type=float, default=0.1, help="allowed failure probability (default: 0.1)")
    ver.add_argument("--block", default="calibrated",
                     help="neurons per input coordinate (k, m = 2n, M) or rho; 'calibrated' (default) or ints")
    ver.add_argument("--draws", type=int, default=20, help="independent (target, net) draws (default: 20)")
    ver.add_argument("--seed", type=int, default=0, help="net seed of draw 0; draw r uses seed + r (default: 0)")
    ver.add_argument("--target-seed", type=int, default=1000, help="target seed of draw 0 (default: 1000)")
    ver.add_argument("--subset", choices=SUBSET_RULES, default="best", help="exact best subset or smallest within tol")
    ver.add_argument("--tol", type=float, default=None, help="per-weight tolerance for --subset smallest")
    ver.add_argument("--exact", default="auto",
                     help=f"candidates per subset sum searched exactly (1..{MAX_VALUES}); 'auto' (default) picks the "
                          "most that fit a fixed work budget; beyond it the first ones are searched, errors measured")
    ver.add_argument("--samples", type=int, default=20000, help="sphere samples for the sup-error (default: 20000)")
    ver.add_argument("--steps", type=int, default=150, help="projected gradient ascent steps (default: 150)")
    ver.add_argument("--ticket", default=None, help="save draw 0 as a ticket at this path")
    ver.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    _max_params(ver)
    ver.set_defaults(run=_verify)

    wid = sub.add_parser("width", help="paper width formulas and calibrated block sizes")
    wid.add_argument("--construction", choices=(*_NAMES, "all"), default="all")
    _common(wid)
    wid.add_argument("--delta", type=float, default=0.1, help="allowed failure probability (default: 0.1)")
    wid.add_argument("--json", action="store_true", help="print the report as JSON")
    wid.set_defaults(run=_width)

    swp = sub.add_parser("sweep", help="error vs random-net parameters, constructions side by side (CSV, PNG)")
    _common(swp)
    swp.add_argument("--draws", type=int, default=5, help="draws per block size (default: 5)")
    swp.add_argument("--constructions", default="malach,pensia,burkholz,orseau",
                     help="comma-separated (default: all)")
    swp.add_argument("--samples", type=int, default=5000, help="sphere samples per run (default: 5000)")
    swp.add_argument("--steps", type=int, default=60, help="ascent steps per run (default: 60)")
    swp.add_argument("--out", default="runs/theory-sweep", help="output folder (default: runs/theory-sweep)")
    swp.add_argument("--quiet", action="store_true", help="no per-run lines")
    _max_params(swp)
    swp.set_defaults(run=_sweep)
