"""The search loop every method runs through: train the popup scores of a frozen random network (or let a
pruning-at-initialization method score it once), select an epoch on validation data, write the ticket.

The loop is edge-popup's (Ramanujan et al., "What's Hidden in a Randomly Weighted Neural Network?", CVPR 2020),
with the methods' hooks (:mod:`strongticket.search.methods`) where they differ. Only the scores learn:
SGD with momentum and a learning-rate schedule (``lr_schedule``: ours is a cosine per optimizer step down to 0; the
originals set ½(1 + cos(πe/E))·lr once per epoch e = 0..E−1, ``cosine-epoch``; or ``constant``), optional weight
decay on the scores. On the
Triton backend and in the CPU's linear layers, outside DDP, the scores' SGD step runs inside the backward pass
(``optim.ScoreSGD``, same checkpoints and bits as ``torch.optim.SGD``); the summary's ``optimizer`` says which
ran (``fused-sgd`` or ``sgd``).
The epoch with the best validation accuracy (a split carved from the training data; ties go to the later epoch) is
selected, or the last one (``select_epoch="last"``, where the originals report their last epoch); the test split is
evaluated once, at the end, on the selected masks (as the method scores a split: supermask's ``eval_samples``).

Regression data (``Splits.task == "regression"``, e.g. ``planted-relu``): the network's last layer is an
identity head (no softmax), the loss is ``F.mse_loss``, and the keys ``train_mse`` / ``val_mse`` / ``test_mse``
replace ``train_acc`` / ``val_acc`` / ``test_acc``; the epoch with the lowest validation MSE is selected.

A run folder holds ``config.json`` (resolved), ``metrics.jsonl`` (one line per epoch, append-only),
``checkpoint.pt`` (written atomically after every epoch, with the SHA-256 of its payload), ``ticket.safetensors``,
``summary.json`` and ``report.md``, every file written atomically. Running the same config again resumes from the
checkpoint and ends with the same mask, bit for bit, as an uninterrupted run; a finished run is reported again
without recomputation if its ticket verifies (else the ticket is rebuilt from the checkpoint). A search holds the
folder's lock (``.lock``) while it runs: a second one on the same folder is refused. A damaged checkpoint, or a log of
epochs without the checkpoint they came from, is refused with one line naming the file. Every epoch logs
``mask_sha256``, the SHA-256 of all masks, so two runs can be compared epoch by epoch.

Under torchrun (``torchrun --nproc_per_node=N -m strongticket search ...``; see :mod:`strongticket.distributed`)
every rank runs this same function on its share of each global batch of ``batch_size`` examples, the model under
DistributedDataParallel. Rank 0 alone reads and writes the run folder (the others receive the checkpoint and the
summary from it, so a resume needs no shared file system) and prints; all ranks check once per epoch that they
hold the same masks and scores.

Every method of :mod:`strongticket.search.methods` (``--algo``) runs through this loop: its hooks set scores
before training, the density of each epoch (only epochs at the target density can be selected), and act after
each step and epoch; a method that does not train (pruning at initialization) skips the loop and its mask is
evaluated as a fixed-mask ticket. A layer left with no weight is listed in ``collapsed_layers`` and warned about.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..backend import backend_name, resolve_device
from ..config import SearchConfig, model_label
from ..data.splits import Split, Splits, batches, load_splits
from ..evaluate import better, evaluate, metric_key
from ..files import FileCheckError, RunLock, atomic_write, check_zip, read_json, tree_sha256
from ..models import check_param_budget, model_from_config
from ..nn import MaskedLayer, masked_layers, other_state, trainable_state
from ..optim import ScoreSGD
from ..ticket import TicketError, read_ticket, save_ticket, weights_sha256
from . import methods

__all__ = ["run_search", "run_dir", "lr_factor"]

_CHECKPOINT_VERSION = 2  # 2: the payload carries its own SHA-256


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
    state = {**state, "sha256": tree_sha256(state)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path, cfg: SearchConfig) -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``weights_only=True`` and checked against its SHA-256 and ``cfg``."""
    remove = "remove it to restart the run from epoch 1"
    try:
        check_zip(path, 2 * path.stat().st_size + (1 << 20))  # torch.save stores, never deflates
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileCheckError as e:
        raise FileCheckError(f"{path}: damaged checkpoint ({str(e).split(': ', 1)[-1]}); {remove}") from None
    except Exception as e:  # noqa: BLE001 - whatever the loader trips on, the file is damaged
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise FileCheckError(f"{path}: damaged checkpoint ({type(e).__name__}: {first}); {remove}") from None
    if not isinstance(state, dict) or state.get("version") != _CHECKPOINT_VERSION:
        found = state.get("version") if isinstance(state, dict) else None
        raise FileCheckError(f"{path}: checkpoint version {found!r} is not {_CHECKPOINT_VERSION}, the one this version "
                             f"writes; {remove}")
    try:
        intact = state.get("sha256") == tree_sha256({k: v for k, v in state.items() if k != "sha256"})
    except TypeError:
        intact = False
    if not intact:
        raise FileCheckError(f"{path}: damaged checkpoint (payload does not match its SHA-256); {remove}")
    if state.get("digest") != cfg.digest():
        raise FileCheckError(f"{path}: checkpoint belongs to another config (digest {state.get('digest')!r} != "
                             f"{cfg.digest()}); {remove}")
    return state


