"""Edge-popup search: train the popup scores of a frozen random network, keep the top-k edges.

Ramanujan et al., "What's Hidden in a Randomly Weighted Neural Network?", CVPR 2020. Only the scores learn:
SGD with momentum and a cosine learning-rate schedule (per step), optional weight decay on the scores.
The epoch with the best validation accuracy (a split carved from the training data) is selected; the test
split is evaluated once, at the end, on the selected masks.

A run folder holds ``config.json`` (resolved), ``metrics.jsonl`` (one line per epoch, append-only),
``checkpoint.pt`` (written atomically after every epoch), ``ticket.safetensors``, ``summary.json`` and
``report.md``. Running the same config again resumes from the checkpoint and ends with the same mask, bit for
bit, as an uninterrupted run; a finished run is reported again without recomputation.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..backend import backend_name, resolve_device
from ..config import SearchConfig, model_label
from ..data.splits import Splits, batches, load_splits
from ..evaluate import evaluate
from ..models import model_from_config
from ..nn import MaskedLayer, masked_layers, other_state, trainable_state
from ..ticket import save_ticket, weights_sha256

__all__ = ["run_search", "run_dir"]

_CHECKPOINT_VERSION = 1


def run_dir(cfg: SearchConfig) -> Path:
    return Path(cfg.out).expanduser() if cfg.out else Path("runs") / cfg.run_name()


def _layer_stats(layers: list[MaskedLayer]) -> dict[str, Any]:
    kept = [layer.kept() for layer in layers]
    total = [layer.weight.numel() for layer in layers]
    return {
        "density": sum(kept) / sum(total),
        "layer_density": [k / t for k, t in zip(kept, total)],
        "kept_weights": sum(kept),
        "total_weights": sum(total),
    }


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _prepare_folder(folder: Path, cfg: SearchConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        try:
            old = SearchConfig.from_dict(json.loads(cfg_path.read_text()))
        except (ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"out folder {str(folder)!r} holds an unreadable config.json ({e})") from None
        if old.digest() != cfg.digest():
            raise ValueError(f"out folder {str(folder)!r} holds a run of another config (digest {old.digest()} "
                             f"!= {cfg.digest()}); choose another --out")
    cfg_path.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


def run_search(
    cfg: SearchConfig,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume, or re-report) the search described by ``cfg``; returns the summary."""
    folder = run_dir(cfg)
    _prepare_folder(folder, cfg)
    summary_path = folder / "summary.json"
    ckpt_path = folder / "checkpoint.pt"
    if summary_path.exists():  # finished: report again, recompute nothing
        return json.loads(summary_path.read_text())
    device = resolve_device(cfg.device)
    backend = backend_name(device)

    splits: Splits = load_splits(cfg.data, val_fraction=cfg.val_fraction, root=cfg.data_root)
    train, val, test = (s.to(device) for s in (splits.train, splits.val, splits.test))
    model = model_from_config(cfg, splits.input_shape, splits.num_classes).to(device)
    layers = masked_layers(model)
    frozen_sha = weights_sha256(layers)
    scored = [p for layer in layers for p in (layer.scores, layer.bias_scores) if p is not None]
    scored_ids = {id(p) for p in scored}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in scored_ids]  # --learn-bn
    groups = [{"params": scored, "weight_decay": cfg.weight_decay}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    )
    writer = _tensorboard(folder) if cfg.tensorboard else None

    start_epoch, history, best, elapsed = 0, [], None, 0.0
    prev_masks = [layer.mask.clone() for layer in layers]
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state.get("version") != _CHECKPOINT_VERSION or state.get("digest") != cfg.digest():
            raise ValueError(f"{ckpt_path}: checkpoint belongs to another config or version; remove it to restart")
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history, best, elapsed = state["epoch"], state["history"], state["best"], state["seconds"]
        prev_masks = state["last_masks"]
        _catch_up_metrics(folder / "metrics.jsonl", history)

    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="search",
               unit="epoch", disable=(not progress) if progress is not None else None, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct = 0.0, 0
        for b in batches(train, cfg.batch_size, seed=cfg.data_seed, epoch=epoch, augment=cfg.augment):
            logits = model(b.x)
            loss = F.cross_entropy(logits, b.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * b.labels.shape[0]
            correct += int((logits.detach().argmax(1) == b.labels).sum())
        if not all(torch.isfinite(p).all() for p in scored):
            raise FloatingPointError(f"scores became non-finite in epoch {epoch + 1}; lower --lr (got {cfg.lr})")
        val_acc, val_loss = evaluate(model, val)
        masks_now = [layer.mask.clone() for layer in layers]
        flips = sum(int((a != b).sum()) for a, b in zip(masks_now, prev_masks))
        prev_masks = masks_now
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / len(train),
            "train_acc": correct / len(train),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "flip_rate": flips / sum(m.numel() for m in masks_now),
            **_layer_stats(layers),
            "score_histogram": _score_histogram(layers),
            "seconds": time.perf_counter() - t0,
        }
        if best is None or val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "epoch": epoch + 1, "masks": masks_now,
                    "bias_masks": [layer.bias_mask for layer in layers], "other": other_state(model),
                    "scores": [s.detach().clone() for s in scored] if cfg.save_scores else None}
        history.append(record)
        elapsed += record["seconds"]
        _save_checkpoint(ckpt_path, {
            "version": _CHECKPOINT_VERSION, "digest": cfg.digest(), "epoch": epoch + 1,
            "trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "history": history, "best": best, "last_masks": masks_now,
            "seconds": elapsed,
        })
        with open(folder / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if writer is not None:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "flip_rate", "density"):
                writer.add_scalar(key, record[key], epoch + 1)
            writer.flush()
        bar.set_postfix(val_acc=f"{val_acc:.3f}", loss=f"{record['train_loss']:.3f}")
        if on_epoch is not None:
            on_epoch(record)
    bar.close()
    if writer is not None:
        writer.close()

    if weights_sha256(layers) != frozen_sha:
        raise RuntimeError("frozen weights changed during the search; this is a bug in strongticket")
    # Select the best validation epoch, then look at the test split once.
    with torch.no_grad():
        model.load_state_dict(best["other"], strict=False)
        for layer, mask, bias_mask in zip(layers, best["masks"], best["bias_masks"]):
            layer.fix_mask(mask, bias_mask)
        if best["scores"] is not None:
            for s, saved in zip(scored, best["scores"]):
                s.copy_(saved)
    test_acc, test_loss = evaluate(model, test)
    summary = {
        "test_acc": test_acc,
        "test_loss": test_loss,
        "val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        "epochs": cfg.epochs,
        **_layer_stats(layers),
        "seconds": round(elapsed, 3),
        "backend": backend,
        "device": str(device),
        "seed": cfg.seed,
        "weights_sha256": frozen_sha,
        "run_dir": str(folder),
    }
    save_ticket(folder / "ticket.safetensors", model, cfg.to_dict(), summary, save_scores=cfg.save_scores)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "report.md").write_text(_report(cfg, summary, history))
    return summary


