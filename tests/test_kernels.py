"""The Triton kernels (CPU interpreter here, compiled on CUDA) against float64 references and strongticket.masks."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from strongticket import masks, ops
from strongticket.backend import backend_name, interpret_on_cpu

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

ma, ml, sel = (ops._kernels(name) for name in ("mask_apply", "masked_linear", "select"))  # installed or source tree

ROOT = Path(__file__).resolve().parents[1]
DENSITIES = [0.05, 0.5, 1.0]
SMALL = dict(block_n=32, block_m=16, block_k=32)  # GPU-legal tiles (>= 16), small enough for odd shapes




def _scores(shape, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    if ties:  # few distinct magnitudes, both signs, zeros: most entries tie with τ
        return (torch.randint(-3, 4, shape, generator=g).float() * 0.25).to(DEVICE)
    return torch.randn(shape, generator=g).to(DEVICE)


def _problem(M, N, K, density, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g, dtype=torch.float64)
    w = torch.randn(N, K, generator=g, dtype=torch.float64)
    s = torch.randn(N, K, generator=g, dtype=torch.float32)
    dy = torch.randn(M, N, generator=g, dtype=torch.float64)
    b = torch.randn(N, generator=g, dtype=torch.float64)
    k = masks.keep_count(density, N * K)
    mask = masks.topk_mask(s, k)
    to = dict(device=DEVICE)
    return (x.to(dtype).to(**to), w.to(dtype).to(**to), s.to(**to), dy.to(dtype).to(**to), b.to(dtype).to(**to),
            mask.to(**to), k)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)


def _thresholds(scores, k):
    plan = sel.make_select_plan([scores.numel()], [k], block=64, device=scores.device)
    return sel.select_thresholds([scores.contiguous()], plan)[0]


# ------------------------------------------------------------------------------------------------ selection


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("density", DENSITIES + [0.3])
def test_radix_select_per_layer_equals_masks_topk_exactly(density, ties, poisoned):
    scores = [_scores(shape, 10 + i, ties) for i, shape in enumerate([(37, 29), (5,), (16, 3, 3, 3), (1, 1)])]
    ks = [masks.keep_count(density, s.numel()) for s in scores]
    plan = sel.make_select_plan([s.numel() for s in scores], ks, block=64, device=DEVICE)
    thr = sel.select_thresholds(scores, plan)
    assert torch.equal(thr.cpu(), ops._topk_thresholds_ref([s.cpu() for s in scores], ks, list(range(4))))
    for s, k, t in zip(scores, ks, thr):
        expected = masks.topk_mask(s.cpu(), k)
        assert int(t[0]) == int(masks.kth_largest(masks.magnitude_bits(s.cpu()), k))
        mask, bits = sel.threshold_mask(s, t, want_bits=True, block_r=16, block_c=32)
        assert torch.equal(mask.cpu(), expected) and int(mask.sum()) == k
        assert torch.equal(bits.cpu(), ops.pack_bits(expected))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("density", DENSITIES)
def test_radix_select_global_equals_masks_global_topk_exactly(density, ties):
    scores = [_scores(shape, 20 + i, ties) for i, shape in enumerate([(33, 7), (130,), (4, 4, 3, 3)])]
    k = masks.keep_count(density, sum(s.numel() for s in scores))
    plan = sel.make_select_plan([s.numel() for s in scores], [k], [0, 0, 0], block=32, device=DEVICE)
    thr = sel.select_thresholds(scores, plan)
    expected = masks.global_topk_masks([s.cpu() for s in scores], k)
    got = [sel.threshold_mask(s, t)[0].cpu() for s, t in zip(scores, thr)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert sum(int(m.sum()) for m in got) == k


def test_radix_select_mixed_slots_and_single_element():
    scores = [_scores((9, 11), 1, True), _scores((50,), 2, True), _scores((1,), 3), _scores((64,), 4)]
    ks = [40, 1, 10]
    plan = sel.make_select_plan([s.numel() for s in scores], ks, [0, 0, 1, 2], block=16, device=DEVICE)
    thr = sel.select_thresholds(scores, plan)
    first = masks.global_topk_masks([s.cpu() for s in scores[:2]], 40)
    for s, t, want in zip(scores, thr, first + [torch.ones(1, dtype=torch.bool), masks.topk_mask(scores[3], 10)]):
        assert torch.equal(ops.thresholds_mask_ref(s, t).cpu(), want.cpu())


def test_select_plan_rejects_bad_layouts():
    with pytest.raises(ValueError, match=r"ks\[0\] must be in \[1, 6\], got 7"):
        sel.make_select_plan([6], [7])
    with pytest.raises(ValueError, match="slots must be 0, 1, ... non-decreasing"):
        sel.make_select_plan([3, 3], [1, 1], [1, 0])
    with pytest.raises(ValueError, match="block must be a power of two >= 16, got 24"):
        sel.make_select_plan([3], [1], block=24)
    plan = sel.make_select_plan([6], [2])
    with pytest.raises(ValueError, match="scores\\[0\\] must be contiguous float32 with 6 elements"):
        sel.select_thresholds([torch.zeros(6, dtype=torch.float64)], plan)


# ------------------------------------------------------------------------------------------------ GEMMs


SHAPES = [(37, 45, 19), (70, 33, 100), (1, 17, 40)]  # (M, N, K): no multiple of a tile; K < 32 in the first


@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_matches_float64_for_every_mask_source(M, N, K, density, dtype, poisoned):
    x, w, s, _, b, mask, k = _problem(M, N, K, density, M + N + K, dtype)
    expected = x.double() @ (w.double() * mask).T + b.double()
    thr = _thresholds(s, k)
    y_thr, bits = ml.masked_linear_forward(x, w, scores=s, threshold=thr, bias=b, write_bits=True, **SMALL)
    assert torch.equal(bits.cpu(), ops.pack_bits(mask.cpu()))
    y_bool, _ = ml.masked_linear_forward(x, w, mask=mask, bias=b, **SMALL)
    y_bits, none = ml.masked_linear_forward(x, w, mask=bits, **SMALL)
    assert none is None
    for y in (y_thr, y_bool, y_bits + b):
        assert y.dtype == dtype and not y.isnan().any()
        torch.testing.assert_close(y.double(), expected, **_tol(dtype))


@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dx_matches_float64_for_every_mask_source(M, N, K, density, dtype, poisoned):
    _, w, s, dy, _, mask, k = _problem(M, N, K, density, 3 * M + N + K, dtype)
    expected = dy.double() @ (w.double() * mask)
    tiles = dict(block_k=16, block_m=16, block_n=32)
    for source in (dict(mask=mask), dict(mask=ops.pack_bits(mask)), dict(scores=s, threshold=_thresholds(s, k))):
        dx = ml.masked_linear_dx(dy, w, **source, **tiles)
        assert dx.dtype == dtype and not dx.isnan().any()
        torch.testing.assert_close(dx.double(), expected, **_tol(dtype))


@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dscores_epilogue_matches_float64(M, N, K, dtype, poisoned):
    x, w, s, dy, _, _, _ = _problem(M, N, K, 0.5, 5 * M + N + K, dtype)
    s[0, 0] = 0.0  # sign(0) = 0: no gradient
    ds = ml.masked_linear_dscores(dy, x, w, s, block_n=16, block_k=32, block_m=16)
    expected = (dy.double().T @ x.double()) * w.double() * torch.sign(s.double())
    assert ds.dtype == torch.float32 and not ds.isnan().any() and ds[0, 0] == 0
    torch.testing.assert_close(ds.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_fused_sgd_momentum_equals_torch_optim_sgd(weight_decay):
    x, w, s, dy, _, _, _ = _problem(29, 21, 50, 0.5, 77)
    s_ref = s.clone().requires_grad_()
    opt = torch.optim.SGD([s_ref], lr=0.1, momentum=0.9, weight_decay=weight_decay)
    s_fused, buf = s.clone(), torch.zeros_like(s)
    for step in range(2):
        dy_step = dy * (step + 1)
        s_ref.grad = ml.masked_linear_dscores(dy_step, x, w, s_ref.detach(), block_n=16, block_k=32, block_m=16)
        opt.step()
        out = ml.masked_linear_dscores(dy_step, x, w, s_fused, write_grad=False, lr=0.1, momentum_buffer=buf,
                                       momentum=0.9, weight_decay=weight_decay, block_n=16, block_k=32, block_m=16)
        assert out is None
        torch.testing.assert_close(s_fused, s_ref.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(buf, opt.state[s_ref]["momentum_buffer"], rtol=1e-6, atol=1e-7)


def test_launchers_reject_bad_arguments():
    x, w, s, dy, _, mask, _ = _problem(4, 6, 8, 0.5, 1)
    with pytest.raises(ValueError, match="block_k must be a power of two >= 16 \\(GPU tl.dot minimum\\), got 8"):
        ml.masked_linear_forward(x, w, mask=mask, block_k=8)
    with pytest.raises(ValueError, match="block_k must be >= 32 to pack 32-bit mask words, got 16"):
        ml.masked_linear_forward(x, w, mask=mask, write_bits=True, block_k=16)
    with pytest.raises(ValueError, match="input_precision must be one of tf32x3, tf32, ieee, got 'bf16'"):
        ml.masked_linear_dx(dy, w, mask=mask, input_precision="bf16")
    with pytest.raises(ValueError, match=r"mask bits must have shape \(6, 1\)"):
        ml.masked_linear_dx(dy, w, mask=torch.zeros(6, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="momentum > 0 needs a momentum_buffer"):
        ml.masked_linear_dscores(dy, x, w, s, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"weight must have shape \(6, 8\)"):
        ml.masked_linear_forward(x, w[:, :5], mask=mask)


# ------------------------------------------------------------------------------------------------ conv helpers


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (7, 1, 5, 5), (33, 40)])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mask_apply_and_score_grad_match_reference(shape, density, dtype, poisoned):
    g = torch.Generator().manual_seed(len(shape) + shape[0])
    w = torch.randn(shape, generator=g).to(dtype).to(DEVICE)
    s = torch.randn(shape, generator=g).to(DEVICE)
    grad = torch.randn(shape, generator=g).to(DEVICE)
    k = masks.keep_count(density, s.numel())
    mask = masks.topk_mask(s.cpu(), k).to(DEVICE)
    expected = (w.double() * mask).to(torch.float32)
    thr = _thresholds(s, k)
    for source in (dict(mask=mask), dict(mask=ops.pack_bits(mask)), dict(scores=s, threshold=thr)):
        got = ma.mask_apply(w, dtype=torch.float32, block_r=4, block_c=32, **source)
        assert got.shape == w.shape and torch.equal(got, expected)
    ds = ma.score_grad(grad, w, s, block=64)
    torch.testing.assert_close(ds.double(), grad.double() * w.double() * torch.sign(s.double()), rtol=1e-6, atol=0)


def test_score_grad_fused_sgd_equals_torch_optim_sgd():
    g = torch.Generator().manual_seed(3)
    w, s, grad = (torch.randn(4, 3, 3, 3, generator=g).to(DEVICE) for _ in range(3))
    s_ref = s.clone().requires_grad_()
    opt = torch.optim.SGD([s_ref], lr=0.05, momentum=0.9, weight_decay=1e-3)
    buf = torch.zeros_like(s)
    for _ in range(2):
        s_ref.grad = grad * w * torch.sign(s_ref.detach())
        opt.step()
        ma.score_grad(grad, w, s, write_grad=False, lr=0.05, momentum_buffer=buf, momentum=0.9, weight_decay=1e-3,
                      block=32)
    torch.testing.assert_close(s, s_ref.detach(), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------ ops dispatch


def test_dispatch_default_cpu_is_torch_and_interpret_context_routes_to_triton(monkeypatch):
    monkeypatch.delenv("STRONGTICKET_BACKEND", raising=False)
    x = torch.randn(3, 8)
    assert backend_name("cpu") == "torch" and not ops._use_triton(x)
    calls = []
    real = ml.masked_linear_forward
    monkeypatch.setattr(ml, "masked_linear_forward", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    w, s = torch.randn(5, 8), torch.randn(5, 8)
    mask = masks.topk_mask(s, 20)
    ops.masked_linear(x, w, s, mask, None)
    assert calls == []
    with interpret_on_cpu():
        assert backend_name("cpu") == "triton-interpret"
        assert ops._use_triton(x) and not ops._use_triton(x.double()) and not ops._use_triton(x.to("meta"))
        y = ops.masked_linear(x, w, s, mask, None)
        monkeypatch.setenv("STRONGTICKET_BACKEND", "torch")
        assert backend_name("cpu") == "torch" and not ops._use_triton(x)
    assert calls == [1]
    torch.testing.assert_close(y, x @ (w * mask).T)
    assert backend_name("cuda") in ("torch", "triton", "triton-interpret")


def test_interpret_on_cpu_needs_triton_interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="interpret_on_cpu needs TRITON_INTERPRET=1"):
        with interpret_on_cpu():
            pass


def _straight_through(weight, scores, mask):
    return weight * (mask.to(scores.dtype) + scores.abs() - scores.abs().detach())


@pytest.mark.parametrize("use_threshold_op", [False, True])
def test_ops_through_kernels_match_float64_autograd(use_threshold_op):
    x, w, s, dy, b, mask, k = _problem(13, 35, 21, 0.5, 8)
    x3 = x.view(13, 1, 21)
    with interpret_on_cpu():
        xg, sg, bg = x3.clone().requires_grad_(), s.clone().requires_grad_(), b.clone().requires_grad_()
        if use_threshold_op:
            thr = ops.topk_thresholds([s], [k], [0])
            y, bits = ops.masked_linear_threshold(xg, w, sg, thr[0], bg)
            assert torch.equal(bits, ops.pack_bits(mask))
        else:
            y = ops.masked_linear(xg, w, sg, mask, bg)
        y.backward(dy.view(13, 1, 35))
    x64, s64, b64 = x3.double().requires_grad_(), s.double().requires_grad_(), b.double().requires_grad_()
    F.linear(x64, _straight_through(w.double(), s64, mask), b64).backward(dy.double().view(13, 1, 35))
    for got, want in ((y, None), (xg.grad, x64.grad), (sg.grad, s64.grad), (bg.grad, b64.grad)):
        if want is not None:
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_conv_op_through_kernels_matches_reference():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 7, 6, generator=g)
    w, s = torch.randn(6, 2, 3, 3, generator=g), torch.randn(6, 2, 3, 3, generator=g)
    mask = masks.topk_mask(s, masks.keep_count(0.5, s.numel()))
    args = ([1, 2], [1, 0], [1, 1], 2)
    with interpret_on_cpu():
        xg, sg = x.clone().requires_grad_(), s.clone().requires_grad_()
        y = ops.masked_conv2d(xg, w, sg, mask, None, *args)
        y.square().sum().backward()
    x64, s64 = x.double().requires_grad_(), s.double().requires_grad_()
    y64 = F.conv2d(x64, _straight_through(w.double(), s64, mask), None, *args)
    y64.square().sum().backward()
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xg.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sg.grad.double(), s64.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("interpret", [False, True])
def test_opcheck_new_ops(interpret):
    x, w, s, dy, b, mask, k = _problem(5, 6, 40, 0.5, 9)
    thr = ops.topk_thresholds([s], [k], [0])[0]
    bits = ops.pack_bits(mask)
    cw, cs = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    cmask = masks.topk_mask(cs, 50)
    cases = [
        (ops.masked_linear_threshold, (x.requires_grad_(), w, s.clone().requires_grad_(), thr, b)),
        (ops.masked_linear_dx, (dy, w, bits)),
        (ops.masked_linear_dx, (dy, w, mask)),
        (ops.masked_linear_dscores, (dy, x.detach(), w, s)),
        (ops.masked_weight, (cw, cmask, torch.float32)),
        (ops.masked_weight, (cw, ops.pack_bits(cmask), torch.bfloat16)),
        (ops.score_grad, (torch.randn(4, 3, 3, 3), cw, cs)),
        (ops.topk_thresholds, ([s, cs], [k, 20], [0, 1])),
        (ops.threshold_mask, (s, thr)),
    ]
    with interpret_on_cpu() if interpret else contextlib.nullcontext():
        for op, args in cases:
            torch.library.opcheck(op, args)


def test_threshold_ops_reference_equals_kernels():
    scores = [_scores((17, 9), 5, True), _scores((40,), 6)]
    for slots, ks in (([0, 1], [30, 7]), ([0, 0], [60])):
        ref = ops.topk_thresholds(scores, ks, slots)
        with interpret_on_cpu():
            got = ops.topk_thresholds(scores, ks, slots)
            masks_got = [ops.threshold_mask(s, t) for s, t in zip(scores, got)]
        assert torch.equal(got, ref)
        assert all(torch.equal(m, ops.threshold_mask(s, t)) for m, s, t in zip(masks_got, scores, ref))


def test_torch_compile_fullgraph_through_kernels():
    x, w, s, _, _, _, k = _problem(6, 10, 12, 0.5, 13)

    def step(x, s):
        thr = ops.topk_thresholds([s.detach()], [k], [0])
        y, _ = ops.masked_linear_threshold(torch.relu(x), w, s, thr[0], None)
        return y.square().sum()

    s_eager = s.clone().requires_grad_()
    step(x, s_eager).backward()
    with interpret_on_cpu():
        s_comp = s.clone().requires_grad_()
        torch.compile(step, fullgraph=True, backend="aot_eager")(x, s_comp).backward()
    torch.testing.assert_close(s_comp.grad, s_eager.grad, rtol=1e-5, atol=1e-5)


def test_whole_edge_popup_step_through_kernels_equals_reference():
    """select -> fused fwd (emits bits) -> dx from bits -> dS + SGD momentum in the epilogue, two steps."""
    x, w, s, dy, _, _, _ = _problem(24, 40, 36, 0.3, 21)
    k = masks.keep_count(0.3, s.numel())
    s_ref = s.clone().requires_grad_()
    opt = torch.optim.SGD([s_ref], lr=0.5, momentum=0.9)
    s_fused, buf = s.clone(), torch.zeros_like(s)
    plan = sel.make_select_plan([s.numel()], [k], block=128, device=DEVICE)
    for step in range(2):
        mask_ref = masks.topk_mask(s_ref.detach(), k)
        xr = x.clone().requires_grad_()
        y_ref = ops.masked_linear(xr, w, s_ref, mask_ref, None)
        y_ref.backward(dy)
        opt.step()
        opt.zero_grad()

        thr = sel.select_thresholds([s_fused], plan)[0]
        y, bits = ml.masked_linear_forward(x, w, scores=s_fused, threshold=thr, write_bits=True, **SMALL)
        assert torch.equal(bits, ops.pack_bits(masks.topk_mask(s_fused, k)))
        dx = ml.masked_linear_dx(dy, w, mask=bits, block_k=32, block_m=16, block_n=32)
        ml.masked_linear_dscores(dy, x, w, s_fused, write_grad=False, lr=0.5, momentum_buffer=buf, momentum=0.9,
                                 block_n=32, block_k=32, block_m=16)
        if step == 0:
            assert torch.equal(bits, ops.pack_bits(mask_ref))
        torch.testing.assert_close(y, y_ref.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dx, xr.grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s_fused, s_ref.detach(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ benchmark, GPU


def test_benchmark_cpu_smoke_runs_end_to_end(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_kernels.py"), "--cpu-smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "speedup" in done.stdout and (tmp_path / "bench_kernels.csv").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_kernels_compile_and_match_at_default_tiles(dtype):
    x, w, s, dy, b, mask, k = _problem(200, 384, 520, 0.05, 99, dtype)
    plan = sel.make_select_plan([s.numel()], [k], device="cuda")
    thr = sel.select_thresholds([s], plan)[0]
    y, bits = ml.masked_linear_forward(x, w, scores=s, threshold=thr, bias=b, write_bits=True)
    torch.testing.assert_close(y.double(), x.double() @ (w.double() * mask).T + b.double(), **_tol(dtype))
    assert torch.equal(bits, ops.pack_bits(mask))
    dx = ml.masked_linear_dx(dy, w, mask=bits)
    torch.testing.assert_close(dx.double(), dy.double() @ (w.double() * mask), **_tol(dtype))
    ds = ml.masked_linear_dscores(dy, x, w, s)
    ref = (dy.double().T @ x.double()) * w.double() * torch.sign(s.double())
    torch.testing.assert_close(ds.double(), ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)
    torch.testing.assert_close(ma.mask_apply(w, mask=bits), (w * mask).to(dtype))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("ties", [False, True])
def test_gpu_radix_select_matches_masks_on_a_million_scores(ties):
    scores = [_scores((1024, 1024), 5, ties), _scores((300, 77), 6, ties)]
    for slots, ks in (([0, 1], [masks.keep_count(0.05, 1 << 20), 1000]), ([0, 0], [500_000])):
        plan = sel.make_select_plan([t.numel() for t in scores], ks, slots, device="cuda")
        thr = sel.select_thresholds(scores, plan)
        expected = (masks.global_topk_masks(scores, ks[0]) if slots == [0, 0]
                    else [masks.topk_mask(t, kk) for t, kk in zip(scores, ks)])
        for t, row, want in zip(scores, thr, expected):
            assert torch.equal(sel.threshold_mask(t, row)[0], want)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_ops_dispatch_to_triton_and_train_step_matches():
    assert backend_name("cuda") in ("triton", "triton-interpret")
    x, w, s, dy, b, mask, k = _problem(64, 256, 384, 0.5, 3)
    sg = s.clone().requires_grad_()
    thr = ops.topk_thresholds([s], [k], [0])
    y, _ = ops.masked_linear_threshold(x, w, sg, thr[0], b)
    y.backward(dy)
    s64 = s.double().requires_grad_()
    F.linear(x.double(), _straight_through(w.double(), s64, mask), b.double()).backward(dy.double())
    torch.testing.assert_close(sg.grad.double(), s64.grad, rtol=1e-5, atol=1e-4)


def test_masked_layers_select_and_train_through_the_kernels_exactly_like_the_reference():
    """nn.py routes mask selection to the radix-select kernels where Triton runs: same masks, same steps."""
    from strongticket.backend import interpret_on_cpu
    from strongticket.models import MLP
    from strongticket.nn import masked_layers, use_global_topk

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 37, generator=g), torch.randint(0, 5, (24,), generator=g)
    results = []
    for through_kernels in (False, True):
        model = MLP((37,), 5, (29, 18), density=0.3, seed=1)
        use_global_topk(model, 0.3)
        opt = torch.optim.SGD([m.scores for m in masked_layers(model)], lr=0.5, momentum=0.9)
        masks_seen = []
        with interpret_on_cpu() if through_kernels else contextlib.nullcontext():
            for _ in range(2):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                masks_seen.append([m.mask.clone() for m in masked_layers(model)])
        results.append(masks_seen)
    for ref_step, kernel_step in zip(*results):
        assert all(torch.equal(a, b) for a, b in zip(ref_step, kernel_step))
