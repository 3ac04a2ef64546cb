"""Planted tickets (Fischer & Burkholz, "Plant 'n' Seek: can you find the winning ticket?", ICLR 2022).

The Circle / ReLU / Helix tasks (``tasks``), their hand-built target tickets (``targets``), the planting of a
target into a He-initialised mother network by neuron matching (``plant``, Algorithm 1), the budgets a search has
on it and the planted ticket cut to one (``budget``), and recovery metrics of a found mask against the planted one,
with their lift over a random mask (``recovery``). All randomness comes from ``strongticket.random``.

    p = plant_task("circle", depth=5, width=100, seed=0)   # p.density == 108 / 20600
    data = make_task("circle", seed=0)
    task_metric("circle", p.forward(data.x_test) / p.scale, data.y_test)   # planted ticket, float64
    budget(p, **budget_rule("planted", p.density)).holds(p)                # True: representable
"""

from .budget import Budget, best_within_budget, budget, budget_rule, cut_to_budget
from .plant import Planted, mother_network, plant, plant_task, planted_model
from .recovery import (
    LayerRecovery,
    expected_random_jaccard,
    has_path,
    mask_recovery,
    planted_path_survives,
    recovery_summary,
    task_metric,
    task_metric_name,
)
from .targets import TASKS, Target, make_target
from .tasks import TaskData, make_task, task_dims

__all__ = ["TASKS", "Budget", "LayerRecovery", "Planted", "Target", "TaskData", "best_within_budget", "budget",
           "budget_rule", "cut_to_budget", "expected_random_jaccard", "has_path", "make_target", "make_task",
           "mask_recovery", "mother_network", "plant", "plant_task", "planted_model", "planted_path_survives",
           "recovery_summary", "task_dims", "task_metric", "task_metric_name"]
