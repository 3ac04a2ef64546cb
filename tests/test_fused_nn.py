"""The fused path of the masked layers (threshold forward, ScoreSGD's step inside the backward pass) against
torch.optim.SGD on the reference path. Triton kernels run in the CPU interpreter (``interpret_on_cpu``).

Tolerance of the fused-vs-reference comparisons: masks are compared exactly; scores and momentum buffers to
atol 1e-6, rtol 1e-5. The interpreter's ``tl.dot`` sums the fp32 products of y, dx and dS in another order than
torch's CPU GEMM, so every dS differs from the reference's by a few fp32 ulps of |dS| (<= ~1 here), and the
fused update computes S − lr·buf as two roundings where torch's ``add_(alpha=-lr)`` may fuse them: lr times a
few ulps per step, ~1e-8 observed after 3 steps at lr 0.5 — far inside 1e-6, far from any threshold flip.
"""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from strongticket import masks, ops
from strongticket.backend import interpret_on_cpu
from strongticket.models import MLP
from strongticket.nn import MaskedConv2d, MaskedLinear, masked_layers, use_global_topk
from strongticket.optim import ScoreSGD, fused_step

pytest.importorskip("triton")
TOL = dict(atol=1e-6, rtol=1e-5)
HYPER = dict(lr=0.5, momentum=0.9, weight_decay=1e-3)


