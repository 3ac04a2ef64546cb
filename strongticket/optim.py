"""Fused SGD on the popup scores: the SGD-momentum step of a fused layer's scores runs inside the backward pass.

:class:`ScoreSGD` is ``torch.optim.SGD`` (same arguments, same ``state_dict``: checkpoints and resume are
unchanged) that also offers its parameters' update to the masked layers. A layer on the fused path (a
``MaskedLinear`` selecting the top-k of |S| on the Triton backend, see :mod:`strongticket.nn`) whose scores S
belong to a ScoreSGD asks :func:`fused_step` at forward time and, when it gets one, runs
``ops.masked_linear_threshold_sgd``: its backward applies, in the dS GEMM's epilogue,

    buf = μ·buf + dS + λ·S;   S −= lr·buf        (torch.optim.SGD, dampening 0, no Nesterov)

with dS = (dyᵀx) ⊙ W ⊙ sign(S) never written to memory and ``S.grad`` left None, so :meth:`~torch.optim.SGD.step`
skips S and does ordinary SGD for everything that has a ``.grad`` (bias scores, batch norm, conv layers,
layers on the reference path). lr, μ, λ are read from S's param group at forward time (a scheduler steps after
``optimizer.step()``, so that is the step's lr); ``momentum_buffer`` is the optimizer's own state entry, created
as zeros on the first fused step (which then equals SGD's first step, buf = dS + λ·S).

How a layer finds the optimizer: constructing a ScoreSGD (or ``add_param_group``) registers each parameter in a
weak table parameter → optimizer; :func:`fused_step` looks the scores up there. A parameter is fused only when
its group is plain SGD (dampening 0, no Nesterov, not maximize, not differentiable, a float lr > 0, momentum in
[0, 1), weight decay >= 0), ``fuse_backward`` is on, and no process group of more than one rank is initialised
(under DDP the gradients must be all-reduced before any update).

Guard: a fused update cannot be undone or accumulated. The layer hooks its op's backward node
(``Node.register_prehook``); the hook marks the scores as updated and raises if they already were since the last
``step()`` (gradient accumulation over several backward passes, a retained graph run twice, a layer applied
twice in one forward). ``step()`` clears the marks, and refuses a marked parameter that also got a ``.grad``
(another loss term on the scores would otherwise be applied as a second, separate step).

Paper: Ramanujan et al., CVPR 2020 (edge-popup's SGD-momentum on the scores); kernels.md §2 (fused optimizer).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["ScoreSGD", "FusedStep", "fused_step"]

_OWNERS: WeakIdKeyDictionary = WeakIdKeyDictionary()  # parameter -> weakref to the ScoreSGD that owns it


class FusedStep(NamedTuple):
    """What a fused layer passes to its op: the step's hyperparameters and buffer, and the backward guard."""

    momentum_buffer: Tensor | None
    lr: float
    momentum: float
    weight_decay: float
    guard: Callable[[Any], None]  # a Node pre-hook: call with the node's grad outputs before the fused backward


def fused_step(param: Tensor) -> FusedStep | None:
    """The SGD step ``param`` (a layer's scores) should take inside its backward pass, or None: no
    :class:`ScoreSGD` owns it, or its step cannot be fused now (then the layer returns dS as ``.grad``)."""
    owner = _OWNERS.get(param)
    optimizer = owner() if owner is not None else None
    return None if optimizer is None else optimizer._fused_step(param)


def _data_parallel() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ScoreSGD(torch.optim.SGD):
    """``torch.optim.SGD`` whose fused layers' score updates run inside the backward pass (module docstring).

    Arguments as ``torch.optim.SGD``; ``fuse_backward=False`` makes it plain SGD.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 fuse_backward: bool = True) -> None:
        self._updated: set[int] = set()  # ids of parameters updated in a backward pass since the last step()
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused)
        self.fuse_backward = fuse_backward
        # hooks, not a step() override: Optimizer wraps step() with its own hooks once per class, and a closure's
        # backward passes run inside step(), between these two
        self.register_step_pre_hook(ScoreSGD._check_updated)
        self.register_step_post_hook(ScoreSGD._clear_updated)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        me = weakref.ref(self)
        for p in self.param_groups[-1]["params"]:
            _OWNERS[p] = me

    def _group_of(self, param: Tensor) -> dict[str, Any] | None:
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        return None

    def _fused_step(self, param: Tensor) -> FusedStep | None:
        if not getattr(self, "fuse_backward", False) or _data_parallel():
            return None
        group = self._group_of(param)
        if group is None:
            return None
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if (group["dampening"] != 0 or group["nesterov"] or group["maximize"] or group["differentiable"]
                or isinstance(lr, Tensor) or not lr > 0 or not 0 <= momentum < 1 or not weight_decay >= 0):
            return None
        buf = None
        if momentum != 0:
            state = self.state[param]
            buf = state.get("momentum_buffer")
            if buf is None or not buf.is_contiguous():
                buf = state["momentum_buffer"] = (torch.zeros_like(param, memory_format=torch.contiguous_format)
                                                  if buf is None else buf.contiguous())
        return FusedStep(buf, float(lr), float(momentum), float(weight_decay),
                         lambda grad_outputs: self._mark_updated(param))

    def _mark_updated(self, param: Tensor) -> None:
        if id(param) in self._updated:
            raise RuntimeError(f"ScoreSGD: a second backward pass reached fused scores {tuple(param.shape)} before "
                               f"optimizer.step(); their SGD step already ran in the first one, so accumulating "
                               f"gradients (or a layer applied twice) would apply it twice: call step() after "
                               f"every backward, or use ScoreSGD(..., fuse_backward=False)")
        self._updated.add(id(param))

    def _check_updated(self, args: Any, kwargs: Any) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in self._updated and p.grad is not None:
                    raise RuntimeError(f"ScoreSGD: scores {tuple(p.shape)} were updated in the backward pass and "
                                       f"also have a .grad (another loss term on the scores, or a gradient kept "
                                       f"by zero_grad(set_to_none=False)); use ScoreSGD(..., fuse_backward=False)")

    def _clear_updated(self, args: Any, kwargs: Any) -> None:
        self._updated.clear()
