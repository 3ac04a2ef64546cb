"""Command line: ``strongticket search`` and ``strongticket eval``.

    strongticket search [--data digits] [--model mlp] [--density 0.5] [--init signed_constant] [--epochs N]
                        [--seed S] [--out DIR] [--device auto|cpu|cuda] [--config run.toml] ...
    strongticket eval runs/<run>/ticket.safetensors [--json] [--device auto|cpu|cuda]

A bad value prints one line (``strongticket: error: density must be in (0, 1], got 1.5``) and exits with 2;
``STRONGTICKET_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _search(ns: argparse.Namespace) -> int:
    from .backend import backend_name, resolve_device
    from .config import config_from_args, model_label
    from .search.edge_popup import run_dir, run_search

    cfg = config_from_args(ns)
    device = resolve_device(cfg.device)
    folder = run_dir(cfg)
    resumed = (folder / "checkpoint.pt").exists()
    print(f"strongticket search: {cfg.algo} on {cfg.data}, {model_label(cfg)}, "
          f"density {cfg.density:g} ({cfg.scope}), init {cfg.init}, seed {cfg.seed}, "
          f"device {device}, backend {backend_name(device)}")
    print(f"run folder: {folder}" + ("  (resuming)" if resumed else ""))
    summary = run_search(cfg)
    print(f"test acc {summary['test_acc']:.4f}  val acc {summary['val_acc']:.4f} (epoch {summary['best_epoch']})  "
          f"kept {summary['kept_weights']:,}/{summary['total_weights']:,} weights "
          f"(density {summary['density']:.4f})  {summary['seconds']:.1f} s")
    print(f"ticket: {folder / 'ticket.safetensors'}")
    return 0


def _eval(ns: argparse.Namespace) -> int:
    from .evaluate import evaluate_ticket

    result = evaluate_ticket(ns.ticket, device=ns.device)
    if ns.json:
        print(json.dumps(result, sort_keys=True))
    else:
        line = (f"test acc {result['test_acc']:.4f}  kept {result['kept_weights']:,}/{result['total_weights']:,} "
                f"weights (density {result['density']:.4f})  weights sha256 ok  backend {result['backend']}")
        if result.get("run_test_acc") is not None:
            same = "same as" if result["test_acc"] == result["run_test_acc"] else "DIFFERS from"
            line += f"  ({same} the run's {result['run_test_acc']:.4f})"
        print(line)
    return 0


def _parser() -> argparse.ArgumentParser:
    from .config import add_config_arguments

    parser = argparse.ArgumentParser(prog="strongticket", description="Strong lottery tickets: find and check "
                                     "subnetworks of frozen random networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = sub.add_parser("search", help="search a mask on a frozen random network",
                            description="Train popup scores of a frozen random network; write a ticket.")
    add_config_arguments(search)
    search.set_defaults(run=_search)
    ev = sub.add_parser("eval", help="rebuild a network from a ticket and report its test accuracy",
                        description="Regenerate the weights from the ticket's seed, check their SHA-256, "
                                    "apply the masks and evaluate on the test split.")
    ev.add_argument("ticket", help="path to ticket.safetensors")
    ev.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    ev.set_defaults(run=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    try:
        return ns.run(ns)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        if os.environ.get("STRONGTICKET_DEBUG") == "1":
            raise
        msg: Any = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"strongticket: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("strongticket: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
