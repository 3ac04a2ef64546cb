"""Planted tickets (strongticket.planted): exact densities, the float64 planting fixture, tasks, recovery."""

import argparse

import numpy as np
import pytest
import torch

from strongticket.planted import (
    has_path,
    make_target,
    make_task,
    mask_recovery,
    plant,
    plant_task,
    planted_model,
    planted_path_survives,
    task_metric,
)
from strongticket.planted.cli import add_plant_parser, plant_report
from strongticket.planted.tasks import circle_labels
from strongticket.random import uniform01

# (task, depth) -> (planted weights, all weights): Plant 'n' Seek's densities at width 100
EXPECTED = {
    ("circle", 3): (100, 600), ("relu", 3): (2, 200), ("helix", 3): (115, 400),
    ("circle", 5): (108, 20_600), ("relu", 5): (4, 20_200), ("helix", 5): (120, 20_400),
}
ROUNDED = {("circle", 3): 0.1667, ("relu", 3): 0.0100, ("helix", 3): 0.2875,
           ("circle", 5): 0.0052, ("relu", 5): 0.0002, ("helix", 5): 0.0059}


@pytest.mark.parametrize("task,depth", sorted(EXPECTED))
def test_planted_counts_and_density_match_the_paper(task, depth):
    p = plant_task(task, depth, 100, seed=0)
    planted, total = EXPECTED[task, depth]
    assert (sum(p.planted_counts), sum(p.total_counts)) == (planted, total)
    assert round(p.density, 4) == ROUNDED[task, depth]
    assert p.planted_counts == p.target.nonzeros  # mask non-zeros = target non-zeros


@pytest.mark.parametrize("task,depth", sorted(EXPECTED) + [("circle", 4), ("helix", 4), ("circle", 6)])
def test_planted_net_masked_and_rescaled_is_the_target_in_float64(task, depth):
    p = plant_task(task, depth, 100, seed=3)
    u = uniform01(7, 0, 3, 4000, p.widths[0])
    x = 2.0 * u - 1.0
    err = np.abs(p.forward(x) / p.scale - p.target(x)).max()
    assert err <= 1e-10
    assert np.all(p.scale > 0)


def test_planted_model_uses_masked_linear_and_matches_float64():
    p = plant_task("helix", 5, 100, seed=1)
    model = planted_model(p)
    x = 2.0 * uniform01(2, 0, 3, 512, 1) - 1.0
    with torch.no_grad():
        out = model(torch.from_numpy(x).float()).double().numpy()
    assert np.allclose(out, p.target(x), atol=1e-4)  # the model divides by the planting scale itself
    with torch.no_grad():
        raw = planted_model(p, scaled=False)(torch.from_numpy(x).float()).double().numpy()
    assert np.allclose(raw / p.scale, p.target(x), atol=1e-4) and not np.allclose(raw, p.target(x), atol=1e-2)
    kept = [int(m.kept()) for m in model if hasattr(m, "kept")]
    assert kept == list(p.planted_counts)


# depth 3 reads x^2 from 10 knots on [-1, 1]: ~0.96 on clean labels, 0.946-0.960 on seeds 0-4 with 1% flips;
# depth >= 4 folds |x| first (10 knots on [0, 1]): 0.979-0.985 on seeds 0-4
@pytest.mark.parametrize("depth,bound", [(3, 0.94), (5, 0.95)])
def test_planted_circle_ticket_scores_at_least_095_test_accuracy(depth, bound):
    p = plant_task("circle", depth, 100, seed=0)
    data = make_task("circle", seed=0)
    acc64 = task_metric("circle", p.forward(data.x_test) / p.scale, data.y_test)
    with torch.no_grad():
        out = planted_model(p)(torch.from_numpy(data.x_test).float()).double().numpy()
    acc32 = task_metric("circle", out, data.y_test)
    assert acc64 >= bound and acc32 >= bound


def test_planted_regression_tickets_fit_the_noisy_data():
    for task, bound in (("relu", 2e-4), ("helix", 6e-4)):
        p = plant_task(task, 5, 100, seed=0)
        data = make_task(task, seed=0)
        assert task_metric(task, p.forward(data.x_test) / p.scale, data.y_test) < bound


def test_planting_is_deterministic_per_seed():
    a, b, c = plant_task("circle", 5, 100, 11), plant_task("circle", 5, 100, 11), plant_task("circle", 5, 100, 12)
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        assert wa.tobytes() == wb.tobytes()
    assert all(np.array_equal(ma, mb) for ma, mb in zip(a.masks, b.masks))
    assert a.scale.tobytes() == b.scale.tobytes()
    assert a.weights[1].tobytes() != c.weights[1].tobytes()
    assert not all(np.array_equal(ma, mc) for ma, mc in zip(a.masks, c.masks))


def test_task_data_is_deterministic_per_seed():
    a, b, c = make_task("helix", seed=5), make_task("helix", seed=5), make_task("helix", seed=6)
    assert a.x_train.tobytes() == b.x_train.tobytes() and a.y_test.tobytes() == b.y_test.tobytes()
    assert a.x_train.tobytes() != c.x_train.tobytes()


