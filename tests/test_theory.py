"""strongticket.theory: subset sums, constructions, identity, bounds, sup-error, widths, tickets, CLI."""

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from strongticket.random import init_weight
from strongticket.theory.cli import add_theory_parser
from strongticket.theory.constructions import build_model, construct, pensia, uniform_elements
from strongticket.theory.subset_sum import (
    MAX_VALUES,
    WORK_BUDGET,
    best_subsets,
    brute_force_subsets,
    coverage_error,
    exact_limit,
    smallest_subset,
)
from strongticket.theory.sweep import plot_sweep, read_csv, run_sweep, summary_table, write_csv
from strongticket.theory.targets import random_target, target_from_sequential, target_sha256
from strongticket.theory.ticket import evaluate_theory_ticket, load_theory_ticket, save_theory_ticket
from strongticket.theory.verify import (
    alive_neurons,
    certified_bound,
    clopper_pearson,
    empirical_sup_error,
    identity_check,
    pruned_forward,
    success_rate,
    target_function,
    universality,
)
from strongticket.theory.widths import calibrated_block, paper_widths, split_block, width_report
from strongticket.ticket import TicketError

# ----------------------------------------------------------------------------------------------------------
# Random elements and subset sums
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 13), (3, 4), (1, 1), (5, 9)])
def test_uniform_elements_equal_init_weight(shape):
    full = init_weight(shape, "uniform", 3, 2).numpy().astype(np.float64)
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    assert np.array_equal(uniform_elements(3, 2, shape, rows, cols), full)


@pytest.mark.parametrize("n", list(range(0, 15)))
def test_meet_in_the_middle_equals_brute_force(n):
    rng = np.random.default_rng(n)
    values = rng.uniform(-1, 1, (300, n)) * rng.uniform(-1, 1, (300, n))
    targets = rng.uniform(-1, 1, 300)
    chosen, sums = best_subsets(values, targets)
    _, brute_sums = brute_force_subsets(values, targets)
    assert np.allclose(np.abs(sums - targets), np.abs(brute_sums - targets), rtol=0, atol=1e-13)
    assert np.allclose(np.where(chosen, values, 0).sum(1), sums, rtol=0, atol=0)


@pytest.mark.parametrize("n, exact", [(30, 12), (41, 9), (64, 14)])
def test_beyond_the_exact_limit_the_prefix_is_searched_exactly(n, exact):
    # issue 15: more than 40 candidates used to raise; now the first `exact` are searched, the rest stay unused
    rng = np.random.default_rng(n)
    values = rng.uniform(0, 1, (200, n)) * rng.uniform(-1, 1, (200, n))
    targets = rng.uniform(-0.5, 0.5, 200)
    chosen, sums = best_subsets(values, targets, exact)
    _, prefix_sums = brute_force_subsets(values[:, :exact], targets)
    assert not chosen[:, exact:].any()
    assert np.allclose(np.abs(sums - targets), np.abs(prefix_sums - targets), rtol=0, atol=1e-13)
    assert np.array_equal(np.where(chosen, values, 0).sum(1), sums)


