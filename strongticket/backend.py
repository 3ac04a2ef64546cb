"""Which implementation runs the masked ops: ``torch`` (the reference), ``triton`` or ``triton-interpret``.

``STRONGTICKET_BACKEND`` may force one (``auto``, ``torch``, ``triton``); ``auto`` picks Triton on CUDA
devices once Triton kernels are registered for the masked ops, the PyTorch reference otherwise. Nothing here
imports triton or touches a GPU driver at import time.
"""

from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "backend_name", "resolve_device", "triton_available"]

BACKENDS = ("auto", "torch", "triton")

# Devices for which ops.py registers Triton implementations of masked_linear / masked_conv2d.
# Empty until the fused kernels land: every device runs the PyTorch reference.
_TRITON_OP_DEVICES: frozenset[str] = frozenset()


def triton_available() -> bool:
    """True when triton can be imported (it is optional: Linux-only)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend_name(device: torch.device | str) -> str:
    """The backend the masked ops use on ``device``; a forced but unavailable backend is a clear error."""
    requested = os.environ.get("STRONGTICKET_BACKEND", "auto")
    if requested not in BACKENDS:
        raise ValueError(f"STRONGTICKET_BACKEND must be one of {', '.join(BACKENDS)}, got {requested!r}")
    kind = torch.device(device).type
    triton_ok = kind in _TRITON_OP_DEVICES and triton_available()
    if requested == "triton" and not triton_ok:
        raise ValueError(f"STRONGTICKET_BACKEND=triton: no Triton kernels are registered for the masked ops on "
                         f"{kind!r} devices; use auto or torch")
    if requested == "torch" or not triton_ok:
        return "torch"
    return "triton-interpret" if os.environ.get("TRITON_INTERPRET") == "1" else "triton"


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a visible GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be one of auto, cpu, cuda with a visible GPU; got 'cuda' but none is visible")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda, got {device!r}")
    return torch.device(device)
