"""strongticket: the strong lottery ticket hypothesis as a tool.

Inside a large enough random, never-trained network hides a subnetwork that already does the job; pruning alone
finds it. strongticket searches such masks over frozen seeded random weights (edge-popup), stores them as
tickets (config + seed + 1 bit per weight), and rebuilds and checks them.

Importing this package needs neither triton nor CUDA.
"""

from .convert import bake, convert, to_torch_prune
from .masks import keep_count, topk_mask
from .nn import GlobalTopK, MaskedConv2d, MaskedLinear, masked_layers, use_global_topk
from .optim import ScoreSGD

__version__ = "0.1.0"

__all__ = [
    "bake",
    "convert",
    "to_torch_prune",
    "GlobalTopK",
    "MaskedConv2d",
    "MaskedLinear",
    "ScoreSGD",
    "keep_count",
    "masked_layers",
    "topk_mask",
    "use_global_topk",
    "__version__",
]
