"""Planted tickets (Fischer & Burkholz, "Plant 'n' Seek: can you find the winning ticket?", ICLR 2022).

The Circle / ReLU / Helix tasks (``tasks``), their hand-built target tickets (``targets``), the planting of a
target into a He-initialised mother network by neuron matching (``plant``, Algorithm 1) and recovery metrics
of a found mask against the planted one (``recovery``). All randomness comes from ``strongticket.random``.

    p = plant_task("circle", depth=5, width=100, seed=0)   # p.density == 108 / 20600
    data = make_task("circle", seed=0)
    task_metric("circle", p.forward(data.x_test) / p.scale, data.y_test)   # planted ticket, float64
"""

from .plant import Planted, mother_network, plant, plant_task, planted_model
from .recovery import LayerRecovery, has_path, mask_recovery, planted_path_survives, task_metric, task_metric_name
from .targets import TASKS, Target, make_target
from .tasks import TaskData, make_task, task_dims

__all__ = ["TASKS", "LayerRecovery", "Planted", "Target", "TaskData", "has_path", "make_target", "make_task",
           "mask_recovery", "mother_network", "plant", "plant_task", "planted_model", "planted_path_survives",
           "task_dims", "task_metric", "task_metric_name"]