def test_exact_limit_fits_the_work_budget():
    assert exact_limit(0) == exact_limit(1) == MAX_VALUES
    assert exact_limit(10**9) == 20  # the floor: never a worse search than 20 candidates
    for instances in (4416, 155648, 784000):
        k = exact_limit(instances)
        assert instances * (2 ** (k // 2) + 2 ** (k - k // 2)) <= WORK_BUDGET
        assert k == MAX_VALUES or instances * (2 ** ((k + 1) // 2) + 2 ** (k + 1 - (k + 1) // 2)) > WORK_BUDGET
    with pytest.raises(ValueError, match=r"exact must be an integer in \[1, 40\], got 41"):
        best_subsets(np.zeros((1, 3)), np.zeros(1), 41)


def test_pensia_with_more_than_40_candidates_per_sign_builds_and_matches_its_model():
    # block 120 draws ~60 candidates per sign; exact=10 keeps the test fast, the identity and bound must still hold
    c = pensia(random_target([3, 2, 1], 7), 0, 120, exact=10)
    search = c.info["subset_search"]
    assert search["candidates_max"] > 40 and search["exact"] == 10
    assert search["instances"] == search["instances_exact"] + search["instances_prefix"] == 3 * 2 * 2 + 2
    assert identity_check(c, samples=500) <= 1e-10
    emp = empirical_sup_error(target_function(c.target), pruned_forward(build_model(c)), 3, samples=500, steps=10)
    assert certified_bound(c) >= emp["sup"]


def test_smallest_subset_is_minimal_and_within_tol():
    rng = np.random.default_rng(1)
    for _ in range(20):
        values, target, tol = rng.uniform(-1, 1, 10), rng.uniform(-0.5, 0.5), 1e-2
        chosen = smallest_subset(values, target, tol)
        bits = ((np.arange(2**10)[:, None] >> np.arange(10)) & 1).astype(bool)
        ok = np.abs(bits @ values - target) <= tol
        if not ok.any():
            assert chosen is None
            continue
        assert abs(values[chosen].sum() - target) <= tol
        assert chosen.sum() == bits[ok].sum(1).min()


def test_coverage_error_of_a_dyadic_block():
    assert coverage_error(np.array([0.5, 0.25]), 0.0, 0.75) == pytest.approx(0.125)
    assert coverage_error(np.array([0.5, 0.25]), -1.0, 1.0) == pytest.approx(1.0)


def test_bad_subset_inputs_name_the_field():
    with pytest.raises(ValueError, match=r"targets must have shape \(2,\)"):
        best_subsets(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"candidates per pair must be in \[0, 20\] for brute force, got 21"):
        brute_force_subsets(np.zeros((1, 21)), np.zeros(1))


# ----------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------


def test_random_target_has_unit_spectral_norm_and_is_reproducible():
    t1, t2 = random_target([5, 8, 8, 1], 7), random_target([5, 8, 8, 1], 7)
    assert [w.shape for w in t1] == [(8, 5), (8, 8), (1, 8)]
    assert all(np.linalg.norm(w, 2) == pytest.approx(1.0, abs=1e-12) for w in t1)
    assert target_sha256(t1) == target_sha256(t2) != target_sha256(random_target([5, 8, 8, 1], 8))


def test_sequential_target_rejects_norm_above_one_unless_scaled():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.fill_(0.1)
    with pytest.raises(ValueError, match="spectral norm of layer 1 must be in \\[0, 1\\]"):
        target_from_sequential(model)
    scaled = target_from_sequential(model, scale=True)
    assert np.linalg.norm(scaled[0], 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="bias-free"):
        target_from_sequential(nn.Sequential(nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="alternate Linear and ReLU"):
        target_from_sequential(nn.Sequential(nn.Linear(3, 3, bias=False), nn.Tanh(), nn.Linear(3, 1, bias=False)))


# ----------------------------------------------------------------------------------------------------------
# Constructions: identity, bounds, error scaling
# ----------------------------------------------------------------------------------------------------------

CASES = [("malach", 200, {}, [5, 10, 1]), ("malach", 200, {}, [5, 8, 8, 1]), ("pensia", 32, {}, [5, 10, 1]),
         ("pensia", 32, {}, [5, 8, 8, 1]), ("pensia", 16, {"subset": "smallest", "tol": 1e-2}, [4, 6, 1]),
         ("burkholz", 12, {}, [5, 10, 1]), ("burkholz", 12, {}, [5, 8, 8, 1])]


@pytest.mark.parametrize("name, block, kwargs, dims", CASES)
def test_pruned_random_net_equals_effective_net_and_bound_holds(name, block, kwargs, dims):
    c = construct(name, random_target(dims, 1000), 3, block, **kwargs)
    model = build_model(c)
    assert [m.layer_index for m in model if hasattr(m, "layer_index")] == list(range(c.depth))
    assert c.depth == (2 * (len(dims) - 1) if name != "burkholz" else len(dims))
    assert identity_check(c, model, samples=2000) <= 1e-10
    emp = empirical_sup_error(target_function(c.target), pruned_forward(model), dims[0], samples=2000, steps=40)
    assert certified_bound(c) >= emp["sup"] >= emp["sampled"]


def test_alive_neurons_drop_unread_and_unfed_hidden_neurons():
    m0 = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.bool)  # hidden 3 has no input
    m1 = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)  # hidden 1, 2 never read
    m2 = torch.tensor([[1, 1, 0]], dtype=torch.bool)  # level-2 neuron 2 is not read; neuron 1 is fed by hidden 3 only
    alive = alive_neurons([m0, m1, m2])
    assert [a.tolist() for a in alive] == [[0, 1], [0], [0], [0]]


def test_pruned_forward_on_a_wide_malach_net_equals_the_dense_one():
    # issue 15: verification used to push every sample through all random neurons (4.9 GB at Malach block 3000)
    c = construct("malach", random_target([3, 4, 1], 2), 0, 3000)
    model = build_model(c)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(64, 3)))
    h = x
    for k, layer in enumerate(m for m in model if hasattr(m, "mask")):
        h = h @ (layer.weight.double() * layer.mask).T
        h = torch.relu(h) if k < c.depth - 1 else h
    assert torch.allclose(pruned_forward(model)(x), h, rtol=0, atol=1e-12)
    assert identity_check(c, model, samples=3000, chunk=512) <= 1e-12


def _burkholz_linf_bound(c):
    # the former certified bound: every copy weighted by the worst copy's error, output sqrt(d_l) * max
    target, b_prev = c.target, 1.0
    plus, minus = c.effective[0]
    w_rows = target[0][np.arange(plus.shape[0]) // c.row_copies[0]]
    err = float(np.sqrt(((plus - w_rows) ** 2 + (minus - w_rows) ** 2).sum(axis=1)).max())
    for i in range(1, len(target)):
        b_prev *= np.linalg.norm(target[i - 1], 2)
        e = c.effective[i][0]
        rows, d_in = e.shape[0], target[i].shape[1]
        blocks = e.reshape(rows, d_in, c.col_copies[i])
        delta = blocks.sum(axis=2) - target[i][np.arange(rows) // c.row_copies[i]]
        err = float((np.linalg.norm(delta, axis=1) * b_prev + np.abs(blocks).sum(axis=(1, 2)) * err).max())
    return np.sqrt(target[-1].shape[0]) * err


@pytest.mark.parametrize("dims, rho", [([5, 10, 1], 16), ([5, 8, 8, 3], 12)])
def test_burkholz_per_copy_bound_is_tighter_and_still_holds(dims, rho):
    for seed in range(3):
        c = construct("burkholz", random_target(dims, 1000 + seed), seed, rho)
        emp = empirical_sup_error(target_function(c.target), pruned_forward(build_model(c)), dims[0], samples=3000,
                                  steps=40)
        assert emp["sup"] <= certified_bound(c) <= _burkholz_linf_bound(c)
    assert certified_bound(c) < 0.5 * _burkholz_linf_bound(c)


def test_burkholz_first_layer_is_u_minus_two_two_and_its_ticket_round_trips(tmp_path):
    # the authors' code draws the expansion layer from U[-2, 2] (RelationalML/LT-existence, Utils/pruning.py)
    c = construct("burkholz", random_target([4, 6, 1], 3), 2, 10)
    model = build_model(c)
    w0 = model[0].weight.detach()
    assert torch.equal(w0, 2 * init_weight(tuple(w0.shape), "uniform", 2, 0))
    assert 1 < float(w0.abs().max()) <= 2
    assert identity_check(c, model, samples=500) <= 1e-10
    save_theory_ticket(tmp_path / "b.safetensors", c)
    rebuilt, ticket, target = load_theory_ticket(tmp_path / "b.safetensors")
    assert ticket.config["init_scales"] == [2.0, 1.0, 1.0]
    assert torch.equal(rebuilt[0].weight, w0) and torch.equal(rebuilt[0].mask, model[0].mask)


def test_construction_is_reproducible_bit_for_bit():
    target = random_target([5, 10, 1], 1)
    a, b = pensia(target, 5, 24), pensia(target, 5, 24)
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert not all(np.array_equal(x, y) for x, y in zip(a.masks, pensia(target, 6, 24).masks))


def test_malach_weight_error_falls_like_one_over_k():
    target = [np.array([[0.3]])]
    med = {k: np.median([construct("malach", target, s, k).weight_errors[0] for s in range(200)])
           for k in (100, 1000)}
    assert 5 <= med[100] / med[1000] <= 20


def test_pensia_error_falls_geometrically_in_the_block():
    target = random_target([5, 10, 1], 1000)
    med = {m: np.median(np.concatenate([pensia(target, s, m).weight_errors[0] for s in range(3)])) for m in (16, 32)}
    assert med[16] / med[32] > 30


def test_blocks_after_the_first_use_only_positive_neurons():
    c = pensia(random_target([4, 6, 2], 0), 0, 20)
    a = init_weight((6 * 20, 6), "uniform", 0, 2).numpy()
    kept_rows = np.flatnonzero(c.masks[2].any(axis=1))
    assert kept_rows.size and np.all(a[kept_rows, kept_rows // 20] > 0)


# ----------------------------------------------------------------------------------------------------------
# Sup-error estimator, statistics, acceptance
# ----------------------------------------------------------------------------------------------------------


def test_sup_error_estimator_matches_ground_truth_in_one_and_two_dims():
    f = target_function(random_target([1, 6, 2], 3))
    g = target_function(random_target([1, 6, 2], 4))
    x = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    exact1 = float((f(x) - g(x)).norm(dim=1).max())
    assert empirical_sup_error(f, g, 1, samples=50, steps=5)["sup"] == pytest.approx(exact1, rel=1e-12)
    f = target_function(random_target([2, 6, 2], 3))
    g = target_function(random_target([2, 6, 2], 4))
    angle = torch.linspace(0, 2 * np.pi, 400001, dtype=torch.float64)
    grid = torch.stack([angle.cos(), angle.sin()], dim=1)
    exact2 = float((f(grid) - g(grid)).norm(dim=1).max())
    est = empirical_sup_error(f, g, 2, samples=500, steps=100)["sup"]
    assert est == pytest.approx(exact2, rel=1e-4)


def test_clopper_pearson_known_values():
    assert clopper_pearson(0, 200)[1] == pytest.approx(0.01828, abs=1e-4)
    assert clopper_pearson(20, 20) == (pytest.approx(0.8316, abs=1e-4), 1.0)


def test_success_against_one_minus_delta_is_judged_on_the_interval():
    from strongticket.theory.verify import _summarise

    def rows(ok, n):
        return [{"success": i < ok, "certified_success": True, "certified_ge_empirical": True, "identity_max_diff": 0.0,
                 "empirical": 0.0, "certified": 0.0} for i in range(n)]

    assert _summarise(rows(1, 1), 0.01, 0.1)["verdict"] == "undecided"  # 1/1: CI [0.025, 1]
    assert not _summarise(rows(1, 1), 0.01, 0.1)["meets_one_minus_delta"]
    assert _summarise(rows(40, 40), 0.01, 0.1)["verdict"] == "meets"  # CI lower 0.912
    assert _summarise(rows(25, 30), 0.01, 0.1)["verdict"] == "undecided"  # 25/30 = 0.83 < 0.9, CI upper 0.944
    assert _summarise(rows(20, 30), 0.01, 0.1)["verdict"] == "below"  # CI upper 0.827 < 0.9


@pytest.mark.slow
@pytest.mark.parametrize("dims", [[5, 10, 1], [5, 8, 8, 1]])
def test_acceptance_pensia_calibrated_width_succeeds_in_90_percent_of_20_draws(dims):
    block = calibrated_block("pensia", dims, 0.01, 0.1)
    res = success_rate("pensia", dims, 0.01, 0.1, 20, block, samples=2000, steps=30)
    assert res["successes"] >= 18
    assert res["certified_ge_empirical_all"]
    assert res["identity_max_diff"] <= 1e-10


def test_universality_one_net_many_targets():
    res = universality("pensia", [3, 4, 1], 0.01, 5, 40, samples=1000, steps=20)
    assert res["all_succeed"]


# ----------------------------------------------------------------------------------------------------------
# Widths
# ----------------------------------------------------------------------------------------------------------


def test_calibrated_pensia_block_matches_the_worked_example():
    # reference §3.3: [5,10,1], eps 0.01, delta 0.1 -> 19 per sign for 1%, q = 0.1/120. The reference's m = 2·24 = 48
    # assumed 24 per sign; under the Binomial(m, 1/2) sign split the block must be larger (issue 15).
    assert calibrated_block("pensia", [5, 10, 1], 0.01, 0.1)[0] == split_block(19, 0.1 / 120) == 55


def test_split_block_matches_a_simulated_sign_split():
    # failure of one instance: 1% at p candidates, x0.55 per extra one, capped at 1; k ~ Binomial(m, 1/2)
    rng = np.random.default_rng(0)
    p, q = 19, 1e-3
    m = split_block(p, q)

    def simulated(m):
        k = rng.binomial(m, 0.5, 2_000_000)
        return np.mean(np.minimum(1.0, 0.01 * 0.55 ** (k - p)))

    assert simulated(m) <= q * 1.05 and simulated(m - 2) > q
    assert m > 2 * (p + 4)  # more than the old "m/2 per sign" block (p + ceil(ln(10)/ln(1/0.55)) per sign)
    with pytest.raises(ValueError, match="q must be in \\(0, 1\\), got 0"):
        split_block(19, 0)


def test_paper_widths_keep_the_constant_symbolic():
    p = paper_widths("pensia", [5, 10, 1], 0.01, 0.1)
    assert p["n_per_unit_constant"][0] == pytest.approx(np.log(4 * 2 * 50 / 0.01))
    assert "C" in p["hidden_constant"]
    m = paper_widths("malach", [5, 10, 1], 0.1, 0.1)
    assert m["rigorous_block"] == pytest.approx(4.54e8, rel=0.01)
    rep = width_report("burkholz", [5, 10, 1], 0.01, 0.1)
    assert rep["depth"] == 3
    with pytest.raises(ValueError, match="eps must be in \\(0, 1\\), got 2"):
        width_report("pensia", [5, 10, 1], 2, 0.1)


# ----------------------------------------------------------------------------------------------------------
# Tickets
# ----------------------------------------------------------------------------------------------------------


def test_theory_ticket_round_trip_and_eval(tmp_path):
    c = pensia(random_target([4, 6, 1], 1000), 2, 24)
    path = save_theory_ticket(tmp_path / "t.safetensors", c, summary={"empirical": 0.0},
                              target_source={"source": "random", "seed": 1000})
    model, ticket, target = load_theory_ticket(path)
    assert ticket.config["kind"] == "theory" and ticket.config["widths"] == c.widths
    assert target_sha256(target) == target_sha256(c.target)
    assert all(np.array_equal(m.mask.numpy(), k) for m, k in zip([mod for mod in model if hasattr(mod, "mask")],
                                                                   c.masks))
    res = evaluate_theory_ticket(path, samples=2000, steps=30)
    emp = empirical_sup_error(target_function(c.target), target_function([w for w in c.target]), 4, samples=10)
    assert emp["sup"] == 0.0
    assert res["kept_weights"] == c.kept and 0 < res["sup_error"] <= certified_bound(c)


def test_theory_ticket_with_other_seed_fails_the_hash(tmp_path):
    import json as _json

    from safetensors.numpy import load, save

    c = pensia(random_target([3, 4, 1], 1000), 2, 16)
    path = save_theory_ticket(tmp_path / "t.safetensors", c)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = _json.loads(raw[8:8 + n])["__metadata__"]
    config = _json.loads(meta["config"])
    config["seed"] = 3
    meta["config"] = _json.dumps(config, sort_keys=True)
    (tmp_path / "bad.safetensors").write_bytes(save(load(raw), metadata=meta))
    with pytest.raises(TicketError, match="do not match"):
        load_theory_ticket(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------------------------------------
# Sweep and CLI
# ----------------------------------------------------------------------------------------------------------


def test_sweep_rows_table_csv_and_plot(tmp_path):
    rows = run_sweep([3, 4, 1], 0.01, 2, {"malach": (20,), "pensia": (8, 16), "burkholz": (6,)}, samples=500,
                     steps=10)
    assert len(rows) == 8 and all(r["identity_max_diff"] <= 1e-10 for r in rows)
    write_csv(tmp_path / "s.csv", rows)
    assert read_csv(tmp_path / "s.csv") == rows
    table = summary_table(rows)
    assert table.count("\n") == 5 and "| pensia | 16 | 4 |" in table
    pytest.importorskip("matplotlib")
    assert plot_sweep(rows, tmp_path / "s.png", 0.01).stat().st_size > 1000


def _cli(capsys, *argv):
    parser = argparse.ArgumentParser(prog="strongticket")
    add_theory_parser(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["theory", *argv])
    code = ns.run(ns)
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify", "--eps", "1.5"], "eps must be in (0, 1), got 1.5"),
        (["verify", "--delta", "0"], "delta must be in (0, 1), got 0.0"),
        (["verify", "--target-widths", "5,x"], "target_widths must be comma-separated integers, got '5,x'"),
        (["verify", "--target-widths", "5,0,1"], "target_widths[1] must be an integer in [1, 1048576], got 0"),
        (["verify", "--target-widths", "5"], "target_widths must list at least 2 widths"),
        (["verify", "--draws", "0"], "draws must be an integer in [1, 100000], got 0"),
        (["verify", "--block", "1"], "block[0] must be an integer in [2, 16777216], got 1"),
        (["verify", "--subset", "smallest"], "tol must be in (0, 1) for subset='smallest', got None"),
        (["verify", "--exact", "41"], "exact must be an integer in [1, 40], got 41"),
        (["verify", "--exact", "x"], "exact must be 'auto' or an integer in [1, 40], got 'x'"),
        (["verify", "--construction", "malach", "--exact", "20"], "exact must be 'auto' for malach"),
        (["verify", "--construction", "malach", "--target-widths", "16,16,10"],
         "the malach random net for target [16, 16, 10] at block [1400463, 875289] has 1,081,157,280 weights and "
         "needs about 30.2 GB to build, more than max_params 268,435,456 (--max-params)"),
        (["width", "--eps", "nan"], "eps must be in (0, 1), got nan"),
        (["sweep", "--constructions", "lueker"], "constructions must be a comma-separated subset of"),
    ],
)
def test_bad_theory_values_raise_one_line_naming_the_field(capsys, argv, message):
    with pytest.raises(ValueError) as info:
        _cli(capsys, *argv)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_cli_refuses_a_net_larger_than_the_memory_available_before_drawing_it(capsys, monkeypatch):
    import strongticket.theory.cli as theory_cli

    monkeypatch.setattr(theory_cli, "_available_bytes", lambda: 50_000)
    import strongticket.theory.constructions as constructions

    def drawn(*args, **kwargs):
        raise AssertionError("the random net was drawn before the memory check")

    monkeypatch.setattr(constructions, "construct", drawn)
    with pytest.raises(ValueError) as info:
        _cli(capsys, "verify", "--target-widths", "5,10,1", "--block", "40", "--draws", "1")
    message = str(info.value)
    # 12 B per weight of the built net + 48 B per element of the widest layer (10 x 400) while constructing
    assert message.startswith("the pensia random net for target [5, 10, 1] at block [40, 40] has 7,400 weights and "
                              "needs about 280,800 bytes to build, more than the 50,000 bytes of memory available")
    assert "\n" not in message


def test_cli_verify_width_and_json(capsys, tmp_path):
    code, out = _cli(capsys, "verify", "--target-widths", "4,6,1", "--draws", "2", "--block", "40",
                     "--samples", "1000", "--steps", "20", "--ticket", str(tmp_path / "t.safetensors"))
    assert code == 0 and "success (sup-error <= 0.01) 2/2" in out and (tmp_path / "t.safetensors").exists()
    code, out = _cli(capsys, "width", "--construction", "pensia", "--json")
    assert code == 0 and json.loads(out)["calibrated_block"][0] == 55
    code, out = _cli(capsys, "width")
    assert code == 0 and "Lueker" in out and "burkholz" in out and "malach" in out
