"""The dense baseline of the benchmarks: a network with every weight trained, its epoch chosen on validation accuracy
(the rule the search uses, ``strongticket.evaluate.better``), scored on the test split at that epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import nn, optim

from strongticket.data.splits import Splits, batches
from strongticket.evaluate import better, evaluate


def train_selected(model: nn.Module, splits: Splits, optimizer: optim.Optimizer, *, epochs: int, batch_size: int,
                   seed: int, schedule: optim.lr_scheduler.LRScheduler | None = None,
                   measure: Callable[[nn.Module], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``splits.train`` (batches of Philox(seed, epoch)); returns the selected epoch's
    ``test_acc``, ``val_acc``, ``best_epoch``, whatever ``measure(model)`` adds there, and the training ``seconds``."""
    best, chosen, t0 = None, {}, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for b in batches(splits.train, batch_size, seed=seed, epoch=epoch):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(b.x), b.labels).backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
        val, _ = evaluate(model, splits.val)
        if better("classification", val, best):
            best = val
            chosen = {"test_acc": evaluate(model, splits.test)[0], "val_acc": val, "best_epoch": epoch + 1,
                      **(measure(model) if measure is not None else {})}
    return {**chosen, "seconds": time.perf_counter() - t0}
