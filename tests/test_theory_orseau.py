"""Orseau et al. 2020 in strongticket.theory: greedy sums, hyperbolic nets, identity, bounds, widths, tickets."""

import argparse

import numpy as np
import pytest

from strongticket.random import init_weight
from strongticket.theory.cli import add_theory_parser
from strongticket.theory.constructions import (
    build_model,
    construct,
    greedy_subsets,
    hyperbolic_elements,
    orseau,
    orseau_ranges,
)
from strongticket.theory.sweep import run_sweep, summary_table
from strongticket.theory.targets import random_target
from strongticket.theory.ticket import evaluate_theory_ticket, load_theory_ticket, save_theory_ticket
from strongticket.theory.verify import certified_bound, empirical_sup_error, identity_check, verify_construction
from strongticket.theory.widths import calibrated_block, paper_widths, width_report


def _greedy_reference(values, target):
    chosen, residual = np.zeros(len(values), dtype=bool), abs(target)
    for q in sorted(range(len(values)), key=lambda q: -abs(values[q])):
        if target != 0 and np.sign(values[q]) == np.sign(target) and abs(values[q]) <= residual:
            chosen[q], residual = True, residual - abs(values[q])
    return chosen


def test_greedy_matches_a_plain_loop_and_never_overshoots():
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, (200, 12)) * np.exp(rng.uniform(-6, 0, (200, 12)))
    targets = rng.uniform(-1, 1, 200)
    targets[:3] = 0.0
    chosen = greedy_subsets(values, targets)
    for p in range(200):
        assert np.array_equal(chosen[p], _greedy_reference(values[p], targets[p]))
    sums = (values * chosen).sum(axis=1)
    assert np.all(np.abs(sums) <= np.abs(targets) + 1e-15) and np.all(sums * targets >= 0)
    assert not chosen[:3].any()


def test_base_three_halves_digits_cover_within_the_last_digit():
    digits = 0.5 * (2 / 3) ** np.arange(20)
    targets = np.linspace(-1, 1, 501)
    values = np.tile(np.concatenate([digits, -digits]), (501, 1))
    err = np.abs((values * greedy_subsets(values, targets)).sum(axis=1) - targets)
    assert err.max() <= digits[-1] * (1 + 1e-12)  # covering lemma, reference §5


def test_hyperbolic_elements_equal_init_weight():
    full = init_weight((12, 7), "hyperbolic", 3, 2, low=1e-3, high=2.0).numpy().astype(np.float64)
    rows, cols = np.meshgrid(np.arange(12), np.arange(7), indexing="ij")
    assert np.array_equal(hyperbolic_elements(3, 2, (12, 7), rows, cols, 1e-3, 2.0), full)


@pytest.mark.parametrize("dims, block", [([5, 10, 1], 120), ([5, 8, 8, 1], [100, 100, 80])])
def test_orseau_identity_bound_and_model(dims, block):
    c = construct("orseau", random_target(dims, 1000), 3, block, eps=0.01)
    model = build_model(c)
    assert identity_check(c, model, samples=2000) <= 1e-10
    assert c.init == "hyperbolic" and len(c.init_ranges) == c.depth == 2 * (len(dims) - 1)
    for k, layer in enumerate(m for m in model if hasattr(m, "fix_mask")):
        low, high = c.init_ranges[k]
        shape = (c.widths[k + 1], c.widths[k])
        assert layer.init == "hyperbolic"
        assert np.array_equal(layer.weight.numpy(), init_weight(shape, "hyperbolic", 3, k, low=low, high=high).numpy())
    res = verify_construction(c, 0.01, model=model, samples=2000, steps=30, identity_samples=500)
    assert res["certified_ge_empirical"] and res["identity_max_diff"] <= 1e-10


def test_orseau_net_does_not_depend_on_the_target():
    a = orseau(random_target([4, 6, 2], 1), 9, 64)
    b = orseau(random_target([4, 6, 2], 2), 9, 64)
    assert a.init_ranges == b.init_ranges
    ma, mb = build_model(a), build_model(b)
    assert all(np.array_equal(x.weight.numpy(), y.weight.numpy()) for x, y in zip(ma[::2], mb[::2]))


