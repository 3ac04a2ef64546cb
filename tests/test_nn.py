import pytest
import torch
import torch.nn.functional as F

from strongticket import GlobalTopK, MaskedConv2d, MaskedLinear, keep_count, masked_layers, use_global_topk
from strongticket.models import MLP, build_model
from strongticket.random import init_weight


def test_frozen_weights_never_get_gradients_and_never_change():
    model = MLP((1, 8, 8), 10, (32, 16), density=0.5, seed=3)
    before = [layer.weight.detach().clone() for layer in masked_layers(model)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p is layer.scores for p, layer in zip(trainable, masked_layers(model), strict=True))
    opt = torch.optim.SGD(trainable, lr=0.5, momentum=0.9, weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for layer, w0 in zip(masked_layers(model), before):
        assert not layer.weight.requires_grad and layer.weight.grad is None
        assert torch.equal(layer.weight, w0)
        # and they come back bit for bit from (seed, layer index)
        assert torch.equal(layer.weight, init_weight(tuple(w0.shape), "signed_constant", 3, layer.layer_index))


def test_masked_linear_is_linear_over_the_masked_weight():
    layer = MaskedLinear(13, 7, density=0.3, seed=1, bias=True)
    x = torch.randn(5, 13)
    assert int(layer.mask.sum()) == keep_count(0.3, 91)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * layer.mask, layer.bias))
    assert not layer.bias.requires_grad


def test_masked_conv2d_is_conv_over_the_masked_weight():
    layer = MaskedConv2d(3, 4, 3, stride=2, padding=1, density=0.1, seed=2)
    x = torch.randn(2, 3, 9, 9)
    assert int(layer.mask.sum()) == keep_count(0.1, 4 * 3 * 9)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight * layer.mask, None, 2, 1))


def test_mask_is_recomputed_only_when_scores_change():
    layer = MaskedLinear(20, 10, density=0.5)
    first = layer.mask
    assert layer.mask is first  # cached: eval with frozen scores never re-selects
    with torch.no_grad():
        layer.scores.mul_(-1).add_(torch.linspace(-1, 1, 200).view(10, 20))
    assert layer.mask is not first
    assert int(layer.mask.sum()) == 100


def test_global_topk_keeps_ceil_density_of_all_weights_with_one_threshold():
    model = MLP((1, 8, 8), 10, (40, 30), density=0.2, seed=0)
    with torch.no_grad():
        masked_layers(model)[1].scores.mul_(10)  # one layer's scores dominate
    selector = use_global_topk(model, 0.2)
    assert isinstance(selector, GlobalTopK)
    layers = masked_layers(model)
    total = sum(layer.weight.numel() for layer in layers)
    kept = [int(layer.mask.sum()) for layer in layers]
    assert sum(kept) == keep_count(0.2, total)
    assert kept == [0, sum(kept), 0]  # the dominant layer takes every kept weight, unlike per-layer top-k
    smallest_kept = min(float(la.scores.detach()[la.mask].abs().min()) for la in layers if la.mask.any())
    largest_dropped = max(float(la.scores.detach()[~la.mask].abs().max()) for la in layers if (~la.mask).any())
    assert smallest_kept >= largest_dropped


def test_fixed_mask_overrides_scores():
    layer = MaskedLinear(4, 3, density=0.5)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 0] = True
    layer.fix_mask(mask)
    assert torch.equal(layer.mask, mask)
    with pytest.raises(ValueError, match=r"mask must be bool of shape \(3, 4\), got torch.float32 \(3, 4\)"):
        layer.fix_mask(mask.float())


def test_same_seed_same_model_other_seed_other_weights():
    a, b, c = (MLP((64,), 10, (16,), seed=s) for s in (5, 5, 6))
    for la, lb, lc in zip(masked_layers(a), masked_layers(b), masked_layers(c)):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.scores, lb.scores)
        assert not torch.equal(la.weight, lc.weight)
    layers = masked_layers(a)
    assert not torch.equal(layers[0].weight[:, :16], layers[1].weight[:, :16])  # layers draw distinct streams


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MaskedLinear(0, 3), "in_features must be a positive integer, got 0"),
        (lambda: MaskedLinear(3, 3, density=1.5), r"density must be in \(0, 1\], got 1.5"),
        (lambda: MaskedConv2d(3, 4, 3, groups=2), r"divisible by groups \(2\)"),
        (lambda: MaskedConv2d(3, 4, 0), "kernel_size must be an integer >= 1"),
        (lambda: MLP((64,), 10, (16, -3)), r"widths\[1\] must be a positive integer, got -3"),
        (lambda: build_model("resnet999", (64,), 10),
         "model must be one of mlp, conv2, .*, resnet18, transformer, got 'resnet999'"),
        (lambda: MaskedLinear(3, 3, init="zeros"), "init must be one of"),
    ],
)
def test_bad_layer_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"input must have 13 features in its last dimension, got shape \(2, 12\)"):
        MaskedLinear(13, 3)(torch.randn(2, 12))
    with pytest.raises(ValueError, match=r"input must be \(batch, 3, height, width\), got shape \(2, 4, 5, 5\)"):
        MaskedConv2d(3, 4, 3)(torch.randn(2, 4, 5, 5))


def test_bias_scores_mask_the_bias_exactly_and_get_the_straight_through_gradient():
    layer = MaskedLinear(6, 40, bias=True, bias_scores=True, density=0.3, seed=9)
    assert int(layer.bias_mask.sum()) == keep_count(0.3, 40)
    assert torch.equal(layer.effective_bias(), layer.bias * layer.bias_mask)  # exact, no (m + s) - s rounding
    x = torch.randn(3, 6)
    layer(x).sum().backward()
    expected = torch.full((40,), 3.0) * layer.bias * torch.sign(layer.bias_scores.detach())
    torch.testing.assert_close(layer.bias_scores.grad, expected)
    with pytest.raises(ValueError, match="bias_scores=True needs bias=True"):
        MaskedLinear(6, 4, bias_scores=True)
