"""Import hygiene and backend selection."""

import subprocess
import sys

import pytest

from strongticket.backend import backend_name


def test_import_needs_neither_triton_nor_a_gpu_driver():
    code = """
import sys
sys.modules["triton"] = None  # any import of triton now fails
import torch
import strongticket, strongticket.cli, strongticket.search.loop, strongticket.evaluate
from strongticket.models import MLP
MLP((64,), 10, (8,))(torch.rand(2, 64)).sum().backward()
assert not torch.cuda.is_initialized()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_backend_is_reported_and_can_be_forced(monkeypatch):
    monkeypatch.delenv("STRONGTICKET_BACKEND", raising=False)
    assert backend_name("cpu") == "torch"
    monkeypatch.setenv("STRONGTICKET_BACKEND", "torch")
    assert backend_name("cpu") == "torch"
    monkeypatch.setenv("STRONGTICKET_BACKEND", "triton")
    with pytest.raises(ValueError, match="STRONGTICKET_BACKEND=triton: no Triton kernels are registered"):
        backend_name("cpu")
    monkeypatch.setenv("STRONGTICKET_BACKEND", "cutlass")
    with pytest.raises(ValueError, match="STRONGTICKET_BACKEND must be one of auto, torch, triton, got 'cutlass'"):
        backend_name("cpu")
