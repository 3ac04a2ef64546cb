"""Rebuild a network from a ticket alone (config + seed + masks), prove its weights, score it on the test split."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .backend import backend_name, resolve_device
from .config import SearchConfig
from .data.splits import Split, Splits, batches, load_splits
from .masks import topk_mask
from .models import masked_shapes, model_from_config
from .nn import masked_layers
from .random import permutation
from .ticket import Ticket, TicketError, check_ticket_shapes, read_ticket

__all__ = ["SANITY_CHECKS", "better", "evaluate", "load_ticket_model", "evaluate_ticket", "metric_key"]

_SANITY_SEED = 0x5A1E


def metric_key(task: str) -> str:
    """The metric a task is scored and selected by, as it appears in keys: ``"acc"`` (``test_acc``,
    ``val_acc``; higher is better) for classification, ``"mse"`` (``test_mse``, ``val_mse``; lower is better)
    for regression."""
    if task == "classification":
        return "acc"
    if task == "regression":
        return "mse"
    raise ValueError(f"task must be one of classification, regression, got {task!r}")


def better(task: str, new: float, old: float | None) -> bool:
    """Whether a later epoch's metric ``new`` replaces the selected ``old`` (None: nothing yet) for ``task``: when it
    is at least as good. Ties go to the later epoch, the one trained longer — one rule for every method (annealed
    edge-popup and Gem-Miner can only select their last epochs; a strict rule let the others keep an early tie,
    e.g. a chance-level epoch 1 when every epoch sits at chance)."""
    if old is None:
        return True
    return new <= old if metric_key(task) == "mse" else new >= old


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int = 512) -> tuple[float, float]:
    """(metric, mean loss) of ``model`` on ``split``, in a fixed batch order: (accuracy, mean cross-entropy) for
    a classification split (per position when the labels are sequences (n, T): outputs (n, classes, T)), (MSE, MSE)
    for a regression split (``split.task``; MSE over examples and outputs)."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for b in batches(split, batch_size):
        outputs = model(b.x)
        if split.task == "regression":
            loss_sum += float(F.mse_loss(outputs, b.labels, reduction="sum")) / outputs[0].numel()
        else:  # labels (n,) or one per position (n, T): an example's loss is the mean over its positions
            loss_sum += float(F.cross_entropy(outputs, b.labels, reduction="sum")) / math.prod(b.labels.shape[1:])
            correct += int((outputs.argmax(1) == b.labels).sum())
    if split.task == "regression":
        return loss_sum / len(split), loss_sum / len(split)
    return correct / split.labels.numel(), loss_sum / len(split)


SANITY_CHECKS = ("shuffle", "reinit", "invert")


def load_ticket_model(path: str | Path, device: str = "auto", data_root: str | None = None,
                      ) -> tuple[torch.nn.Module, Ticket, SearchConfig | None]:
    """The network a ticket describes, weights regenerated and checked, masks fixed; raises TicketError.

    Every ticket kind loads: a search ticket with its ``SearchConfig``; a theory construction (config kind
    "theory", ``strongticket.theory.ticket``) with None in its place (its config is ``ticket.config``).
    """
    from .ticket import ticket_kind

    if ticket_kind(path) == "theory":
        from .theory.ticket import load_theory_ticket

        model, ticket, _ = load_theory_ticket(path)
        return model.to(resolve_device(device)), ticket, None
    model, ticket, cfg, _ = _load(path, device, data_root)
    return model, ticket, cfg


def _config(ticket: Ticket, device: str, data_root: str | None) -> SearchConfig:
    root = data_root if data_root is not None else ticket.config.get("data_root")
    try:
        return SearchConfig.from_dict({**ticket.config, "out": None, "device": device, "data_root": root})
    except ValueError as e:
        if "data_root" in str(e):
            raise
        raise TicketError(f"{ticket.path}: corrupted ticket (config: {e})") from None


