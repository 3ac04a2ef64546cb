"""Transformers: convert masks every weight (attention included), shared random weights, the built-in transformer and
the token-sequence tasks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from strongticket.backend import interpret_on_cpu
from strongticket.config import SearchConfig
from strongticket.convert import TopKMask, bake, convert, to_torch_prune
from strongticket.data.sequences import chance_accuracy, make_sequences
from strongticket.data.splits import load_splits
from strongticket.evaluate import evaluate, load_ticket_model
from strongticket.masks import keep_count
from strongticket.models import build_model
from strongticket.nn import MaskedLayer, MaskedLinear, masked_layers
from strongticket.search import run_search
from strongticket.search.loop import _loss


def _masked_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every masked tensor of a converted model by name: MaskedLayer weights and parametrized originals."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            out[f"{name}.weight"] = module.weight
        elif parametrize.is_parametrized(module):
            for pname, plist in module.parametrizations.items():
                out[f"{name}.{pname}"] = plist.original
    return out


def _weights_of(model: nn.Module) -> set[str]:
    """Names of every weight tensor (2 or more dims) of a plain model."""
    return {n for n, p in model.named_parameters() if p.dim() >= 2}


def _transformer(**kw) -> nn.Transformer:
    torch.manual_seed(0)
    return nn.Transformer(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=96,
                          dropout=0.0, batch_first=True, **kw)


def test_convert_masks_every_weight_of_nn_transformer_attention_included():
    model = _transformer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left unmasked: no warning at all
        converted = convert(model, density=0.3, seed=1)
    masked = _masked_tensors(converted)
    names = {n.replace(".parametrizations", "").replace(".original", "") for n in masked}
    assert names == _weights_of(model)  # in_proj_weight, out_proj, linear1/2 of every encoder and decoder layer
    assert len(masked) == 2 * 4 + 2 * 6 and "encoder.layers.1.self_attn.in_proj_weight" in names
    assert "decoder.layers.0.multihead_attn.in_proj_weight" in names
    for plist in (m.parametrizations for m in converted.modules() if parametrize.is_parametrized(m)):
        for p in plist.values():
            assert isinstance(p[0], TopKMask) and int(p[0].mask.sum()) == keep_count(0.3, p.original.numel())
    trainable = [n for n, p in converted.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("scores") for n in trainable) and len(trainable) == len(masked)
    # the literature's policy: biases zero, layer norms non-affine (gain 1, shift 0), all frozen
    assert all(float(p.abs().max()) == 0 for n, p in converted.named_parameters() if n.endswith("bias")
               and "norm" not in n)
    gains = [p for n, p in converted.named_parameters() if n.endswith("norm1.weight")]
    assert gains and all(torch.equal(p, torch.ones_like(p)) for p in gains)


def test_the_acceptance_model_with_torch_defaults_is_masked_whole():
    torch.manual_seed(0)
    model = nn.Transformer(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2)  # d_ff 2048, dropout
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = convert(model, density=0.5, share_weights=True)
    masked = _masked_tensors(converted)
    assert {n.replace(".parametrizations", "").replace(".original", "") for n in masked} == _weights_of(model)
    assert len({t.data_ptr() for t in masked.values()}) == 4


def test_only_scores_receive_gradients_and_bake_and_prune_compute_the_same():
    converted = convert(_transformer(), density=0.4, seed=2)
    g = torch.Generator().manual_seed(3)
    src, tgt = torch.randn(3, 7, 64, generator=g), torch.randn(3, 5, 64, generator=g)
    converted.train()
    converted(src, tgt).square().mean().backward()
    for name, p in converted.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    for mode in ("train", "eval"):  # eval: the fast path of the transformer layers reads .weight directly
        getattr(converted, mode)()
        with torch.no_grad():
            want = converted(src, tgt)
            baked, pruned = bake(converted), to_torch_prune(converted)
            getattr(baked, mode)(), getattr(pruned, mode)()
            assert torch.equal(baked(src, tgt), want) and torch.equal(pruned(src, tgt), want)
    assert not any(parametrize.is_parametrized(m) for m in bake(converted).modules())
    assert hasattr(to_torch_prune(converted).encoder.layers[0].self_attn, "in_proj_weight_mask")


@pytest.mark.parametrize("seed", range(3))
def test_in_proj_score_gradient_is_the_straight_through_one(seed):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(12, 3, batch_first=True, bias=False)
    converted = convert(nn.Sequential(mha), density=0.5, seed=seed)[0]
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    converted.double()
    converted(x, x, x, need_weights=False)[0].sum().backward()
    plist = converted.parametrizations.in_proj_weight
    w, scores = plist.original, plist[0].scores
    # the reference: the same attention with W ⊙ M a leaf, its gradient G; dS = G ⊙ W ⊙ sign(S)
    w_eff = (w * plist[0].mask).detach().requires_grad_()
    out_w = converted.out_proj.weight.detach()
    y, _ = F.multi_head_attention_forward(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 12, 3, w_eff, None,
                                          None, None, False, 0.0, out_w, None, need_weights=False)
    y.sum().backward()
    torch.testing.assert_close(scores.grad, w_eff.grad * w * torch.sign(scores.detach()), rtol=1e-12, atol=1e-12)


def test_separate_q_k_v_projections_are_masked():
    mha = nn.MultiheadAttention(16, 4, kdim=8, vdim=6, batch_first=True)
    converted = convert(nn.Sequential(mha), density=0.5)
    assert set(converted[0].parametrizations) == {"q_proj_weight", "k_proj_weight", "v_proj_weight"}
    assert converted[0].out_proj.parametrizations.weight.original.shape == (16, 16)
    q, k, v = torch.randn(2, 3, 16), torch.randn(2, 4, 8), torch.randn(2, 4, 6)
    with torch.no_grad():
        assert torch.equal(bake(converted)[0](q, k, v)[0], converted[0](q, k, v)[0])


class _Odd(nn.Module):
    """Weights and parameters no rule covers, and ones the policies cover."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.gate = nn.Parameter(torch.ones(8))
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.norm(self.embed(x) * self.gate) * self.scale)


