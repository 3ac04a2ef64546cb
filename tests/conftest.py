"""Test set-up: Triton kernels run in the CPU interpreter when no GPU is visible.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
