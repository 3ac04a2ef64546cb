"""Exact top-k threshold selection on the device: a 3-pass radix select over the bits of |S|, no host sync.

For non-negative IEEE floats the int32 bit patterns order exactly like the values, so τ (the k-th largest
|S|) is the k-th largest of ``bits = int(S) & 0x7FFFFFFF``, found one digit at a time over the 31 magnitude
bits, most significant first, with digits of 11 / 10 / 10 bits (AIR Top-k / RAFT ``kRadix11bits``, SC'23):

    pass p:  hist[d] = #{i : bits_i >> (shift_p + width_p) == prefix, (bits_i >> shift_p) & (2^width_p - 1) = d}
             d*      = max d with #{digit >= d} >= k_rem;  k_rem -= #{digit > d*};  prefix = prefix·2^w + d*

Each pass is one multi-block kernel (``tl.histogram`` per CTA, one relaxed atomic per non-empty bin per CTA)
and one tiny scan kernel per slot; everything stays on the device. After pass 3, τ = prefix exactly and
k_rem ∈ [1, #{bits = τ}] is the number of ties at τ to keep. Ties are kept lowest-index-first
(``strongticket.masks``): a per-block tie count and a scan find the flat index ``cut`` of the k_rem-th tie, so

    M_i = (bits_i > τ) | (bits_i == τ & i <= cut)

is the reference mask exactly. The tie passes read the scores only when some ties must be dropped (a device
branch), which for continuous scores is almost never.

Several layers go through one launch per pass: a layer → slot map assigns each layer a histogram slot. One
slot per layer gives per-layer top-k; all layers in slot 0 gives the global top-k (ties broken by position in
the concatenation of the layers in order, like ``masks.global_topk_masks``). Layers are read in place through
a table of data pointers; a CTA never straddles two layers.

Output: ``thresholds`` (L, 2) int64, row l = (τ bits of layer l's slot, cut in layer l's own flat indices);
``cut < 0`` keeps no ties of this layer, ``cut >= numel`` keeps them all.

Shapes: scores any shape, fp32, contiguous; counts per slot < 2^31.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

__all__ = ["SelectPlan", "make_select_plan", "select_thresholds", "threshold_mask", "mask_from_thresholds_ref"]

_PASSES = ((20, 11), (10, 10), (0, 10))  # (shift, width): 11/10/10-bit digits over the 31 magnitude bits
_HIST_BINS = 2048
_STATE = 4  # per slot int32: prefix (τ after pass 3), k_rem (ties at τ to keep), ties at τ, unused
_KEEP_ALL = 2**62  # "cut" when every tie at τ is kept


# scores: L fp32 tensors read through ptr_table; block b covers layer blk_layer[b], elements
# [blk_start[b], blk_start[b] + BLOCK); hist: (3, S, 2048) int32, pass PASS's histogram of slot s at [PASS, s].
@triton.jit
def _radix_hist_kernel(
    ptr_table,  # *int64 (L,): data pointers of the fp32 score tensors
    blk_layer_ptr,  # *int32 (n_blocks,)
    blk_start_ptr,  # *int64 (n_blocks,)
    layer_numel_ptr,  # *int64 (L,)
    layer_slot_ptr,  # *int32 (L,)
    state_ptr,  # *int32 (S, 4)
    hist_ptr,  # *int32 (3, S, 2048)
    n_slots,
    PASS: tl.constexpr,
    SHIFT: tl.constexpr,
    WIDTH: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    layer = tl.load(blk_layer_ptr + pid)
    start = tl.load(blk_start_ptr + pid)
    numel = tl.load(layer_numel_ptr + layer)
    slot = tl.load(layer_slot_ptr + layer)
    src = tl.load(ptr_table + layer).to(tl.pointer_type(tl.float32))
    offs = start + tl.arange(0, BLOCK)
    valid = offs < numel
    bits = tl.load(src + offs, mask=valid, other=0.0).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    if PASS > 0:
        prefix = tl.load(state_ptr + slot * 4)
        valid = valid & ((bits >> (SHIFT + WIDTH)) == prefix)
    digit = (bits >> SHIFT) & ((1 << WIDTH) - 1)
    hist = tl.histogram(digit, 1 << WIDTH, mask=valid)
    bins = tl.arange(0, 1 << WIDTH)
    dst = hist_ptr + (PASS * n_slots + slot) * 2048 + bins
    tl.atomic_add(dst, hist, mask=hist != 0, sem="relaxed")


# One program per slot: picks pass PASS's digit from its histogram and updates the slot's (prefix, k_rem).
@triton.jit
def _radix_scan_kernel(
    hist_ptr,  # *int32 (3, S, 2048)
    state_ptr,  # *int32 (S, 4)
    slot_k_ptr,  # *int32 (S,): k per slot
    n_slots,
    PASS: tl.constexpr,
    WIDTH: tl.constexpr,
):
    slot = tl.program_id(0)
    bins = tl.arange(0, 1 << WIDTH)
    hist = tl.load(hist_ptr + (PASS * n_slots + slot) * 2048 + bins)
    if PASS == 0:
        prefix = 0
        k_rem = tl.load(slot_k_ptr + slot)
    else:
        prefix = tl.load(state_ptr + slot * 4)
        k_rem = tl.load(state_ptr + slot * 4 + 1)
    total = tl.sum(hist, axis=0)
    at_or_above = total - tl.cumsum(hist, axis=0) + hist  # non-increasing in the digit
    digit = tl.sum((at_or_above >= k_rem).to(tl.int32), axis=0) - 1
    above = tl.sum(tl.where(bins > digit, hist, 0), axis=0)
    at = tl.sum(tl.where(bins == digit, hist, 0), axis=0)
    tl.store(state_ptr + slot * 4, (prefix << WIDTH) | digit)
    tl.store(state_ptr + slot * 4 + 1, k_rem - above)
    tl.store(state_ptr + slot * 4 + 2, at)


# blk_ties[b] = #{i in block b : bits_i == τ(slot)} when the slot drops some ties, else 0 (no read).
@triton.jit
def _tie_count_kernel(
    ptr_table,
    blk_layer_ptr,
    blk_start_ptr,
    layer_numel_ptr,
    layer_slot_ptr,
    state_ptr,  # *int32 (S, 4)
    blk_ties_ptr,  # *int32 (n_blocks,)
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    layer = tl.load(blk_layer_ptr + pid)
    slot = tl.load(layer_slot_ptr + layer)
    tau = tl.load(state_ptr + slot * 4)
    k_rem = tl.load(state_ptr + slot * 4 + 1)
    ties = tl.load(state_ptr + slot * 4 + 2)
    count = 0
    if k_rem < ties:
        start = tl.load(blk_start_ptr + pid)
        numel = tl.load(layer_numel_ptr + layer)
        src = tl.load(ptr_table + layer).to(tl.pointer_type(tl.float32))
        offs = start + tl.arange(0, BLOCK)
        valid = offs < numel
        bits = tl.load(src + offs, mask=valid, other=0.0).to(tl.int32, bitcast=True) & 0x7FFFFFFF
        count = tl.sum((valid & (bits == tau)).to(tl.int32), axis=0)
    tl.store(blk_ties_ptr + pid, count)


# One program per slot: the position (in the slot's concatenation) of the k_rem-th tie, or _KEEP_ALL.
@triton.jit
def _tie_cut_kernel(
    ptr_table,
    blk_layer_ptr,
    blk_start_ptr,
    layer_numel_ptr,
    layer_base_ptr,  # *int64 (L,): first position of layer l in its slot's concatenation
    slot_blk_ptr,  # *int32 (S + 1,): blocks of slot s are [slot_blk[s], slot_blk[s + 1])
    state_ptr,
    blk_ties_ptr,
    cut_ptr,  # *int64 (S,)
    keep_all,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
):
    slot = tl.program_id(0)
    tau = tl.load(state_ptr + slot * 4)
    k_rem = tl.load(state_ptr + slot * 4 + 1)
    ties = tl.load(state_ptr + slot * 4 + 2)
    cut = keep_all
    if k_rem < ties:
        lo = tl.load(slot_blk_ptr + slot)
        hi = tl.load(slot_blk_ptr + slot + 1)
        running = 0
        found = 0
        before = 0
        for c in range(lo, hi, CHUNK):  # exactly one block of the slot crosses k_rem
            idx = c + tl.arange(0, CHUNK)
            cnt = tl.load(blk_ties_ptr + idx, mask=idx < hi, other=0)
            incl = running + tl.cumsum(cnt, axis=0)
            hit = (incl >= k_rem) & (incl - cnt < k_rem) & (idx < hi)
            found += tl.sum(tl.where(hit, idx, 0), axis=0)
            before += tl.sum(tl.where(hit, incl - cnt, 0), axis=0)
            running += tl.sum(cnt, axis=0)
        layer = tl.load(blk_layer_ptr + found)
        start = tl.load(blk_start_ptr + found)
        numel = tl.load(layer_numel_ptr + layer)
        src = tl.load(ptr_table + layer).to(tl.pointer_type(tl.float32))
        offs = start + tl.arange(0, BLOCK)
        valid = offs < numel
        bits = tl.load(src + offs, mask=valid, other=0.0).to(tl.int32, bitcast=True) & 0x7FFFFFFF
        tie = valid & (bits == tau)
        rank = tl.cumsum(tie.to(tl.int32), axis=0)
        pos = tl.sum(tl.where(tie & (rank == k_rem - before), offs, 0), axis=0)
        cut = tl.load(layer_base_ptr + layer) + pos
    tl.store(cut_ptr + slot, cut)


# thresholds[l] = (τ of slot(l), cut(slot(l)) - base(l)); one program, BLOCK_L layers at a time.
@triton.jit
def _finalize_kernel(
    state_ptr,
    cut_ptr,
    layer_slot_ptr,
    layer_base_ptr,
    out_ptr,  # *int64 (L, 2)
    n_layers,
    BLOCK_L: tl.constexpr,
):
    for c in range(0, n_layers, BLOCK_L):
        layer = c + tl.arange(0, BLOCK_L)
        ok = layer < n_layers
        slot = tl.load(layer_slot_ptr + layer, mask=ok, other=0)
        tau = tl.load(state_ptr + slot * 4, mask=ok, other=0)
        cut = tl.load(cut_ptr + slot, mask=ok, other=0)
        base = tl.load(layer_base_ptr + layer, mask=ok, other=0)
        tl.store(out_ptr + layer * 2, tau.to(tl.int64), mask=ok)
        tl.store(out_ptr + layer * 2 + 1, cut - base, mask=ok)


# scores: (R, C) fp32 view of a layer; thr: (2,) int64; mask: (R, C) bool (optional);
# bits: (R, ceil(C / 32)) int32, bit j of word w in row r = mask[r, 32 w + j] (optional).
@triton.jit
def _threshold_mask_kernel(
    scores_ptr,
    thr_ptr,
    mask_ptr,
    bits_ptr,
    R,
    C,
    n_words,
    stride_sr,
    stride_mr,
    stride_br,
    WRITE_MASK: tl.constexpr,
    WRITE_BITS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = (rows[:, None] < R) & (cols[None, :] < C)
    tau = tl.load(thr_ptr).to(tl.int32)
    cut = tl.load(thr_ptr + 1)
    s = tl.load(scores_ptr + rows[:, None] * stride_sr + cols[None, :], mask=ok, other=0.0)
    bits = s.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    flat = rows[:, None].to(tl.int64) * C + cols[None, :]
    keep = ok & ((bits > tau) | ((bits == tau) & (flat <= cut)))
    if WRITE_MASK:
        tl.store(mask_ptr + rows[:, None] * stride_mr + cols[None, :], keep.to(tl.int8), mask=ok)
    if WRITE_BITS:
        packed = tl.reshape(keep.to(tl.int32), (BLOCK_R, BLOCK_C // 32, 32)) << tl.arange(0, 32)[None, None, :]
        words = tl.sum(packed, axis=2)  # distinct powers of two: the sum is the bitwise or
        wcol = tl.program_id(1) * (BLOCK_C // 32) + tl.arange(0, BLOCK_C // 32)
        tl.store(bits_ptr + rows[:, None] * stride_br + wcol[None, :], words,
                 mask=(rows[:, None] < R) & (wcol[None, :] < n_words))


@dataclass
class SelectPlan:
    """Shape-only bookkeeping of one selection (which block reads which layer); built once, reused."""

    numels: tuple[int, ...]
    slots: tuple[int, ...]
    ks: tuple[int, ...]
    block: int
    blk_layer: torch.Tensor  # (n_blocks,) int32
    blk_start: torch.Tensor  # (n_blocks,) int64
    layer_numel: torch.Tensor  # (L,) int64
    layer_slot: torch.Tensor  # (L,) int32
    layer_base: torch.Tensor  # (L,) int64
    slot_blk: torch.Tensor  # (S + 1,) int32
    slot_k: torch.Tensor  # (S,) int32


def _check_block(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {value!r}")


def make_select_plan(
    numels: Sequence[int],
    ks: Sequence[int],
    slots: Sequence[int] | None = None,
    *,
    block: int = 4096,
    device: torch.device | str = "cpu",
) -> SelectPlan:
    """Plan a selection over layers of ``numels`` entries: layer l goes to slot ``slots[l]`` (default: its own),
    slot s keeps ``ks[s]``. Slots must be 0, 1, ... in non-decreasing layer order (each slot's layers contiguous).
    """
    numels = tuple(int(n) for n in numels)
    if not numels or any(n < 1 for n in numels):
        raise ValueError(f"numels must be a non-empty list of positive sizes, got {numels}")
    slots = tuple(range(len(numels))) if slots is None else tuple(int(s) for s in slots)
    if len(slots) != len(numels):
        raise ValueError(f"slots must have one entry per layer ({len(numels)}), got {len(slots)}")
    n_slots = max(slots) + 1
    if slots[0] != 0 or any(b - a not in (0, 1) for a, b in zip(slots, slots[1:])):
        raise ValueError(f"slots must be 0, 1, ... non-decreasing over the layers, got {slots}")
    ks = tuple(int(k) for k in ks)
    if len(ks) != n_slots:
        raise ValueError(f"ks must have one entry per slot ({n_slots}), got {len(ks)}")
    sizes = [0] * n_slots
    for n, s in zip(numels, slots):
        sizes[s] += n
    for s, (k, size) in enumerate(zip(ks, sizes)):
        if size >= 2**31:
            raise ValueError(f"slot {s} holds {size} scores; at most 2**31 - 1 per slot")
        if not 1 <= k <= size:
            raise ValueError(f"ks[{s}] must be in [1, {size}], got {k}")
    _check_block("block", block, 16)
    blk_layer, blk_start, layer_base, slot_blk = [], [], [], [0]
    base = [0] * n_slots
    for layer, (n, s) in enumerate(zip(numels, slots)):
        layer_base.append(base[s])
        base[s] += n
        starts = range(0, n, block)
        blk_layer += [layer] * len(starts)
        blk_start += list(starts)
        if layer + 1 == len(numels) or slots[layer + 1] != s:
            slot_blk.append(len(blk_layer))

    def t(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    return SelectPlan(
        numels, slots, ks, block, t(blk_layer, torch.int32), t(blk_start, torch.int64), t(numels, torch.int64),
        t(slots, torch.int32), t(layer_base, torch.int64), t(slot_blk, torch.int32), t(ks, torch.int32),
    )


def select_thresholds(scores: Sequence[torch.Tensor], plan: SelectPlan, *, num_warps: int = 4) -> torch.Tensor:
    """(L, 2) int64 thresholds (τ bits, tie cut) of ``scores`` under ``plan``; no host synchronisation."""
    if len(scores) != len(plan.numels):
        raise ValueError(f"scores must hold {len(plan.numels)} tensors (the plan's layers), got {len(scores)}")
    device = plan.blk_layer.device
    for i, s in enumerate(scores):
        if s.dtype != torch.float32 or not s.is_contiguous() or s.numel() != plan.numels[i] or s.device != device:
            raise ValueError(f"scores[{i}] must be contiguous float32 with {plan.numels[i]} elements on {device}, "
                             f"got {s.dtype} {tuple(s.shape)} on {s.device} (contiguous={s.is_contiguous()})")
    n_slots, n_blocks, n_layers = len(plan.ks), plan.blk_layer.numel(), len(plan.numels)
    ptr_table = torch.tensor([s.data_ptr() for s in scores], dtype=torch.int64, device=device)
    state = torch.zeros((n_slots, _STATE), dtype=torch.int32, device=device)
    hist = torch.zeros((len(_PASSES), n_slots, _HIST_BINS), dtype=torch.int32, device=device)
    layer_args = (ptr_table, plan.blk_layer, plan.blk_start, plan.layer_numel)
    for p, (shift, width) in enumerate(_PASSES):
        _radix_hist_kernel[(n_blocks,)](
            *layer_args, plan.layer_slot, state, hist, n_slots,
            PASS=p, SHIFT=shift, WIDTH=width, BLOCK=plan.block, num_warps=num_warps,
        )
        _radix_scan_kernel[(n_slots,)](hist, state, plan.slot_k, n_slots, PASS=p, WIDTH=width, num_warps=4)
    blk_ties = torch.empty(n_blocks, dtype=torch.int32, device=device)
    _tie_count_kernel[(n_blocks,)](*layer_args, plan.layer_slot, state, blk_ties, BLOCK=plan.block,
                                   num_warps=num_warps)
    cut = torch.empty(n_slots, dtype=torch.int64, device=device)
    _tie_cut_kernel[(n_slots,)](*layer_args, plan.layer_base, plan.slot_blk, state, blk_ties, cut, _KEEP_ALL,
                                BLOCK=plan.block, CHUNK=1024, num_warps=num_warps)
    out = torch.empty((n_layers, 2), dtype=torch.int64, device=device)
    _finalize_kernel[(1,)](state, cut, plan.layer_slot, plan.layer_base, out, n_layers, BLOCK_L=128)
    return out


def threshold_mask(
    scores: torch.Tensor,
    threshold: torch.Tensor,
    *,
    want_mask: bool = True,
    want_bits: bool = False,
    block_r: int = 32,
    block_c: int = 128,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Bool mask (``scores``' shape) and/or row bit-packed int32 words (R, ⌈C/32⌉) from one threshold row.

    ``scores`` is viewed as (R, C) = (shape[0], numel / shape[0]); ``threshold`` is a (2,) int64 row of
    :func:`select_thresholds`.
    """
    if scores.dtype != torch.float32 or not scores.is_contiguous() or scores.dim() < 1:
        raise ValueError(f"scores must be contiguous float32 with >= 1 dimension, got {scores.dtype} "
                         f"{tuple(scores.shape)} (contiguous={scores.is_contiguous()})")
    if threshold.shape != (2,) or threshold.dtype != torch.int64 or threshold.device != scores.device:
        raise ValueError(f"threshold must be a (2,) int64 tensor on {scores.device}, got {threshold.dtype} "
                         f"{tuple(threshold.shape)} on {threshold.device}")
    _check_block("block_r", block_r, 1)
    _check_block("block_c", block_c, 32)
    rows = scores.shape[0]
    cols = scores.numel() // max(rows, 1)
    s2 = scores.reshape(rows, cols)
    n_words = triton.cdiv(cols, 32)
    mask = torch.empty((rows, cols), dtype=torch.bool, device=scores.device) if want_mask else None
    bits = torch.empty((rows, n_words), dtype=torch.int32, device=scores.device) if want_bits else None
    if rows * cols:
        grid = (triton.cdiv(rows, block_r), triton.cdiv(cols, block_c))
        _threshold_mask_kernel[grid](
            s2, threshold, mask.view(torch.int8) if want_mask else s2, bits if want_bits else s2,
            rows, cols, n_words, s2.stride(0), cols, n_words,
            WRITE_MASK=want_mask, WRITE_BITS=want_bits, BLOCK_R=block_r, BLOCK_C=block_c,
        )
    return (mask.view(scores.shape) if want_mask else None), bits


def mask_from_thresholds_ref(scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """PyTorch reference of the mask rule: |S| bits > τ, or == τ at a flat index <= cut."""
    bits = scores.float().reshape(-1).view(torch.int32) & 0x7FFFFFFF
    tau, cut = threshold[0].to(torch.int32), threshold[1]
    flat = torch.arange(bits.numel(), device=bits.device)
    return ((bits > tau) | ((bits == tau) & (flat <= cut))).view(scores.shape)