def _prepare_folder(folder: Path, cfg: SearchConfig) -> None:
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        try:
            old = SearchConfig.from_dict(read_json(cfg_path, "config.json"))
        except ValueError as e:
            raise ValueError(f"out folder {str(folder)!r} holds an unreadable config.json ({e})") from None
        if old.digest() != cfg.digest():
            raise ValueError(f"out folder {str(folder)!r} holds a run of another config (digest {old.digest()} "
                             f"!= {cfg.digest()}); choose another --out")
    text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    if not cfg_path.exists() or cfg_path.read_text() != text:
        atomic_write(cfg_path, text)


def _finished_summary(folder: Path, cfg: SearchConfig, can_rebuild: bool) -> dict[str, Any] | None:
    """The summary of a finished run whose ticket verifies (``summary.json`` rewritten from the ticket when it is
    damaged), or None when the ticket must be rebuilt from the checkpoint (``can_rebuild``; else one line)."""
    ticket_path = folder / "ticket.safetensors"
    try:
        ticket = read_ticket(ticket_path)
        try:
            same = SearchConfig.from_dict({**ticket.config, "out": None, "data_root": None}).digest() == cfg.digest()
        except (ValueError, TypeError):
            same = False
        if not same:
            raise TicketError(f"{ticket_path}: the ticket belongs to another config")
    except TicketError as e:
        if not can_rebuild:
            raise FileCheckError(f"{e}; there is no checkpoint.pt to rebuild it from: remove the run folder to "
                                 f"search again") from None
        warnings.warn(f"{e}; rebuilding the ticket from checkpoint.pt", RuntimeWarning, stacklevel=3)
        return None
    summary_path = folder / "summary.json"
    try:
        if json.dumps(read_json(summary_path, "summary.json"), sort_keys=True) == json.dumps(ticket.summary,
                                                                                            sort_keys=True):
            return ticket.summary  # (compared as text: a NaN metric equals itself)
    except FileCheckError:
        pass
    warnings.warn(f"{summary_path}: damaged or edited; rewritten from the ticket's summary", RuntimeWarning,
                  stacklevel=3)
    atomic_write(summary_path, json.dumps(ticket.summary, indent=2) + "\n")
    return ticket.summary


def _check_no_orphan_log(path: Path) -> None:
    """A run with no checkpoint starts at epoch 1: refuse a log of trained epochs (the checkpoint was deleted)."""
    if not path.exists():
        return
    epochs = [r.get("epoch") for r in _log_records(path)]
    if any(isinstance(e, int) and e >= 1 for e in epochs):
        raise FileCheckError(f"{path}: logs {len(epochs)} epochs but checkpoint.pt is missing (deleted?), so the run "
                             f"cannot resume; remove metrics.jsonl (or the folder) to start it again")


def _log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a torn line
        if isinstance(record, dict):
            records.append(record)
    return records


