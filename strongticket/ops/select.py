"""Exact top-k thresholds of |S| (radix select on the device) and the masks they define.

  topk_thresholds([S_l], ks, slots) -> (L, 2) int64   rows (τ bits, tie cut), per layer or global
  threshold_mask(S, threshold) -> bool mask           |S| bits > τ, or == τ at a flat index <= cut
  threshold_masked_weight(W, S, threshold, dtype)      W ⊙ M in ``dtype`` for that mask (the torch backend's forward)
  patch_masked_weight(W ⊙ M!, W, S, where, ...)       the same, in place, at the scores that moved

On the CPU the reference runs in numpy (``strongticket.masks``): torch's comparisons there cost ~1 ms per 2^20
elements, numpy's 0.15 ms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _cpu
from ._common import _kernels, _masked_weight, _use_triton, thresholds_mask_ref

__all__ = ["topk_thresholds", "threshold_mask", "threshold_masked_weight", "patch_masked_weight"]


@torch.library.custom_op("strongticket::topk_thresholds", mutates_args=())
def topk_thresholds(scores: list[Tensor], ks: list[int], slots: list[int]) -> Tensor:
    """(L, 2) int64 rows (τ bits, tie cut) of the exact top-k: layer l joins slot ``slots[l]``, slot s keeps
    ``ks[s]`` (per layer: slots = 0..L-1; global: all 0). Same masks as ``strongticket.masks``, ties by index
    in the slot's concatenation; on the Triton path no host synchronisation."""
    if _use_triton(*scores) and all(s.dtype == torch.float32 for s in scores):
        sel = _kernels("select")
        plan = _select_plan(tuple(s.numel() for s in scores), tuple(ks), tuple(slots), scores[0].device)
        return sel.select_thresholds([s.contiguous() for s in scores], plan)
    return _topk_thresholds_ref(scores, ks, slots)


@topk_thresholds.register_fake
def _(scores, ks, slots):
    return scores[0].new_empty((len(scores), 2), dtype=torch.int64)


_PLANS: dict[tuple, object] = {}


def _select_plan(numels: tuple, ks: tuple, slots: tuple, device: torch.device):
    key = (numels, ks, slots, str(device))
    if key not in _PLANS:
        _PLANS[key] = _kernels("select").make_select_plan(numels, ks, slots, device=device)
    return _PLANS[key]


def _topk_thresholds_ref(scores: list[Tensor], ks: list[int], slots: list[int]) -> Tensor:
    from ..masks import global_topk_masks, magnitude_bits

    if len(slots) != len(scores) or not scores:
        raise ValueError(f"slots must have one entry per scores tensor ({len(scores)}), got {len(slots)}")
    out = torch.empty((len(scores), 2), dtype=torch.int64, device=scores[0].device)
    for s in sorted(set(slots)):
        layers = [i for i, slot in enumerate(slots) if slot == s]
        group_masks = global_topk_masks([scores[i] for i in layers], ks[s])
        bits = torch.cat([magnitude_bits(scores[i]) for i in layers])
        kept = torch.cat([m.reshape(-1) for m in group_masks])
        tau = bits[kept].min()
        tied_kept = torch.nonzero(kept & (bits == tau)).squeeze(1)
        cut = int(tied_kept.max()) if int((bits == tau).sum()) > tied_kept.numel() else 2**62
        base = 0
        for i in layers:
            out[i, 0], out[i, 1] = int(tau), cut - base
            base += scores[i].numel()
    return out


@torch.library.custom_op("strongticket::threshold_mask", mutates_args=())
def threshold_mask(scores: Tensor, threshold: Tensor) -> Tensor:
    """Bool mask of ``scores``' shape: |S| bits > τ, or == τ at a flat index <= cut (``threshold`` = (τ, cut))."""
    if _use_triton(scores) and scores.dtype == torch.float32 and scores.dim() >= 1:
        mask, _ = _kernels("select").threshold_mask(scores.contiguous(), threshold)
        return mask
    if _numpy_path(scores):
        from ..masks import threshold_mask_np

        tau, cut = (int(v) for v in threshold.tolist())
        return torch.from_numpy(threshold_mask_np(_magnitude_np(scores), tau, cut)).view(scores.shape)
    return thresholds_mask_ref(scores, threshold)


@threshold_mask.register_fake
def _(scores, threshold):
    return torch.empty_like(scores, dtype=torch.bool)


def threshold_masked_weight(weight: Tensor, scores: Tensor, threshold: Tensor, dtype: torch.dtype) -> Tensor:
    """W ⊙ M in ``dtype``, M = the mask of ``threshold`` = (τ, cut) over ``scores``: on the CPU (float32) one pass
    of ``ops._cpu`` where it runs, else W times :func:`threshold_mask`. Bit for bit the reference's W·M, signed zeros
    included. A plain function, not a custom op: it runs once per mask change, outside autograd."""
    if _numpy_path(weight, scores) and dtype == torch.float32 and weight.shape == scores.shape:
        scores, weight = scores.detach().contiguous(), weight.detach().contiguous()
        if _cpu.usable(scores, weight):
            tau, cut = threshold.tolist()
            return _cpu.threshold_weight(scores, weight, tau, cut, torch.empty_like(weight))
    return _masked_weight(weight, threshold_mask(scores, threshold), dtype)


def patch_masked_weight(masked: Tensor, weight: Tensor, scores: Tensor, where: np.ndarray, offset: int, tau: int,
                        cut: int) -> None:
    """Re-decide ``masked`` = W ⊙ M (float32, CPU) at the flat indices ``where`` − ``offset`` (ascending int64)
    from the threshold (τ, cut) over ``scores``, in place: what :func:`threshold_masked_weight` would write there."""
    if _cpu.usable(masked, weight, scores):
        _cpu.patch_weight(scores, weight, masked, where, offset, tau, cut)
        return
    scores, weight = scores.detach().contiguous(), weight.detach().contiguous()
    at = where - offset
    bits = scores.reshape(-1).view(torch.int32).numpy()[at] & 0x7FFFFFFF
    keep = (bits > tau) | ((bits == tau) & (at <= cut))
    w = weight.reshape(-1).view(torch.int32).numpy()[at]
    masked.view(-1).view(torch.int32).numpy()[at] = np.where(keep, w, w & np.int32(-2**31))


def _numpy_path(*tensors: Tensor) -> bool:
    """The CPU reference's numpy path: float32 CPU tensors on the torch backend."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and not _use_triton(*tensors)


def _magnitude_np(scores: Tensor) -> np.ndarray:
    return np.bitwise_and(scores.detach().contiguous().view(torch.int32).numpy().reshape(-1), 0x7FFFFFFF)