def _data(n=24, features=37, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def _mlp(scope="layer", **kw):
    model = MLP((37,), 5, (29, 18), density=0.3, seed=1, **kw)
    if scope == "global":
        use_global_topk(model, 0.3)
    return model


def _groups(model):
    layers = masked_layers(model)
    scores = [lay.scores for lay in layers]
    bias_scores = [lay.bias_scores for lay in layers if lay.bias_scores is not None]
    return [{"params": scores}] + ([{"params": bias_scores, "weight_decay": 0.0}] if bias_scores else [])


def _train(model, optimizer, steps, fused, x, y, record=None):
    with interpret_on_cpu() if fused else contextlib.nullcontext():
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if record is not None:
                record.append(([lay.mask.clone() for lay in masked_layers(model)],
                               [lay.scores.detach().clone() for lay in masked_layers(model)]))


@pytest.mark.parametrize("gemm", ["fused", "materialize"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_fused_sgd_steps_equal_torch_sgd_on_the_reference_path(scope, gemm, monkeypatch):
    monkeypatch.setenv("STRONGTICKET_GEMM", gemm)
    x, y = _data()
    runs = []
    for fused in (False, True):
        model = _mlp(scope, bias=True, bias_scores=True)
        opt = (ScoreSGD if fused else torch.optim.SGD)(_groups(model), **HYPER)
        seen = []
        _train(model, opt, 3, fused, x, y, seen)
        runs.append((model, opt, seen))
    (ref_model, ref_opt, ref_seen), (model, opt, seen) = runs
    for (ref_masks, ref_scores), (got_masks, got_scores) in zip(ref_seen, seen):
        assert all(torch.equal(a, b) for a, b in zip(ref_masks, got_masks))
        for a, b in zip(ref_scores, got_scores):
            torch.testing.assert_close(b, a, **TOL)
    for ref_layer, layer in zip(masked_layers(ref_model), masked_layers(model)):
        assert layer.scores.grad is None  # updated inside the backward pass, never a .grad
        assert layer.bias_scores.grad is not None  # the ordinary SGD step of step()
        torch.testing.assert_close(layer.bias_scores, ref_layer.bias_scores, **TOL)
    ref_state, state = ref_opt.state_dict(), opt.state_dict()
    assert state["param_groups"] == ref_state["param_groups"]
    assert state["state"].keys() == ref_state["state"].keys()
    for key in ref_state["state"]:
        assert state["state"][key].keys() == ref_state["state"][key].keys() == {"momentum_buffer"}
        torch.testing.assert_close(state["state"][key]["momentum_buffer"], ref_state["state"][key]["momentum_buffer"],
                                   **TOL)


def test_resume_from_a_state_dict_mid_run_continues_identically():
    x, y = _data(seed=3)
    straight = _mlp("global")
    opt = ScoreSGD(_groups(straight), **HYPER)
    _train(straight, opt, 4, True, x, y)

    first = _mlp("global")
    opt = ScoreSGD(_groups(first), **HYPER)
    _train(first, opt, 2, True, x, y)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    resumed = _mlp("global")
    resumed.load_state_dict(saved_model)
    opt = ScoreSGD(_groups(resumed), **HYPER)
    opt.load_state_dict(saved_opt)
    _train(resumed, opt, 2, True, x, y)
    for a, b in zip(masked_layers(straight), masked_layers(resumed)):
        assert torch.equal(a.scores, b.scores) and torch.equal(a.mask, b.mask)
    plain = torch.optim.SGD(_groups(_mlp("global")), **HYPER)
    plain.load_state_dict(saved_opt)  # the same format as torch.optim.SGD: checkpoints move either way
    assert plain.state_dict()["param_groups"] == saved_opt["param_groups"]


def test_fused_step_bumps_the_scores_version_and_the_next_forward_uses_the_new_mask():
    layer = MaskedLinear(40, 24, density=0.3, seed=2)
    x, dy = _data(16, 40)[0], torch.randn(16, 24, generator=torch.Generator().manual_seed(1))
    opt = ScoreSGD([layer.scores], lr=5.0, momentum=0.9)  # a large step: many entries cross the threshold
    with interpret_on_cpu():
        before_mask, before_threshold = layer.mask, layer.threshold()
        version = layer.scores._version
        layer(x).backward(dy)
        assert layer.scores._version == version + 1  # the custom op declares its mutation of the scores
        opt.step()
        new_mask = layer.mask
        assert new_mask is not before_mask and not torch.equal(new_mask, before_mask)
        assert torch.equal(new_mask, masks.topk_mask(layer.scores.detach(), layer.k))
        assert not torch.equal(layer.threshold(), before_threshold)
        with torch.no_grad():
            y = layer(x)
    torch.testing.assert_close(y, x @ (layer.weight * new_mask).T, rtol=1e-5, atol=1e-5)


def test_a_second_backward_before_step_is_refused():
    x, y = _data()
    model = _mlp()
    opt = ScoreSGD(_groups(model), **HYPER)
    message = "a second backward pass reached fused scores .* before optimizer.step"
    with interpret_on_cpu():
        F.cross_entropy(model(x), y).backward()
        with pytest.raises(RuntimeError, match=message):  # gradient accumulation
            F.cross_entropy(model(x), y).backward()
        opt.step()
        loss = F.cross_entropy(model(x), y)
        loss.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match=message):  # the same graph twice
            loss.backward()
        opt.step()
        layer = MaskedLinear(6, 6, density=0.5)
        twice = ScoreSGD([layer.scores], lr=0.1)
        with pytest.raises(RuntimeError, match=message):  # one layer applied twice in one forward
            layer(layer(torch.randn(3, 6))).sum().backward()
        twice.step()
        F.cross_entropy(model(x), y).backward()  # after step() the next backward is fine


def test_a_fused_parameter_with_a_gradient_from_elsewhere_is_refused_at_step():
    x, y = _data()
    model = _mlp()
    opt = ScoreSGD(_groups(model), **HYPER)
    with interpret_on_cpu():
        scores = masked_layers(model)[0].scores
        (F.cross_entropy(model(x), y) + 1e-3 * scores.square().sum()).backward()
        with pytest.raises(RuntimeError, match=r"were updated in the backward pass and also have a \.grad"):
            opt.step()


@pytest.mark.parametrize("change", ["nesterov", "lr=0", "fuse_backward=False", "no_grad", "ddp"])
def test_scores_take_the_grad_path_when_the_step_cannot_be_fused(change, monkeypatch):
    if change == "ddp":  # several ranks: the gradients must be all-reduced before any update
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **kw: 2)
    layer = MaskedLinear(8, 5, density=0.5)
    kwargs = dict(lr=0.0 if change == "lr=0" else 0.1, momentum=0.9, nesterov=change == "nesterov",
                  fuse_backward=change != "fuse_backward=False")
    opt = ScoreSGD([layer.scores], **kwargs)
    x = torch.randn(3, 8)
    with interpret_on_cpu():
        if change == "no_grad":
            with torch.no_grad():
                assert not layer._fused_step(x) and fused_step(layer.scores) is not None
            return
        layer(x).sum().backward()
    assert layer.scores.grad is not None
    opt.step()


def test_the_torch_backend_fuses_linear_layers_and_not_conv_or_fixed_masks():
    # the CPU's premasked linear runs the step in its backward (ops.premasked_linear); conv and fixed masks do not
    linear, conv = MaskedLinear(8, 5, density=0.5), MaskedConv2d(3, 4, 3, density=0.5)
    fixed = MaskedLinear(8, 5, density=0.5)
    fixed.fix_mask(fixed.mask.clone())
    opt = ScoreSGD([linear.scores, conv.scores, fixed.scores], lr=0.1, momentum=0.9)
    before = linear.scores.detach().clone()
    (linear(torch.randn(3, 8)).sum() + conv(torch.randn(2, 3, 6, 6)).sum() + fixed(torch.randn(3, 8)).sum()).backward()
    assert linear.scores.grad is None and not torch.equal(linear.scores.detach(), before)
    assert conv.scores.grad is not None and fixed.scores.grad is not None
    opt.step()


def test_fused_step_reads_the_schedules_lr_at_forward_time():
    layer = MaskedLinear(8, 5, density=0.5)
    opt = ScoreSGD([layer.scores], lr=0.1, momentum=0.9, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    for expected_lr in (0.1, 0.05, 0.025):
        step = fused_step(layer.scores)
        assert (step.lr, step.momentum, step.weight_decay) == (pytest.approx(expected_lr), 0.9, 0.01)
        assert step.momentum_buffer is opt.state[layer.scores]["momentum_buffer"]
        opt.step()
        schedule.step()


def test_seeded_layers_take_the_threshold_path_and_fuse_with_the_same_masks():
    x, y = _data(seed=5)
    runs = []
    for weights, fused in (("stored", False), ("seeded", True)):
        model = _mlp(weights=weights)
        opt = (ScoreSGD if fused else torch.optim.SGD)(_groups(model), **HYPER)
        seen = []
        _train(model, opt, 3, fused, x, y, seen)
        runs.append(seen)
    for (ref_masks, ref_scores), (got_masks, got_scores) in zip(*runs):
        assert all(torch.equal(a, b) for a, b in zip(ref_masks, got_masks))
        for a, b in zip(ref_scores, got_scores):
            torch.testing.assert_close(b, a, **TOL)


def test_conv_layers_fuse_their_score_step_too():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)
    runs = []
    for fused in (False, True):
        conv = MaskedConv2d(3, 5, 3, padding=1, density=0.4, seed=3, layer=0)
        head = MaskedLinear(5 * 8 * 8, 4, density=0.4, seed=3, layer=1)
        model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.Flatten(), head)
        opt = (ScoreSGD if fused else torch.optim.SGD)([conv.scores, head.scores], **HYPER)
        seen = []
        _train(model, opt, 3, fused, x, y, seen)
        if fused:
            assert conv.scores.grad is None and head.scores.grad is None
        runs.append(seen)
    for (ref_masks, ref_scores), (got_masks, got_scores) in zip(*runs):
        assert all(torch.equal(a, b) for a, b in zip(ref_masks, got_masks))
        for a, b in zip(ref_scores, got_scores):
            torch.testing.assert_close(b, a, **TOL)