def _score_histogram(layers: list[MaskedLayer], bins: int = 20) -> dict[str, Any]:
    """Histogram of |S| over all layers, ``bins`` equal bins on [0, max |S|]."""
    with torch.no_grad():
        mags = torch.cat([layer.scores.detach().abs().reshape(-1).float() for layer in layers])
        top = float(mags.max())
        counts = torch.histc(mags, bins=bins, min=0.0, max=top if top > 0 else 1.0)
    return {"max": top, "counts": [int(c) for c in counts.tolist()]}


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard must be installed for --tensorboard: pip install tensorboard") from None
    return SummaryWriter(str(folder / "tensorboard"))


def _catch_up_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Append the epochs the checkpoint holds but a kill kept out of ``metrics.jsonl``."""
    logged = 0
    if path.exists():
        logged = sum(1 for line in path.read_text().splitlines() if line.strip())
    with open(path, "a") as fh:
        for record in history[logged:]:
            fh.write(json.dumps(record) + "\n")


def _report(cfg: SearchConfig, summary: dict[str, Any], history: list[dict[str, Any]]) -> str:
    lines = [
        f"# {cfg.run_name()}",
        "",
        f"{cfg.algo} on `{cfg.data}`, model `{model_label(cfg)}`, init `{cfg.init}`, "
        f"density {cfg.density} ({cfg.scope}), seed {cfg.seed}.",
        "",
        "| test acc | val acc (best epoch) | kept / total weights | seconds | backend |",
        "|---|---|---|---|---|",
        f"| {summary['test_acc']:.4f} | {summary['val_acc']:.4f} ({summary['best_epoch']}) | "
        f"{summary['kept_weights']:,} / {summary['total_weights']:,} | {summary['seconds']:.1f} | "
        f"{summary['backend']} |",
        "",
        "| epoch | train loss | train acc | val acc | flip rate |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['epoch']} | {r['train_loss']:.4f} | {r['train_acc']:.4f} | {r['val_acc']:.4f} | "
              f"{r['flip_rate']:.4f} |" for r in history]
    return "\n".join(lines) + "\n"
