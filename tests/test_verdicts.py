"""The verdict rules of benchmarks/digits_methods.py: intervals over seeds, chance, comparability, 'not shown'."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "digits_methods", Path(__file__).resolve().parents[1] / "benchmarks" / "digits_methods.py")
dm = importlib.util.module_from_spec(_spec)
sys.modules["digits_methods"] = dm  # dataclasses resolve the module's annotations through sys.modules
_spec.loader.exec_module(dm)
CHANCE = (0.078, 0.134)


def cell(acc, half, found=0.1):
    return dm.Cell(acc=acc, half=half, found=found, collapsed=0, steps=100, select="best-val")


def test_t_interval_half_width_is_the_students_t_one():
    # 5 values: t_{0.975, 4} = 2.776445; sample std of 1..5 is sqrt(2.5)
    assert dm.t_half_width([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5))
    assert dm.t_half_width([0.5]) == math.inf
    assert dm.binomial_se(0.95, 359) == pytest.approx(math.sqrt(0.95 * 0.05 / 359))


def test_greater_holds_only_when_the_intervals_separate_and_says_not_shown_when_they_overlap():
    assert dm.greater(cell(0.95, 0.01), cell(0.90, 0.01), CHANCE) == "holds"
    assert dm.greater(cell(0.95, 0.04), cell(0.93, 0.04), CHANCE) == "not shown"  # ahead, overlapping
    assert dm.greater(cell(0.90, 0.01), cell(0.95, 0.01), CHANCE) == "does not hold"
    assert dm.greater(cell(0.11, 0.02), cell(0.10, 0.01), CHANCE) == "inconclusive"  # both reach chance


def test_approx_and_at_least():
    assert dm.approx(cell(0.95, 0.01), cell(0.951, 0.01), CHANCE) == "holds"
    assert dm.approx(cell(0.95, 0.005), cell(0.97, 0.005), CHANCE) == "does not hold"
    assert dm.at_least(cell(0.94, 0.02), cell(0.95, 0.02), CHANCE) == "holds"  # within B's interval
    assert dm.at_least(cell(0.90, 0.02), cell(0.95, 0.02), CHANCE) == "does not hold"


def test_cells_off_their_target_density_are_not_compared_and_overall_skips_them():
    on, off = cell(0.95, 0.01, found=0.1), cell(0.92, 0.01, found=0.53)  # zhou2019's supermask: no density target
    assert dm.at_density(on, off, 0.1, lambda a, b: dm.greater(a, b, CHANCE)) == "not comparable"
    assert dm.at_density(on, cell(0.9, 0.01, found=0.105), 0.1, lambda a, b: dm.greater(a, b, CHANCE)) == "holds"
    assert dm.overall(["holds", "not comparable"]) == "holds"
    assert dm.overall(["holds", "not shown"]) == "not shown"
    assert dm.overall(["holds", "does not hold", "not shown"]) == "does not hold"
    assert dm.overall(["inconclusive", "holds"]) == "inconclusive"
    assert dm.overall(["not comparable"]) == "not comparable"
