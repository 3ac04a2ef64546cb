"""Test set-up: Triton kernels run in the CPU interpreter when no GPU is visible.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection time.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


POISON_INT = -0x21524111  # 0xDEADBEEF as int32


@pytest.fixture
def poisoned(monkeypatch):
    """Every torch.empty returns NaN (floats), 0xDEADBEEF (ints) or True (bool): unwritten outputs show."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.dtype.is_floating_point:
            return t.fill_(float("nan"))
        return t.fill_(True) if t.dtype == torch.bool else t.fill_(POISON_INT)

    monkeypatch.setattr(torch, "empty", empty)
