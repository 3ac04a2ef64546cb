"""Search methods behind one API: registry, density schedules, pruning-at-init scores against hand computations."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from strongticket.cli import main
from strongticket.config import ALGOS, SearchConfig
from strongticket.evaluate import evaluate_ticket
from strongticket.masks import keep_count
from strongticket.nn import MaskedLinear, masked_layers
from strongticket.search import methods, run_search

SMALL = dict(widths=(48, 32), epochs=4, batch_size=128)
LAYER_SIZES = (64 * 48, 48 * 32, 32 * 10)


def _last_mask_sha(folder):
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])["mask_sha256"]


def test_registry_is_the_config_choices_and_names_valid_methods_on_failure():
    assert ALGOS == tuple(methods.METHODS)
    assert methods.get("snip").name == "snip" and not methods.get("snip").trains
    assert methods.get("edge-popup").trains
    with pytest.raises(ValueError, match="algo must be one of edge-popup, annealed-edge-popup, supermask, biprop, "
                                         "iterand, gem-miner, random.*got 'ep'"):
        methods.get("ep")
    with pytest.raises(ValueError, match="algo must be one of"):
        SearchConfig(algo="ep")


def test_new_fields_leave_existing_digests_unchanged_and_count_only_when_set():
    assert SearchConfig().digest() == "3c6a74132421"  # the digest before rounds / anneal_epochs existed
    assert SearchConfig(algo="snip").digest() == SearchConfig(algo="snip", rounds=1).digest()
    assert SearchConfig(algo="snip").digest() != SearchConfig(algo="snip", rounds=3).digest()


@pytest.mark.parametrize("kwargs, message", [
    (dict(rounds=3), "rounds > 1 needs a pruning-at-init algo"),
    (dict(algo="snip", rounds=0), r"rounds must be an integer in \[1, 10000\], got 0"),
    (dict(anneal_epochs=2), "anneal_epochs needs algo annealed-edge-popup"),
    (dict(algo="annealed-edge-popup", epochs=4, anneal_epochs=5), r"anneal_epochs must be an integer in \[0, 4\]"),
    (dict(algo="synflow", learn_bn=True), "bias_scores and learn_bn need a trained algo"),
])
def test_method_fields_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**kwargs)


@pytest.mark.parametrize("kwargs, sha", [
    ({}, "5c3c3ecf55f762e8f7b2aeabc276f7e809b9d0e95c3a4deb4da915c340d47939"),
    ({"scope": "global", "density": 0.1}, "d174599e1faa28af7c3401a44a50de4a09c4c9a8306d66989e2266b45ea71aab"),
])
def test_edge_popup_masks_are_those_of_the_code_before_methods_existed(tmp_path, kwargs, sha):
    run_search(SearchConfig(out=str(tmp_path), **SMALL, **kwargs), progress=False)
    assert _last_mask_sha(tmp_path) == sha  # computed with the pre-registry commit's run_search


def test_annealed_density_schedule_values():
    m = methods.build(SearchConfig(algo="annealed-edge-popup", density=0.1, epochs=4))
    assert [m.density_at(e) for e in range(4)] == [0.1 ** 0.25, 0.1 ** 0.5, 0.1 ** 0.75, 0.1]
    m = methods.build(SearchConfig(algo="annealed-edge-popup", density=0.1, epochs=4, anneal_epochs=2))
    assert [m.density_at(e) for e in range(4)] == [0.1 ** 0.5, 0.1, 0.1, 0.1]
    assert methods.build(SearchConfig(density=0.1)).density_at(0) == 0.1


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_annealed_edge_popup_ends_at_exactly_ceil_density_n(tmp_path, scope):
    cfg = SearchConfig(out=str(tmp_path), algo="annealed-edge-popup", density=0.1, anneal_epochs=2, scope=scope,
                       **SMALL)
    summary = run_search(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kept_weights"] > records[-1]["kept_weights"]  # starts denser
    assert summary["best_epoch"] >= 2  # only epochs at the target density are selectable
    if scope == "layer":
        assert summary["kept_weights"] == sum(keep_count(0.1, n) for n in LAYER_SIZES)
    else:
        assert summary["kept_weights"] == keep_count(0.1, sum(LAYER_SIZES))


@pytest.mark.filterwarnings("ignore:magnitude at density 0.2 collapsed:RuntimeWarning")  # pinned by its own test
@pytest.mark.parametrize("algo", methods.PRUNE_AT_INIT)
@pytest.mark.parametrize("rounds, scope", [(1, "layer"), (3, "layer"), (4, "global")])
def test_pruning_at_init_keeps_exactly_ceil_density_n_and_makes_a_normal_ticket(tmp_path, algo, rounds, scope):
    cfg = SearchConfig(out=str(tmp_path), algo=algo, density=0.2, rounds=rounds, scope=scope, **SMALL)
    summary = run_search(cfg, progress=False)
    if scope == "layer":
        assert summary["kept_weights"] == sum(keep_count(0.2, n) for n in LAYER_SIZES)
    else:
        assert summary["kept_weights"] == keep_count(0.2, sum(LAYER_SIZES))
    assert summary["epochs"] == 0 and summary["rounds"] == rounds
    assert evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]


def test_iterative_rounds_only_remove_weights_and_reach_each_round_density():
    torch.manual_seed(0)
    model = nn.Sequential(MaskedLinear(20, 16, init="kaiming_normal", seed=1, layer=0), nn.ReLU(),
                          MaskedLinear(16, 5, init="kaiming_normal", seed=1, layer=1))
    layers = masked_layers(model)
    kept = [torch.ones_like(layer.mask) for layer in layers]
    for r in range(1, 5):
        density = 0.05 ** (r / 4)
        ranks = methods._ranks(methods.saliency("synflow", model, kept, input_shape=(20,)), kept)
        with torch.no_grad():
            for layer, rank in zip(layers, ranks):
                layer.scores.copy_(rank)
        methods.set_density(layers, density)
        new = [layer.mask.clone() for layer in layers]
        assert all(not (n & ~k).any() for n, k in zip(new, kept))
        assert [int(m.sum()) for m in new] == [keep_count(density, m.numel()) for m in new]
        kept = new


def test_random_scores_are_seeded_by_seed_and_round():
    model = nn.Sequential(MaskedLinear(6, 4, seed=0))
    kept = [torch.ones(4, 6, dtype=torch.bool)]
    a = methods.saliency("random", model, kept, seed=3, round=1)[0]
    assert torch.equal(a, methods.saliency("random", model, kept, seed=3, round=1)[0])
    assert not torch.equal(a, methods.saliency("random", model, kept, seed=3, round=2)[0])
    assert not torch.equal(a, methods.saliency("random", model, kept, seed=4, round=1)[0])


def _two_layer():
    return nn.Sequential(MaskedLinear(5, 4, init="kaiming_normal", seed=2, layer=0), nn.ReLU(),
                         MaskedLinear(4, 3, init="kaiming_normal", seed=2, layer=1))


def _prune_set():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)


def test_magnitude_scores_are_abs_of_surviving_weights():
    model = _two_layer()
    w1, w2 = (layer.weight for layer in masked_layers(model))
    kept = [torch.rand(w1.shape) < 0.5, torch.ones_like(w2, dtype=torch.bool)]
    s1, s2 = methods.saliency("magnitude", model, kept)
    assert torch.equal(s1, (w1 * kept[0]).abs()) and torch.equal(s2, w2.abs())


def test_snip_scores_equal_abs_theta_times_gradient_by_hand():
    model = _two_layer()
    x, y = _prune_set()
    w1, w2 = (layer.weight.clone().requires_grad_() for layer in masked_layers(model))
    loss = F.cross_entropy(F.linear(F.relu(F.linear(x, w1)), w2), y)
    g1, g2 = torch.autograd.grad(loss, (w1, w2))
    expected = [(w1 * g1).abs(), (w2 * g2).abs()]
    total = sum(e.sum() for e in expected)
    kept = [torch.ones_like(w, dtype=torch.bool) for w in (w1, w2)]
    for got, want in zip(methods.saliency("snip", model, kept, prune_set=(x, y)), expected):
        torch.testing.assert_close(got, (want / total).detach())


def test_grasp_scores_are_plus_theta_times_hessian_gradient_and_the_largest_are_kept():
    model = _two_layer()
    x, y = _prune_set()
    w1, w2 = (layer.weight.clone() for layer in masked_layers(model))

    def loss(a, b):
        return F.cross_entropy(F.linear(F.relu(F.linear(x, a)), b) / 200.0, y)

    g = torch.autograd.grad(loss(w1.requires_grad_(), w2.requires_grad_()), (w1, w2))
    _, hg = torch.autograd.functional.hvp(loss, (w1.detach(), w2.detach()), g)
    expected = [w1.detach() * hg[0], w2.detach() * hg[1]]
    total = abs(sum(e.sum() for e in expected))
    kept = [torch.ones_like(w, dtype=torch.bool) for w in (w1, w2)]
    scores = methods.saliency("grasp", model, kept, prune_set=(x, y))
    for got, want in zip(scores, expected):
        torch.testing.assert_close(got, want / total, rtol=1e-4, atol=1e-9)
    # sign decided: GraSP removes the largest −θ ⊙ Hg, so the most negative θ ⊙ Hg is pruned first and the most
    # positive kept last; a top-k over |score| would wrongly keep large negative scores
    ranks = methods._ranks(scores, kept)
    flat = torch.cat([s.reshape(-1) for s in scores])
    flat_ranks = torch.cat([r.reshape(-1) for r in ranks])
    assert flat_ranks[flat.argmax()] == flat.numel() and flat_ranks[flat.argmin()] == 1


def test_synflow_scores_equal_a_hand_computation_on_a_two_layer_net():
    model = _two_layer()
    a1, a2 = (layer.weight.abs() for layer in masked_layers(model))
    # R = 1ᵀ |W2| relu(|W1| 1): every unit is active, so ∂R/∂W1[j,i] = Σ_k |W2|[k,j], ∂R/∂W2[k,j] = Σ_i |W1|[j,i]
    expected1 = a1 * a2.sum(0)[:, None]
    expected2 = a2 * a1.sum(1)[None, :]
    kept = [torch.ones_like(a, dtype=torch.bool) for a in (a1, a2)]
    s1, s2 = methods.saliency("synflow", model, kept, input_shape=(5,))
    torch.testing.assert_close(s1, expected1)
    torch.testing.assert_close(s2, expected2)


def test_synflow_leaves_batch_norm_buffers_and_the_model_mode_alone():
    model = nn.Sequential(MaskedLinear(5, 4, seed=0), nn.BatchNorm1d(4), nn.ReLU(), MaskedLinear(4, 3, seed=0, layer=1))
    bn = model[1]
    bn.running_mean.fill_(-1.0)
    model.train()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    kept = [torch.ones_like(layer.mask) for layer in masked_layers(model)]
    scores = methods.saliency("synflow", model, kept, input_shape=(5,))
    assert all(torch.equal(v, before[k]) for k, v in bn.state_dict().items())  # defect §10.9 not repeated
    assert model.training and all(torch.isfinite(s).all() for s in scores)
    assert "forward" not in vars(model[0])  # the plain forward is undone


def test_collapsed_layer_is_reported_and_warned(tmp_path):
    # signed-constant weights of the first layer are the smallest (1/√64 vs 1/√48, 1/√32): global magnitude
    # pruning at density 0.1 removes all of them
    cfg = SearchConfig(out=str(tmp_path), algo="magnitude", scope="global", density=0.1, **SMALL)
    with pytest.warns(RuntimeWarning, match=r"collapsed masked layer\(s\) \[0\]"):
        summary = run_search(cfg, progress=False)
    assert summary["collapsed_layers"] == [0] and summary["layer_density"][0] == 0.0
    assert json.loads((tmp_path / "summary.json").read_text())["collapsed_layers"] == [0]


def test_cli_runs_a_pruning_at_init_method(tmp_path, capsys):
    assert main(["search", "--algo", "synflow", "--rounds", "2", "--widths", "16", "--density", "0.3",
                 "--out", str(tmp_path), "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kept_weights"] == keep_count(0.3, 64 * 16) + keep_count(0.3, 16 * 10)
    assert "synflow" in capsys.readouterr().out
    assert math.isfinite(summary["test_acc"])
