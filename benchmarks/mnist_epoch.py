"""Where one search epoch of LeNet-300-100 on MNIST spends its time (CPU, default settings).

    python benchmarks/mnist_epoch.py --data-root ../shared/data [--epochs 1] [--threads 1]

Runs ``strongticket search --data mnist --widths 300,100`` with every other setting at its default (edge-popup,
density 0.5, signed constant, batch 64, the fused score SGD) through ``run_search``, with timers wrapped around the
functions that do each part of the work (no profiler; a timer costs ~1 µs a call):
  data        producing the batches (shuffle, uint8 → float, normalization): ``splits.batches``
  selection   top-k of |S| after each step and the patch of W ⊙ M where the mask changed (``_TopK._select``,
              ``MaskedLayer._patch``), inside the forward
  forward     the training forward less its selection
  backward    ``loss.backward()``, which also runs the scores' SGD step (fused into the backward pass)
  validation  evaluating the validation split after every epoch (its selection included)
  other       the rest of the epochs (the loop's own timer, ``metrics.jsonl`` "seconds"): optimizer and schedule
              calls, loss, accuracy counting, mask hash and score histogram
and, outside the epochs, start-up (imports, among them torch._dynamo, which torch.optim imports on the first
optimizer a process builds; reading MNIST; drawing the frozen weights) and the end (checkpoints, test split,
ticket). Prints one markdown table (seconds, and shares of the epochs' time).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from strongticket import nn as st_nn
from strongticket.config import SearchConfig
from strongticket.models import MLP
from strongticket.search import loop, run_search

VAL_EXAMPLES = 6000  # MNIST's validation split (10% of 60,000); the test split has 10,000
PARTS = ("data", "selection", "forward", "backward", "validation")


def profile_epochs(data_root: str, epochs: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds per part and the run's summary."""
    spent: dict[str, float] = defaultdict(float)
    depth = {"eval": 0, "forward": 0}

    def timed(part: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - t0
        return wrapper

    def timed_batches(*args: Any, **kwargs: Any) -> Iterator:
        it = loop_batches(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                return
            finally:
                spent["data"] += time.perf_counter() - t0
            yield b

    def evaluation(model: torch.nn.Module, split: Any, *args: Any, **kwargs: Any) -> Any:
        depth["eval"] += 1
        t0 = time.perf_counter()
        try:
            return loop_evaluate(model, split, *args, **kwargs)
        finally:
            depth["eval"] -= 1
            spent["validation" if len(split) == VAL_EXAMPLES else "test"] += time.perf_counter() - t0

    def forward(self: MLP, x: torch.Tensor) -> torch.Tensor:
        if depth["eval"]:
            return mlp_forward(self, x)
        before = spent["selection"]
        t0 = time.perf_counter()
        try:
            return mlp_forward(self, x)
        finally:
            spent["forward"] += time.perf_counter() - t0 - (spent["selection"] - before)

    def selection(part_fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth["eval"]:
                return part_fn(*args, **kwargs)
            return timed("selection", part_fn)(*args, **kwargs)
        return wrapper

    loop_batches, loop_evaluate, mlp_forward = loop.batches, loop.evaluate, MLP.forward
    backward = torch.Tensor.backward
    with tempfile.TemporaryDirectory() as out, ExitStack() as stack:
        cfg = SearchConfig(data="mnist", data_root=data_root, widths=(300, 100), epochs=epochs, device="cpu",
                           out=out)
        stack.enter_context(mock.patch.object(loop, "batches", timed_batches))
        stack.enter_context(mock.patch.object(loop, "evaluate", evaluation))
        stack.enter_context(mock.patch.object(MLP, "forward", forward))
        stack.enter_context(mock.patch.object(st_nn._TopK, "_select", selection(st_nn._TopK._select)))
        stack.enter_context(mock.patch.object(st_nn.MaskedLayer, "_patch", selection(st_nn.MaskedLayer._patch)))
        stack.enter_context(mock.patch.object(torch.Tensor, "backward", timed("backward", backward)))
        t0 = time.perf_counter()
        summary = run_search(cfg, progress=False)
        spent["total"] = time.perf_counter() - t0
        spent["epochs"] = sum(json.loads(line)["seconds"] for line in (Path(out) / "metrics.jsonl").open())
    return dict(spent), summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spent, summary = profile_epochs(args.data_root, args.epochs)
    epochs = spent["epochs"]
    other = epochs - sum(spent[p] for p in PARTS)
    print(f"LeNet-300-100 on MNIST, {args.epochs} epoch(s) of 844 steps (batch 64), edge-popup at its defaults, "
          f"{torch.get_num_threads()} thread(s), optimizer {summary.get('optimizer')}; test acc "
          f"{summary['test_acc']:.4f}")
    print()
    print("| part | seconds | share of the epochs |")
    print("|---|---|---|")
    for part in (*PARTS, "other"):
        seconds = other if part == "other" else spent[part]
        print(f"| {part} | {seconds:.2f} | {seconds / epochs:.0%} |")
    print(f"| **epochs** (the loop's timer) | {epochs:.2f} | 100% |")
    print(f"| outside the epochs: start-up, checkpoints, test ({spent['test']:.2f} s), ticket | "
          f"{spent['total'] - epochs:.2f} | |")
    print(f"| run_search in all | {spent['total']:.2f} | |")

if __name__ == "__main__":
    main()
