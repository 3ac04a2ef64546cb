"""GPU: a whole fused edge-popup step on CUDA — selection, forward, loss, backward with ScoreSGD's step in the dS
epilogue — of a 784-512-512-10 MLP at batch 256, per-layer and global top-k:
  * captured in a ``torch.cuda.CUDAGraph`` after warm-up on a side stream and replayed, against the same steps
    run eagerly (masks identical, scores equal: the same kernels on the same inputs);
  * run eagerly under ``torch.cuda.set_sync_debug_mode("error")``: no host synchronisation anywhere in the step;
  * the fused step against torch.optim.SGD on the same kernels' dS;
each on both paths of the linear layers: the fused GEMM kernels and W ⊙ M materialized for cuBLAS.
Logging (``.item()``, accuracy) stays out of the step. Deselected by default (``-m gpu`` runs them).
"""

import pytest
import torch
import torch.nn.functional as F

from strongticket import masks
from strongticket.backend import backend_name
from strongticket.models import MLP
from strongticket.nn import masked_layers, use_global_topk
from strongticket.optim import ScoreSGD

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]



@pytest.fixture(autouse=True, params=["fused", "materialize"])
def gemm_path(request, monkeypatch):
    """Every test on both Triton paths of the masked linear layers (``STRONGTICKET_GEMM``)."""
    monkeypatch.setenv("STRONGTICKET_GEMM", request.param)
    return request.param


BATCH, WARMUP, STEPS = 256, 3, 4
HYPER = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)  # constant lr: a graph replays the lr it captured


def _model(scope, optimizer=ScoreSGD):
    model = MLP((784,), 10, (512, 512), density=0.5, seed=0).cuda()
    if scope == "global":
        use_global_topk(model, 0.5)
    return model, optimizer([layer.scores for layer in masked_layers(model)], **HYPER)


def _batches(n):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [(torch.randn(BATCH, 784, device="cuda", generator=g),
             torch.randint(0, 10, (BATCH,), device="cuda", generator=g)) for _ in range(n)]


def _step(model, optimizer, x, y):
    """One search step: select (in the forward) -> fused forward -> loss -> backward (+ the scores' SGD step)."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def _reference_masks(model):
    """The masks of the current scores from ``strongticket.masks`` (independent of the layers' caches, which a
    graph replay does not update)."""
    layers = masked_layers(model)
    scores = [layer.scores.detach() for layer in layers]
    if layers[0]._selector is not None:
        return masks.global_topk_masks(scores, layers[0]._selector.k)
    return [masks.topk_mask(s, layer.k) for s, layer in zip(scores, layers)]


def _scores(model):
    return [layer.scores.detach().clone() for layer in masked_layers(model)]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gpu_fused_step_in_a_cuda_graph_replays_like_eager(scope):
    assert backend_name("cuda") == "triton"
    data = _batches(WARMUP + STEPS)
    eager, eager_opt = _model(scope)
    graphed, opt = _model(scope)
    static_x, static_y = data[0][0].clone(), data[0][1].clone()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: Triton compiles, selection plans, pointer tables, momentum buffers
        for x, y in data[:WARMUP]:
            static_x.copy_(x)
            static_y.copy_(y)
            _step(graphed, opt, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    assert all(layer.scores.grad is None for layer in masked_layers(graphed))  # the step ran in the backward
    for x, y in data[:WARMUP]:
        _step(eager, eager_opt, x, y)

    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = _step(graphed, opt, static_x, static_y)

    for x, y in data[WARMUP:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        loss = _step(eager, eager_opt, x, y)
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss, loss, rtol=1e-6, atol=1e-6)
        got, want = _scores(graphed), _scores(eager)
        for a, b in zip(got, want):  # the same kernels on the same inputs: equal up to nothing
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        for a, b in zip(_reference_masks(graphed), _reference_masks(eager)):
            assert torch.equal(a, b)
    for layer, mask in zip(masked_layers(eager), _reference_masks(eager)):
        assert torch.equal(layer.mask, mask)  # the radix-select kernels select what strongticket.masks selects


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gpu_fused_step_never_synchronises_with_the_host(scope):
    model, opt = _model(scope)
    data = _batches(3)
    for x, y in data[:2]:  # warm-up: compiles, plans and pointer tables are made once, outside the check
        _step(model, opt, x, y)
    torch.cuda.synchronize()
    before = _scores(model)
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _step(model, opt, *data[2])
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    assert all(not torch.equal(a, b) for a, b in zip(_scores(model), before))
    for layer, mask in zip(masked_layers(model), _reference_masks(model)):
        assert torch.equal(layer.mask, mask)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gpu_fused_step_equals_torch_sgd_on_the_same_kernels(scope):
    data = _batches(3)
    fused, fused_opt = _model(scope)
    plain, plain_opt = _model(scope, torch.optim.SGD)
    for step, (x, y) in enumerate(data):
        fused_masks, plain_masks = _reference_masks(fused), _reference_masks(plain)  # what this step selects
        _step(fused, fused_opt, x, y)
        _step(plain, plain_opt, x, y)
        for a, b in zip(_scores(fused), _scores(plain)):  # dS identical; S − lr·buf rounded once or twice
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(fused_masks, plain_masks):
            # step 0 selects from the same initial scores; later the scores differ by an ulp or so, which can
            # swap the two |S| adjacent to the threshold (spacing ~1e-7 among 4e5 scores): a few flips at most
            assert torch.equal(a, b) if step == 0 else int((a != b).sum()) <= 4
    for a, b in zip(fused_opt.state_dict()["state"].values(), plain_opt.state_dict()["state"].values()):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"], rtol=1e-5, atol=1e-6)
