"""Exact top-k threshold selection on the device: a 4-pass radix select over the bits of |S|, 5 launches, no sync.

For non-negative IEEE floats the int32 bit patterns order exactly like the values, so τ (the k-th largest
|S|) is the k-th largest of ``bits = int(S) & 0x7FFFFFFF``, found one digit at a time over the 31 magnitude
bits, most significant first, with digits of 8 / 8 / 8 / 7 bits (the radix select of AIR Top-k / RAFT, SC'23,
with narrower digits: Triton 3.6 and earlier lower ``tl.histogram`` to warp ballots and a ``popc`` per bin and
score, so a pass costs in proportion to its bins; 11-bit digits made the selection of 2^24 scores take 756 µs on
an H200, compute-bound on ``popc``, where 4 reads of 64 MB take 60 µs):

    pass p:  hist[d] = #{i : bits_i >> (shift_p + width_p) == prefix, (bits_i >> shift_p) & (2^width_p - 1) = d}
             d*      = max d with #{digit >= d} >= k_rem;  k_rem -= #{digit > d*};  prefix = prefix·2^w + d*

After pass 4, τ = prefix exactly and k_rem ∈ [1, #{bits = τ}] is the number of ties at τ to keep. Ties are
kept lowest-index-first (``strongticket.masks``): a per-block tie count and a scan find the flat index ``cut``
of the k_rem-th tie, so

    M_i = (bits_i > τ) | (bits_i == τ & i <= cut)

is the reference mask exactly.

Launches per :func:`select_thresholds` call: 5, all with a 1-D grid of one CTA per ``span`` scores (read
``block`` at a time), and no fill, copy or host synchronisation (only ``torch.empty`` for the output):

1.–4. ``_radix_pass_kernel`` (pass p): each CTA adds its ``tl.histogram`` to its slot's global histogram (one
   relaxed atomic per non-empty bin), then counts itself in with an acq_rel atomic on the slot's arrival
   counter (after a CTA barrier, since one thread issues that release for all). The CTA that arrives last
   ("last CTA done", as in CUDA's threadFenceReduction and cooperative groups' grid sync) reads the slot's
   histogram with atomic exchanges (it sees every other CTA's bins and leaves zeros), picks the digit and
   writes the slot's (prefix, k_rem, count at the digit) for the next pass, and sets the counter back to 0.
5. ``_tie_cut_kernel``: when the slot drops some ties at τ (a device branch; for continuous scores almost
   never) each CTA counts the ties in its block and the last CTA scans those counts, re-reads the one block
   holding the k_rem-th tie and gets ``cut``; otherwise nothing is read and the slot's first CTA alone goes on.
   That CTA writes the output rows of the slot's layers.

Workspace: histograms, per-pass slot state, arrival counters and per-block tie counts live on the plan,
zeroed once by :func:`make_select_plan` and left clean by the kernels themselves (histograms exchanged back
to 0, counters reset by the last CTA), so calls need no fill. Hence **one plan serves one stream at a time**:
two calls on the same plan in flight on different streams corrupt each other's histograms. Score tensors are
read in place through a device table of their data pointers, built on the first call for a given tuple of
pointers (one host-to-device copy) and cached on the plan (the 64 most recently built), so warm up once outside
CUDA-graph capture.

Several layers go through each launch: a layer → slot map assigns each layer a histogram slot. One slot per
layer gives per-layer top-k; all layers in slot 0 gives the global top-k (ties broken by position in the
concatenation of the layers in order, like ``masks.global_topk_masks``). A CTA never straddles two layers.

Output: ``thresholds`` (L, 2) int64, row l = (τ bits of layer l's slot, cut in layer l's own flat indices);
``cut < 0`` keeps no ties of this layer, ``cut >= numel`` keeps them all.

64-bit: every table the kernels index with (block starts, layer sizes and bases, slot → block and layer
ranges) is int64, so block starts, flat positions and cuts are computed in 64 bits; a block is read as an
int64 base pointer plus int32 offsets < BLOCK (no int64 index vectors, fewer registers); only counts within a
slot (< 2^31 scores) are int32. Grids are 1-D (x up to 2^31 − 1; y and z are capped at 65535 by the hardware),
:func:`threshold_mask`'s too: one launch over (block_r, block_c) tiles, row offsets in int64.

Shapes: scores any shape, fp32, contiguous; scores per slot < 2^31.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from . import tiles
from .tiles import launch

__all__ = ["SelectPlan", "make_select_plan", "select_thresholds", "threshold_mask"]

_PASSES = ((23, 8), (15, 8), (7, 8), (0, 7))  # (shift, width): 8/8/8/7-bit digits over the 31 magnitude bits
_HIST_BINS = 256  # per slot, enough for the widest digit
_STATE = 4  # per pass and slot, int32: prefix (τ after the last pass), k_rem (ties at τ to keep), count at the
# chosen digit (ties at τ after the last pass), padding
_KEEP_ALL = 2**62  # "cut" when every tie at τ is kept
_MAX_GRID = 2**31 - 1  # CUDA grid x limit
_POINTER_TABLES = 64  # cached pointer tables per plan; the oldest goes first (a CUDA graph captured with an
# evicted table would read freed memory: 64 sets of tensors per plan before that can happen)


# CTA span b: its layer, an fp32 pointer to its first score (int64 base, so offsets within the span stay int32:
# 64-bit addresses without int64 index vectors) and its number of scores (the last span of a layer is short).
@triton.jit
def _span(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, b, span):
    layer = tl.load(blk_layer_ptr + b)
    start = tl.load(blk_start_ptr + b)
    src = tl.load(ptr_table + layer).to(tl.pointer_type(tl.float32)) + start
    limit = tl.minimum(tl.load(layer_numel_ptr + layer) - start, span).to(tl.int32)
    return layer, src, limit


# |S| bit patterns of scores src[idx] (0 past limit): int32, ordered like the magnitudes.
@triton.jit
def _magnitude_bits(src, idx, limit):
    return tl.load(src + idx, mask=idx < limit, other=0.0).to(tl.int32, bitcast=True) & 0x7FFFFFFF


# scores: L fp32 tensors read through ptr_table; CTA b reads layer blk_layer[b], entries [blk_start[b], + BLOCK).
# hist: (S, 256) int32, zero between calls; state: (4, S, 4) int32, row [p, s] written by pass p's last CTA
# of slot s; arrivals: (S,) int32, zero between launches.
@triton.jit
def _radix_pass_kernel(
    ptr_table,  # *int64 (L,): data pointers of the fp32 score tensors
    blk_layer_ptr,  # *int64 (n_blocks,)
    blk_start_ptr,  # *int64 (n_blocks,)
    layer_numel_ptr,  # *int64 (L,)
    layer_slot_ptr,  # *int64 (L,)
    slot_blk_ptr,  # *int64 (S + 1,): blocks of slot s are [slot_blk[s], slot_blk[s + 1])
    slot_k_ptr,  # *int32 (S,): k per slot
    hist_ptr,  # *int32 (S, HIST_BINS)
    state_ptr,  # *int32 (4, S, 4)
    arrivals_ptr,  # *int32 (S,)
    n_slots,
    span,  # scores per CTA (a multiple of BLOCK); the CTA reads them BLOCK at a time
    PASS: tl.constexpr,
    SHIFT: tl.constexpr,
    WIDTH: tl.constexpr,
    HIST_BINS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    layer, src, limit = _span(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, pid, span)
    slot = tl.load(layer_slot_ptr + layer)
    if PASS > 0:
        prev = state_ptr + ((PASS - 1) * n_slots + slot) * 4
        prefix = tl.load(prev)
    else:
        prefix = 0
    # One histogram per CTA over its whole span, flushed to the slot's bins once: the global atomics (all CTAs
    # on the same few bins) cost per CTA, not per score.
    hist = tl.zeros((1 << WIDTH,), dtype=tl.int32)
    for off in range(0, limit, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        valid = idx < limit
        bits = _magnitude_bits(src, idx, limit)
        if PASS > 0:
            valid = valid & ((bits >> (SHIFT + WIDTH)) == prefix)  # only candidates that still tie with τ's prefix
        digit = (bits >> SHIFT) & ((1 << WIDTH) - 1)
        hist += tl.histogram(digit, 1 << WIDTH, mask=valid)
    bins = tl.arange(0, 1 << WIDTH)
    slot_hist = hist_ptr + slot * HIST_BINS + bins
    tl.atomic_add(slot_hist, hist, mask=hist != 0, sem="relaxed")
    # The arrival below is one thread's release: the barrier orders every thread's bin adds before it.
    tl.debug_barrier()
    arrived = tl.atomic_add(arrivals_ptr + slot, 1, sem="acq_rel")
    n_blk = tl.load(slot_blk_ptr + slot + 1) - tl.load(slot_blk_ptr + slot)
    if arrived == n_blk - 1:  # every CTA of the slot has added its bins: this one scans
        tl.store(arrivals_ptr + slot, 0)
        # Atomics read the bins where the other CTAs added them (no stale L1 line) and leave zeros behind.
        full = tl.atomic_xchg(slot_hist, tl.zeros_like(hist), sem="relaxed")
        if PASS > 0:
            k_rem = tl.load(prev + 1)
        else:
            k_rem = tl.load(slot_k_ptr + slot)
        total = tl.sum(full, axis=0)
        at_or_above = total - tl.cumsum(full, axis=0) + full  # non-increasing in the digit
        chosen = tl.sum((at_or_above >= k_rem).to(tl.int32), axis=0) - 1
        above = tl.sum(tl.where(bins > chosen, full, 0), axis=0)
        at = tl.sum(tl.where(bins == chosen, full, 0), axis=0)
        row = state_ptr + (PASS * n_slots + slot) * 4
        tl.store(row, (prefix << WIDTH) | chosen)
        tl.store(row + 1, k_rem - above)
        tl.store(row + 2, at)


# Ties at tau (|S| bits == tau) among the scores of CTA span b.
@triton.jit
def _span_ties(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, b, tau, span, BLOCK: tl.constexpr):
    _, src, limit = _span(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, b, span)
    count = 0
    for off in range(0, limit, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        count += tl.sum(((idx < limit) & (_magnitude_bits(src, idx, limit) == tau)).to(tl.int32), axis=0)
    return count


# Position within CTA span b of its rank-th tie at tau (1-based rank; the span holds at least rank ties).
@triton.jit
def _span_tie_position(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, b, tau, rank, span,
                       BLOCK: tl.constexpr):
    _, src, limit = _span(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, b, span)
    seen = 0
    pos = 0
    for off in range(0, limit, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        tie = (idx < limit) & (_magnitude_bits(src, idx, limit) == tau)
        ranks = seen + tl.cumsum(tie.to(tl.int32), axis=0)
        pos += tl.sum(tl.where(tie & (ranks == rank), idx, 0), axis=0)
        seen += tl.sum(tie.to(tl.int32), axis=0)
    return pos


# Same block → layer → slot tables as _radix_pass_kernel; state row [LAST_PASS, s] = (τ, k_rem, ties at τ);
# blk_ties: (n_blocks,) int32, written only for slots that drop ties; out: (L, 2) int64 thresholds.
@triton.jit
def _tie_cut_kernel(
    ptr_table,  # *int64 (L,)
    blk_layer_ptr,  # *int64 (n_blocks,)
    blk_start_ptr,  # *int64 (n_blocks,)
    layer_numel_ptr,  # *int64 (L,)
    layer_slot_ptr,  # *int64 (L,)
    layer_base_ptr,  # *int64 (L,): first position of layer l in its slot's concatenation
    slot_blk_ptr,  # *int64 (S + 1,)
    slot_layer_ptr,  # *int64 (S + 1,): layers of slot s are [slot_layer[s], slot_layer[s + 1])
    state_ptr,  # *int32 (4, S, 4)
    arrivals_ptr,  # *int32 (S,)
    blk_ties_ptr,  # *int32 (n_blocks,)
    out_ptr,  # *int64 (L, 2)
    n_slots,
    keep_all,
    span,
    LAST_PASS: tl.constexpr,
    BLOCK: tl.constexpr,
    CHUNK: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    pid = tl.program_id(0)
    layer = tl.load(blk_layer_ptr + pid)
    slot = tl.load(layer_slot_ptr + layer)
    row = state_ptr + (LAST_PASS * n_slots + slot) * 4
    tau = tl.load(row)
    k_rem = tl.load(row + 1)
    ties = tl.load(row + 2)
    lo = tl.load(slot_blk_ptr + slot)
    hi = tl.load(slot_blk_ptr + slot + 1)
    cut = keep_all
    writer = pid == lo  # keeping every tie needs no scores: the slot's first CTA writes its rows
    if k_rem < ties:
        tl.store(blk_ties_ptr + pid, _span_ties(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, pid, tau,
                                                span, BLOCK))
        tl.debug_barrier()  # as in _radix_pass_kernel: the store before the one-thread release
        arrived = tl.atomic_add(arrivals_ptr + slot, 1, sem="acq_rel")
        writer = arrived == hi - lo - 1
        if writer:
            tl.store(arrivals_ptr + slot, 0)
            running = 0
            found = tl.zeros((), dtype=tl.int64)
            before = 0
            for c in range(lo, hi, CHUNK):  # exactly one span of the slot crosses k_rem
                idx = c + tl.arange(0, CHUNK)
                # volatile: the other CTAs' counts, not an L1 line cached before they wrote
                cnt = tl.load(blk_ties_ptr + idx, mask=idx < hi, other=0, volatile=True)
                incl = running + tl.cumsum(cnt, axis=0)
                hit = (incl >= k_rem) & (incl - cnt < k_rem) & (idx < hi)
                found += tl.sum(tl.where(hit, idx, 0), axis=0)
                before += tl.sum(tl.where(hit, incl - cnt, 0), axis=0)
                running += tl.sum(cnt, axis=0)
            pos = _span_tie_position(ptr_table, blk_layer_ptr, blk_start_ptr, layer_numel_ptr, found, tau,
                                     k_rem - before, span, BLOCK)
            t_layer = tl.load(blk_layer_ptr + found)
            cut = tl.load(layer_base_ptr + t_layer) + tl.load(blk_start_ptr + found) + pos
    if writer:
        first = tl.load(slot_layer_ptr + slot)
        last = tl.load(slot_layer_ptr + slot + 1)
        for c in range(first, last, BLOCK_L):
            layers = c + tl.arange(0, BLOCK_L)
            ok = layers < last
            base = tl.load(layer_base_ptr + layers, mask=ok, other=0)
            tl.store(out_ptr + layers * 2, tl.zeros_like(base) + tau, mask=ok)
            tl.store(out_ptr + layers * 2 + 1, cut - base, mask=ok)


# scores: (R, C) fp32 view of a layer; thr: (2,) int64; mask: (R, C) bool (optional);
# bits: (R, ceil(C / 32)) int32, bit j of word w in row r = mask[r, 32 w + j] (optional).
# 1-D grid over (R / BLOCK_R) × (C / BLOCK_C) tiles, column tiles fastest.
@triton.jit
def _threshold_mask_kernel(
    scores_ptr,
    thr_ptr,
    mask_ptr,
    bits_ptr,
    R,
    C,
    n_words,
    n_col_tiles,
    stride_sr,
    stride_mr,
    stride_br,
    WRITE_MASK: tl.constexpr,
    WRITE_BITS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    tile_r = pid // n_col_tiles
    tile_c = pid % n_col_tiles
    rows = tile_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # int64: R·C and row offsets may pass 2^31
    col0 = tile_c.to(tl.int64) * BLOCK_C
    cols = tl.arange(0, BLOCK_C)  # within the tile; col0 + cols is the column
    ok = (rows[:, None] < R) & (cols[None, :] < C - col0)
    tau = tl.load(thr_ptr).to(tl.int32)
    cut = tl.load(thr_ptr + 1)
    s = tl.load(scores_ptr + (rows * stride_sr + col0)[:, None] + cols[None, :], mask=ok, other=0.0)
    bits = s.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    # flat index <= cut  <=>  column in tile <= cut - (row · C + col0): one int64 per row, not per entry
    row_cut = cut - (rows * C + col0)
    keep = ok & ((bits > tau) | ((bits == tau) & (cols[None, :] <= row_cut[:, None])))
    if WRITE_MASK:
        tl.store(mask_ptr + (rows * stride_mr + col0)[:, None] + cols[None, :], keep.to(tl.int8), mask=ok)
    if WRITE_BITS:
        packed = tl.reshape(keep.to(tl.int32), (BLOCK_R, BLOCK_C // 32, 32)) << tl.arange(0, 32)[None, None, :]
        words = tl.sum(packed, axis=2)  # distinct powers of two: the sum is the bitwise or
        wcol = tl.arange(0, BLOCK_C // 32)
        w0 = tile_c.to(tl.int64) * (BLOCK_C // 32)
        tl.store(bits_ptr + (rows * stride_br + w0)[:, None] + wcol[None, :], words,
                 mask=(rows[:, None] < R) & (wcol[None, :] < n_words - w0))


@dataclass(eq=False)
class SelectPlan:
    """One selection's layout (which block reads which layer) and its workspace; built once, reused.

    The workspace is zero between calls, kept so by the kernels: use a plan from one stream at a time.
    """

    numels: tuple[int, ...]
    slots: tuple[int, ...]
    ks: tuple[int, ...]
    block: int  # scores per load (the vector width of the kernels)
    span: int  # scores per CTA, a multiple of block
    blk_layer: torch.Tensor  # (n_blocks,) int64
    blk_start: torch.Tensor  # (n_blocks,) int64
    layer_numel: torch.Tensor  # (L,) int64
    layer_slot: torch.Tensor  # (L,) int64
    layer_base: torch.Tensor  # (L,) int64
    slot_blk: torch.Tensor  # (S + 1,) int64
    slot_layer: torch.Tensor  # (S + 1,) int64
    slot_k: torch.Tensor  # (S,) int32
    hist: torch.Tensor  # (S, 256) int32 workspace
    state: torch.Tensor  # (4, S, 4) int32 workspace
    arrivals: torch.Tensor  # (S,) int32 workspace
    blk_ties: torch.Tensor  # (n_blocks,) int32 workspace
    pointer_tables: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    def reset_workspace(self) -> None:
        """Zero the workspace (after a launch was interrupted half-way); calls that complete need none of this."""
        for t in (self.hist, self.state, self.arrivals, self.blk_ties):
            t.zero_()


def _check_block(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {value!r}")


def make_select_plan(
    numels: Sequence[int],
    ks: Sequence[int],
    slots: Sequence[int] | None = None,
    *,
    block: int = 4096,
    span: int | None = None,
    device: torch.device | str = "cpu",
) -> SelectPlan:
    """Plan a selection over layers of ``numels`` entries: layer l goes to slot ``slots[l]`` (default: its own),
    slot s keeps ``ks[s]``. Slots must be 0, 1, ... in non-decreasing layer order (each slot's layers contiguous).

    Each CTA reads ``span`` scores of one layer, ``block`` at a time, and flushes one histogram per pass. The
    default span gives about 8 CTAs per SM of a CUDA device (at most 64 blocks each; for the interpreter, one
    block). Measured on an H200 (benchmarks/bench_select.py, 2^24 scores): 1024 CTAs 275 µs, 256 CTAs 338 µs,
    64 CTAs 892 µs.
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
    if span is None:
        span = block * _default_span_blocks(sum(numels), block, torch.device(device))
    if isinstance(span, bool) or not isinstance(span, int) or span < block or span % block:
        raise ValueError(f"span must be a positive multiple of block ({block}), got {span!r}")
    n_blocks = sum(triton.cdiv(n, span) for n in numels)
    if n_blocks > _MAX_GRID:
        raise ValueError(f"the layers need {n_blocks} spans of {span}; at most {_MAX_GRID}: raise span")
    blk_layer, blk_start, layer_base, slot_blk, slot_layer = [], [], [], [0], [0]
    base = [0] * n_slots
    for layer, (n, s) in enumerate(zip(numels, slots)):
        layer_base.append(base[s])
        base[s] += n
        starts = range(0, n, span)
        blk_layer += [layer] * len(starts)
        blk_start += list(starts)
        if layer + 1 == len(numels) or slots[layer + 1] != s:
            slot_blk.append(len(blk_layer))
            slot_layer.append(layer + 1)

    def t(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.int32, device=device)

    return SelectPlan(
        numels, slots, ks, block, span,
        blk_layer=t(blk_layer, torch.int64), blk_start=t(blk_start, torch.int64),
        layer_numel=t(numels, torch.int64), layer_slot=t(slots, torch.int64), layer_base=t(layer_base, torch.int64),
        slot_blk=t(slot_blk, torch.int64), slot_layer=t(slot_layer, torch.int64), slot_k=t(ks, torch.int32),
        hist=zeros(n_slots, _HIST_BINS), state=zeros(len(_PASSES), n_slots, _STATE), arrivals=zeros(n_slots),
        blk_ties=zeros(n_blocks),
    )


def _default_span_blocks(total: int, block: int, device: torch.device) -> int:
    """Blocks per CTA for ~8 CTAs per SM over ``total`` scores (1 under the interpreter, 64 at most)."""
    arch = tiles.device_arch(device) if device.type in ("cuda", "meta") else None
    if arch is None:
        return 1
    sms = tiles.device_sms(device) or tiles.nominal_sms(arch)
    return max(1, min(64, triton.cdiv(total, block * 8 * sms)))


def _pointer_table(plan: SelectPlan, scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """(L,) int64 device table of the scores' data pointers: one copy per new tuple of pointers, then cached.

    A tensor freed and reallocated at the same address has the same pointer, so the key is exactly right."""
    key = tuple(s.data_ptr() for s in scores)
    table = plan.pointer_tables.get(key)
    if table is None:
        if len(plan.pointer_tables) >= _POINTER_TABLES:
            del plan.pointer_tables[next(iter(plan.pointer_tables))]
        table = plan.pointer_tables[key] = torch.tensor(key, dtype=torch.int64, device=plan.blk_layer.device)
    return table


def select_thresholds(scores: Sequence[torch.Tensor], plan: SelectPlan, *, num_warps: int = 8) -> torch.Tensor:
    """(L, 2) int64 thresholds (τ bits, tie cut) of ``scores`` under ``plan``: 5 launches, no host synchronisation
    (after the first call on these tensors, no host-to-device copy either).

    ``plan.block <= 512 * num_warps`` (at most 16 scores per thread, the default 4096 / 8) compiles without
    register spills for sm_80/89/90 under Triton 3.6 and 3.9; 32 scores per thread spill 8 bytes in some passes.
    """
    if len(scores) != len(plan.numels):
        raise ValueError(f"scores must hold {len(plan.numels)} tensors (the plan's layers), got {len(scores)}")
    device = plan.blk_layer.device
    for i, s in enumerate(scores):
        if s.dtype != torch.float32 or not s.is_contiguous() or s.numel() != plan.numels[i] or s.device != device:
            raise ValueError(f"scores[{i}] must be contiguous float32 with {plan.numels[i]} elements on {device}, "
                             f"got {s.dtype} {tuple(s.shape)} on {s.device} (contiguous={s.is_contiguous()})")
    n_slots, n_blocks = len(plan.ks), plan.blk_layer.numel()
    ptr_table = _pointer_table(plan, scores)
    out = torch.empty((len(plan.numels), 2), dtype=torch.int64, device=device)
    blocks = (ptr_table, plan.blk_layer, plan.blk_start, plan.layer_numel, plan.layer_slot)
    try:
        for p, (shift, width) in enumerate(_PASSES):
            launch(_radix_pass_kernel, (n_blocks,), device,
                   *blocks, plan.slot_blk, plan.slot_k, plan.hist, plan.state, plan.arrivals, n_slots,
                   plan.span, PASS=p, SHIFT=shift, WIDTH=width, HIST_BINS=_HIST_BINS, BLOCK=plan.block,
                   num_warps=num_warps)
        launch(_tie_cut_kernel, (n_blocks,), device,
               *blocks, plan.layer_base, plan.slot_blk, plan.slot_layer, plan.state, plan.arrivals, plan.blk_ties,
               out, n_slots, _KEEP_ALL, plan.span, LAST_PASS=len(_PASSES) - 1, BLOCK=plan.block, CHUNK=1024,
               BLOCK_L=128, num_warps=num_warps)
    except BaseException:
        plan.reset_workspace()  # a launch stopped half-way may have left bins or counters behind
        raise
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

    ``scores`` is viewed as (R, C) = (shape[0], numel / shape[0]) when bits are wanted, else as one flat row
    (tiles of block_r · block_c scores: a bias or any thin tensor reads as fast as a square one); ``threshold``
    is a (2,) int64 row of :func:`select_thresholds`. One launch, 1-D grid over (block_r, block_c) tiles.
    """
    if scores.dtype != torch.float32 or not scores.is_contiguous() or scores.dim() < 1:
        raise ValueError(f"scores must be contiguous float32 with >= 1 dimension, got {scores.dtype} "
                         f"{tuple(scores.shape)} (contiguous={scores.is_contiguous()})")
    if threshold.shape != (2,) or threshold.dtype != torch.int64 or threshold.device != scores.device:
        raise ValueError(f"threshold must be a (2,) int64 tensor on {scores.device}, got {threshold.dtype} "
                         f"{tuple(threshold.shape)} on {threshold.device}")
    _check_block("block_r", block_r, 1)
    _check_block("block_c", block_c, 32)
    if want_bits:
        rows = scores.shape[0]
    else:  # the mask is elementwise in the flat index: one row, tiles of block_r · block_c scores
        rows, block_c, block_r = 1, block_r * block_c, 1
    cols = scores.numel() // max(rows, 1)
    s2 = scores.reshape(rows, cols)
    n_words = triton.cdiv(cols, 32)
    n_col_tiles = triton.cdiv(cols, block_c)
    n_tiles = triton.cdiv(rows, block_r) * n_col_tiles
    if n_tiles > _MAX_GRID:
        raise ValueError(f"scores {tuple(scores.shape)} need {n_tiles} tiles of ({block_r}, {block_c}); at most "
                         f"{_MAX_GRID}: raise block_r or block_c")
    mask = torch.empty((rows, cols), dtype=torch.bool, device=scores.device) if want_mask else None
    bits = torch.empty((rows, n_words), dtype=torch.int32, device=scores.device) if want_bits else None
    if n_tiles:
        launch(_threshold_mask_kernel, (n_tiles,), scores.device,
               s2, threshold, mask.view(torch.int8) if want_mask else s2, bits if want_bits else s2,
               rows, cols, n_words, n_col_tiles, s2.stride(0), cols, n_words,
               WRITE_MASK=want_mask, WRITE_BITS=want_bits, BLOCK_R=block_r, BLOCK_C=block_c)
    return (mask.view(scores.shape) if want_mask else None), bits
