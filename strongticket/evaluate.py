"""Rebuild a network from a ticket alone (config + seed + masks), prove its weights, score it on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .backend import backend_name
from .config import SearchConfig
from .data.splits import load_splits
from .models import model_from_config
from .nn import masked_layers
from .search.edge_popup import evaluate, resolve_device
from .ticket import Ticket, TicketError, read_ticket

__all__ = ["load_ticket_model", "evaluate_ticket"]


def load_ticket_model(path: str | Path, device: str = "auto") -> tuple[torch.nn.Module, Ticket, SearchConfig]:
    """The network a ticket describes, weights regenerated and checked, masks fixed; raises TicketError."""
    ticket = read_ticket(path)
    try:
        cfg = SearchConfig.from_dict({**ticket.config, "out": None, "device": device, "data_root": None})
    except ValueError as e:
        raise TicketError(f"{path}: corrupted ticket (config: {e})") from None
    splits = load_splits(cfg.data, val_fraction=cfg.val_fraction)
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    ticket.apply(model)
    return model.to(resolve_device(device)), ticket, cfg


def evaluate_ticket(path: str | Path, device: str = "auto") -> dict[str, Any]:
    """Summary of a ticket's network on the test split of its data set."""
    model, ticket, cfg = load_ticket_model(path, device)
    dev = resolve_device(device)
    splits = load_splits(cfg.data, val_fraction=cfg.val_fraction)
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