def test_the_warning_names_every_parameter_left_unmasked_and_strict_refuses():
    with pytest.warns(UserWarning, match=r"convert left 2 parameters unmasked .*: scale, gate$"):
        convert(_Odd())
    with pytest.warns(UserWarning, match=r"left 6 parameters unmasked .*: scale, gate, embed\.weight, norm\.weight, "
                                         r"norm\.bias, fc\.bias$") as record:
        convert(_Odd(), other="skip", norm="keep", bias="keep")
    assert len(record) == 1
    with pytest.raises(ValueError, match=r"unmasked .*: scale, gate \(strict=True\)"):
        convert(_Odd(), strict=True)
    with pytest.warns(UserWarning, match=r"left 2 parameters unmasked .*: scale, gate$"):
        converted = convert(_Odd(), bias="mask", norm="learn")
    assert isinstance(converted.fc, MaskedLinear) and converted.fc.bias_scores is not None
    assert converted.norm.weight.requires_grad and converted.norm.bias.requires_grad
    with pytest.raises(ValueError, match="bias must be one of zero, random, mask, keep, got 'none'"):
        convert(_Odd(), bias="none")
    with pytest.raises(ValueError, match="norm must be one of identity, keep, learn, got 'drop'"):
        convert(_Odd(), norm="drop")


def test_the_issue_example_masks_the_attention_projection():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 64), nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0),
                          nn.Flatten(), nn.Linear(512, 5))
    converted = convert(model, density=0.5)
    attn = converted[1].self_attn
    assert parametrize.is_parametrized(attn, "in_proj_weight") and parametrize.is_parametrized(attn.out_proj)
    assert float(attn.in_proj_bias.abs().max()) == 0
    x = torch.randint(0, 100, (4, 8))
    converted.eval()
    with torch.no_grad():
        assert torch.equal(bake(converted)(x), converted(x))


