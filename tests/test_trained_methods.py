"""The trained methods beyond edge-popup: supermask, biprop, iterand, gem-miner — their update rules against
float64 hand computations, their density contract, resume bit for bit, and tickets that give the network back."""

import json
import math

import pytest
import torch

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.evaluate import evaluate_ticket, load_ticket_model
from strongticket.masks import keep_count
from strongticket.nn import MaskedLinear, binary_alpha, masked_layers
from strongticket.random import STREAM_REDRAW, init_weight, uniform01
from strongticket.search import methods, run_search
from strongticket.ticket import read_ticket, weights_sha256

SMALL = dict(widths=(48, 32), epochs=4, batch_size=128, device="cpu")
TRAINED = ("supermask", "biprop", "iterand", "gem-miner")


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _straight_and_resumed(tmp_path, stop_after, **kw):
    """Records of an uninterrupted run (``a``) and of one stopped after epoch ``stop_after`` and resumed (``b``)."""
    run_search(SearchConfig(out=str(tmp_path / "a"), **kw), progress=False)

    def stop(record):
        if record["epoch"] == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(SearchConfig(out=str(tmp_path / "b"), **kw), on_epoch=stop, progress=False)
    run_search(SearchConfig(out=str(tmp_path / "b"), **kw), progress=False)
    return _records(tmp_path / "a"), _records(tmp_path / "b")


def _layer(init="kaiming_normal", density=0.3, seed=3, layer=1, shape=(7, 11), bias=False):
    return MaskedLinear(shape[1], shape[0], density=density, init=init, seed=seed, layer=layer, bias=bias,
                        bias_scores=bias)


class _Cfg:
    """The fields a strategy object reads."""

    def __init__(self, **kw):
        defaults = SearchConfig().to_dict()
        self.__dict__.update({**defaults, **kw})


# ----------------------------------------------------------------------------------------------- biprop


def test_biprop_forward_is_alpha_sign_w_and_score_gradient_is_edge_popups():
    torch.manual_seed(0)
    lay = _layer()
    lay.use_binary_weights()
    x = torch.randn(5, 11, dtype=torch.float64)
    dy = torch.randn(5, 7, dtype=torch.float64)
    y = lay(x.float())
    (y.double() * dy).sum().backward()
    w, m, s = lay.weight.double(), lay.mask, lay.scores.detach().double()
    alpha = (w.abs() * m).sum() / m.sum()  # mean |W| over the kept weights, actual count
    assert float(binary_alpha(lay.weight, m)) == pytest.approx(float(alpha), rel=1e-7)
    ref_y = x @ (alpha * torch.sign(w) * m).T
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-5, atol=1e-6)
    ref_ds = (dy.T @ x) * w * torch.sign(s)  # G ⊙ W ⊙ sign(S): α is a constant, W (not sign W) in the gradient
    torch.testing.assert_close(lay.scores.grad.double(), ref_ds, rtol=1e-5, atol=1e-6)
    assert lay.weight.grad is None and not lay.weight.requires_grad


def test_biprop_on_signed_constant_weights_is_edge_popup(tmp_path):
    run_search(SearchConfig(out=str(tmp_path / "ep"), **SMALL), progress=False)
    run_search(SearchConfig(out=str(tmp_path / "bp"), algo="biprop", **SMALL), progress=False)
    ep, bp = _records(tmp_path / "ep"), _records(tmp_path / "bp")
    assert [r["mask_sha256"] for r in ep] == [r["mask_sha256"] for r in bp]


def test_biprop_ticket_computes_with_binary_weights(tmp_path):
    summary = run_search(SearchConfig(out=str(tmp_path), algo="biprop", init="kaiming_normal", **SMALL),
                         progress=False)
    model, _, _ = load_ticket_model(tmp_path / "ticket.safetensors", device="cpu")
    for layer in masked_layers(model):
        assert layer.binary
        values = layer.baked_weight()[layer.mask].abs().unique()
        assert len(values) == 1  # ±α only
    r = evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")
    assert r["test_acc"] == summary["test_acc"]


# ----------------------------------------------------------------------------------------------- iterand


def test_rerandomize_redraws_only_pruned_weights_from_the_seeded_generation():
    lay = _layer(density=0.4)
    original = lay.weight.clone()
    lay.enable_redraw()
    counts = methods.rerandomize([lay], 3, 0.5)
    where = lay.generation == 3
    coins = torch.from_numpy(uniform01(3, 1, STREAM_REDRAW, 7, 11, 3))
    assert torch.equal(where, (coins < 0.5) & ~lay.mask) and counts == [int(where.sum())] and counts[0] > 0
    fresh = init_weight((7, 11), "kaiming_normal", 3, 1, density=0.4, generation=3)
    assert torch.equal(lay.current_weight[where], fresh[where])
    assert torch.equal(lay.current_weight[~where], original[~where])
    assert torch.equal(lay.weight, original)  # the frozen weight itself never changes
    again = _layer(density=0.4)
    again.load_generation(lay.generation.clone())
    assert torch.equal(again.current_weight, lay.current_weight)  # seed + generations give it back


