"""Which implementation runs the masked ops: ``torch`` (the reference), ``triton`` or ``triton-interpret``.

``STRONGTICKET_BACKEND`` may force one (``auto``, ``torch``, ``triton``); ``auto`` picks Triton on CUDA
devices of compute capability 8.0 or newer (Ampere on: the kernels' bf16 and TF32 tensor-core paths and tile
tables start there), the PyTorch reference otherwise. Inside
:func:`interpret_on_cpu` (which needs ``TRITON_INTERPRET=1``) CPU tensors also run the Triton kernels, in the
interpreter: that is how the dispatch of ``strongticket.ops`` is tested without a GPU. Nothing here imports
triton or touches a GPU driver at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["BACKENDS", "backend_name", "interpret_on_cpu", "resolve_device", "triton_available", "triton_devices"]

BACKENDS = ("auto", "torch", "triton")

# Devices for which strongticket.ops runs Triton implementations of the masked ops.
_TRITON_OP_DEVICES: frozenset[str] = frozenset({"cuda"})
_interpret_depth = 0  # > 0 inside interpret_on_cpu()


@contextmanager
def interpret_on_cpu() -> Iterator[None]:
    """Within this block CPU tensors run the Triton kernels in the interpreter (tests, ``--cpu-smoke``)."""
    global _interpret_depth
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("interpret_on_cpu needs TRITON_INTERPRET=1 set before triton is imported, got "
                         f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}")
    _interpret_depth += 1
    try:
        yield
    finally:
        _interpret_depth -= 1


def triton_devices() -> frozenset[str]:
    """Device types whose masked ops run Triton kernels right now."""
    return _TRITON_OP_DEVICES | {"cpu"} if _interpret_depth > 0 else _TRITON_OP_DEVICES


def triton_available() -> bool:
    """True when triton can be imported (it is optional: Linux-only)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_DECIDED: dict[tuple, str] = {}  # backend_name's answers by (device, environment): it runs on every layer call


def backend_name(device: torch.device | str) -> str:
    """The backend the masked ops use on ``device``; a forced but unavailable backend is a clear error."""
    environ = os.environ
    key = (str(device), environ.get("STRONGTICKET_BACKEND"), environ.get("TRITON_INTERPRET"), _interpret_depth > 0)
    name = _DECIDED.get(key)
    if name is None:
        name = _DECIDED[key] = _backend_name(device)
    return name


def _backend_name(device: torch.device | str) -> str:
    requested = os.environ.get("STRONGTICKET_BACKEND", "auto")
    if requested not in BACKENDS:
        raise ValueError(f"STRONGTICKET_BACKEND must be one of {', '.join(BACKENDS)}, got {requested!r}")
    device = torch.device(device)
    kind = device.type
    triton_ok = kind in triton_devices() and triton_available()
    if requested == "triton" and not triton_ok:
        raise ValueError(f"STRONGTICKET_BACKEND=triton: no Triton kernels are registered for the masked ops on "
                         f"{kind!r} devices; use auto or torch")
    if triton_ok and kind == "cuda" and torch.cuda.is_available() and _capability(device) < (8, 0):
        if requested == "triton":
            raise ValueError(f"STRONGTICKET_BACKEND=triton needs a GPU of compute capability >= 8.0 (Ampere), got "
                             f"{_capability(device)} on {device}; use auto or torch")
        return "torch"
    if requested == "torch" or not triton_ok:
        return "torch"
    return "triton-interpret" if os.environ.get("TRITON_INTERPRET") == "1" else "triton"


_CAPABILITIES: dict[int, tuple[int, int]] = {}


def _capability(device: torch.device) -> tuple[int, int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPABILITIES:
        _CAPABILITIES[index] = torch.cuda.get_device_capability(index)
    return _CAPABILITIES[index]


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a visible GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be one of auto, cpu, cuda with a visible GPU; got 'cuda' but none is visible")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda, got {device!r}")
    return torch.device(device)