def test_share_weights_holds_one_tensor_per_shape_each_layer_its_own_mask():
    converted = convert(_transformer(), density=0.3, seed=5, share_weights=True)
    masked = _masked_tensors(converted)
    by_shape: dict[tuple, set[int]] = {}
    for t in masked.values():
        by_shape.setdefault(tuple(t.shape), set()).add(t.data_ptr())
    assert by_shape and all(len(ptrs) == 1 for ptrs in by_shape.values())
    assert len(masked) == 20 and len(by_shape) == 4  # in_proj (192,64), out (64,64), linear1, linear2
    masks = [m.parametrizations.in_proj_weight[0].mask for m in converted.modules()
             if isinstance(m, nn.MultiheadAttention)]
    assert len(masks) == 6 and len({bytes(m.numpy().tobytes()) for m in masks}) == 6
    unshared = convert(_transformer(), density=0.3, seed=5)
    first = "encoder.layers.0.self_attn.parametrizations.in_proj_weight.original"
    assert torch.equal(dict(converted.named_parameters())[first], dict(unshared.named_parameters())[first])
    with pytest.raises(ValueError, match="share_weights needs random weights"):
        convert(_transformer(), init="keep", share_weights=True)


def test_builtin_models_share_weights_by_shape():
    model = build_model("transformer", (6,), 7, widths=(16, 24), depth=3, heads=2, seed=1, share_weights=True)
    layers = masked_layers(model)
    assert len(layers) == 2 + 3 * 4 + 1
    qkv = [b.qkv for b in model.blocks]
    assert all(layer.weight is qkv[0].weight for layer in qkv) and qkv[1].shares_weight and not qkv[0].shares_weight
    assert len({id(layer.weight) for layer in layers}) == 7  # embed, position, qkv, out, ff1, ff2, head: 15 layers
    assert not torch.equal(qkv[0].scores, qkv[1].scores)
    plain = build_model("transformer", (6,), 7, widths=(16, 24), depth=3, heads=2, seed=1)
    assert torch.equal(plain.blocks[0].qkv.weight, qkv[2].weight)  # the first layer's stream
    mlp = build_model("mlp", (8,), 3, widths=(8, 8, 8), share_weights=True)
    assert masked_layers(mlp)[1].weight is masked_layers(mlp)[2].weight


def _tiny_transformer(**kw) -> nn.Module:
    return build_model("transformer", (5,), 7, widths=(16, 24), depth=2, heads=2, seed=3, density=0.4, **kw)