def test_frozen_scores_select_once_with_one_launch_set_for_a_global_topk(monkeypatch):
    model = _mlp("global")
    calls = []
    real = ops.topk_thresholds
    monkeypatch.setattr(ops, "topk_thresholds", lambda *a: calls.append(len(a[0])) or real(*a))
    x = _data()[0]
    with interpret_on_cpu(), torch.no_grad():
        first = model(x)
        second = model(x)
        stats = [lay.mask.sum() for lay in masked_layers(model)]
    assert calls == [3]  # one selection over the three layers, reused by the second forward and the masks
    assert torch.equal(first, second) and sum(int(s) for s in stats) == masked_layers(model)[0]._selector.k


def test_the_forward_never_materialises_the_bool_mask_on_the_triton_path(monkeypatch):
    model = _mlp()
    monkeypatch.setattr(ops, "threshold_mask", lambda *a: pytest.fail("bool mask built in the forward"))
    monkeypatch.setattr(ops, "masked_linear", lambda *a: pytest.fail("bool-mask op called"))
    opt = ScoreSGD(_groups(model), **HYPER)
    x, y = _data()
    with interpret_on_cpu():
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_the_torch_backend_is_unchanged_bit_for_bit():
    x, y = _data(seed=9)
    runs = []
    for cls in (torch.optim.SGD, ScoreSGD):
        model = _mlp("global", bias=True, bias_scores=True)
        opt = cls(_groups(model), **HYPER)
        seen = []
        _train(model, opt, 3, False, x, y, seen)
        runs.append(seen)
    for (ref_masks, ref_scores), (got_masks, got_scores) in zip(*runs):
        assert all(torch.equal(a, b) for a, b in zip(ref_masks, got_masks))
        assert all(torch.equal(a, b) for a, b in zip(ref_scores, got_scores))


def test_search_uses_the_fused_optimizer_on_the_triton_backend(tmp_path):
    from strongticket.config import SearchConfig
    from strongticket.search import run_search

    small = dict(widths=(16,), epochs=1, batch_size=256)
    with interpret_on_cpu():
        fused = run_search(SearchConfig(out=str(tmp_path / "fused"), **small), progress=False)
    plain = run_search(SearchConfig(out=str(tmp_path / "plain"), **small), progress=False)
    assert (fused["backend"], fused["optimizer"]) == ("triton-interpret", "fused-sgd")
    assert (plain["backend"], plain["optimizer"]) == ("torch", "fused-sgd")  # the CPU's premasked linear fuses too
    assert SearchConfig(**small).digest() == SearchConfig(out="elsewhere", **small).digest()
    assert abs(fused["test_acc"] - plain["test_acc"]) < 0.05


