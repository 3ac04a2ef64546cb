"""convert / bake / to_torch_prune on user-built models."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from strongticket import bake, convert, masked_layers, to_torch_prune
from strongticket.config import SearchConfig
from strongticket.convert import TopKMask
from strongticket.data.splits import batches, load_splits
from strongticket.masks import keep_count
from strongticket.models import MLP, build_model, model_from_config


def _user_conv_net(bias: bool = False) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 16, 32, bias=bias), nn.ReLU(), nn.Linear(32, 10, bias=bias),
    )


def test_convert_swaps_linear_and_conv_and_freezes_everything_but_scores():
    model = _user_conv_net(bias=True)
    converted = convert(model, density=0.3, seed=4)
    layers = masked_layers(converted)
    assert [type(m).__name__ for m in layers] == ["MaskedConv2d", "MaskedLinear", "MaskedLinear"]
    assert [m.layer_index for m in layers] == [0, 1, 2]
    assert [int(m.mask.sum()) for m in layers] == [keep_count(0.3, m.weight.numel()) for m in layers]
    trainable = {n for n, p in converted.named_parameters() if p.requires_grad}
    assert trainable == {"0.scores", "4.scores", "6.scores"}
    assert isinstance(model[0], nn.Conv2d)  # the original is untouched (inplace=False)


def test_converted_user_model_equals_the_builtin_model_of_the_same_shape():
    user = nn.Sequential(nn.Flatten(), nn.Linear(64, 48, bias=False), nn.ReLU(), nn.Linear(48, 10, bias=False))
    converted = convert(user, density=0.5, seed=2)
    builtin = MLP((1, 8, 8), 10, (48,), density=0.5, seed=2)
    for a, b in zip(masked_layers(converted), masked_layers(builtin)):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.scores, b.scores)
    splits = load_splits("digits")
    accs = []
    for model in (converted, builtin):
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
        for epoch in range(3):
            for b in batches(splits.train, 64, seed=0, epoch=epoch):
                opt.zero_grad()
                F.cross_entropy(model(b.x), b.labels).backward()
                opt.step()
        with torch.no_grad():
            accs.append((model(splits.test.x).argmax(1) == splits.test.labels).float().mean().item())
    assert accs[0] == accs[1] and accs[0] > 0.8


def test_init_keep_uses_the_models_own_weights():
    model = _user_conv_net(bias=True)
    with pytest.warns(UserWarning, match=r"convert left 3 parameters unmasked .*: 0\.bias, 4\.bias, 6\.bias$"):
        converted = convert(model, init="keep")  # bias policy "keep" by default with init="keep": listed
    assert torch.equal(masked_layers(converted)[0].weight, model[0].weight)
    assert torch.equal(masked_layers(converted)[0].bias, model[0].bias)


def test_skip_leaves_named_layers_alone_and_unknown_names_are_errors():
    converted = convert(_user_conv_net(), skip=["6"])
    assert isinstance(converted[6], nn.Linear) and len(masked_layers(converted)) == 2
    with pytest.raises(ValueError, match="skip names a module the model does not have: 'fc9'"):
        convert(_user_conv_net(), skip=["fc9"])
    with pytest.raises(ValueError, match="init must be one of .*keep, got 'zeros'"):
        convert(_user_conv_net(), init="zeros")


@pytest.mark.parametrize("bias", [False, True])
def test_bake_and_torch_prune_give_identical_logits(bias):
    model = convert(_user_conv_net(bias), density=0.2, seed=1)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        y = model(x)
        baked = bake(model)
        assert not masked_layers(baked)
        assert torch.equal(baked(x), y)
        pruned = to_torch_prune(model)
        assert torch.equal(pruned(x), y)
    assert hasattr(pruned[0], "weight_orig") and hasattr(pruned[0], "weight_mask")
    assert torch.equal(pruned[0].weight_mask.bool(), masked_layers(model)[0].mask)


def test_global_scope_and_bias_scores_survive_bake():
    model = MLP((64,), 10, (32,), density=0.3, seed=0, bias=True, bias_scores=True)
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.equal(bake(model)(x), model(x))
    converted = convert(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), density=0.1, scope="global")
    total = sum(m.weight.numel() for m in masked_layers(converted))
    assert sum(int(m.mask.sum()) for m in masked_layers(converted)) == keep_count(0.1, total)


@pytest.mark.parametrize("seed", range(5))
def test_other_layers_are_masked_through_parametrize(seed):
    torch.manual_seed(seed)  # the bias of Conv1d and x: the exact-value check once failed only on some draws
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5, 2))
    converted = convert(model, density=0.25, other="parametrize", seed=seed)
    param = converted[0].parametrizations.weight[0]
    assert isinstance(param, TopKMask) and int(param.mask.sum()) == keep_count(0.25, 36)
    x = torch.randn(2, 3, 7)
    converted(x).sum().backward()
    w = converted[0].parametrizations.weight.original
    assert not w.requires_grad and param.scores.grad is not None
    # straight-through: dS = (dL/dW_eff) ⊙ W ⊙ sign(S)
    w_eff = (w * param.mask).requires_grad_()
    converted[3](F.conv1d(x, w_eff, converted[0].bias).relu().flatten(1)).sum().backward()
    torch.testing.assert_close(param.scores.grad, w_eff.grad * w * torch.sign(param.scores.detach()))
    with torch.no_grad():
        assert torch.equal(converted[0].weight, w * param.mask)  # W ⊙ M exactly, not (M + |S|) − |S|
        assert torch.equal(bake(converted)(x), converted(x))
        assert torch.equal(to_torch_prune(converted)(x), converted(x))


def test_builtin_conv_and_resnet_models_build_and_run():
    x = torch.randn(2, 1, 8, 8)
    assert build_model("conv2", (1, 8, 8), 10, density=0.5)(x).shape == (2, 10)
    assert build_model("conv6", (1, 8, 8), 10, width=0.5)(x).shape == (2, 10)
    with pytest.raises(ValueError, match="conv8 pools 4 times and needs inputs of at least 16×16, got 8×8"):
        build_model("conv8", (1, 8, 8), 10)
    net = build_model("resnet20", (3, 32, 32), 10, width=0.25)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(masked_layers(net)) == 1 + 9 * 2 + 2 + 1  # stem, 18 block convs, 2 shortcuts, fc
    assert not any(p.requires_grad for n, p in net.named_parameters() if "scores" not in n)
    learn = build_model("resnet18", (3, 32, 32), 100, width=0.125, learn_bn=True)
    assert any(p.requires_grad for n, p in learn.named_parameters() if "bn" in n)


def test_model_from_config_uses_widths_and_width():
    cfg = SearchConfig(model="conv4", widths=(32,), width=0.5)
    model = model_from_config(cfg, (1, 8, 8), 10)
    assert [m.weight.shape[0] for m in masked_layers(model)] == [32, 32, 64, 64, 16, 10]
