"""A planted benchmark that can be won: one common output scale for Circle, biases budgeted apart from the weights,
the planted ticket representable at the planted density, the planted ticket cut to a budget, and recovery measured
as lift over a random mask of the same density (weights and biases). Fast: no search runs here."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from strongticket.cli import main
from strongticket.config import SearchConfig
from strongticket.models import model_from_config
from strongticket.nn import MaskedLinear, masked_layers
from strongticket.planted import make_task, plant_task
from strongticket.planted.budget import budget, budget_rule, cut_to_budget
from strongticket.planted.cli import plant_report
from strongticket.planted.recovery import expected_random_jaccard, mask_recovery, recovery_summary
from strongticket.random import uniform01
from strongticket.search.methods import ThresholdRule


@pytest.mark.parametrize("seed", range(5))
def test_circle_logits_share_one_scale_so_the_raw_network_scores_the_target_accuracy(seed):
    r = plant_report("circle", 5, 100, seed)
    assert abs(r["raw_metric"] - r["planted_metric"]) <= 1e-6 and r["planted_metric"] >= 0.95
    assert len(set(r["scale"])) == 1  # one scale for the 4 logits
    p = plant_task("circle", 5, 100, seed)
    x = 2.0 * uniform01(seed, 1, 3, 4000, 2) - 1.0
    assert np.array_equal(np.argmax(p.forward(x), axis=1), np.argmax(p.target(x), axis=1))


def test_regression_outputs_keep_their_own_scales():
    p = plant_task("helix", 5, 100, 0)
    assert len(set(p.scale.tolist())) == 3  # matched per output: no common factor makes the raw MSE the target's


@pytest.mark.parametrize("task", ["circle", "relu", "helix"])
def test_planted_ticket_is_representable_at_the_planted_density(task):
    p = plant_task(task, 5, 100, 0)
    rule = budget_rule("planted", p.density)
    assert rule == {"density": p.density, "scope": "global", "bias_density": 1.0}
    b = budget(p, **rule)
    assert b.holds(p) and b.total >= sum(p.planted_counts) and b.biases == tuple(p.widths[1:])
    masks, bias_masks = cut_to_budget(p, b, np.zeros((1, p.widths[0])), np.zeros(1, dtype=np.int64))
    assert all(np.array_equal(m, q) for m, q in zip(masks, p.masks)) and \
        all(np.array_equal(m, q) for m, q in zip(bias_masks, p.bias_masks))


def test_per_layer_budgets_at_the_planted_density_cannot_hold_circle_or_helix():
    """Plant 'n' Seek's rule (sparsity = -1: ρ in every layer, biases at the weights' fraction) and its per-layer
    weights alone: the planted ticket does not fit; the benchmark's global budget with every bias does."""
    for task, fits in (("circle", False), ("relu", True), ("helix", False)):
        p = plant_task(task, 5, 100, 0)
        assert budget(p, p.density, scope="layer", bias_density=1.0).holds(p) == fits
        assert budget(p, p.density).holds(p) == fits  # biases at ρ: one per layer, ReLU plants none
    circle = plant_task("circle", 5, 100, 0)
    assert not budget(circle, 0.5).holds(circle)  # 2 of the 4 output biases
    assert budget(circle, **budget_rule(0.5, circle.density)).holds(circle)
    assert not budget(circle, **budget_rule(0.1, circle.density)).holds(circle)  # the head: 40 of 80 weights


def test_the_planted_ticket_cut_to_a_budget_fits_it_and_loses_accuracy():
    data = make_task("circle", seed=0, n=2_000)
    r = plant_report("circle", 5, 100, 0, quick=True, density=0.1)
    assert not r["representable"] and r["cut_weights"] == 40 and r["cut_biases"] == 0
    assert 0.5 < r["best_within_budget"] < r["planted_metric"]
    assert r["best_within_budget"] == r["best_within_budget_raw"]  # one common scale: argmax unchanged
    p = plant_task("circle", 5, 100, 0)
    b = budget(p, 0.1, bias_density=0.1)  # Plant 'n' Seek's rule: biases cut too
    masks, bias_masks = cut_to_budget(p, b, data.x_train, data.y_train)
    assert all(int(m.sum()) <= k for m, k in zip(masks, b.weights))
    assert all(int(m.sum()) <= k for m, k in zip(bias_masks, b.biases))
    assert all(not (m & ~q).any() for m, q in zip(masks + bias_masks, p.masks + p.bias_masks))  # only cuts


