"""Command line: ``strongticket search`` and ``strongticket eval``.

    strongticket search [--data digits] [--model mlp] [--density 0.5] [--init signed_constant] [--epochs N]
                        [--seed S] [--out DIR] [--device auto|cpu|cuda] [--config run.toml] ...
    strongticket search ... --seeds 0,1,2          (several seeds, mean ± std)
    strongticket eval runs/<run>/ticket.safetensors [--json] [--device auto|cpu|cuda] [--sanity shuffle]
    strongticket report runs/a runs/b ... [--out report]
    torchrun --nproc_per_node=N -m strongticket search ...   (data parallel; rank 0 prints and writes files)

A bad value, a damaged file or an OS error (read-only or full disk, a file where a folder should be) prints one
line (``strongticket: error: density must be in (0, 1], got 1.5``) and exits with 2; ``--debug`` (before the
command) or ``STRONGTICKET_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _search(ns: argparse.Namespace) -> int:
    import dataclasses

    from . import distributed
    from .backend import backend_name, resolve_device
    from .config import config_from_args, model_label
    from .report import mean_std
    from .search import run_dir, run_search

    cfg = config_from_args(ns)
    seeds = [cfg.seed]
    if ns.seeds is not None:
        if "seed" in vars(ns):
            raise ValueError("give either --seed or --seeds, not both")
        seeds = _int_list("seeds", ns.seeds)
    device = distributed.init_from_env(resolve_device(cfg.device))  # under torchrun: join the process group
    world = distributed.world_size()
    say = print if distributed.is_main() else (lambda *args, **kwargs: None)  # only rank 0 speaks
    say(f"strongticket search: {cfg.algo}{f' (preset {cfg.preset})' if cfg.preset else ''} on {cfg.data}, "
        f"{model_label(cfg)}, density {cfg.density:g} "
          f"({cfg.scope}), init {cfg.init}, seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}, "
          f"device {device}, backend {backend_name(device)}"
          + (f", {world} processes (batch {cfg.batch_size} split across them)" if world > 1 else ""))
    results = []
    for seed in seeds:
        run = dataclasses.replace(cfg, seed=seed)
        if len(seeds) > 1 and cfg.out:
            run = dataclasses.replace(run, out=str(Path(cfg.out) / f"seed-{seed}"))
        folder = run_dir(run)
        resumed = (folder / "checkpoint.pt").exists() or (folder / "summary.json").exists()
        say(f"run folder: {folder}" + ("  (resuming)" if resumed else ""))
        summary = run_search(run)
        results.append(summary)
        m, fmt = _metric(summary)
        say(f"{'seed ' + str(seed) + ': ' if len(seeds) > 1 else ''}test {m} {summary[f'test_{m}']:{fmt}}  "
              f"val {m} {summary[f'val_{m}']:{fmt}} (epoch {summary['best_epoch']})  "
              f"kept {summary['kept_weights']:,}/{summary['total_weights']:,} weights "
              f"(density {summary['density']:.4f})  {summary['seconds']:.1f} s")
        say(f"ticket: {folder / 'ticket.safetensors'}")
    if len(seeds) > 1:
        m, fmt = _metric(results[0])
        t_mean, t_std = mean_std([r[f"test_{m}"] for r in results])
        v_mean, v_std = mean_std([r[f"val_{m}"] for r in results])
        say(f"over {len(seeds)} seeds: test {m} {t_mean:{fmt}} ± {t_std:{fmt}}  "
            f"val {m} {v_mean:{fmt}} ± {v_std:{fmt}}")
    distributed.shutdown()
    return 0


def _metric(summary: dict[str, Any]) -> tuple[str, str]:
    """(``"acc"``, ``".4f"``) for a classification summary, (``"mse"``, ``".4g"``) for a regression one."""
    return ("acc", ".4f") if "test_acc" in summary else ("mse", ".4g")


def _int_list(name: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(not 0 <= v < 2**32 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{name} must be distinct integers in [0, 4294967295], got {text!r}")
    return values


def _eval(ns: argparse.Namespace) -> int:
    from .evaluate import evaluate_ticket
    from .ticket import ticket_kind

    if ticket_kind(ns.ticket) == "theory":
        return _eval_theory(ns)
    if ns.data is not None:
        raise ValueError(f"data applies to theory tickets of a trained target; a search ticket is evaluated on the "
                         f"data it was searched on, got --data {ns.data!r}")
    result = evaluate_ticket(ns.ticket, device=ns.device, data_root=ns.data_root, sanity=ns.sanity)
    if ns.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    m, fmt = _metric(result)
    run_value = result.get(f"run_test_{m}")
    line = (f"test {m} {result[f'test_{m}']:{fmt}}  kept {result['kept_weights']:,}/{result['total_weights']:,} "
            f"weights (density {result['density']:.4f})  weights sha256 ok  backend {result['backend']}")
    if result["random_matrices"] < len(result["layer_density"]):
        line += (f"  shared weights: {result['random_matrices']} random matrices for {len(result['layer_density'])} "
                 f"masked layers")
    if result["sanity"] is not None:
        line = f"sanity check {result['sanity']}: {line}  (the ticket itself: {run_value:{fmt}})"
    elif run_value is not None:
        same = "same as" if result[f"test_{m}"] == run_value else "DIFFERS from"
        line += f"  ({same} the run's {run_value:{fmt}})"
    print(line)
    return 0


def _eval_theory(ns: argparse.Namespace) -> int:
    from .theory.ticket import evaluate_theory_ticket

    if ns.sanity is not None:
        raise ValueError("sanity checks apply to searched tickets; this ticket is a theory construction")
    result = evaluate_theory_ticket(ns.ticket, data=ns.data, data_root=ns.data_root)
    if ns.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    line = (f"{result['construction']} construction: kept {result['kept_weights']:,}/{result['total_weights']:,} "
            f"weights (density {result['density']:.4g})  weights sha256 ok")
    if result.get("sup_error") is not None:
        where = "on the unit sphere" if result["output_scale"] == 1.0 else "on the input ball, target units"
        line += f"  sup-error {where} {result['sup_error']:.3e}"
        if result.get("run_sup_error") is not None:
            line += f" (at construction: {result['run_sup_error']:.3e})"
    print(line)
    if result.get("data") is not None:
        d = result["data"]
        print(f"{d['name']} test ({d['examples']:,}): target accuracy {d['target_accuracy']:.2%}, pruned net "
              f"{d['pruned_accuracy']:.2%}, identical predictions {d['same_predictions']:.2%}")
    return 0


def _export(ns: argparse.Namespace) -> int:
    from .export import export

    path = export(ns.ticket, ns.out, ns.format, dtype=ns.dtype, signs=ns.signs, data_root=ns.data_root)
    print(f"{ns.format} export: {path} ({path.stat().st_size:,} bytes)")
    return 0


def _report(ns: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(ns.runs, ns.out)
    print(f"report: {path}")
    return 0


def _bench(ns: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"strongticket.bench.{ns.what}").main(list(ns.options)) or 0


def _parser() -> argparse.ArgumentParser:
    from .config import add_config_arguments

    parser = argparse.ArgumentParser(prog="strongticket", description="Strong lottery tickets: find and check "
                                     "subnetworks of frozen random networks.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (as "
                        "STRONGTICKET_DEBUG=1) instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = sub.add_parser("search", help="search a mask on a frozen random network",
                            description="Train popup scores of a frozen random network; write a ticket.")
    add_config_arguments(search)
    search.add_argument("--seeds", metavar="S,S,...", help="run several seeds and report mean ± std "
                        "(instead of --seed)")
    search.set_defaults(run=_search)
    ev = sub.add_parser("eval", help="rebuild a network from a ticket and report its test accuracy",
                        description="Regenerate the weights from the ticket's seed, check their SHA-256, "
                                    "apply the masks and evaluate on the test split.")
    ev.add_argument("ticket", help="path to ticket.safetensors")
    ev.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    ev.add_argument("--data-root", help="folder with the data files (default: the one the run used)")
    ev.add_argument("--data", default=None,
                    help="theory tickets of a trained target: report both networks' test accuracy on this data "
                         "(default: the data the ticket was verified on)")
    ev.add_argument("--sanity", choices=("shuffle", "reinit", "invert"),
                    help="break the ticket the way the literature's sanity checks do: shuffle each layer's mask, "
                         "re-draw the weights with another seed, or keep the lowest scores (needs --save-scores)")
    ev.set_defaults(run=_eval)
    exp = sub.add_parser("export", help="export a ticket: packed bits, dense module, prune form or state_dict",
                         description="Write a ticket in an inference format; every format gives the same logits "
                                     "(up to dtype). packed: 2 bits per weight (sign + keep) or 1 bit + seed.")
    exp.add_argument("ticket", help="path to ticket.safetensors")
    exp.add_argument("--format", default="packed", choices=("packed", "dense", "prune", "state_dict"),
                     help="packed (weightless kernels), dense (baked nn.Module, torch.save), prune "
                          "(torch.nn.utils.prune form), state_dict (safetensors) (default: packed)")
    exp.add_argument("--out", help="output path (default: beside the ticket, with the format's suffix)")
    exp.add_argument("--dtype", default="fp32", choices=("bf16", "fp32"), help="dense/prune/state_dict dtype")
    exp.add_argument("--signs", default="bits", choices=("bits", "seed"),
                     help="packed: store the sign bits (2 bits per weight) or regenerate them from the seed (1 bit)")
    exp.add_argument("--data-root", help="folder with the data files (default: the one the run used)")
    exp.set_defaults(run=_export)
    rep = sub.add_parser("report", help="markdown table and plots from finished runs",
                         description="Draw accuracy curves and per-layer densities (PNG, needs matplotlib) and a "
                                     "markdown table from the runs' logs.")
    rep.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    rep.add_argument("--out", default="report", help="folder for report.md and the plots (default: report)")
    rep.set_defaults(run=_report)
    bench = sub.add_parser("bench", help="kernel and selection benchmarks (side by side with the baseline)",
                           description="kernels: fused Triton edge-popup kernels vs the original way and the "
                                       "PyTorch reference (GPU; --cpu-smoke on the CPU; --static: compiled "
                                       "resources and roofline floors without a GPU); topk: radix select vs the "
                                       "original full sort (CPU); aot: every kernel launch compiled for sm_80/89/90 "
                                       "and checked (shared memory, spills, tensor cores). Options after the name "
                                       "go to the benchmark (strongticket bench kernels --help).")
    bench.add_argument("what", choices=("kernels", "topk", "aot", "cpu"), help="which benchmark")
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(run=_bench)
    from .planted.cli import add_plant_parser
    from .theory.cli import add_theory_parser

    add_theory_parser(sub)
    add_plant_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    try:
        return ns.run(ns)
    except KeyboardInterrupt:
        print("strongticket: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line (the traceback behind --debug)
        if ns.debug or os.environ.get("STRONGTICKET_DEBUG") == "1":
            raise
        print(f"strongticket: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    """The error as one line: the message of an expected kind, else its type too and where to see more."""
    text = " ".join(str(e).split()) if str(e) else ""
    if isinstance(e, (ValueError, FloatingPointError)) and text:
        return text[:500]
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename and str(e.filename) not in e.strerror else ""
        return f"{e.strerror}{where}"[:500]
    if isinstance(e, MemoryError):
        return "out of memory (lower --max-params or the batch size)"
    if isinstance(e, RecursionError):
        return "input nested too deeply"
    return (f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__) + \
        " (run with --debug or STRONGTICKET_DEBUG=1 for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