def _load(path: str | Path, device: str, data_root: str | None,
          ) -> tuple[torch.nn.Module, Ticket, SearchConfig, Splits]:
    ticket = read_ticket(path)
    cfg = _config(ticket, device, data_root)
    splits = load_splits(cfg.data, val_fraction=cfg.val_fraction, root=cfg.data_root,
                         train_examples=cfg.train_examples)
    check_ticket_shapes(ticket, masked_shapes(cfg, splits.input_shape, splits.num_classes))
    model = model_from_config(cfg, splits.input_shape, splits.num_classes)
    ticket.apply(model)
    return model.to(resolve_device(device)), ticket, cfg, splits


def _apply_sanity_check(model: torch.nn.Module, ticket: Ticket, cfg: SearchConfig, splits: Splits,
                        check: str) -> torch.nn.Module:
    """The ticket's network broken in one of the ways the literature uses to show a mask matters.

    shuffle: each layer's mask permuted at random (same kept count); reinit: the same masks over weights drawn
    with another seed; invert: each layer keeps its lowest-|S| weights instead (needs ``--save-scores``).
    """
    layers = masked_layers(model)
    if check == "reinit":
        other = dataclasses.replace(cfg, seed=(cfg.seed + 1) % 2**32)
        model = model_from_config(other, splits.input_shape, splits.num_classes).to(layers[0].weight.device)
        model.load_state_dict(ticket.state, strict=False)
        for layer, mask, bias_mask in zip(masked_layers(model), ticket.masks, ticket.bias_masks):
            layer.fix_mask(mask.to(layer.weight.device), bias_mask)
        return model
    if check == "shuffle":
        for i, layer in enumerate(layers):
            flat = layer.mask.reshape(-1)
            order = torch.from_numpy(permutation(_SANITY_SEED, flat.numel(), layer=i)).to(flat.device)
            layer.fix_mask(flat[order].view(layer.weight.shape), layer.bias_mask)
        return model
    if ticket.scores is None:
        raise ValueError(f"sanity check invert needs the scores: {ticket.path} was saved without --save-scores")
    for layer, scores in zip(layers, ticket.scores):
        n, k = scores.numel(), int(layer.mask.sum())
        inverted = ~topk_mask(scores, n - k) if k < n else torch.ones_like(scores, dtype=torch.bool)
        layer.fix_mask(inverted.to(layer.weight.device), layer.bias_mask)
    return model


def evaluate_ticket(path: str | Path, device: str = "auto", data_root: str | None = None,
                    sanity: str | None = None) -> dict[str, Any]:
    """Summary of a ticket's network on the test split of its data set (optionally broken by a sanity check)."""
    if sanity is not None and sanity not in SANITY_CHECKS:
        raise ValueError(f"sanity must be one of {', '.join(SANITY_CHECKS)}, got {sanity!r}")
    model, ticket, cfg, splits = _load(path, device, data_root)
    if sanity is not None:
        model = _apply_sanity_check(model, ticket, cfg, splits, sanity)
    dev = resolve_device(device)
    test_metric, test_loss = evaluate(model, splits.test.to(dev))
    m = metric_key(splits.task)
    layers = masked_layers(model)
    kept = [int(layer.mask.sum()) for layer in layers]
    total = [layer.weight.numel() for layer in layers]
    return {
        "ticket": str(path),
        "sanity": sanity,
        f"test_{m}": test_metric,
        "test_loss": test_loss,
        # a run that reported the mean over sampled masks (supermask's eval_samples) also records its one mask's
        f"run_test_{m}": ticket.summary.get(f"ticket_test_{m}", ticket.summary.get(f"test_{m}")),
        "density": sum(kept) / sum(total),
        "layer_density": [k / t for k, t in zip(kept, total)],
        "kept_weights": sum(kept),
        "total_weights": sum(total),
        "seed": cfg.seed,
        # share_weights: the layers compute with this many distinct frozen matrices (one per shape)
        "random_matrices": len({layer.weight_stream for layer in layers}),
        "weights_sha256": ticket.weights_sha256,
        "backend": backend_name(dev),
        "device": str(dev),
    }