def test_masked_bias_budget_is_its_own_density():
    lin = MaskedLinear(8, 4, bias=True, bias_scores=True, density=0.5)
    assert lin.bias_k == 2  # default: the weights' fraction (Plant 'n' Seek's rule)
    lin.set_bias_density(1.0)
    assert lin.bias_k == 4 and bool(lin.bias_mask.all())
    lin.set_density(0.1)  # a weight-density schedule leaves the bias budget alone
    assert lin.k == 4 and lin.bias_k == 4
    lin.set_bias_density(None)
    assert lin.bias_k == 1
    with pytest.raises(ValueError, match="bias_density must be in"):
        lin.set_bias_density(0.0)
    with pytest.raises(ValueError, match="needs bias scores"):
        MaskedLinear(8, 4, bias=True).set_bias_density(1.0)


def test_bias_density_config_reaches_the_layers_and_keeps_old_digests():
    assert SearchConfig().run_name() == "mlp-digits-edge-popup-d0.5-s0-3c6a74132421"
    base = dict(model="planted", data="planted-circle", widths=(20,), density=0.1)
    cfg = SearchConfig(**base, bias_density=1.0)
    assert cfg.digest() != SearchConfig(**base).digest()
    model = model_from_config(cfg, (2,), 4)
    assert [lay.bias_k for lay in masked_layers(model)] == [20, 4]
    assert [lay.bias_k for lay in masked_layers(model_from_config(SearchConfig(**base), (2,), 4))] == [2, 1]
    with pytest.raises(ValueError, match="bias_density needs masked biases"):
        SearchConfig(bias_density=1.0)
    with pytest.raises(ValueError, match="bias_density must be 1 for random"):
        SearchConfig(**base, algo="random", bias_density=0.5)


def test_gem_miner_freezes_biases_to_the_bias_budget():
    lin = MaskedLinear(8, 4, bias=True, bias_scores=True, density=0.5)
    lin.set_bias_density(1.0)
    rule = ThresholdRule([lin])
    rule.freeze(0.25, global_scope=False)
    assert int(rule.active[0].sum()) == 8 and bool(rule.bias_active[0].all())


def test_expected_random_jaccard_is_exact_on_a_small_layer():
    total, planted = 7, 3
    p = np.zeros(total, dtype=bool)
    p[:planted] = True
    for found in range(total + 1):
        values = []
        for subset in itertools.combinations(range(total), found):
            f = np.zeros(total, dtype=bool)
            f[list(subset)] = True
            values.append(mask_recovery([f], [p])[0].jaccard)
        assert expected_random_jaccard(total, planted, found) == pytest.approx(np.mean(values), abs=1e-12)
    assert expected_random_jaccard(5, 0, 0) == 1.0 and expected_random_jaccard(5, 0, 2) == 0.0


def test_a_random_mask_has_zero_lift_and_the_planted_mask_full_lift():
    """Weights and biases of the planted Circle ticket against 400 seeded uniform random masks of the same per-layer
    count (densities 0.5 and 0.1). Tolerance: 4 standard errors of the mean lift, measured over the draws
    (a normal mean leaves it with probability 6e-5; the draws are seeded, so the test is deterministic)."""
    p = plant_task("circle", 5, 100, 0)
    rng = np.random.default_rng(0)
    for planted in (list(p.masks), list(p.bias_masks)):
        for density in (0.5, 0.1):
            lifts = {"recall_lift": [], "jaccard_lift": []}
            for _ in range(400):
                found = []
                for m in planted:
                    f = np.zeros(m.size, dtype=bool)
                    f[rng.choice(m.size, size=math.ceil(density * m.size), replace=False)] = True
                    found.append(f.reshape(m.shape))
                summary = recovery_summary(mask_recovery(found, planted))
                for key in lifts:
                    lifts[key].append(summary[key])
            for key, values in lifts.items():
                mean, se = np.mean(values), np.std(values, ddof=1) / np.sqrt(len(values))
                assert abs(mean) <= 4 * se + 1e-12, (key, density, mean, se)
        itself = mask_recovery(planted, planted)
        for rec in itself:
            if rec.planted:
                assert rec.recall_lift == pytest.approx(1 - rec.planted / rec.total)
                assert rec.jaccard_lift == pytest.approx(1 - expected_random_jaccard(rec.total, rec.planted,
                                                                                     rec.planted))
            else:  # Circle plants no bias in its first two layers
                assert rec.recall_lift is None and rec.jaccard_lift is None