def test_rerandomized_weights_enter_the_forward_and_only_where_pruned_matter():
    lay = _layer(density=0.4)
    lay.enable_redraw()
    x = torch.randn(4, 11)
    before = lay(x)
    methods.rerandomize([lay], 1, 1.0)  # every pruned weight re-drawn: the masked output cannot change
    assert bool((lay.generation > 0).any())
    assert torch.equal(lay(x), before)
    lay.redraw(lay.mask.clone(), 2)  # a kept weight re-drawn: the output changes
    assert not torch.allclose(lay(x), before)


@pytest.mark.parametrize("every", [0, 7])
def test_iterand_ticket_holds_generations_and_gives_the_network_back(tmp_path, every):
    cfg = SearchConfig(out=str(tmp_path), algo="iterand", init="kaiming_normal", rerand_every=every,
                       rerand_lambda=0.3, **SMALL)
    summary = run_search(cfg, progress=False)
    ticket = read_ticket(tmp_path / "ticket.safetensors")
    assert all(g is not None for g in ticket.generations)
    top = max(int(g.max()) for g in ticket.generations)
    steps = 4 * math.ceil(0.9 * 1437 / 128)  # digits: 1,437 training examples, 10% held out
    assert top >= 1 and top <= (3 if every == 0 else steps // every)
    r = evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")
    assert r["test_acc"] == summary["test_acc"]
    model, _, _ = load_ticket_model(tmp_path / "ticket.safetensors", device="cpu")
    assert weights_sha256(masked_layers(model)) == summary["weights_sha256"]  # generation 0: the seed's


def test_iterand_resumes_bit_for_bit(tmp_path):
    ra, rb = _straight_and_resumed(tmp_path, 2, algo="iterand", init="kaiming_normal", rerand_lambda=0.5, **SMALL)
    assert [r["mask_sha256"] for r in ra] == [r["mask_sha256"] for r in rb]
    ga, gb = (read_ticket(tmp_path / d / "ticket.safetensors").generations for d in "ab")
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))


# ----------------------------------------------------------------------------------------------- supermask


def test_supermask_samples_from_sigmoid_scores_with_the_straight_through_gradient():
    lay = _layer(shape=(40, 30))
    rule = methods.BernoulliRule([lay], seed=5)
    lay.rule = rule
    with torch.no_grad():
        lay.scores.copy_(torch.linspace(-3, 3, 1200).view(40, 30))
    rule.step = 17
    x = torch.randn(6, 30, dtype=torch.float64)
    dy = torch.randn(6, 40, dtype=torch.float64)
    lay.train()
    w_eff = lay.effective_weight().detach()
    sample = w_eff != 0
    assert torch.equal(lay.effective_weight().detach(), w_eff)  # same step, same sample
    rule.step = 18
    assert not torch.equal(lay.effective_weight().detach() != 0, sample)  # a fresh sample every step
    rule.step = 17
    p = torch.sigmoid(lay.scores.detach().double())
    # sampled with probability p: kept fraction tracks mean p, and high scores are kept more often
    assert abs(sample.double().mean() - p.mean()) < 0.05
    assert sample.view(-1)[:300].double().mean() < sample.view(-1)[-300:].double().mean()
    y = lay(x.float())
    torch.testing.assert_close(y.double(), x @ (lay.weight.double() * sample).T, rtol=1e-5, atol=1e-6)
    (y.double() * dy).sum().backward()
    ref = (dy.T @ x) * lay.weight.double() * p * (1 - p)  # σ'(S) ⊙ G ⊙ W
    torch.testing.assert_close(lay.scores.grad.double(), ref, rtol=1e-4, atol=1e-7)


