"""Rebuild a network from a ticket alone (config + seed + masks), prove its weights, score it on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .backend import backend_name, resolve_device
from .config import SearchConfig
from .data.splits import Split, Splits, batches, load_splits
from .models import model_from_config
from .nn import masked_layers
from .ticket import Ticket, TicketError, read_ticket

__all__ = ["evaluate", "load_ticket_model", "evaluate_ticket"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``split``, in a fixed batch order."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for b in batches(split, batch_size):
        logits = model(b.x)
        loss_sum += float(F.cross_entropy(logits, b.labels, reduction="sum"))
        correct += int((logits.argmax(1) == b.labels).sum())
    return correct / len(split), loss_sum / len(split)


def load_ticket_model(path: str | Path, device: str = "auto") -> tuple[torch.nn.Module, Ticket, SearchConfig]:
    """The network a ticket describes, weights regenerated and checked, masks fixed; raises TicketError."""
    model, ticket, cfg, _ = _load(path, device)
    return model, ticket, cfg


def _load(path: str | Path, device: str) -> tuple[torch.nn.Module, Ticket, SearchConfig, Splits]:
    ticket = read_ticket(path)
    try:
        cfg = SearchConfig.from_dict({**ticket.config, "out": None, "device": device, "data_root": None})
    except ValueError as e:
        raise TicketError(f"{path}: corrupted ticket (config: {e})") from None
    splits = load_splits(cfg.data, val_fraction=cfg.val_fraction)
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    ticket.apply(model)
    return model.to(resolve_device(device)), ticket, cfg, splits


def evaluate_ticket(path: str | Path, device: str = "auto") -> dict[str, Any]:
    """Summary of a ticket's network on the test split of its data set."""
    model, ticket, cfg, splits = _load(path, device)
    dev = resolve_device(device)
    test_acc, test_loss = evaluate(model, splits.test.to(dev))
    layers = masked_layers(model)
    kept = [int(layer.mask.sum()) for layer in layers]
    total = [layer.weight.numel() for layer in layers]
    return {
        "ticket": str(path),
        "test_acc": test_acc,
        "test_loss": test_loss,
        "run_test_acc": ticket.summary.get("test_acc"),
        "density": sum(kept) / sum(total),
        "layer_density": [k / t for k, t in zip(kept, total)],
        "kept_weights": sum(kept),
        "total_weights": sum(total),
        "seed": cfg.seed,
        "weights_sha256": ticket.weights_sha256,
        "backend": backend_name(dev),
        "device": str(dev),
    }
