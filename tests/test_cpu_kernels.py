"""The CPU's fast path: the compiled loops of ``ops._cpu`` bit for bit against the torch ops they replace, the
windowed selection of ``masks.WindowTopK`` against the definition, and a whole search step (premasked linear,
patched W ⊙ M, fused SGD) bit for bit against the reference ops and ``torch.optim.SGD``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from strongticket import masks, ops
from strongticket.models import MLP
from strongticket.nn import MaskedLinear, masked_layers, use_global_topk
from strongticket.ops import _cpu
from strongticket.optim import ScoreSGD

needs_cc = pytest.mark.skipif(not _cpu.available(), reason="no C compiler here: the CPU loops fall back to numpy")
ROUTES = [pytest.param("compiled", marks=needs_cc), "numpy"]


@pytest.fixture
def route(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setenv("STRONGTICKET_CPU_KERNELS", "0")
    return request.param


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _tensors(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=g)
    s[:: 7] = 0.0  # sign 0
    s[1:: 11] = -s[1:: 11].abs()
    return torch.randn(n, generator=g), torch.randn(n, generator=g).sign() * 0.3, s


@needs_cc
@pytest.mark.parametrize("n", [1, 7, 33, 4099])
def test_score_grad_loop_equals_the_torch_ops(n):
    g, w, s = _tensors(n, n)
    got = _cpu.score_grad(g, w, s, torch.empty(n))
    assert torch.equal(_bits(got), _bits(g * w * torch.sign(s)))


@needs_cc
@pytest.mark.parametrize("n", [1, 5, 1027])
@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 5e-4), (0.0, 1e-4), (0.0, 0.0), (0.5, 1e-2)])
def test_score_sgd_loop_equals_torch_sgd(n, momentum, weight_decay):
    _, w, s = _tensors(n, 2 * n + 1)
    param = s.clone().requires_grad_()
    opt = torch.optim.SGD([param], lr=0.37, momentum=momentum, weight_decay=weight_decay)
    ours, buf = s.clone(), torch.zeros(n)
    gen = torch.Generator().manual_seed(n)
    for _ in range(4):
        g = torch.randn(n, generator=gen)
        param.grad = g * w * torch.sign(param.detach())
        opt.step()
        _cpu.score_sgd(g, w, ours, buf if momentum else None, 0.37, momentum, weight_decay)
        # bit for bit, except the sign of a zero: SGD's first step copies dS into a new buffer, a zero buffer
        # gives μ·0 + dS, which is +0 where dS is −0 (a score of exactly 0 here)
        want = param.detach()
        assert torch.equal(ours, want) and torch.equal(_bits(ours)[want != 0], _bits(want)[want != 0])
        if momentum:
            assert torch.equal(buf, opt.state[param]["momentum_buffer"])


def _tied_scores(shape, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(-6, 7, shape, generator=g).float() / 4  # heavy ties at every threshold
    return s, torch.randn(shape, generator=g)


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("shape, density", [((5, 7), 0.3), ((64, 33), 0.5), ((129, 3), 0.05), ((1, 1), 1.0)])
@pytest.mark.parametrize("tied", [False, True])
def test_threshold_masked_weight_is_the_reference_product_bit_for_bit(route, shape, density, tied):
    g = torch.Generator().manual_seed(sum(shape))
    s, w = _tied_scores(shape, 3) if tied else (torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    k = masks.keep_count(density, s.numel())
    threshold = ops._topk_thresholds_ref([s], [k], [0])[0]
    mask = masks.topk_mask(s, k)
    assert torch.equal(ops.threshold_mask(s, threshold), mask)
    got = ops.threshold_masked_weight(w, s, threshold, torch.float32)
    assert torch.equal(_bits(got), _bits(w * mask))  # signed zeros included
    stale = torch.zeros_like(w)
    where = np.arange(s.numel(), dtype=np.int64)[:: 3]
    ops.patch_masked_weight(stale, w, s, where + 10, 10, *(int(v) for v in threshold))
    assert torch.equal(_bits(stale).reshape(-1)[where], _bits(w * mask).reshape(-1)[where])


def _walk(numels, k, steps, scale, seed, tied=False):
    """Score tensors moved by random steps of ``scale`` (some large), as an optimizer would."""
    g = torch.Generator().manual_seed(seed)
    scores = [torch.randn(n, generator=g) for n in numels]
    for step in range(steps):
        for s in scores:
            big = scale * (50.0 if step % 7 == 3 else 1.0)
            s.add_(torch.randn(s.shape, generator=g) * big)
            if tied:
                s.copy_(torch.round(s * 8) / 8)
        yield scores


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("numels, density", [((1000,), 0.5), ((300, 17, 4096), 0.1), ((2,), 0.5), ((9000,), 0.01)])
@pytest.mark.parametrize("tied", [False, True])
def test_window_selection_equals_the_definition_step_after_step(route, numels, density, tied):
    k = masks.keep_count(density, sum(numels))
    window, previous = masks.WindowTopK(), None
    for scores in _walk(numels, k, 25, 0.003, seed=len(numels), tied=tied):
        rows = window.thresholds(scores, k)
        assert torch.equal(rows, ops._topk_thresholds_ref(scores, [k], [0] * len(scores)))
        now = torch.cat([ops.threshold_mask(s, r) for s, r in zip(scores, rows)])
        assert torch.equal(now, torch.cat(masks.global_topk_masks(scores, k)))
        if window.changed is not None:  # every flip since the last call is listed
            flips = torch.nonzero(now != previous).squeeze(1).numpy()
            assert np.isin(flips, window.changed).all()
            assert (np.diff(window.changed) > 0).all()
        previous = now
    assert window.full_selections < 25  # the window did its job most of the time


def test_window_state_is_not_shared_by_a_copy():
    window = masks.WindowTopK()
    s = torch.randn(500)
    window.thresholds([s], 100)
    twin = copy.deepcopy(window)
    t = torch.randn(500)
    assert torch.equal(twin.thresholds([t], 100), ops._topk_thresholds_ref([t], [100], [0]))
    assert torch.equal(window.thresholds([s], 100), ops._topk_thresholds_ref([s], [100], [0]))


def _reference_forward(model: MLP, x: torch.Tensor, scope: str) -> torch.Tensor:
    """The reference of the masked layers: bool masks from strongticket.masks, the ops.masked_linear custom op."""
    layers = masked_layers(model)
    if scope == "global":
        group = masks.global_topk_masks([m.scores.detach() for m in layers], layers[0]._selector.k)
    else:
        group = [masks.topk_mask(m.scores.detach(), m.k) for m in layers]
    found = dict(zip(map(id, layers), group))
    for module in model.net:
        if isinstance(module, MaskedLinear):
            x = ops.masked_linear(x, module.weight, module.scores, found[id(module)], module.effective_bias())
        else:
            x = module(x)
    return x


@pytest.mark.parametrize("route", ROUTES, indirect=True)
@pytest.mark.parametrize("scope, bias, weight_decay", [("layer", False, 0.0), ("global", True, 5e-4)])
def test_search_steps_are_bit_identical_to_the_reference(route, scope, bias, weight_decay):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, (33, 17), density=0.3, seed=4, bias=bias)
    if scope == "global":
        use_global_topk(model, 0.3)
    ref = copy.deepcopy(model)
    fast_opt = ScoreSGD([p for p in model.parameters() if p.requires_grad], lr=0.3, momentum=0.9,
                        weight_decay=weight_decay)
    ref_opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.3, momentum=0.9,
                              weight_decay=weight_decay)
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        for opt, forward in ((fast_opt, model), (ref_opt, lambda v: _reference_forward(ref, v, scope))):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(x), y).backward()
            opt.step()
        for a, b in zip(masked_layers(model), masked_layers(ref)):
            assert a.scores.grad is None  # the step ran in the backward pass
            assert torch.equal(_bits(a.scores.detach()), _bits(b.scores.detach())), f"step {step}"
            assert torch.equal(a.mask, b.mask)
    with torch.no_grad():  # evaluation reuses the cached W ⊙ M: same logits as the reference
        x = torch.randn(5, 1, 8, 8, generator=g)
        assert torch.equal(model(x), _reference_forward(ref, x, scope))


@needs_cc
def test_window_selection_survives_the_compiled_loops_being_switched_off(monkeypatch):
    window, k = masks.WindowTopK(), 300
    for step, scores in enumerate(_walk((700, 300), k, 8, 0.003, seed=5)):
        if step == 4:
            monkeypatch.setenv("STRONGTICKET_CPU_KERNELS", "0")
        assert torch.equal(window.thresholds(scores, k), ops._topk_thresholds_ref(scores, [k], [0, 0]))


def test_a_bad_cpu_kernels_setting_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("STRONGTICKET_CPU_KERNELS", "maybe")
    with pytest.raises(ValueError, match=r"STRONGTICKET_CPU_KERNELS must be 0 .* or 1 .*, got 'maybe'"):
        MaskedLinear(8, 4)(torch.randn(2, 8))
