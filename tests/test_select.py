"""kernels/select.py: launch and host-traffic budget, workspace reuse, 1-D grids (CPU interpreter or CUDA).

The exactness of the selection itself against strongticket.masks is pinned in tests/test_kernels.py
(test_radix_select_*); here the same oracle checks what the fused, workspace-reusing launches add.
"""

import contextlib
import math
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from strongticket import masks, ops

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

sel = ops._kernels("select")
KERNEL_CLASS = type(sel._radix_pass_kernel)  # InterpretedFunction under the interpreter, JITFunction on a GPU


def _scores(shape, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct magnitudes, both signs, zeros: most entries tie with τ
        return (torch.randint(-3, 4, shape, generator=g).float() * 0.25).to(DEVICE)
    return torch.randn(shape, generator=g).to(DEVICE)


def _check(scores, ks, slots, thr):
    """thr equals the reference rows, and the masks they define are strongticket.masks' masks."""
    cpu = [s.cpu() for s in scores]
    assert torch.equal(thr.cpu(), ops._topk_thresholds_ref(cpu, list(ks), list(slots)))
    for s in sorted(set(slots)):
        layers = [i for i, slot in enumerate(slots) if slot == s]
        want = masks.global_topk_masks([cpu[i] for i in layers], ks[s])
        for i, m in zip(layers, want):
            assert torch.equal(ops.thresholds_mask_ref(cpu[i], thr[i].cpu()), m)


def _assert_workspace_clean(plan):
    assert int(plan.hist.count_nonzero()) == 0 and int(plan.arrivals.count_nonzero()) == 0


class _Recorder(TorchDispatchMode):
    """Records every aten op run outside a kernel launch (the interpreter's own tensor traffic is not ours)."""

    def __init__(self, in_launch):
        super().__init__()
        self.in_launch, self.ops = in_launch, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.in_launch[0]:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _recording(monkeypatch, forbid_sync=True):
    """Yields (launches, recorder): launches = [(kernel name, grid)], recorder.ops = aten ops outside launches;
    on CUDA, with ``forbid_sync``, a synchronising call raises."""
    launches, in_launch = [], [False]
    real_run = KERNEL_CLASS.run

    def run(self, *args, grid, warmup, **kwargs):
        launches.append((self.fn.__name__, grid))
        in_launch[0] = True
        try:
            return real_run(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            in_launch[0] = False

    monkeypatch.setattr(KERNEL_CLASS, "run", run)
    recorder = _Recorder(in_launch)
    cuda = DEVICE == "cuda" and forbid_sync
    sync_debug = torch.cuda.get_sync_debug_mode() if cuda else None
    try:
        if cuda:
            torch.cuda.set_sync_debug_mode("error")
        with recorder:
            yield launches, recorder
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(sync_debug)
        monkeypatch.setattr(KERNEL_CLASS, "run", real_run)


@pytest.mark.parametrize("slots", [(0, 1, 2), (0, 0, 0)])
def test_select_thresholds_is_five_launches_and_no_fill_copy_or_sync_after_the_first_call(monkeypatch, slots):
    scores = [_scores((33, 7), 1, ties=True), _scores((130,), 2, ties=True), _scores((4, 4, 3, 3), 3)]
    ks = (100, 40, 70)[: max(slots) + 1]
    plan = sel.make_select_plan([s.numel() for s in scores], ks, slots, block=32, device=DEVICE)
    with _recording(monkeypatch, forbid_sync=False) as (launches, recorder):  # builds the pointer table
        first = sel.select_thresholds(scores, plan)
    assert any("lift_fresh" in op or "copy" in op for op in recorder.ops), recorder.ops  # the pointer table
    for _ in range(2):
        with _recording(monkeypatch) as (launches, recorder):
            thr = sel.select_thresholds(scores, plan)
        assert [name for name, _ in launches] == ["_radix_pass_kernel"] * 4 + ["_tie_cut_kernel"]
        assert all(len(grid) == 1 for _, grid in launches)
        assert all(op.startswith("aten.empty.") for op in recorder.ops), recorder.ops  # the output only
        assert torch.equal(thr, first)
    assert bool((thr[:, 1] < 2**62).any())  # some slot dropped ties: the counted calls took the tie-cut path
    _check(scores, ks, slots, thr)


@pytest.mark.parametrize("span_blocks", [2, 5])
@pytest.mark.parametrize("slots", [(0, 1, 2, 3), (0, 0, 0, 0), (0, 0, 1, 1)])
def test_a_cta_spanning_several_blocks_selects_exactly(slots, span_blocks, monkeypatch):
    """span = several blocks per CTA: histograms summed over the span, ties counted and ranked across blocks."""
    shapes = [(37, 29), (5,), (16, 3, 3, 3), (300,)]
    scores = [_scores(shape, 40 + i, ties=i != 2) for i, shape in enumerate(shapes)]
    numels = [s.numel() for s in scores]
    sizes = [sum(n for n, sl in zip(numels, slots) if sl == slot) for slot in range(max(slots) + 1)]
    for density in (0.5, 0.1, 0.013):
        ks = [masks.keep_count(density, n) for n in sizes]
        plan = sel.make_select_plan(numels, ks, slots, block=16, span=16 * span_blocks, device=DEVICE)
        assert plan.blk_layer.numel() == sum(math.ceil(n / (16 * span_blocks)) for n in numels)
        with _recording(monkeypatch, forbid_sync=False) as (launches, _):
            thr = sel.select_thresholds(scores, plan)
        assert launches[0][1] == (plan.blk_layer.numel(),)
        _check(scores, ks, slots, thr)
        _assert_workspace_clean(plan)
    assert bool((thr[:, 1] < 2**62).any()) and bool((thr[:, 1] > 0).any())  # ties cut inside a span


def test_span_defaults_to_eight_ctas_per_sm_on_a_gpu_and_is_checked():
    tiles = ops._kernels("tiles")
    n = 4096 * 4096
    assert sel.make_select_plan([n], [n // 2], device="meta").span == 4096  # no GPU asked: one block per CTA
    with tiles.target_arch(90):  # compiling for an H100 (132 SMs): 16M scores in ~8 CTAs per SM
        plan = sel.make_select_plan([n], [n // 2], device="meta")
    assert plan.span == 4096 * 4 and plan.blk_layer.numel() == 1024
    with tiles.target_arch(80):
        assert sel.make_select_plan([1000], [10], device="meta").span == 4096  # small: never below one block
        assert sel.make_select_plan([2**31 - 1], [10], device="meta").span == 4096 * 64  # capped at 64 blocks
    for bad in (4096 * 3 // 2, 2048, 0, True):
        with pytest.raises(ValueError, match=f"span must be a positive multiple of block \\(4096\\), got {bad}"):
            sel.make_select_plan([n], [10], span=bad, device="meta")


def test_workspace_is_left_clean_across_calls_plans_and_tensor_sets(poisoned):
    numels = [(37, 29), (5,), (16, 3, 3, 3), (1, 1)]
    per_layer = sel.make_select_plan([math.prod(s) for s in numels], [300, 2, 200, 1], block=64, device=DEVICE)
    other = sel.make_select_plan([130, 91], [111], [0, 0], block=16, device=DEVICE)
    set_a = [_scores(s, 10 + i, ties=True) for i, s in enumerate(numels)]
    set_b = [_scores(s, 20 + i) for i, s in enumerate(numels)]
    pair = [_scores((130,), 30, ties=True), _scores((7, 13), 31, ties=True)]
    steps = [(per_layer, set_a), (per_layer, set_a), (other, pair), (per_layer, set_b), (other, pair),
             (per_layer, set_a), (per_layer, set_b)]
    for i, (plan, scores) in enumerate(steps):
        if i == 5:  # same tensors, new values: the cached pointer table still reads them in place
            for s in set_a:
                s.mul_(-2.0)
            set_a[0].view(-1)[::3] = 0.5
        thr = sel.select_thresholds(scores, plan)
        _check(scores, plan.ks, plan.slots, thr)
        _assert_workspace_clean(plan)
    assert len(per_layer.pointer_tables) == 2 and len(other.pointer_tables) == 1


def test_an_interrupted_call_leaves_the_plan_usable(monkeypatch):
    scores = [_scores((300,), 5, ties=True), _scores((77,), 6, ties=True)]
    plan = sel.make_select_plan([300, 77], [150, 30], block=16, device=DEVICE)
    real_run = KERNEL_CLASS.run

    def run_half_then_fail(self, *args, grid, warmup, **kwargs):  # a launch stopped after half its CTAs
        real_run(self, *args, grid=(grid[0] // 2,), warmup=warmup, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(KERNEL_CLASS, "run", run_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        sel.select_thresholds(scores, plan)
    monkeypatch.setattr(KERNEL_CLASS, "run", real_run)
    _assert_workspace_clean(plan)
    _check(scores, plan.ks, plan.slots, sel.select_thresholds(scores, plan))


def test_threshold_mask_is_one_launch_on_a_1d_grid_and_exact_on_an_odd_shape(monkeypatch, poisoned):
    s = _scores((37, 5, 7), 7, ties=True)  # viewed as (37, 35): no multiple of either tile side
    k = 600
    plan = sel.make_select_plan([s.numel()], [k], block=64, device=DEVICE)
    thr = sel.select_thresholds([s], plan)[0]
    assert 0 <= int(thr[1]) < s.numel()  # the cut falls inside the tensor: the tie rule is exercised
    with _recording(monkeypatch) as (launches, _):
        mask, bits = sel.threshold_mask(s, thr, want_bits=True, block_r=16, block_c=32)
    assert launches == [("_threshold_mask_kernel", (triton.cdiv(37, 16) * triton.cdiv(35, 32),))]
    want = masks.topk_mask(s.cpu(), k)
    assert torch.equal(mask.cpu(), want) and torch.equal(bits.cpu(), ops.pack_bits(want))


def test_grids_past_the_cuda_limit_are_refused_before_any_allocation():
    with pytest.raises(ValueError, match="spans of 16; at most 2147483647"):
        sel.make_select_plan([2**31 - 1] * 17, [1] * 17, block=16, device="meta")
    huge = torch.empty((2**20, 2**20), device="meta")
    with pytest.raises(ValueError, match="tiles of \\(1, 32\\); at most 2147483647"):
        sel.threshold_mask(huge, torch.empty(2, dtype=torch.int64, device="meta"), block_r=1, block_c=32)