def test_orseau_error_falls_with_the_pool_and_certified_covers_empirical():
    dims = [4, 6, 1]
    errs = []
    for block in (30, 300):
        c = orseau(random_target(dims, 1000), 0, block)
        emp = empirical_sup_error(lambda x: x, lambda x: x, 4, samples=10)  # smoke of the API
        assert emp["sup"] == 0.0
        res = verify_construction(c, 0.01, samples=2000, steps=30, identity_samples=200)
        assert res["certified"] >= res["empirical"] and certified_bound(c) == res["certified"]
        errs.append(res["empirical"])
    assert errs[1] < errs[0] / 10 and errs[1] < 1e-3


def test_orseau_ranges_and_errors():
    (range_a, range_b), = orseau_ranges([5, 1], 0.01)
    eps_w = 0.01 / (2 * 5)
    assert range_b == (eps_w / 4, 2.0)
    assert np.isclose(range_a[0] * range_a[1], 1.0) and np.isclose(range_a[1] ** 2, 2.0 / (eps_w / 4))
    with pytest.raises(ValueError, match="eps must be in"):
        orseau_ranges([5, 1], 1.5)
    with pytest.raises(ValueError, match=r"block\[0\] must be an integer in \[2, 2\*\*24\], got 1"):
        orseau(random_target([3, 2], 0), 0, 1)


def test_orseau_widths():
    rep = width_report("orseau", [5, 10, 1], 0.01, 0.1)
    assert rep["calibrated_block"] == calibrated_block("orseau", [5, 10, 1], 0.01, 0.1) == [371, 316]
    assert rep["depth"] == 4 and rep["calibrated_widths"] == [5, 5 * 371, 10, 10 * 316, 1]
    paper = paper_widths("orseau", [5, 10, 1], 0.01, 0.1)
    assert "C" in paper["hidden_constant"] and paper["rigorous_block"][0] > 10 * rep["calibrated_block"][0]
    assert paper["digits_K"] == [25, 21]


def test_orseau_ticket_roundtrip(tmp_path):
    target = random_target([4, 6, 1], 1000)
    c = orseau(target, 2, 40)
    path = save_theory_ticket(tmp_path / "orseau.ticket", c, target_source={"source": "random", "seed": 1000})
    model, ticket, stored = load_theory_ticket(path)
    assert ticket.config["init"] == "hyperbolic" and len(ticket.config["init_ranges"]) == 4
    assert identity_check(c, model, samples=500) <= 1e-10
    result = evaluate_theory_ticket(path, samples=500, steps=10)
    assert result["construction"] == "orseau" and result["sup_error"] > 0


def test_orseau_sweep_and_cli(capsys):
    rows = run_sweep([3, 4, 1], 0.05, 1, {"orseau": (16, 64), "pensia": (8,)}, samples=300, steps=5)
    assert [r["construction"] for r in rows] == ["orseau", "orseau", "pensia"]
    assert all(r["identity_max_diff"] <= 1e-10 and r["certified"] >= r["empirical"] for r in rows)
    assert "| orseau | 64 | 4 |" in summary_table(rows)
    parser = argparse.ArgumentParser(prog="strongticket")
    add_theory_parser(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["theory", "verify", "--construction", "orseau", "--target-widths", "3,4,1", "--draws",
                            "2", "--block", "64", "--samples", "300", "--steps", "5", "--eps", "0.05"])
    assert ns.run(ns) == 0
    assert "orseau target [3, 4, 1] block [64, 64]" in capsys.readouterr().out
    ns = parser.parse_args(["theory", "width", "--construction", "orseau"])
    assert ns.run(ns) == 0 and "digits K" in capsys.readouterr().out
    ns = parser.parse_args(["theory", "verify", "--construction", "orseau", "--subset", "smallest", "--tol", "0.1"])
    with pytest.raises(ValueError, match="subset must be 'best' for orseau"):
        ns.run(ns)
