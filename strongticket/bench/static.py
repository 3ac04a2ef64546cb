"""Static performance report of the fused edge-popup step: compiled resources and roofline floors, no GPU needed.

    strongticket bench kernels --static [--out DIR]

For each kernel of the fused step (selection over all scores, forward emitting the bit mask, dx from the bits,
dS with the SGD-momentum update in its epilogue) at the benchmark shapes (B, K, N) = (256, 4096, 4096) and
(4096, 4096, 4096), bf16 and fp32 (tf32x3) operands, and for selecting 2^24 scores, the launch the package makes
on an H100 (sm_90) and an A100 (sm_80) is compiled for that target (``strongticket.bench.aot``) and reported with:

    FLOPs, bytes moved (each input read once, each output written once: kernels.md §2), registers per thread,
    shared memory per CTA, CTAs per SM (the smallest of the register, shared-memory, thread and block limits),
    CTAs, waves (CTAs / (SMs · CTAs per SM)), roofline floor = max(FLOPs / peak, bytes / bandwidth),

and the measured median time beside it when a CUDA GPU is present ("not measured" otherwise). Peaks are the
datasheet figures below (dense tensor-core rates; tf32x3 costs three TF32 products). The original way
(allenai/hidden-networks: full sort + two scatters for the mask, W ⊙ M materialised, autograd's elementwise
products, torch.optim.SGD, 3 cuBLAS GEMMs; PyTorch runs fp32 GEMMs without TF32 by default) is modelled by the
same floors over its dataflow (kernels.md §2 (a): 220 B per weight of elementwise traffic + the GEMMs); the
predicted speedup is the ratio of the two floors. Floors are lower bounds: real kernels reach a fraction of them,
the original way's sort usually a smaller one than our kernels — measure on a GPU (``bench kernels``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CARDS", "main"]


@dataclass(frozen=True)
class Card:
    name: str
    arch: int
    sms: int
    bandwidth: float  # HBM bytes/s
    bf16: float  # dense tensor-core FLOP/s
    tf32: float
    fp32: float  # FMA units
    shared_per_sm: int  # bytes usable by CTAs
    regs_per_sm: int = 65536
    threads_per_sm: int = 2048
    ctas_per_sm: int = 32


# Datasheet figures (NVIDIA H100 SXM5, A100 SXM4 80 GB).
CARDS = (
    Card("H100 SXM", 90, 132, 3.35e12, 989e12, 495e12, 67e12, 228 * 1024),
    Card("A100 SXM 80GB", 80, 108, 2.04e12, 312e12, 156e12, 19.5e12, 164 * 1024),
)
SHAPES = ((256, 4096, 4096), (4096, 4096, 4096))
SELECT_N = 2**24
_ORIGINAL_ELEMENTWISE = 220  # B per weight: sort mask 164 + W*M 12 + MulBackward 12 + AbsBackward 12 + SGD 20


def _occupancy(card: Card, row: dict) -> int:
    warps = row["config"]["num_warps"]
    regs = max(row["registers"] or 1, 1)
    by_regs = card.regs_per_sm // (math.ceil(regs * 32 / 256) * 256 * warps)  # per-warp allocation unit: 256
    by_threads = card.threads_per_sm // (32 * warps)
    by_shared = card.shared_per_sm // (row["shared_bytes"] + 1024) if row["shared_bytes"] else card.ctas_per_sm
    return max(0, min(card.ctas_per_sm, by_regs, by_threads, by_shared))


def _step_launches(shape: tuple[int, int, int], dtype):
    """Driver issuing the fused step's launches (meta tensors) and the per-kernel (FLOPs, bytes) of each."""
    import torch

    from .. import masks, ops

    ml, sel = ops._kernels("masked_linear"), ops._kernels("select")
    B, K, N = shape
    e = 2 if dtype == torch.bfloat16 else 4
    nk = N * K
    model = {
        "select": (0, 16 * nk),  # four passes read |S| (the tie pass reads nothing for continuous scores)
        "forward": (2 * B * N * K, (e + 4 + 0.125) * nk + e * (B * K + B * N)),
        "dx": (2 * B * N * K, (e + 0.125) * nk + e * (B * N + B * K)),
        "dscores+sgd": (2 * B * N * K, (e + 16) * nk + e * (B * N + B * K)),
    }

    def driver():
        from .aot import _call

        t = lambda *s, dt=torch.float32: torch.empty(s, dtype=dt, device="meta")  # noqa: E731
        x, w, dy, s, buf = t(B, K, dt=dtype), t(N, K, dt=dtype), t(B, N, dt=dtype), t(N, K), t(N, K)
        plan = sel.make_select_plan([nk], [masks.keep_count(0.5, nk)], device="meta")
        _call("select", sel.select_thresholds, [s], plan)
        thr = t(2, dt=torch.int64)
        _call("forward", ml.masked_linear_forward, x, w, scores=s, threshold=thr, write_bits=True)
        _call("dx", ml.masked_linear_dx, dy, w, mask=t(N, K // 32, dt=torch.int32))
        _call("dscores+sgd", ml.masked_linear_dscores, dy, x, w, s, write_grad=False, lr=0.1, momentum=0.9,
              momentum_buffer=buf)

    return driver, model


def _measure(shape: tuple[int, int, int], dtype) -> dict[str, float]:
    """Median µs of each fused-step kernel and of the whole step on the current CUDA GPU (do_bench, cold L2)."""
    import torch
    import triton.testing

    from .. import masks, ops

    ml, sel = ops._kernels("masked_linear"), ops._kernels("select")
    B, K, N = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    x, dy = (torch.randn(r, c, generator=g, device="cuda").to(dtype) for r, c in ((B, K), (B, N)))
    w = (torch.randn(N, K, generator=g, device="cuda") / K**0.5).to(dtype)
    s, buf = torch.randn(N, K, generator=g, device="cuda"), torch.zeros(N, K, device="cuda")
    plan = sel.make_select_plan([N * K], [masks.keep_count(0.5, N * K)], device="cuda")
    thr = sel.select_thresholds([s], plan)[0]
    _, bits = ml.masked_linear_forward(x, w, scores=s, threshold=thr, write_bits=True)
    ops_ = {
        "select": lambda: sel.select_thresholds([s], plan),
        "forward": lambda: ml.masked_linear_forward(x, w, scores=s, threshold=thr, write_bits=True),
        "dx": lambda: ml.masked_linear_dx(dy, w, mask=bits),
        "dscores+sgd": lambda: ml.masked_linear_dscores(dy, x, w, s, write_grad=False, lr=1e-6, momentum=0.9,
                                                        momentum_buffer=buf),
    }
    ops_["step"] = lambda: [fn() for fn in list(ops_.values())[:4]]
    return {op: 1e3 * _median_ms(triton.testing.do_bench(fn, warmup=10, rep=50, quantiles=[0.5]))
            for op, fn in ops_.items()}


def _median_ms(result) -> float:
    """do_bench's answer for one quantile: a list in Triton 3.9, a bare float in 3.6 (seen on an H200)."""
    return float(result[0] if isinstance(result, (list, tuple)) else result)


def _rows(card: Card) -> list[dict]:
    import torch

    from . import aot

    here = None
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        here = 10 * major + minor
    rows = []
    cases = [(shape, dtype) for shape in SHAPES for dtype in (torch.bfloat16, torch.float32)]
    captured = {case: aot.capture(card.arch, _step_launches(*case)[0]) for case in cases}
    jobs = [(launch, card.arch) for case in cases for launch in captured[case]]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        done = dict(zip([launch.key() for launch, _ in jobs], pool.map(aot._compile_job, jobs)))
    for shape, dtype in cases:
        _, model = _step_launches(shape, dtype)
        launches = captured[shape, dtype]
        compiled = [done[launch.key()] for launch in launches]
        measured = _measure(shape, dtype) if here == card.arch else {}
        label = f"{card.name} (measured: {torch.cuda.get_device_name()})" if measured else card.name
        dname = "bf16" if dtype == torch.bfloat16 else "fp32"
        peak = card.bf16 if dtype == torch.bfloat16 else card.tf32 / 3  # tf32x3: three TF32 products
        for op in ("select", "forward", "dx", "dscores+sgd"):
            mine = [(launch, r) for launch, r in zip(launches, compiled) if launch.launcher == op]
            flops, nbytes = model[op]
            ctas = sum(math.prod(launch.grid) for launch, _ in mine)
            occupancy = min(_occupancy(card, r) for _, r in mine)
            floor = max(flops / peak, nbytes / card.bandwidth) * 1e6
            rows.append({
                "card": label, "shape": "x".join(map(str, shape)), "dtype": dname, "op": op,
                "kernels": len(mine), "flops": flops, "bytes": nbytes,
                "registers": max(r["registers"] or 0 for _, r in mine),
                "shared_kib": max(r["shared_bytes"] for _, r in mine) / 1024,
                "spill_bytes": sum(r["spill_bytes"] for _, r in mine),
                "tiles": "; ".join(sorted({_tiles(r["config"]) for _, r in mine})),
                "ctas": ctas, "ctas_per_sm": occupancy,
                "waves": ctas / (card.sms * occupancy) if occupancy else float("inf"),
                "floor_us": floor, "measured_us": measured.get(op),
            })
        B, K, N = shape
        nk = N * K
        fused = sum(r["floor_us"] for r in rows[-4:])
        gemm_peak = card.bf16 if dtype == torch.bfloat16 else card.fp32  # PyTorch's fp32 GEMMs: no TF32
        gemm = 3 * max(2 * B * N * K / gemm_peak, 4 * nk / card.bandwidth) * 1e6
        original = _ORIGINAL_ELEMENTWISE * nk / card.bandwidth * 1e6 + gemm
        rows.append({"card": label, "shape": "x".join(map(str, shape)), "dtype": dname, "op": "step",
                     "kernels": 4 + 3, "flops": 6 * B * N * K, "bytes": None, "registers": None, "shared_kib": None,
                     "spill_bytes": None, "tiles": "", "ctas": None, "ctas_per_sm": None, "waves": None,
                     "floor_us": fused, "original_floor_us": original, "predicted_speedup": original / fused,
                     "measured_us": measured.get("step")})
    return rows


def _tiles(config: dict) -> str:
    keys = [k for k in ("BLOCK_N", "BLOCK_M", "BLOCK_K", "BLOCK") if k in config]
    return "/".join(str(config[k]) for k in keys) + f" w{config['num_warps']} s{config['num_stages']}"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="strongticket bench kernels --static", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for static_report.csv")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        from .aot import reexec_without_interpreter

        return reexec_without_interpreter("strongticket.bench.static", list(argv if argv is not None else []))
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    rows = [row for card in CARDS for row in _rows(card)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    with open(out / "static_report.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    head = ("card", "shape (B,K,N)", "dtype", "op", "GFLOP", "MB moved", "regs", "smem KiB", "spill B", "tiles",
            "CTAs", "CTAs/SM", "waves", "floor µs", "measured µs")
    lines = [head]
    measured = lambda r: "not measured" if r["measured_us"] is None else f"{r['measured_us']:.1f}"  # noqa: E731
    for r in rows:
        if r["op"] == "step":
            lines.append((r["card"], r["shape"], r["dtype"], "step (fused)", f"{r['flops'] / 1e9:.1f}", "", "", "",
                          "", f"original floor {r['original_floor_us']:.0f} µs", "", "",
                          f"predicted {r['predicted_speedup']:.1f}x", f"{r['floor_us']:.1f}", measured(r)))
            continue
        lines.append((r["card"], r["shape"], r["dtype"], r["op"], f"{r['flops'] / 1e9:.1f}",
                      f"{r['bytes'] / 1e6:.1f}", str(r["registers"]), f"{r['shared_kib']:.1f}", str(r["spill_bytes"]),
                      r["tiles"], str(r["ctas"]), str(r["ctas_per_sm"]), _fmt(r["waves"], ".2f"),
                      f"{r['floor_us']:.1f}", measured(r)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print(f"wrote {out / 'static_report.csv'}; floors from datasheet peaks ({', '.join(c.name for c in CARDS)}); "
          f"measured: the median of do_bench (cold L2) on this machine's GPU when it is one of these cards")
    return 0