def test_mother_network_is_he_normal_with_product_bias_std():
    p = plant(make_target("relu", 5), 100, seed=0)
    w = p.weights[1][~p.masks[1]]
    assert abs(w.std() - np.sqrt(2 / 100)) < 0.01 * np.sqrt(2 / 100) * 5
    b = np.delete(p.biases[2], p.neurons[2])
    assert 0.5 < b.std() / (np.sqrt(2 / 1) * np.sqrt(2 / 100) * np.sqrt(2 / 100)) < 1.5


def test_task_shapes_and_splits():
    dims = {"circle": (2, None), "relu": (1, 1), "helix": (1, 3)}
    for task, (d_in, d_out) in dims.items():
        d = make_task(task, seed=0)
        assert d.x_train.shape == (8100, d_in) and d.x_val.shape == (900, d_in) and d.x_test.shape == (1000, d_in)
        assert np.all(np.abs(d.x_train) < 1.0)
        if d_out is None:
            assert d.y_train.shape == (8100,) and d.y_train.dtype == np.int64
            assert set(np.unique(d.y_train)) == {0, 1, 2, 3}
        else:
            assert d.y_train.shape == (8100, d_out)


def test_circle_label_noise_is_about_one_percent_and_flips_to_a_neighbour():
    d = make_task("circle", seed=0)
    x = np.concatenate([d.x_train, d.x_val, d.x_test])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    clean = circle_labels(x)
    flipped = y != clean
    assert 0.006 < flipped.mean() < 0.014
    assert np.all(np.abs(y[flipped] - clean[flipped]) == 1)


def test_regression_noise_std_is_001():
    d = make_task("relu", seed=0)
    resid = d.y_train[:, 0] - np.maximum(d.x_train[:, 0], 0.0)
    assert abs(resid.std() - 0.01) < 0.0005 and abs(resid.mean()) < 0.0005


def test_recovery_metrics_on_hand_made_masks():
    planted = [np.array([[1, 1, 0], [0, 0, 0]], bool), np.array([[1, 0]], bool)]
    found = [np.array([[1, 0, 1], [0, 1, 1]], bool), np.array([[1, 1]], bool)]
    r = mask_recovery(found, planted)
    assert (r[0].planted, r[0].found, r[0].overlap) == (2, 4, 1)
    assert (r[0].precision, r[0].recall, r[0].jaccard) == (0.25, 0.5, 0.2)
    assert (r[1].precision, r[1].recall, r[1].jaccard) == (0.5, 1.0, 0.5)
    assert not planted_path_survives(found, planted)
    assert planted_path_survives(planted, planted) and planted_path_survives([~np.zeros((2, 3), bool),
                                                                               ~np.zeros((1, 2), bool)], planted)
    empty = mask_recovery([np.zeros((2, 3), bool), np.zeros((1, 2), bool)], planted)
    assert (empty[0].precision, empty[0].recall, empty[0].jaccard) == (0.0, 0.0, 0.0)
    assert has_path(found) and has_path(planted)
    assert not has_path([np.array([[1, 0, 0], [0, 0, 0]], bool), np.array([[0, 1]], bool)])


def test_task_metric_values():
    assert task_metric("circle", np.array([[0, 1, 0, 0], [1, 0, 0, 0.0]]), np.array([1, 2])) == 0.5
    assert task_metric("helix", np.zeros((2, 3)), np.ones((2, 3))) == 1.0


def test_found_mask_file_is_reported(tmp_path):
    p = plant_task("relu", 3, 100, seed=0)
    path = tmp_path / "m.npz"
    np.savez(path, mask0=p.masks[0], mask1=p.masks[1])
    r = plant_report("relu", 3, 100, 0, quick=True, masks_path=str(path))
    assert r["planted_path_survives"] and r["recovery"][0]["jaccard"] == 1.0
    assert r["found_test_metric"] == pytest.approx(r["planted_metric"])
    assert (r["planted"], r["total"]) == (2, 200)


@pytest.mark.parametrize("call,match", [
    (lambda: make_target("spiral", 5), "task must be one of circle, relu, helix, got 'spiral'"),
    (lambda: make_target("circle", 2), "depth must be an integer >= 3"),
    (lambda: plant_task("helix", 3, 20), "width must be >= 30 to hold the helix target at depth 3, got 20"),
    (lambda: plant_task("relu", 3, 100, seed=-1), "seed must be an integer in"),
    (lambda: make_task("circle", val_fraction=1.5), "val_fraction must be in"),
    (lambda: make_task("sine"), "task must be one of"),
    (lambda: mask_recovery([np.zeros((2, 2), bool)], [np.zeros((2, 3), bool)]), "found mask of layer 0 must"),
    (lambda: task_metric("sine", np.zeros(1), np.zeros(1)), "task must be one of"),
])
def test_bad_arguments_raise_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_cli_plant_prints_exact_counts(capsys):
    parser = argparse.ArgumentParser()
    add_plant_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["plant", "--task", "helix", "--depth", "3", "--quick"])
    assert ns.run(ns) == 0
    out = capsys.readouterr().out
    assert "115 /    400  density 0.2875" in out