def test_supermask_eval_mask_is_positive_scores_capped_at_ceil_density_n():
    scores = [torch.tensor([[0.5, -1.0, 2.0], [0.0, 3.0, 2.0]]), torch.tensor([[-0.1, 0.7]])]
    m = methods.top_positive(scores, 3)
    assert m[0].tolist() == [[False, False, True], [False, True, True]] and m[1].tolist() == [[False, False]]
    m = methods.top_positive(scores, 100)  # fewer positives than k: only the positives
    assert int(sum(x.sum() for x in m)) == 5 and not m[0][1, 0] and not m[0][0, 1]
    m = methods.top_positive([torch.ones(2, 3)], 4)  # ties: by index
    assert m[0].view(-1).tolist() == [True] * 4 + [False] * 2


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_supermask_search_keeps_at_most_ceil_density_n_and_logs_sampled_accuracy(tmp_path, scope):
    summary = run_search(SearchConfig(out=str(tmp_path), algo="supermask", scope=scope, density=0.2, lr=100.0,
                                      scale_fan=True, **SMALL), progress=False)
    sizes = (64 * 48, 48 * 32, 32 * 10)
    if scope == "layer":
        assert all(d <= keep_count(0.2, n) / n for d, n in zip(summary["layer_density"], sizes))
    budget = keep_count(0.2, sum(sizes)) if scope == "global" else sum(keep_count(0.2, n) for n in sizes)
    assert 0 < summary["kept_weights"] <= budget
    recs = _records(tmp_path)
    assert all(0 <= r["sampled_val_acc"] <= 1 and 0 < r["expected_density"] < 1 for r in recs)
    assert summary["test_acc"] > 0.2  # learns something (chance is 0.1)
    assert evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]


def test_supermask_resumes_bit_for_bit(tmp_path):
    ra, rb = _straight_and_resumed(tmp_path, 3, algo="supermask", lr=50.0, **SMALL)
    assert [(r["mask_sha256"], r["sampled_val_acc"]) for r in ra] == [(r["mask_sha256"], r["sampled_val_acc"])
                                                                      for r in rb]


# ----------------------------------------------------------------------------------------------- gem-miner


def test_gem_miner_rule_rounds_active_scores_and_passes_gradient_to_active_entries_only():
    lay = _layer(shape=(6, 9))
    rule = methods.ThresholdRule([lay])
    lay.rule = rule
    torch.manual_seed(1)
    with torch.no_grad():
        lay.scores.copy_(torch.rand(6, 9))
    rule.active[0] = torch.rand(6, 9) < 0.7
    q = rule.active[0]
    x = torch.randn(5, 9, dtype=torch.float64)
    dy = torch.randn(5, 6, dtype=torch.float64)
    y = lay(x.float())
    m = (lay.scores.detach() > 0.5) & q
    assert torch.equal(lay.mask, m)
    torch.testing.assert_close(y.double(), x @ (lay.weight.double() * m).T, rtol=1e-5, atol=1e-6)
    (y.double() * dy).sum().backward()
    ref = (dy.T @ x) * lay.weight.double() * q  # dS = G ⊙ W ⊙ q, no sign factor
    torch.testing.assert_close(lay.scores.grad.double(), ref, rtol=1e-5, atol=1e-7)
    assert bool((lay.scores.grad[~q] == 0).all())


