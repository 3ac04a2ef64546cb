"""Tile configurations per GPU architecture, the default dot precision, and the one launch routine.

Every Triton launch of the package goes through :func:`launch`, which checks the grid against the hardware limits
(x < 2^31, y and z ≤ 65535: the interpreter enforces none of them) and launches on the tensors' device (Triton
launches on the *current* CUDA device, so a ``cuda:1`` tensor would otherwise be read from device 0).

GEMM tiles come from one table per kernel, architecture class and dot class, chosen by :func:`gemm_tiles`:

    arch class   architectures            shared memory per block (opt-in)
    sm90         sm_90 (H100/H200), sm_100 227 KiB   wgmma
    sm80         sm_80 (A100), sm_87      163 KiB    mma.sync
    sm86         sm_86, sm_89, sm_120     99 KiB     mma.sync (RTX 30xx/40xx, L4, L40, A10)
    interpret    TRITON_INTERPRET=1 on the CPU: large tiles (the interpreter is fastest with few programs)

    dot class    operands of tl.dot
    16bit        bf16 (x or dy in bf16)
    tf32x3       fp32, three TF32 tensor-core products (big·big + big·small + small·big): fp32-level error
    tf32         fp32, one TF32 product (10-bit mantissa: relative error ~1e-3)
    ieee         fp32 on the FMA units (no tensor cores; exact fp32 products)

Each table holds a small-batch and a large-batch configuration (the batch is the MMA's N side of the swap-AB
forward and dx, the reduction of dS); the large one runs only where its grid fills the GPU (:func:`gemm_tiles`).
:func:`gemm_candidates` lists every configuration :func:`gemm_tiles` can return for an architecture, and
``strongticket bench aot`` compiles each launch for sm_80, sm_89 and sm_90 in CI: no configuration exceeds its
shared memory, none spills a register, every GEMM uses tensor cores (but "ieee").
The choice depends on the architecture, the shapes and the SM count only, never on timing: a run gives the same
bits each time on the same GPU model.

Shapes: ``Tiles.block_n`` × ``block_k`` is the weight tile, ``block_m`` the batch tile (see each kernel).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "ARCHS",
    "DEFAULT_PRECISION",
    "INPUT_PRECISIONS",
    "SHARED_LIMIT",
    "Tiles",
    "arch_class",
    "device_arch",
    "device_sms",
    "dot_class",
    "gemm_candidates",
    "gemm_tiles",
    "interpreting",
    "launch",
    "resolve_precision",
    "target_arch",
]

INPUT_PRECISIONS = ("tf32x3", "tf32", "ieee")
DEFAULT_PRECISION = "tf32x3"  # fp32 through tensor cores at fp32-level error; "ieee" stays available
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}  # bytes per block, opt-in
ARCHS = tuple(SHARED_LIMIT)  # what `strongticket bench aot` compiles for by default
_GRID_X_MAX, _GRID_YZ_MAX = 2**31 - 1, 65535
_SMALL_BATCH = 64  # batches up to this many rows take the small-batch tiles

_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("strongticket_target_arch", default=None)


@dataclass(frozen=True)
class Tiles:
    """One launch configuration of a GEMM kernel."""

    block_n: int
    block_m: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3

    def replace(self, **given: int | None) -> Tiles:
        """This configuration with the fields given (not None) replaced."""
        fields = {name: getattr(self, name) for name in ("block_n", "block_m", "block_k", "num_warps", "num_stages")}
        fields.update({k: v for k, v in given.items() if v is not None})
        return Tiles(**fields)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@contextlib.contextmanager
def target_arch(arch: int) -> Iterator[None]:
    """Inside, launchers choose tiles for ``arch`` (e.g. 90) whatever the tensors' device: the AOT gate captures
    the launches the package would make on that GPU from CPU or meta tensors."""
    token = _override.set(int(arch))
    try:
        yield
    finally:
        _override.reset(token)


_CAPABILITY: dict[int, int] = {}


def device_arch(device: torch.device) -> int | None:
    """Compute capability as 10·major + minor (90 for an H100) of a CUDA ``device``; the :func:`target_arch`
    override when set; None under the interpreter."""
    forced = _override.get()
    if forced is not None:
        return forced
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPABILITY:
        major, minor = torch.cuda.get_device_capability(index)
        _CAPABILITY[index] = 10 * major + minor
    return _CAPABILITY[index]


def arch_class(arch: int | None) -> str:
    if arch is None:
        return "interpret"
    if arch == 90 or arch in (100, 101, 103):
        return "sm90"
    if arch in (80, 87):
        return "sm80"
    return "sm86"


def resolve_precision(input_precision: str | None) -> str:
    """``input_precision`` checked, None → :data:`DEFAULT_PRECISION`."""
    if input_precision is None:
        return DEFAULT_PRECISION
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision must be one of {', '.join(INPUT_PRECISIONS)}, got {input_precision!r}")
    return input_precision


def dot_class(dtype: torch.dtype, precision: str) -> str:
    """The dot class of a ``tl.dot`` whose operands are cast to ``dtype``."""
    return "16bit" if dtype in (torch.bfloat16, torch.float16) else precision


# (kernel, arch class, dot class) -> (small-batch tiles, large-batch tiles). Chosen by compiling candidates for
# sm_80, sm_89 and sm_90 (``strongticket bench aot``): the largest tiles with no spill and shared memory within
# the limit, for the heaviest variant (fp32 W, threshold mask source, seeded Philox tiles). "tf32" shares the
# tf32x3 tiles. Tiles(block_n, block_m, block_k, num_warps, num_stages) in each kernel's own axes:
#   forward      acc yᵀ[BLOCK_N, BLOCK_M], reduction over K in BLOCK_K steps (loads W, S or bits, x)
#   dx           acc dxᵀ[BLOCK_K, BLOCK_M], reduction over N in BLOCK_N steps (loads W, S or bits, dy)
#   dscores      acc (dyᵀx)[BLOCK_N, BLOCK_K], reduction over the batch in BLOCK_M steps; epilogue W, S, buffer
#   packed_gemm  acc yᵀ[BLOCK_N, BLOCK_M], reduction over K (loads bit words, x)
_T = Tiles
_GEMM: dict[tuple[str, str, str], tuple[Tiles, Tiles]] = {}


def _table(kernel: str, arch: str, dots: Sequence[str], small: Tiles, large: Tiles) -> None:
    for dot in dots:
        _GEMM[kernel, arch, dot] = (small, large)


_FP32 = ("tf32x3", "tf32")
for _kernel in ("forward", "dx", "dscores", "packed_gemm"):
    _table(_kernel, "interpret", ("16bit", "tf32x3", "tf32", "ieee"), _T(64, 32, 64), _T(128, 64, 64))

_table("forward", "sm90", ("16bit",), _T(128, 64, 32, 8, 4), _T(128, 128, 32, 8, 4))
_table("forward", "sm90", _FP32, _T(128, 64, 32, 8, 4), _T(128, 128, 32, 8, 4))
_table("forward", "sm80", ("16bit",), _T(128, 64, 32, 8, 4), _T(128, 128, 32, 8, 4))
_table("forward", "sm80", _FP32, _T(64, 64, 32, 8, 3), _T(64, 64, 32, 8, 3))  # tf32x3 on mma.sync: register-bound
_table("forward", "sm86", ("16bit",), _T(128, 64, 32, 8, 3), _T(128, 128, 32, 8, 3))
_table("forward", "sm86", _FP32, _T(64, 64, 32, 8, 3), _T(64, 64, 32, 8, 3))

_table("dx", "sm90", ("16bit",), _T(32, 64, 128, 8, 3), _T(32, 128, 128, 8, 4))
_table("dx", "sm90", _FP32, _T(32, 64, 128, 8, 3), _T(32, 128, 128, 8, 3))
_table("dx", "sm80", ("16bit",), _T(32, 64, 64, 8, 3), _T(32, 128, 128, 8, 4))
_table("dx", "sm80", _FP32, _T(16, 64, 64, 4, 3), _T(32, 64, 64, 8, 3))
_table("dx", "sm86", ("16bit",), _T(32, 64, 128, 8, 3), _T(32, 128, 128, 8, 3))
_table("dx", "sm86", _FP32, _T(16, 64, 64, 4, 3), _T(16, 64, 64, 4, 3))

for _arch in ("sm90", "sm80", "sm86"):
    # the dS epilogue holds acc, W, S and the buffer tile at once: 128x128 spills everywhere
    _table("dscores", _arch, ("16bit",) + _FP32, _T(64, 32, 64, 4, 3), _T(128, 64, 64, 8, 3))
    _table("forward", _arch, ("ieee",), _T(64, 64, 32, 8, 2), _T(64, 64, 32, 8, 2))
    _table("dx", _arch, ("ieee",), _T(32, 64, 64, 4, 2), _T(32, 64, 64, 4, 2))
    _table("dscores", _arch, ("ieee",), _T(64, 32, 64, 8, 2), _T(64, 32, 64, 8, 2))
    _table("packed_gemm", _arch, ("ieee",), _T(64, 32, 64, 4, 2), _T(64, 32, 64, 4, 2))
_table("dscores", "sm80", _FP32, _T(64, 32, 64, 4, 3), _T(128, 32, 64, 8, 3))
_table("packed_gemm", "sm90", ("16bit",) + _FP32, _T(64, 32, 128, 4, 3), _T(128, 128, 64, 8, 3))
for _arch in ("sm80", "sm86"):
    _table("packed_gemm", _arch, ("16bit",), _T(128, 32, 128, 8, 3), _T(128, 128, 64, 8, 3))
    _table("packed_gemm", _arch, _FP32, _T(64, 32, 64, 4, 3), _T(128, 64, 32, 8, 3))


_NOMINAL_SMS = {"sm90": 132, "sm80": 108, "sm86": 84, "interpret": 1}  # H100 SXM, A100, A40 / RTX 3090-class
_SMS: dict[int, int] = {}


def nominal_sms(arch: int | None) -> int:
    """SMs assumed for ``arch`` when no device can be asked (compiling ahead of time)."""
    return _NOMINAL_SMS[arch_class(arch)]


def device_sms(device: torch.device) -> int | None:
    """Streaming multiprocessors of a CUDA ``device``; None for the interpreter or under :func:`target_arch`."""
    if _override.get() is not None or device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


def gemm_tiles(kernel: str, arch: int | None, dot: str, batch: int, out: int = 0, sms: int | None = None) -> Tiles:
    """The configuration of ``kernel`` on ``arch`` for ``dot`` operands, a batch of ``batch`` rows and ``out`` output
    rows (N for the forward and packed GEMMs, K for dx; dS tiles the weight and ignores it).

    The large-batch tiles go to batches over 64 rows whose grid (batch tiles × output tiles) still fills two waves
    of ``sms`` multiprocessors (the device's, else the architecture's nominal count): at batch 256 and N = 4096 the
    128×128 forward tiles give 64 CTAs, half an H100 idle on a memory-bound kernel, so the small tiles run there.
    """
    small, large = _GEMM[kernel, arch_class(arch), dot]
    if batch <= _SMALL_BATCH:
        return small
    if kernel == "dscores":  # grid over the weight tiles, the batch is the reduction
        return large
    out_tile = large.block_k if kernel == "dx" else large.block_n
    ctas = -(-batch // large.block_m) * -(-max(out, 1) // out_tile)
    return large if ctas >= 2 * (sms or _NOMINAL_SMS[arch_class(arch)]) else small


def gemm_candidates(kernel: str, arch: int | None, dot: str) -> tuple[Tiles, ...]:
    """Every configuration :func:`gemm_tiles` can return for ``kernel`` on ``arch`` (the AOT gate compiles each)."""
    return tuple(dict.fromkeys(_GEMM[kernel, arch_class(arch), dot]))


def _check_grid(grid: tuple[int, ...]) -> None:
    if not 1 <= len(grid) <= 3 or any(g < 1 for g in grid) or grid[0] > _GRID_X_MAX \
            or any(g > _GRID_YZ_MAX for g in grid[1:]):
        raise ValueError(f"launch grid {grid} exceeds the CUDA limits (x < 2**31, y and z <= 65535)")


def launch(kernel, grid: tuple[int, ...], device: torch.device, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)`` on ``device`` (the current CUDA device is set to it for the launch)."""
    _check_grid(grid)
    if device.type == "cuda":
        with torch.cuda.device(device):
            kernel[grid](*args, **kwargs)
    else:
        kernel[grid](*args, **kwargs)