def run_search(
    cfg: SearchConfig,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run (or resume, or re-report) the search described by ``cfg``; returns the summary (on every rank)."""
    lock = RunLock(run_dir(cfg))
    try:
        return _run_search(cfg, lock, on_epoch, progress)
    finally:
        lock.release()


def _run_search(cfg: SearchConfig, lock: RunLock, on_epoch: Callable[[dict[str, Any]], None] | None,
                progress: bool | None) -> dict[str, Any]:
    folder = run_dir(cfg)
    summary_path = folder / "summary.json"
    ckpt_path = folder / "checkpoint.pt"
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    if cfg.batch_size < world:
        raise ValueError(f"batch_size (the global batch) must be in [{world}, 1048576] on {world} processes, "
                         f"got {cfg.batch_size}")

    def read_folder() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if folder.exists() and not folder.is_dir():
            raise FileCheckError(f"{folder}: the run folder (--out) is a file; choose another path")
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # held until run_search returns: one search writes a folder at a time
        _prepare_folder(folder, cfg)
        if summary_path.exists():  # finished: report again if the ticket verifies, recompute nothing
            finished = _finished_summary(folder, cfg, can_rebuild=ckpt_path.exists())
            if finished is not None:
                return finished, None
        if not ckpt_path.exists():
            _check_no_orphan_log(folder / "metrics.jsonl")
            return None, None
        state = _load_checkpoint(ckpt_path, cfg)
        _catch_up_metrics(folder / "metrics.jsonl", state["history"])
        return None, state

    finished, state = distributed.on_main(read_folder)
    if finished is not None:
        return finished
    device = distributed.local_device(resolve_device(cfg.device))
    backend = backend_name(device)

    splits: Splits = load_splits(cfg.data, val_fraction=cfg.val_fraction, root=cfg.data_root,
                                 train_examples=cfg.train_examples)
    check_param_budget(cfg, splits.input_shape, splits.num_classes, cfg.max_params)
    task, m = splits.task, metric_key(splits.task)
    if task == "regression" and cfg.algo in ("snip", "grasp"):
        raise ValueError(f"algo {cfg.algo} scores with a cross-entropy saliency and needs classification data, "
                         f"got regression data {cfg.data}")
    train, val, test = (s.to(device) for s in (splits.train, splits.val, splits.test))
    model = model_from_config(cfg, splits.input_shape, splits.num_classes).to(device)
    layers = masked_layers(model)
    frozen_sha = weights_sha256(layers)
    method = methods.build(cfg)
    t_prepare = time.perf_counter()
    method.prepare(model, dataclasses.replace(splits, train=train, val=val, test=test))
    if not method.trains:
        return distributed.on_main(lambda: _finish_untrained(cfg, method, model, layers, val, test, folder, {
            "seconds": round(time.perf_counter() - t_prepare, 3), "backend": backend, "device": str(device),
            "seed": cfg.seed, "weights_sha256": frozen_sha, "world_size": world, "run_dir": str(folder),
        }))
    train_model = distributed.wrap_model(model, device)  # DDP under torchrun, else the model itself
    model = getattr(train_model, "module", train_model)  # SyncBatchNorm may have replaced its top module
    scored = [p for layer in layers for p in (layer.scores, layer.bias_scores) if p is not None]
    scored_ids = {id(p) for p in scored}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in scored_ids]  # --learn-bn
    groups = [{"params": scored, "weight_decay": method.score_weight_decay()}]
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    # No DDP wrapper (which hands the gradients to its reducer, even alone), a method without its own use of the
    # gradients: the scores' SGD step runs in the backward pass (optim.ScoreSGD, same state_dict as
    # torch.optim.SGD), in the Triton kernels or in the CPU's premasked linear
    fused = train_model is model and method.fused_optimizer
    optimizer = (ScoreSGD if fused else torch.optim.SGD)(groups, lr=cfg.lr, momentum=cfg.momentum)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.lr_schedule, steps_per_epoch, cfg.epochs))
    writer = _tensorboard(folder) if cfg.tensorboard and main else None

    start_epoch, history, best, elapsed = 0, [], None, 0.0
    prev_masks = [layer.mask.clone() for layer in layers]
    if state is not None:
        state = _to_device(state, device)
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, history, best, elapsed = state["epoch"], state["history"], state["best"], state["seconds"]
        prev_masks = state["last_masks"]
        method.load_state_dict(state.get("method", {}))

    val_share = val.take(torch.arange(rank, len(val), world, device=device)) if world > 1 else val
    bar = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs, desc="search",
               unit="epoch", disable=True if not main else (not progress) if progress is not None else None,
               leave=False)

    def measure_val(mdl: torch.nn.Module, split: Split) -> tuple[float, float]:
        return evaluate(mdl, split) if world == 1 else _evaluate_shared(mdl, val_share, len(val))

    density = cfg.density
    for epoch in bar:
        t0 = time.perf_counter()
        if method.density_at(epoch) != density:
            density = method.density_at(epoch)
            methods.set_density(layers, density)
        train_model.train()
        loss_sum, correct = 0.0, 0
        for step, b in enumerate(batches(train, cfg.batch_size, seed=cfg.data_seed, epoch=epoch,
                                         augment=cfg.augment, rank=rank, world_size=world)):
            done = epoch * steps_per_epoch + step  # optimizer steps before this one
            method.before_step(model, done)
            logits = train_model(b.x)
            global_count = min(cfg.batch_size, len(train) - step * cfg.batch_size)  # the last batch may be short
            loss, batch_loss_sum = _loss(logits, b.labels, world, global_count, task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            method.after_step(model, done + 1)
            loss_sum += batch_loss_sum
            if task == "classification":
                correct += int((logits.detach().argmax(1) == b.labels).sum())
        if world > 1:
            loss_sum, correct = distributed.all_reduce_sum([loss_sum, correct])
            correct = round(correct)
        if not all(torch.isfinite(p).all() for p in scored):
            raise FloatingPointError(f"scores became non-finite in epoch {epoch + 1}; lower --lr (got {cfg.lr})")
        method.after_epoch(model, epoch)
        val_metric, val_loss = method.evaluate(model, val, measure_val)
        masks_now = [layer.mask.clone() for layer in layers]
        mask_sha = distributed.tensors_sha256(masks_now + [layer.bias_mask for layer in layers])
        if world > 1:
            distributed.check_agreement({"masks": mask_sha, "scores": distributed.tensors_sha256(scored + others)},
                                        f"after epoch {epoch + 1}")
        flips = sum(int((a != b).sum()) for a, b in zip(masks_now, prev_masks))
        prev_masks = masks_now
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / len(train),
            f"train_{m}": correct / train.labels.numel() if m == "acc" else loss_sum / len(train),
            "val_loss": val_loss,
            f"val_{m}": val_metric,
            "lr": optimizer.param_groups[0]["lr"],
            "flip_rate": flips / sum(m.numel() for m in masks_now),
            "mask_sha256": mask_sha,
            **_layer_stats(layers),
            "score_histogram": _score_histogram(layers),
            **method.epoch_metrics(model, val),
            "seconds": time.perf_counter() - t0,
        }
        selected = None if best is None else best[f"val_{m}"]
        if density == cfg.density and (cfg.select_epoch == "last" or better(task, val_metric, selected)):
            best = {f"val_{m}": val_metric, "epoch": epoch + 1, "masks": masks_now,
                    "bias_masks": [layer.bias_mask for layer in layers], "other": other_state(model),
                    "generations": [None if layer.generation is None else layer.generation.clone() for layer in layers],
                    "scores": ([s.detach().clone() for s in scored] if cfg.save_scores or method.samples_in_eval
                               else None)}
        history.append(record)
        elapsed += record["seconds"]
        if main:
            _save_checkpoint(ckpt_path, {
                "version": _CHECKPOINT_VERSION, "digest": cfg.digest(), "epoch": epoch + 1,
                "trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "history": history, "best": best, "last_masks": masks_now,
                "seconds": elapsed, "method": method.state_dict(),
            })
            _append_line(folder / "metrics.jsonl", json.dumps(record))
        if writer is not None:
            for key in ("train_loss", f"train_{m}", "val_loss", f"val_{m}", "lr", "flip_rate", "density"):
                writer.add_scalar(key, record[key], epoch + 1)
            writer.flush()
        bar.set_postfix({f"val_{m}": f"{val_metric:.3f}" if m == "acc" else f"{val_metric:.3g}",
                         "loss": f"{record['train_loss']:.3f}"})
        if on_epoch is not None:
            on_epoch(record)
    bar.close()
    if writer is not None:
        writer.close()

    if weights_sha256(layers) != frozen_sha:
        raise RuntimeError("frozen weights changed during the search; this is a bug in strongticket")
    return distributed.on_main(lambda: _finish(cfg, method, model, layers, scored, best, history, test, folder, {
        "seconds": round(elapsed, 3), "backend": backend, "device": str(device), "seed": cfg.seed,
        "weights_sha256": frozen_sha, "world_size": world, "run_dir": str(folder),
        "optimizer": "fused-sgd" if fused else "sgd",
    }))


def _finish(cfg: SearchConfig, method: methods.Method, model: torch.nn.Module, layers: list[MaskedLayer],
            scored: list[torch.Tensor], best: dict[str, Any], history: list[dict[str, Any]], test: Split,
            folder: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """Go back to the selected epoch, look at the test split once, write ticket, summary and report."""
    with torch.no_grad():
        model.load_state_dict(best["other"], strict=False)
        for layer, generation in zip(layers, best.get("generations") or [None] * len(layers)):
            if generation is not None:  # IteRand: the weights as they were at the selected epoch
                layer.load_generation(generation)
        if best["scores"] is not None:
            for s, saved in zip(scored, best["scores"]):
                s.copy_(saved)
    m = metric_key(test.task)
    sampled = method.evaluate(model, test, evaluate) if method.samples_in_eval else None  # before masks are fixed
    with torch.no_grad():
        for layer, mask, bias_mask in zip(layers, best["masks"], best["bias_masks"]):
            layer.fix_mask(mask, bias_mask)
    test_metric, test_loss = evaluate(model, test)
    if sampled is not None:  # the method's number; the ticket's mask scores ticket_test_<m>
        facts = {f"ticket_test_{m}": test_metric, "ticket_test_loss": test_loss,
                 "eval_samples": cfg.eval_samples, **facts}
        test_metric, test_loss = sampled
    collapsed = methods.collapsed_layers(layers)
    if collapsed:
        hint = ("; supermask's scores start at logit(density) and move by lr·σ'(S) ≤ lr/4: raise --lr (Zhou et al. "
                f"use 100, got {cfg.lr:g})" if cfg.algo == "supermask" else "")
        warnings.warn(f"{cfg.algo} at density {cfg.density:g} collapsed masked layer(s) {collapsed}: they keep no "
                      f"weight, so the network's output no longer depends on its input{hint}", RuntimeWarning,
                      stacklevel=2)
    summary = {
        f"test_{m}": test_metric,
        "test_loss": test_loss,
        f"val_{m}": best[f"val_{m}"],
        "best_epoch": best["epoch"],
        "epochs": cfg.epochs,
        **_layer_stats(layers),
        "collapsed_layers": collapsed,
        **facts,
    }
    save_ticket(folder / "ticket.safetensors", model, cfg.to_dict(), summary, save_scores=cfg.save_scores)
    atomic_write(folder / "report.md", _report(cfg, summary, history))
    atomic_write(folder / "summary.json", json.dumps(summary, indent=2) + "\n")  # last: it marks the run finished
    return summary


def _finish_untrained(cfg: SearchConfig, method: methods.Method, model: torch.nn.Module, layers: list[MaskedLayer],
                      val: Split, test: Split, folder: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """Finish a method that found its (now fixed) masks without training: one validation record, then
    :func:`_finish` as for a trained run."""
    val_metric, val_loss = evaluate(model, val)
    m = metric_key(val.task)
    masks_now = [layer.mask.clone() for layer in layers]
    record = {"epoch": 0, "val_loss": val_loss, f"val_{m}": val_metric, "rounds": cfg.rounds,
              "mask_sha256": distributed.tensors_sha256(masks_now), **_layer_stats(layers),
              "seconds": facts["seconds"]}
    atomic_write(folder / "metrics.jsonl", json.dumps(record) + "\n")
    best = {f"val_{m}": val_metric, "epoch": 0, "masks": masks_now, "bias_masks": [lay.bias_mask for lay in layers],
            "other": other_state(model), "scores": None}
    return _finish(cfg, method, model, layers, [], best, [], test, folder,
                   {**facts, "epochs": 0, "rounds": cfg.rounds})


def lr_factor(schedule: str, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The factor on ``lr`` after ``step`` optimizer steps (``LambdaLR``): ``cosine-step`` ½(1 + cos(π·step/T)),
    T = epochs·steps_per_epoch (ours); ``cosine-epoch`` ½(1 + cos(π·e/epochs)) in 0-based epoch e (the originals:
    hidden-networks, biprop, IteRand, Plant 'n' Seek, Gem-Miner); ``constant`` 1 (Zhou et al.)."""
    total = epochs * steps_per_epoch
    if schedule == "cosine-step":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total))
    if schedule == "cosine-epoch":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * (step // steps_per_epoch) / epochs))
    if schedule == "constant":
        return lambda step: 1.0
    raise ValueError(f"lr_schedule must be one of cosine-step, cosine-epoch, constant, got {schedule!r}")


def _loss(logits: torch.Tensor, labels: torch.Tensor, world: int, global_count: int,
          task: str = "classification") -> tuple[torch.Tensor, float]:
    """The loss to back-propagate and the sum of this rank's per-example losses.

    Classification: cross-entropy of the logits (labels (B,), or (B, T) against logits (B, classes, T): an
    example's loss is the mean over its positions). Regression: ``F.mse_loss`` of the identity head's outputs
    (B, d_out) against the targets, no softmax; an example's loss is its squared error averaged over the d_out
    outputs, so the batch mean is ``F.mse_loss(outputs, targets)``.
    One process: the batch mean. R ranks: (R / B) Σ_shard loss over this rank's share of a global batch of B,
    which DDP's average over the ranks turns into the gradient of the global batch's mean.
    """
    if task == "regression":
        if logits.shape != labels.shape:
            raise ValueError(f"regression outputs must have the targets' shape {tuple(labels.shape)}, "
                             f"got {tuple(logits.shape)}")
        if world == 1:
            loss = F.mse_loss(logits, labels)
            return loss, float(loss.detach()) * labels.shape[0]
        total = F.mse_loss(logits, labels, reduction="sum") / math.prod(labels.shape[1:])
        return total * (world / global_count), float(total.detach())
    if world == 1:
        loss = F.cross_entropy(logits, labels)
        return loss, float(loss.detach()) * labels.shape[0]
    total = F.cross_entropy(logits, labels, reduction="sum") / math.prod(labels.shape[1:])
    return total * (world / global_count), float(total.detach())


def _evaluate_shared(model: torch.nn.Module, share: Split, total: int) -> tuple[float, float]:
    """(metric, mean loss) over a split of ``total`` examples (see :func:`evaluate`), of which this rank
    evaluates ``share``; every rank gets the same numbers, so every rank selects the same best epoch."""
    metric, loss = evaluate(model, share) if len(share) else (0.0, 0.0)
    metric_sum, loss_sum = distributed.all_reduce_sum([metric * len(share), loss * len(share)])
    if share.task == "regression":
        return loss_sum / total, loss_sum / total
    per = math.prod(share.labels.shape[1:])  # positions per example (1, or T for sequences)
    return round(metric_sum * per) / (total * per), loss_sum / total


def _to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` (nested dicts, lists, tuples) with every tensor moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


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
    """Make ``metrics.jsonl`` the checkpoint's history, line for line: the epochs a kill kept out are added, a torn
    last line is dropped (the checkpoint holds every record the log should)."""
    text = "".join(json.dumps(record) + "\n" for record in history)
    if not path.exists() or path.read_text(errors="replace") != text:
        atomic_write(path, text)


def _append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a") as fh:
            fh.write(line + "\n")
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None


def _report(cfg: SearchConfig, summary: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """``report.md`` of one run: accuracy columns for classification, MSE columns for regression."""
    m = "acc" if "test_acc" in summary else "mse"
    fmt = ".4f" if m == "acc" else ".4g"
    lines = [
        f"# {cfg.run_name()}",
        "",
        f"{cfg.algo} on `{cfg.data}`, model `{model_label(cfg)}`, init `{cfg.init}`, "
        f"density {cfg.density} ({cfg.scope}), seed {cfg.seed}"
        + (f", preset `{cfg.preset}` (docs/presets.md)." if cfg.preset else "."),
        "",
        f"| test {m} | val {m} (best epoch) | kept / total weights | seconds | backend |",
        "|---|---|---|---|---|",
        f"| {summary[f'test_{m}']:{fmt}} | {summary[f'val_{m}']:{fmt}} ({summary['best_epoch']}) | "
        f"{summary['kept_weights']:,} / {summary['total_weights']:,} | {summary['seconds']:.1f} | "
        f"{summary['backend']} |",
        "",
        f"| epoch | train loss | train {m} | val {m} | flip rate |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['epoch']} | {r['train_loss']:.4f} | {r[f'train_{m}']:{fmt}} | {r[f'val_{m}']:{fmt}} | "
              f"{r['flip_rate']:.4f} |" for r in history]
    return "\n".join(lines) + "\n"