def test_builtin_transformer_outputs_per_position_logits_and_bakes():
    model = _tiny_transformer()
    x = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(0))
    logits = model(x)
    assert logits.shape == (3, 7, 5)
    F.cross_entropy(logits, x).backward()
    assert all(layer.scores.grad is not None for layer in masked_layers(model))
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.endswith("scores"))
    with torch.no_grad():
        torch.testing.assert_close(bake(model)(x), model(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"input must be integer tokens \(batch, 5\), got torch.float32 \(3, 5\)"):
        model(x.float())
    with pytest.raises(ValueError, match=r"tokens must be in \[0, 6\], got values in \[0, 7\]"):
        model(torch.tensor([[0, 1, 7, 2, 3]]))
    with pytest.raises(ValueError, match=r"d_model \(16\) must be divisible by heads \(3\)"):
        build_model("transformer", (5,), 7, widths=(16, 24), heads=3)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 (the Triton kernels "
                    "on the CPU)")
def test_the_triton_path_covers_the_attention_projections():
    model = _tiny_transformer()
    x = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    F.cross_entropy(model(x), x).backward()
    want_out, want = model(x).detach(), [layer.scores.grad.clone() for layer in masked_layers(model)]
    model.zero_grad()
    with interpret_on_cpu():
        out = model(x)
        F.cross_entropy(out, x).backward()
    torch.testing.assert_close(out.detach(), want_out, rtol=1e-5, atol=1e-5)
    for layer, g in zip(masked_layers(model), want):
        torch.testing.assert_close(layer.scores.grad, g, rtol=1e-4, atol=1e-6)


def test_sequence_tasks_are_fixed_distinct_and_correct():
    train_x, train_y, test_x, test_y = make_sequences("sort", n_train=500, n_test=100)
    again = make_sequences("sort", n_train=500, n_test=100)
    assert all(np.array_equal(a, b) for a, b in zip((train_x, train_y, test_x, test_y), again))
    assert np.array_equal(train_y, np.sort(train_x, 1)) and np.array_equal(test_y, np.sort(test_x, 1))
    rows = {r.tobytes() for r in train_x} | {r.tobytes() for r in test_x}
    assert len(rows) == 600  # no duplicate, no test sequence in training
    rx, ry, _, _ = make_sequences("reverse", n_train=50, n_test=10)
    assert np.array_equal(ry, rx[:, ::-1])
    # reverse labels are uniform tokens: chance ~ 1/vocab; sort's first position is skewed towards 0
    full = make_sequences("reverse")
    assert abs(chance_accuracy(full[1], full[3]) - 0.1) < 0.02
    s = make_sequences("sort")
    assert chance_accuracy(s[1], s[3]) > 0.2
    with pytest.raises(ValueError, match="task must be one of sort, reverse, got 'add'"):
        make_sequences("add")
    with pytest.raises(ValueError, match=r"n_train \+ n_test must be at most half the 2\^3 distinct sequences"):
        make_sequences("sort", length=3, vocab=2, n_train=4, n_test=1)


def test_per_token_accuracy_loss_and_rank_scaling():
    splits = load_splits("seq-reverse")
    assert splits.input_shape == (10,) and splits.num_classes == 10 and splits.train.labels.shape[1] == 10

    class Oracle(nn.Module):  # reverses perfectly, except position 0 always says 0
        def forward(self, x):
            y = x.flip(1).clone()
            y[:, 0] = 0
            return F.one_hot(y, 10).float().transpose(1, 2) * 50

    acc, loss = evaluate(Oracle(), splits.test)
    expected = (0.9 * len(splits.test) * 10 + int((splits.test.labels[:, 0] == 0).sum())) / (len(splits.test) * 10)
    assert acc == pytest.approx(expected, abs=1e-12) and loss >= 0
    logits = torch.randn(6, 10, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (6, 4))
    single, _ = _loss(logits, labels, 1, 6)
    ranks = sum(_loss(logits[r::2], labels[r::2], 2, 6)[0] for r in range(2)) / 2  # DDP averages over ranks
    torch.testing.assert_close(ranks, single)


def test_config_checks_transformer_fields():
    with pytest.raises(ValueError, match="model transformer needs a token-sequence data set"):
        SearchConfig(model="transformer")
    with pytest.raises(ValueError, match="data seq-sort is token sequences: it needs model transformer"):
        SearchConfig(data="seq-sort")
    with pytest.raises(ValueError, match="depth applies to model transformer only, got model 'mlp'"):
        SearchConfig(depth=3)
    with pytest.raises(ValueError, match=r"heads must be an integer in \[1, 64\], got 0"):
        SearchConfig(model="transformer", data="seq-sort", heads=0)
    with pytest.raises(ValueError, match=r"heads must divide d_model \(48: widths\[0\] x width\), got heads 5"):
        SearchConfig(model="transformer", data="seq-sort", width=0.75, heads=5)
    with pytest.raises(ValueError, match=r"widths of transformer must be d_model,d_ff \(2 values\), got \[64\]"):
        SearchConfig(model="transformer", data="seq-sort", widths=(64,))


@pytest.mark.slow
def test_search_on_a_sequence_task_with_shared_weights_and_its_ticket(tmp_path):
    cfg = SearchConfig(data="seq-reverse", model="transformer", widths=(16, 32), depth=1, heads=2, epochs=1,
                       share_weights=True, out=str(tmp_path))
    summary = run_search(cfg, progress=False)
    assert summary["test_acc"] > 0.3  # chance is 0.1 (the search gets ~1.0 in 3 epochs at the default size)
    model, ticket, loaded = load_ticket_model(tmp_path / "ticket.safetensors", device="cpu")
    assert loaded.share_weights and ticket.config["share_weights"] is True
    assert model.blocks[0].ff1.weight is not None and len(ticket.masks) == len(masked_layers(model)) == 7
    test = load_splits("seq-reverse").test
    acc, _ = evaluate(model, test)
    assert acc == summary["test_acc"]
    # the packed export regenerates each layer's signs from its weight's stream (the shared layer's), bit for bit
    from strongticket.export import export, load_packed

    packed = load_packed(export(tmp_path / "ticket.safetensors", tmp_path / "packed.safetensors", format="packed"))
    with torch.no_grad():
        assert torch.equal(packed.eval()(test.x[:50]), model.eval()(test.x[:50]))