def test_plant_json_reports_planted_raw_and_budget(capsys):
    assert main(["plant", "--task", "circle", "--seed", "0", "--quick", "--json", "--density", "0.5"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("planted_density", "planted_metric", "raw_metric", "representable", "best_within_budget",
                "best_within_budget_raw", "budget", "planted_metric_float32"):
        assert key in r
    assert r["planted_density"] == pytest.approx(108 / 20_600) and r["representable"]
    assert r["best_within_budget"] == r["planted_metric"] == r["raw_metric"]
    assert r["budget"]["scope"] == "layer" and r["budget"]["biases"] == [100, 100, 100, 4]
    assert main(["plant", "--task", "helix", "--quick", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "representable" not in r and r["raw_metric"] > 100 * r["planted_metric"]  # raw: scale * target
    assert main(["plant", "--task", "relu", "--quick", "--json", "--density", "planted", "--scope", "layer",
                 "--bias-density", "0.5"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["representable"] and r["budget"] == {"density": pytest.approx(4 / 20_200), "scope": "layer",
                                                   "bias_density": 0.5, "weights": [1, 2, 2, 1], "total": 6,
                                                   "biases": [50, 50, 50, 1]}


@pytest.mark.parametrize("args, message", [
    (["--task", "relu", "--scope", "global"], "scope and bias_density need a density (--density)"),
    (["--task", "relu", "--density", "half"], "density must be a number in (0, 1] or 'planted', got 'half'"),
    (["--task", "relu", "--density", "0.5", "--scope", "row"], "scope must be one of layer, global, got 'row'"),
    (["--task", "relu", "--density", "0.5", "--bias-density", "2"], "bias_density must be in (0, 1], got 2.0"),
    (["--bench", "--density", "0.5"], "--bench takes --tasks"),
])
def test_plant_budget_options_fail_in_one_line(capsys, args, message):
    assert main(["plant", "--quick", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"strongticket: error: {message}") and err.count("\n") == 1


def test_bias_recovery_of_a_ticket_with_bias_masks(tmp_path):
    p = plant_task("helix", 5, 100, 0)
    path = tmp_path / "m.npz"
    arrays = {f"mask{i}": m for i, m in enumerate(p.masks)}
    arrays.update({f"bias_mask{i}": np.ones_like(m) for i, m in enumerate(p.bias_masks)})  # every bias kept
    np.savez(path, **arrays)
    r = plant_report("helix", 5, 100, 0, quick=True, masks_path=str(path))
    assert r["bias_recovery_summary"]["recall"] == 1.0 and r["bias_recovery_summary"]["recall_lift"] == 0.0
    assert r["recovery_summary"]["jaccard"] == 1.0 and r["recovery_summary"]["jaccard_lift"] > 0.99
    assert r["found_test_metric"] == pytest.approx(r["planted_metric"])  # unused and zero biases change nothing


def test_a_search_keeps_every_bias_at_bias_density_1_and_its_ticket_reloads(tmp_path):
    from strongticket.evaluate import evaluate_ticket
    from strongticket.search import run_search
    from strongticket.ticket import read_ticket

    cfg = SearchConfig(model="planted", data="planted-circle", widths=(20,), density=0.1, bias_density=1.0,
                       epochs=1, batch_size=512, device="cpu", out=str(tmp_path / "run"))
    summary = run_search(cfg, progress=False)
    ticket = read_ticket(tmp_path / "run" / "ticket.safetensors")
    assert [int(m.sum()) for m in ticket.masks] == [4, 8]  # ⌈0.1·n⌉ weights per layer
    assert all(bool(m.all()) for m in ticket.bias_masks)  # and every bias
    assert evaluate_ticket(tmp_path / "run" / "ticket.safetensors", device="cpu")["test_acc"] == summary["test_acc"]