@pytest.mark.parametrize("interpret", [False, True])
def test_opcheck_fused_ops(interpret):
    g = torch.Generator().manual_seed(0)
    x, w, s = torch.randn(5, 40, generator=g), torch.randn(6, 40, generator=g), torch.randn(6, 40, generator=g)
    dy, b = torch.randn(5, 6, generator=g), torch.randn(6, generator=g)
    thr = ops.topk_thresholds([s], [100], [0])[0]
    cw, cs = torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    scale, sgd = ops.signed_constant_scale(40), (0.1, 0.9, 1e-3)
    seeded = (3, 1, scale, torch.float32)

    def grad(t):
        return t.clone().requires_grad_()

    cases = [
        (ops.masked_linear_sgd, (dy, x, w, s.clone(), torch.zeros(6, 40), *sgd)),
        (ops.masked_linear_sgd, (dy, x, w, s.clone(), None, 0.1, 0.0, 0.0)),
        (ops.masked_linear_threshold_sgd, (grad(x), w, grad(s), thr, b, torch.zeros(6, 40), *sgd)),
        (ops.seeded_linear_threshold, (grad(x), grad(s), thr, b, *seeded)),
        (ops.seeded_linear_threshold_sgd, (grad(x), grad(s), thr, b, *seeded, torch.zeros(6, 40), *sgd)),
        (ops.seeded_linear_sgd, (dy, x, s.clone(), torch.zeros(6, 40), *seeded, *sgd)),
        (ops.score_grad_sgd, (torch.randn(4, 3, 3, 3, generator=g), cw, cs.clone(), torch.zeros(4, 3, 3, 3), *sgd)),
        (ops.masked_conv2d_sgd, (grad(torch.randn(2, 3, 6, 6, generator=g)), cw, grad(cs), masks.topk_mask(cs, 50),
                                 None, [1, 1], [1, 1], [1, 1], 1, torch.zeros(4, 3, 3, 3), *sgd)),
    ]
    with interpret_on_cpu() if interpret else contextlib.nullcontext():
        for op, args in cases:
            torch.library.opcheck(op, args)


@pytest.mark.parametrize("gemm", ["fused", "materialize"])
@pytest.mark.parametrize("interpret", [False, True])
def test_fused_sgd_ops_equal_torch_sgd_steps(interpret, gemm, monkeypatch):
    monkeypatch.setenv("STRONGTICKET_GEMM", gemm)
    """masked_linear_sgd: two steps from a zero buffer are torch.optim.SGD's two steps (its first clones dS)."""
    g = torch.Generator().manual_seed(4)
    x, w, s0, dy = (torch.randn(*shape, generator=g) for shape in ((9, 40), (6, 40), (6, 40), (9, 6)))
    ref = s0.clone().requires_grad_()
    opt = torch.optim.SGD([ref], **HYPER)
    s, buf = s0.clone(), torch.zeros_like(s0)
    with interpret_on_cpu() if interpret else contextlib.nullcontext():
        for _ in range(2):
            ref.grad = ops.masked_linear_dscores(dy, x, w, ref.detach())
            opt.step()
            ops.masked_linear_sgd(dy, x, w, s, buf, HYPER["lr"], HYPER["momentum"], HYPER["weight_decay"])
    if interpret:
        torch.testing.assert_close(s, ref.detach(), **TOL)
    else:  # the reference body is torch.optim.SGD's own arithmetic
        assert torch.equal(s, ref.detach()) and torch.equal(buf, opt.state[ref]["momentum_buffer"])


def test_input_precision_comes_from_the_environment_checked(monkeypatch):
    ml = ops._kernels("masked_linear")
    seen = []
    real = ml.masked_linear_forward
    monkeypatch.setattr(ml, "masked_linear_forward",
                        lambda *a, **kw: seen.append(kw["input_precision"]) or real(*a, **kw))
    x, w, s = torch.randn(3, 8), torch.randn(4, 8), torch.randn(4, 8)
    mask = masks.topk_mask(s, 16)
    with interpret_on_cpu():
        monkeypatch.delenv("STRONGTICKET_INPUT_PRECISION", raising=False)
        ops.masked_linear(x, w, s, mask, None)
        monkeypatch.setenv("STRONGTICKET_INPUT_PRECISION", "ieee")
        ops.masked_linear(x, w, s, mask, None)
        monkeypatch.setenv("STRONGTICKET_INPUT_PRECISION", "fp16")
        with pytest.raises(ValueError, match="STRONGTICKET_INPUT_PRECISION must be one of tf32x3, tf32, ieee, "
                                             "got 'fp16'"):
            ops.masked_linear(x, w, s, mask, None)
    assert seen == [None, "ieee"]  # None: the kernels' default (kernels.tiles.DEFAULT_PRECISION)
