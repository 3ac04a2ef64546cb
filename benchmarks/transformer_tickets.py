"""Strong tickets in a random transformer on the token-sequence tasks, against a trained one and against chance.

    python benchmarks/transformer_tickets.py --out runs/transformer-tickets      # resumable; ~10 min on 2 cores

For each task (seq-sort, seq-reverse) and seed: the strong ticket of ``--model transformer`` (edge-popup, our
defaults, density 0.5, ``--epochs`` epochs), the same with ``--share-weights`` (one frozen matrix per shape), and
the same network trained normally (every weight, Adam lr 1e-3, as many epochs, the epoch chosen on validation
accuracy as the search chooses its own), plus the random network itself (every weight kept, no search) and chance
(the best input-blind predictor: each position's most frequent training label). A second table follows seq-sort's
tickets, with and without shared weights, down to low densities (``--densities``). Per-token and whole-sequence test
accuracy, mean ± the half-width of the 95% t-interval over the seeds. Every search is an ordinary run folder under
``--out``; the dense runs are cached in ``--out/dense.json``. Writes ``--out/transformer_tickets.md`` and
``.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from strongticket.config import SearchConfig
from strongticket.convert import bake
from strongticket.data.sequences import chance_accuracy
from strongticket.data.splits import Split, batches, load_splits
from strongticket.evaluate import evaluate, load_ticket_model
from strongticket.files import atomic_write
from strongticket.models import model_from_config
from strongticket.nn import masked_layers
from strongticket.search import run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dense_baseline import train_selected  # noqa: E402
from digits_methods import t_half_width  # noqa: E402

TASKS = ("sort", "reverse")


@torch.no_grad()
def sequence_accuracy(model: nn.Module, split: Split) -> float:
    """The fraction of test sequences whose every position is right."""
    model.eval()
    right = 0
    for b in batches(split, 512):
        right += int((model(b.x).argmax(1) == b.labels).all(1).sum())
    return right / len(split)


def frozen_elements(model: nn.Module) -> int:
    """Frozen weight elements held in memory, each tensor once (shared weights count once)."""
    return sum(p.numel() for p in {id(layer.weight): layer.weight for layer in masked_layers(model)}.values())


def ticket_cell(task: str, seed: int, epochs: int, share: bool, out: Path, density: float = 0.5) -> dict:
    name = f"{task}-{'shared' if share else 'ticket'}" + ("" if density == 0.5 else f"-d{density:g}") + f"-s{seed}"
    cfg = SearchConfig(data=f"seq-{task}", model="transformer", epochs=epochs, seed=seed, data_seed=seed,
                       density=density, share_weights=share, device="cpu", out=str(out / name))
    summary = run_search(cfg, progress=False)
    model, _, _ = load_ticket_model(Path(cfg.out) / "ticket.safetensors", device="cpu")
    test = load_splits(cfg.data).test
    return {"acc": summary["test_acc"], "seq_acc": sequence_accuracy(model, test), "seconds": summary["seconds"],
            "ticket_bytes": (Path(cfg.out) / "ticket.safetensors").stat().st_size,
            "frozen_elements": frozen_elements(model), "kept": summary["kept_weights"]}


def dense_cell(task: str, seed: int, epochs: int) -> dict:
    """The same transformer, every weight trained (Adam 1e-3), epoch chosen on validation accuracy."""
    cfg = SearchConfig(data=f"seq-{task}", model="transformer", density=1.0, seed=seed, device="cpu")
    splits = load_splits(cfg.data)
    model = bake(model_from_config(cfg, splits.input_shape, splits.num_classes))
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
            m.weight.requires_grad_(True)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    r = train_selected(model, splits, opt, epochs=epochs, batch_size=64, seed=seed,
                       measure=lambda m: {"seq_acc": sequence_accuracy(m, splits.test)})
    return {"acc": r["test_acc"], "seq_acc": r["seq_acc"], "epoch": r["best_epoch"], "seconds": r["seconds"]}


def random_cell(task: str, seed: int) -> dict:
    """The random network itself: every weight kept, nothing searched."""
    cfg = SearchConfig(data=f"seq-{task}", model="transformer", density=1.0, seed=seed, device="cpu")
    splits = load_splits(cfg.data)
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    acc, _ = evaluate(model, splits.test)
    return {"acc": acc, "seq_acc": sequence_accuracy(model, splits.test)}


def summarize(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {t_half_width(values):.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/transformer-tickets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--densities", default="0.5,0.2,0.05,0.02",
                        help="densities of the second table (seq-sort, ticket and shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "dense.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    results: dict = {}
    for task in TASKS:
        splits = load_splits(f"seq-{task}")
        row: dict = {"chance": chance_accuracy(splits.train.labels.numpy(), splits.test.labels.numpy())}
        for kind in ("random", "ticket", "shared", "dense"):
            cells = []
            for seed in range(args.seeds):
                if kind == "random":
                    cells.append(random_cell(task, seed))
                elif kind == "dense":
                    key = f"{task}-s{seed}-e{args.epochs}"
                    if key not in cache:
                        cache[key] = dense_cell(task, seed, args.epochs)
                        atomic_write(cache_path, json.dumps(cache, indent=1).encode())
                    cells.append(cache[key])
                else:
                    cells.append(ticket_cell(task, seed, args.epochs, kind == "shared", out))
                print(task, kind, seed, cells[-1], flush=True)
            row[kind] = cells
        results[task] = row
    lines = ["| task | chance | random network, unmasked | strong ticket (d = 0.5) | strong ticket, shared weights "
             "| trained dense |", "|---|---|---|---|---|---|"]
    for task, row in results.items():
        cells = [summarize([c["acc"] for c in row[k]]) for k in ("random", "ticket", "shared", "dense")]
        lines.append(f"| {task}: per token | {row['chance']:.4f} | " + " | ".join(cells) + " |")
        cells = [summarize([c["seq_acc"] for c in row[k]]) for k in ("random", "ticket", "shared", "dense")]
        lines.append(f"| {task}: whole sequence | — | " + " | ".join(cells) + " |")
    first = results[TASKS[0]]
    lines += ["", f"Frozen weights in memory: {first['ticket'][0]['frozen_elements']:,} (one per layer) vs "
              f"{first['shared'][0]['frozen_elements']:,} (shared, one matrix per shape); ticket "
              f"{first['ticket'][0]['ticket_bytes']:,} vs {first['shared'][0]['ticket_bytes']:,} bytes (seed + one "
              f"mask per layer either way); kept {first['ticket'][0]['kept']:,} weights. Search time per run (mean): "
              f"{statistics.fmean(c['seconds'] for t in results.values() for c in t['ticket']):.1f} s ticket, "
              f"{statistics.fmean(c['seconds'] for t in results.values() for c in t['shared']):.1f} s shared, "
              f"{statistics.fmean(c['seconds'] for t in results.values() for c in t['dense']):.1f} s dense training "
              f"({args.epochs} epochs, {args.seeds} seeds, 1 thread)."]
    densities = [float(d) for d in args.densities.split(",")]
    sweep = {(share, d): [ticket_cell("sort", seed, args.epochs, share, out, d) for seed in range(args.seeds)]
             for share in (False, True) for d in densities}
    lines += ["", "seq-sort against density (per token / whole sequence):", "",
              "| density | strong ticket | strong ticket, shared weights |", "|---|---|---|"]
    for d in densities:
        cells = [f"{summarize([c['acc'] for c in sweep[share, d]])} / "
                 f"{summarize([c['seq_acc'] for c in sweep[share, d]])}" for share in (False, True)]
        lines.append(f"| {d:g} | " + " | ".join(cells) + " |")
    results["sort_density"] = {f"{'shared' if share else 'ticket'}-{d:g}": cells for (share, d), cells in sweep.items()}
    table = "\n".join(lines) + "\n"
    atomic_write(out / "transformer_tickets.md", table.encode())
    atomic_write(out / "transformer_tickets.json", json.dumps(results, indent=1).encode())
    print(table)


if __name__ == "__main__":
    main()
