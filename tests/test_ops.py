"""The masked ops against a float64 autograd reference of their definition."""

import pytest
import torch
import torch.nn.functional as F

from strongticket.masks import keep_count, topk_mask
from strongticket.ops import masked_conv2d, masked_linear


def _straight_through(weight, scores, mask):
    """W ⊙ (M + |S| − stopgrad|S|): value W ⊙ M, gradient wrt S = G ⊙ W ⊙ sign(S) — the definition."""
    return weight * (mask.to(scores.dtype) + scores.abs() - scores.abs().detach())


def _inputs(shape_w, density, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape_w, generator=g, dtype=torch.float64).to(dtype)
    scores = torch.randn(shape_w, generator=g, dtype=torch.float64).to(dtype)
    mask = topk_mask(scores, keep_count(density, scores.numel()))
    return g, weight, scores, mask


@pytest.mark.parametrize("B, K, N", [(1, 1, 1), (5, 17, 3), (33, 64, 65), (2, 3, 129)])
@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("bias", [False, True])
def test_masked_linear_matches_float64_reference(B, K, N, density, bias):
    g, weight, scores, mask = _inputs((N, K), density, B * 1000 + K * 10 + N)
    x = torch.randn(B, K, generator=g, dtype=torch.float64)
    b = torch.randn(N, generator=g, dtype=torch.float64) if bias else None
    dy = torch.randn(B, N, generator=g, dtype=torch.float64)

    x32 = x.float().requires_grad_()
    s32 = scores.clone().requires_grad_()
    b32 = b.float().requires_grad_() if bias else None
    y = masked_linear(x32, weight, s32, mask, b32)
    y.backward(dy.float())

    x64 = x.clone().requires_grad_()
    s64 = scores.double().requires_grad_()
    b64 = b.clone().requires_grad_() if bias else None
    y64 = F.linear(x64, _straight_through(weight.double(), s64, mask), b64)
    y64.backward(dy)

    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s32.grad.double(), s64.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(b32.grad.double(), b64.grad, rtol=1e-5, atol=1e-5)


def test_score_gradient_is_the_definition_exactly_in_float64():
    g, weight, scores, mask = _inputs((9, 13), 0.3, 7, torch.float64)
    x = torch.randn(4, 6, 13, generator=g, dtype=torch.float64)  # leading dims flatten into the batch
    dy = torch.randn(4, 6, 9, generator=g, dtype=torch.float64)
    s = scores.clone().requires_grad_()
    masked_linear(x, weight, s, mask, None).backward(dy)
    expected = (dy.reshape(-1, 9).t() @ x.reshape(-1, 13)) * weight * torch.sign(scores)
    torch.testing.assert_close(s.grad, expected, rtol=1e-12, atol=1e-12)


def test_pruned_edges_get_score_gradient_and_zero_scores_do_not():
    g, weight, scores, mask = _inputs((8, 8), 0.25, 3, torch.float64)
    scores[0, 0] = 0.0
    mask = topk_mask(scores, 16)
    s = scores.clone().requires_grad_()
    x = torch.randn(5, 8, generator=g, dtype=torch.float64)
    masked_linear(x, weight, s, mask, None).sum().backward()
    assert (s.grad[~mask] != 0).sum() >= (~mask).sum() - 1  # every pruned edge moves but the zero score
    assert s.grad[0, 0] == 0


def test_frozen_weight_and_mask_get_no_gradient():
    g, weight, scores, mask = _inputs((4, 5), 0.5, 0)
    w = weight.clone().requires_grad_()
    s = scores.clone().requires_grad_()
    masked_linear(torch.randn(3, 5, generator=g), w, s, mask, None).sum().backward()
    assert w.grad is None and s.grad is not None


@pytest.mark.parametrize(
    "B, C, Cout, H, W, k, stride, padding, dilation, groups",
    [(2, 3, 5, 7, 9, 3, 1, 1, 1, 1), (1, 4, 6, 8, 5, 3, 2, 0, 1, 2), (3, 1, 2, 6, 6, 1, 1, 0, 1, 1),
     (2, 2, 3, 9, 7, 3, 1, 2, 2, 1)],
)
@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
def test_masked_conv2d_matches_float64_reference(B, C, Cout, H, W, k, stride, padding, dilation, groups, density):
    g, weight, scores, mask = _inputs((Cout, C // groups, k, k), density, B + C + Cout + H)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    args = ([stride] * 2, [padding] * 2, [dilation] * 2, groups)

    x32 = x.float().requires_grad_()
    s32 = scores.clone().requires_grad_()
    y = masked_conv2d(x32, weight, s32, mask, None, *args)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy.float())

    x64 = x.clone().requires_grad_()
    s64 = scores.double().requires_grad_()
    y64 = F.conv2d(x64, _straight_through(weight.double(), s64, mask), None, *args)
    y64.backward(dy)

    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s32.grad.double(), s64.grad, rtol=1e-5, atol=1e-5)


def test_opcheck_masked_linear_and_conv2d():
    g, weight, scores, mask = _inputs((6, 10), 0.5, 11)
    x = torch.randn(4, 10, generator=g)
    torch.library.opcheck(masked_linear, (x.requires_grad_(), weight, scores.requires_grad_(), mask, None))
    torch.library.opcheck(masked_linear, (x, weight, scores, mask, torch.randn(6, generator=g)))
    _, cw, cs, cm = _inputs((4, 3, 3, 3), 0.5, 12)
    cx = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    torch.library.opcheck(masked_conv2d, (cx, cw, cs.requires_grad_(), cm, None, [1, 1], [1, 1], [1, 1], 1))


def test_torch_compile_fullgraph_forward_and_backward():
    g, weight, scores, mask = _inputs((6, 10), 0.5, 13)
    x = torch.randn(4, 10, generator=g)

    def step(x, s):
        return masked_linear(torch.relu(x), weight, s, mask, None).square().sum()

    s_eager = scores.clone().requires_grad_()
    step(x, s_eager).backward()
    s_comp = scores.clone().requires_grad_()
    torch.compile(step, fullgraph=True, backend="aot_eager")(x, s_comp).backward()
    torch.testing.assert_close(s_comp.grad, s_eager.grad)