def test_gem_miner_freezing_keeps_the_largest_active_scores_and_the_schedule_reaches_the_target():
    scores = [torch.tensor([0.9, 0.1, 0.8, 0.3]), torch.tensor([0.95, 0.2])]
    active = [torch.tensor([True, True, False, True]), torch.ones(2, dtype=torch.bool)]
    kept = methods.keep_active(scores, active, 3)
    assert kept[0].tolist() == [True, False, False, True] and kept[1].tolist() == [True, False]
    kept = methods.keep_active(scores, active, 10)  # never re-activates a frozen entry
    assert kept[0].tolist() == [True, True, False, True]
    gm = methods.GemMiner(_Cfg(density=0.01, epochs=10, freeze_rounds=3))
    assert gm.freeze_after == [3, 6, 9]
    assert [gm.density_at(e) for e in (0, 2, 3, 6, 9)] == [1.0, 1.0, 0.01 ** (1 / 3), 0.01 ** (2 / 3), 0.01]
    assert methods.GemMiner(_Cfg(epochs=5)).freeze_after == [1, 2, 3, 4]
    assert methods.GemMiner(_Cfg(density=0.1, weight_decay=1e-3, penalty=2e-4)).score_weight_decay() == \
        pytest.approx(1e-3 + 4e-4)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gem_miner_search_projects_freezes_and_ends_within_the_density(tmp_path, scope):
    cfg = SearchConfig(out=str(tmp_path), algo="gem-miner", scope=scope, density=0.1, **SMALL)
    summary = run_search(cfg, progress=False)
    recs = _records(tmp_path)
    sizes = (64 * 48, 48 * 32, 32 * 10)
    assert summary["best_epoch"] == 4  # only epochs after the last freezing round are at the target density
    budget = keep_count(0.1, sum(sizes)) if scope == "global" else sum(keep_count(0.1, n) for n in sizes)
    assert 0 < summary["kept_weights"] <= budget
    if scope == "layer":
        assert all(d <= keep_count(0.1, n) / n for d, n in zip(summary["layer_density"], sizes))
    assert recs[0]["density"] > 0.3  # U[0, 1] scores: about half kept before the first round
    assert evaluate_ticket(tmp_path / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    scores = [v for k, v in state["trainable"].items() if k.endswith(".scores")]
    assert all(float(s.min()) >= 0 and float(s.max()) <= 1 for s in scores)  # projected onto [0, 1]
    active = state["method"]["active"]
    total = sum(int(a.sum()) for a in active)
    if scope == "global":
        assert total == keep_count(0.1, sum(sizes))
    else:
        assert [int(a.sum()) for a in active] == [keep_count(0.1, n) for n in sizes]


def test_gem_miner_penalty_is_the_gradient_of_lambda_p_squared():
    p = torch.rand(20, requires_grad=True)
    lam = 3e-3
    (lam * (p * p).sum()).backward()
    q = p.detach().clone().requires_grad_()
    opt = torch.optim.SGD([q], lr=0.5, weight_decay=methods.GemMiner(_Cfg(penalty=lam)).score_weight_decay())
    q.grad = torch.zeros_like(q)
    opt.step()
    torch.testing.assert_close(q.detach(), p.detach() - 0.5 * p.grad)


def test_gem_miner_resumes_bit_for_bit(tmp_path):
    ra, rb = _straight_and_resumed(tmp_path, 2, algo="gem-miner", density=0.2, **SMALL)
    assert [r["mask_sha256"] for r in ra] == [r["mask_sha256"] for r in rb]


# ----------------------------------------------------------------------------------------------- shared


@pytest.mark.parametrize("kwargs, message", [
    (dict(penalty=1e-3), "penalty needs algo gem-miner"),
    (dict(freeze_rounds=2), "freeze_rounds needs algo gem-miner"),
    (dict(rerand_every=10), "rerand_every needs algo iterand"),
    (dict(algo="iterand", rerand_lambda=1.5), r"rerand_lambda must be a number in \(0, 1\], got 1.5"),
    (dict(algo="gem-miner", epochs=1), r"epochs must be an integer in \[2, 100000\] for gem-miner"),
    (dict(algo="gem-miner", epochs=4, freeze_rounds=4), r"freeze_rounds must be an integer in \[0, 3\], got 4"),
    (dict(algo="supermask", weights="seeded"), "weights=seeded regenerates"),
])
def test_trained_method_fields_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**kwargs)


def test_new_method_fields_leave_digests_alone_unless_set():
    assert SearchConfig().digest() == "3c6a74132421"
    assert SearchConfig(algo="iterand").digest() == SearchConfig(algo="iterand", rerand_lambda=0.1).digest()
    assert SearchConfig(algo="iterand").digest() != SearchConfig(algo="iterand", rerand_lambda=0.2).digest()


@pytest.mark.parametrize("algo", TRAINED)
def test_cli_runs_every_trained_method_on_a_planted_regression_task(tmp_path, capsys, algo):
    out = tmp_path / algo
    rc = main(["search", "--algo", algo, "--data", "planted-relu", "--model", "planted", "--widths", "20,20",
               "--epochs", "2", "--batch-size", "512", "--density", "0.3", "--device", "cpu", "--out", str(out)]
              + (["--lr", "100"] if algo == "supermask" else []))
    assert rc == 0
    assert "test mse" in capsys.readouterr().out.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["test_mse"])
    assert summary["kept_weights"] <= sum(keep_count(0.3, n) for n in (20, 400, 20))


@pytest.mark.parametrize("algo, extra", [("biprop", {}), ("iterand", {"rerand_lambda": 0.5})])
def test_biprop_and_iterand_tickets_export_to_the_weights_they_compute_with(tmp_path, algo, extra):
    from strongticket.export import ExportError, export, load_export

    run_search(SearchConfig(out=str(tmp_path), algo=algo, init="kaiming_normal", **SMALL, **extra), progress=False)
    ticket = tmp_path / "ticket.safetensors"
    model, _, _ = load_ticket_model(ticket, device="cpu")
    x = torch.randn(9, 64)
    with torch.no_grad():
        want = model.eval()(x)
    for fmt in ("dense", "prune", "state_dict"):
        got = load_export(export(ticket, tmp_path / f"t.{fmt}", fmt))(x)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=fmt)
    with pytest.raises(ExportError, match="packed export regenerates the seeded weights"):
        export(ticket, tmp_path / "t.packed", "packed")


def test_a_collapsed_supermask_run_says_to_raise_the_learning_rate(tmp_path):
    with pytest.warns(RuntimeWarning, match=r"collapsed masked layer.*raise --lr \(Zhou et al. use 100, got 0.2\)"):
        summary = run_search(SearchConfig(out=str(tmp_path), algo="supermask", density=0.1, **SMALL), progress=False)
    assert summary["collapsed_layers"] and summary["kept_weights"] == 0
