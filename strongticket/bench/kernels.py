"""Fused Triton edge-popup kernels vs the original way and vs our PyTorch reference (GPU; CPU smoke mode).

    strongticket bench kernels [--quick] [--out DIR] [--budget-s 400]
    TRITON_INTERPRET=1 strongticket bench kernels --cpu-smoke --out /tmp/bench   # tiny shapes, CPU
    python benchmarks/bench_kernels.py ...   # the same from a source tree that is not installed (the GPU check)

Providers, for a Linear layer x (B, K), W, S (N, K), SGD momentum on S:
  original   allenai/hidden-networks: sort all |S|, two scatters (GetSubnet, straight-through), W * M, F.linear,
             autograd (materialises W⊙M and dyᵀx), torch.optim.SGD. W fp32; x, dy in the variant's dtype.
  reference  strongticket's PyTorch path: masks.topk_mask (radix select) + ops.masked_linear, torch.optim.SGD.
  fused      kernels.select (τ on device) + fused forward (mask from |S| >= τ in registers, emits bit mask) +
             dx from the bit mask + dS GEMM with ⊙W⊙sign(S) and the SGD-momentum update in its epilogue.
             W stored in the variant's dtype (bf16 W is format (b) of shared/reference/kernels.md §2). Dots: bf16
             tensor cores; fp32 through tensor cores as tf32x3 (fp32-level error, the kernels' default), against
             the original's fp32 cuBLAS GEMMs without TF32 (PyTorch's default). Tiles: kernels.tiles' choice.
  materialize  the same selection; W ⊙ M written once (kernels.mask_apply from the bit mask) in the variant's
             dtype and multiplied by cuBLAS (F.linear, dy @ W⊙M, G = dyᵀx in fp32); dS / the SGD step in one
             elementwise pass over G (kernels.mask_apply.score_grad). The ops' path on CUDA (STRONGTICKET_GEMM).
Ops: ``fwd`` (mask + forward), ``step`` (mask + forward + backward + optimizer), ``select`` (τ and mask over
2^24 scores). Shapes (B, K, N) = (256, 4096, 4096), (4096, 4096, 4096), (256, 1024, 1024); densities 0.5, 0.05;
fp32 and bf16 (fp32 floors use the measured fp32 mm rate, TF32 off: the fused tf32x3 path may beat them).
Timing: triton.testing.do_bench, median and p20-p80 (cold L2: do_bench clears it before every rep). Floors:
max(FLOPs / measured mm rate, counted bytes / measured copy bandwidth); counted bytes follow kernels.md §2 (each
input once, each output once). Max rel err: max |out - float64 reference| / max |reference| over y, dx, dS of
one fwd + bwd. The table is printed last; CSV
(and a PNG when matplotlib imports) go to ``--out`` (default $OUT, else the working directory).

Weightless section (``--weightless`` runs only it, into ``bench_weightless.csv``; the full run appends it when
budget is left): op ``infer`` at batch 1, 16, 256 and K = N = 4096, 8192 (signed-constant ticket, density 0.5):
``cublas-dense`` (F.linear on the baked W ⊙ M in bf16), ``packed-2bit`` (sign + keep bits, kernels.packed_gemm),
``packed-seed`` (keep bits, signs from Philox in-kernel); ``cold`` = do_bench (L2 flushed), ``graph`` =
do_bench_cudagraph for batch 1 (no launch overhead, warm L2: a 4096² bf16 matrix fits the 50 MB L2).
Speedup column = cuBLAS time / this time. Op ``wstep`` at (256, 4096, 4096): the fused step (select + fwd + dx
+ dS/SGD) with a stored bf16 W vs the seeded step (kernels.seeded, W regenerated, bf16 rounding); rel err 0 means
y, dx and the updated scores equal the stored-weight step bit for bit. Speedup = stored / seeded.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import masks, ops
from ..ops._common import _grad_weight
from ..random import sign_bits as _sign_bits
from ..random import stream_seed as _stream_seed

# installed: strongticket.kernels; a source tree on the path: the kernels/ folder beside the package
ml, pg, sd, sel, ma = (ops._kernels(name)
                       for name in ("masked_linear", "packed_gemm", "seeded", "select", "mask_apply"))

SHAPES = [(256, 4096, 4096), (4096, 4096, 4096), (256, 1024, 1024)]
SMOKE_SHAPES = [(16, 64, 48), (33, 40, 24)]
DENSITIES = [0.5, 0.05]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LR, MOMENTUM = 0.1, 0.9
PROVIDERS = ("original", "reference", "fused", "materialize")
_ON_DEVICE = ("fused", "materialize")  # selection on the device, SGD fused into the backward pass
# On a GPU every kernel takes the tiles kernels.tiles chooses for it (those the AOT gate compiles and checks).
_GPU_TILES = {"fwd": {}, "dx": {}, "ds": {}, "select": dict(block=4096)}
WEIGHTLESS_SIZES, WEIGHTLESS_BATCHES, WSTEP_SHAPES = [4096, 8192], [1, 16, 256], [(256, 4096, 4096)]
SMOKE_WEIGHTLESS_SIZES, SMOKE_WEIGHTLESS_BATCHES, SMOKE_WSTEP_SHAPES = [160], [1, 16, 33], [(16, 64, 48)]


class _GetSubnet(torch.autograd.Function):
    """hidden-networks GetSubnet: sort |S|, zero the lowest ⌊(1 - d)·n⌋, one the rest; straight-through grad."""

    @staticmethod
    def forward(ctx, scores_abs, density):
        out = scores_abs.clone()
        _, idx = scores_abs.flatten().sort()
        j = int((1 - density) * scores_abs.numel())
        flat = out.flatten()
        flat[idx[:j]] = 0
        flat[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx, g):
        return g, None


def _timer(device: str, quick: bool) -> Callable[[Callable[[], object]], tuple[float, float, float]]:
    """fn -> (median, p20, p80) in µs: do_bench on CUDA, perf_counter samples on the CPU."""
    if device == "cuda":
        import triton.testing

        warmup, rep = (10, 40) if quick else (25, 100)

        def bench(fn):
            med, p20, p80 = triton.testing.do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8])
            return med * 1e3, p20 * 1e3, p80 * 1e3

        return bench

    def bench_cpu(fn):
        fn()
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e6)
        samples.sort()
        return statistics.median(samples), samples[0], samples[-1]

    return bench_cpu


def _ceilings(device: str, quick: bool, bench) -> dict[str, float]:
    """Measured copy bandwidth (B/s) and bf16 GEMM rate (FLOP/s); nominal H100 figures on the CPU."""
    if device != "cuda":
        return {"bw": 3.0e12, "tc": 8.0e14, "tc_fp32": 6.7e13, "note": "nominal H100 (CPU smoke run)"}
    src = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    copy_us = bench(lambda: dst.copy_(src))[0]
    n = 4096 if quick else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    mm_us = [bench(lambda: a @ b)[0] for _ in range(2)]
    a32, b32 = a.float()[:4096, :4096], b.float()[:4096, :4096]
    mm32_us = bench(lambda: a32 @ b32)[0]
    return {"bw": 2 * 2**30 / (copy_us * 1e-6), "tc": 2 * n**3 / (min(mm_us) * 1e-6),
            "tc_fp32": 2 * 4096**3 / (mm32_us * 1e-6),
            "note": f"bf16 mm {n}^3 runs {mm_us[0]:.0f} / {mm_us[1]:.0f} µs (spread = noise floor)"}


def _make(shape, density, dtype, device, seed=0):
    B, K, N = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K, generator=g).to(device=device, dtype=dtype)
    dy = torch.randn(B, N, generator=g).to(device=device, dtype=dtype)
    w = (torch.randn(N, K, generator=g) / math.sqrt(K)).to(device)
    s = torch.randn(N, K, generator=g).to(device)
    return x, dy, w, s, masks.keep_count(density, N * K)


class _Providers:
    """One-step closures per provider over the same inputs (each owns its copy of the scores)."""

    def __init__(self, shape, density, dtype, device, tiles):
        self.x, self.dy, self.w32, s, self.k = _make(shape, density, dtype, device)
        self.density, self.dtype, self.tiles = density, dtype, tiles
        self.w_fused = self.w32.to(dtype)
        self.s = {p: s.clone().requires_grad_(p not in _ON_DEVICE) for p in PROVIDERS}
        self.opt = {p: torch.optim.SGD([self.s[p]], lr=LR, momentum=MOMENTUM) for p in ("original", "reference")}
        self.buf = torch.zeros_like(s)
        self.buf_m = torch.zeros_like(s)
        self.plan = sel.make_select_plan([s.numel()], [self.k], device=device, **tiles.get("select", {}))
        self.precision = None  # the kernels' default: bf16 tensor cores, tf32x3 for fp32

    # -- forward + backward of each provider: returns (y, dx, dS) --------------------------------------------
    def original(self, backward=True):
        s = self.s["original"]
        x = self.x.detach().requires_grad_(backward)
        w = self.w32 * _GetSubnet.apply(s.abs(), self.density)
        y = F.linear(x, w.to(self.dtype))
        if not backward:
            return y, None, None
        y.backward(self.dy)
        return y, x.grad, s.grad

    def reference(self, backward=True):
        s = self.s["reference"]
        x = self.x.detach().requires_grad_(backward)
        mask = masks.topk_mask(s.detach(), self.k)
        y = ops.masked_linear(x, self.w32, s, mask, None)
        if not backward:
            return y, None, None
        y.backward(self.dy)
        return y, x.grad, s.grad

    def fused(self, backward=True, sgd=False):
        s = self.s["fused"]
        thr = sel.select_thresholds([s], self.plan)[0]
        y, bits = ml.masked_linear_forward(self.x, self.w_fused, scores=s, threshold=thr, write_bits=True,
                                           input_precision=self.precision, **self.tiles["fwd"])
        if not backward:
            return y, None, None
        dx = ml.masked_linear_dx(self.dy, self.w_fused, mask=bits, input_precision=self.precision,
                                 **self.tiles["dx"])
        if sgd:
            ml.masked_linear_dscores(self.dy, self.x, self.w_fused, s, write_grad=False, lr=LR,
                                     momentum_buffer=self.buf, momentum=MOMENTUM, input_precision=self.precision,
                                     **self.tiles["ds"])
            return y, dx, None
        ds = ml.masked_linear_dscores(self.dy, self.x, self.w_fused, s, input_precision=self.precision,
                                      **self.tiles["ds"])
        return y, dx, ds

    def materialize(self, backward=True, sgd=False):
        """The ops' ``materialize`` path: the same selection, W ⊙ M written in the variant's dtype, cuBLAS GEMMs,
        dS / the SGD step in one elementwise pass over G = dyᵀx (fp32)."""
        s = self.s["materialize"]
        thr = sel.select_thresholds([s], self.plan)[0]
        _, bits = sel.threshold_mask(s, thr, want_mask=False, want_bits=True)
        y = F.linear(self.x, ma.mask_apply(self.w_fused, mask=bits, dtype=self.dtype))
        if not backward:
            return y, None, None
        dx = self.dy @ ma.mask_apply(self.w_fused, mask=bits, dtype=self.dtype)  # from the bits, as the ops do
        g = _grad_weight(self.dy, self.x)
        if sgd:
            ma.score_grad(g, self.w_fused, s, write_grad=False, lr=LR, momentum_buffer=self.buf_m, momentum=MOMENTUM)
            return y, dx, None
        return y, dx, ma.score_grad(g, self.w_fused, s)

    def step(self, provider):
        if provider in _ON_DEVICE:
            return lambda: getattr(self, provider)(sgd=True)

        def run():
            getattr(self, provider)()
            self.opt[provider].step()
            self.opt[provider].zero_grad(set_to_none=True)

        return run

    def rel_err(self, provider) -> float:
        """max |out − float64| / max |float64| over y, dx, dS of one fwd + bwd (before any optimizer step)."""
        with torch.no_grad():
            s = self.s[provider].detach()
            mask = masks.topk_mask(s, self.k) if provider != "original" else (
                _GetSubnet.apply(s.abs(), self.density) > 0)
            w = (self.w_fused if provider in _ON_DEVICE else self.w32).double()
            x, dy = self.x.double(), self.dy.double()
            ref = (x @ (w * mask).T, dy @ (w * mask), (dy.T @ x) * w * torch.sign(s.double()))
        got = getattr(self, provider)()
        if self.s[provider].grad is not None:
            self.s[provider].grad = None
        return max(float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30))
                   for a, b in zip(got, ref) if a is not None)


def _bytes(op: str, provider: str, shape, dtype) -> float:
    """Counted bytes (kernels.md §2): per weight element, plus activations read/written once per use."""
    B, K, N = shape
    e = 2 if dtype == torch.bfloat16 else 4
    nk = N * K
    # selection: 4 passes over |S| (16 B); materialize: bits (S 4 + 1/8), W ⊙ M (e + 1/8 in, e out), GEMM reads e
    mat = 16 + 4.125 + 2 * e + 0.125 + e
    if op == "fwd":
        per = {"original": 164 + 12 + 4, "reference": 16 + 12 + 4, "fused": e + 4 + 0.125 + 16,
               "materialize": mat}[provider]
        return per * nk + e * (B * K + B * N)
    # step, materialize: + W ⊙ M again for dx (2e + 1/8, GEMM e), G written (4), SGD pass (G, W, S, buf in; S, buf out)
    per = {"original": 232, "reference": 84 + 12, "fused": (e + 4 + 0.125) + (e + 0.125) + (e + 16) + 16,
           "materialize": mat + 3 * e + 0.125 + 4 + (20 + e)}[provider]
    return per * nk + 3 * e * (B * K + B * N)


def _row(op, shape, variant, t, flops, nbytes, ceil, err, dtype):
    med, p20, p80 = t
    tc = ceil["tc"] if dtype == torch.bfloat16 else ceil["tc_fp32"]
    floor = max(flops / tc, nbytes / ceil["bw"]) * 1e6
    return {"op": op, "shape": "x".join(map(str, shape)), "variant": variant, "median_us": med, "p20_us": p20,
            "p80_us": p80, "tflops": flops / (med * 1e-6) / 1e12, "gbps": nbytes / (med * 1e-6) / 1e9,
            "floor_us": floor, "pct_floor": 100 * floor / med, "rel_err": err, "speedup": float("nan")}


def _fill_speedups(rows: list[dict]) -> None:
    base = {}
    for r in rows:
        key = (r["op"], r["shape"], r["variant"].split("/", 1)[1])
        if r["variant"].startswith("original/"):
            base[key] = r["median_us"]
    for r in rows:
        key = (r["op"], r["shape"], r["variant"].split("/", 1)[1])
        if key in base:
            r["speedup"] = base[key] / r["median_us"]


def _print_table(rows: list[dict]) -> None:
    head = ("op", "shape (B,K,N)", "variant", "median µs", "p20-p80 µs", "TFLOP/s", "GB/s", "floor µs",
            "% of floor", "max rel err", "speedup vs original")
    lines = [head]
    for r in rows:
        spread = f"{r['p20_us']:.1f}-{r['p80_us']:.1f}"
        lines.append((r["op"], r["shape"], r["variant"], f"{r['median_us']:.1f}", spread,
                      f"{r['tflops']:.2f}", f"{r['gbps']:.1f}", f"{r['floor_us']:.1f}", f"{r['pct_floor']:.1f}",
                      f"{r['rel_err']:.1e}", f"{r['speedup']:.2f}x"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not importable: no plot")
        return
    steps = [r for r in rows if r["op"] == "step" and not r["variant"].startswith("original/")]
    if not steps:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(steps)), 4))
    ax.bar(range(len(steps)), [r["speedup"] for r in steps],
           color=[{"fused": "tab:green", "materialize": "tab:orange"}.get(r["variant"].split("/")[0], "tab:blue")
                  for r in steps])
    ax.set_xticks(range(len(steps)), [f"{r['shape']}\n{r['variant']}" for r in steps], rotation=90, fontsize=6)
    ax.set_ylabel("whole-step speedup vs original")
    ax.axhline(1, color="gray", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _packed_tiles(batch: int, smoke: bool) -> dict:
    """Small tiles for the interpreter smoke run; on a GPU the launcher's own dispatch."""
    if smoke:
        return dict(gemv_block_n=16, gemv_block_k=64, block_n=32, block_m=16, block_k=64)
    return {}  # the GEMV below 16 rows, then the tiles kernels.tiles chooses for the GPU (the ones the AOT gate checks)


def _weightless_rows(device: str, smoke: bool, bench, ceil: dict, t_start: float, budget_s: float,
                     skipped: list) -> list[dict]:
    """Packed/seeded inference vs cuBLAS on the baked bf16 weight, and the seeded vs stored fused step."""
    import triton.testing

    rows: list[dict] = []
    sizes = SMOKE_WEIGHTLESS_SIZES if smoke else WEIGHTLESS_SIZES
    batches = SMOKE_WEIGHTLESS_BATCHES if smoke else WEIGHTLESS_BATCHES
    bf16 = torch.bfloat16
    for size in sizes:
        n = k = size
        neg = torch.from_numpy(_sign_bits(1, 0, 0, n, k))
        g = torch.Generator().manual_seed(size)
        mask = torch.rand(n, k, generator=g) < 0.5
        scale = 1.0 / math.sqrt(k)
        w_ref = torch.where(mask, torch.where(neg, -scale, scale), 0.0).to(device)  # fp32, exact ±c / 0
        baked = w_ref.to(bf16)  # what bake + .to(bf16) gives: the cuBLAS baseline's weight
        sign_w, mask_w = ops.pack_bits(neg).to(device), ops.pack_bits(mask).to(device)
        stream = _stream_seed(1, 0)
        del neg, mask
        for batch in batches:
            if time.perf_counter() - t_start > budget_s:
                skipped.append(("infer", batch, size))
                continue
            x = torch.randn(batch, k, generator=g).to(device=device, dtype=bf16)
            ref = x.double() @ w_ref.double().T
            tiles = _packed_tiles(batch, smoke)
            kw = dict(mask_bits=mask_w, scale=scale, **tiles)
            cases = {
                "cublas-dense": (lambda x=x, w=baked: F.linear(x, w), 2 * n * k),
                "packed-2bit": (lambda x=x, kw=kw, sw=sign_w: pg.packed_linear(x, sign_bits=sw, **kw), 0.25 * n * k),
                "packed-seed": (lambda x=x, kw=kw, st=stream: pg.packed_linear(x, seed=st, **kw), 0.125 * n * k),
            }
            shape = (batch, k, n)
            timers = [("cold", bench)]
            if batch == 1 and device == "cuda":
                timers.append(("graph", lambda fn: tuple(1e3 * v for v in triton.testing.do_bench_cudagraph(
                    fn, rep=20 if smoke else 50, quantiles=[0.5, 0.2, 0.8]))))
            for timer_name, timer in timers:
                base = None
                for name, (fn, wbytes) in cases.items():
                    y = fn()
                    err = float((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
                    t = timer(fn)
                    row = _row("infer", shape, f"{name}/bf16/{timer_name}", t, 2 * batch * n * k,
                               wbytes + 2 * (batch * k + batch * n), ceil, err, bf16)
                    base = row["median_us"] if name == "cublas-dense" else base
                    row["speedup"] = base / row["median_us"]
                    rows.append(row)
    tiles = ({"fwd": dict(block_n=32, block_m=16, block_k=64), "dx": dict(block_k=32, block_m=16, block_n=32),
              "ds": dict(block_n=32, block_k=32, block_m=16), "select": dict(block=256)} if smoke else
             _GPU_TILES)
    for shape in SMOKE_WSTEP_SHAPES if smoke else WSTEP_SHAPES:
        if time.perf_counter() - t_start > budget_s:
            skipped.append(("wstep", shape))
            continue
        rows.extend(_wstep_rows(shape, device, tiles, bench, ceil))
    return rows


def _wstep_rows(shape, device: str, tiles: dict, bench, ceil: dict) -> list[dict]:
    """Fused edge-popup step with a stored bf16 W vs the same step with W regenerated from the seed."""
    B, K, N = shape
    bf16 = torch.bfloat16
    g = torch.Generator().manual_seed(7)
    x = torch.randn(B, K, generator=g).to(device=device, dtype=bf16)
    dy = torch.randn(B, N, generator=g).to(device=device, dtype=bf16)
    s0 = torch.randn(N, K, generator=g).to(device)
    scale = math.sqrt(2.0) / math.sqrt(K)
    stream = _stream_seed(2, 0)
    w = torch.where(torch.from_numpy(_sign_bits(2, 0, 0, N, K)), -scale, scale).to(device=device, dtype=bf16)
    k = masks.keep_count(0.5, N * K)
    plan = sel.make_select_plan([N * K], [k], device=device, **tiles["select"])
    state = {p: (s0.clone(), torch.zeros_like(s0)) for p in ("stored", "seeded")}

    def step(p):
        s, buf = state[p]
        thr = sel.select_thresholds([s], plan)[0]
        if p == "stored":
            y, bits = ml.masked_linear_forward(x, w, scores=s, threshold=thr, write_bits=True, **tiles["fwd"])
            dx = ml.masked_linear_dx(dy, w, mask=bits, **tiles["dx"])
            ml.masked_linear_dscores(dy, x, w, s, write_grad=False, lr=LR, momentum_buffer=buf, momentum=MOMENTUM,
                                     **tiles["ds"])
        else:
            y, bits = sd.seeded_linear_forward(x, stream, scale, N, weight_dtype=bf16, scores=s, threshold=thr,
                                               write_bits=True, **tiles["fwd"])
            dx = sd.seeded_linear_dx(dy, stream, scale, K, weight_dtype=bf16, mask=bits, **tiles["dx"])
            sd.seeded_linear_dscores(dy, x, stream, scale, s, weight_dtype=bf16, write_grad=False, lr=LR,
                                     momentum_buffer=buf, momentum=MOMENTUM, **tiles["ds"])
        return y, dx

    outs = {p: step(p) for p in ("stored", "seeded")}
    same = all(torch.equal(a, b) for a, b in zip(outs["stored"], outs["seeded"]))
    same = same and all(torch.equal(a, b) for a, b in zip(state["stored"], state["seeded"]))
    rows = []
    for p, per in (("stored", 2 + 4.125 + 2.125 + 18), ("seeded", 4.125 + 0.125 + 16)):
        t = bench(lambda p=p: step(p))
        rows.append(_row("wstep", shape, f"fused-{p}/bf16/d=0.5", t, 6 * B * N * K,
                         per * N * K + 6 * (B * K + B * N), ceil, 0.0 if same else 1.0, bf16))
    rows[1]["speedup"] = rows[0]["median_us"] / rows[1]["median_us"]
    rows[0]["speedup"] = 1.0
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, 2^24 selection only")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for CSV/PNG (default $OUT)")
    parser.add_argument("--budget-s", type=float, default=400.0, help="skip remaining cases after this many seconds")
    parser.add_argument("--weightless", action="store_true",
                        help="only the weightless section (packed/seeded inference, seeded step)")
    parser.add_argument("--skip-weightless", action="store_true", help="leave the weightless section out")
    parser.add_argument("--static", action="store_true",
                        help="compiled resources and roofline floors of the fused step for H100/A100, no GPU needed "
                             "(strongticket.bench.static)")
    args = parser.parse_args(argv)
    if args.static:
        from . import static

        return static.main(["--out", args.out])
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.cpu_smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--cpu-smoke needs TRITON_INTERPRET=1 in the environment")
        device, shapes, sel_sizes = "cpu", SMOKE_SHAPES, [12]
        tiles = {"fwd": dict(block_n=32, block_m=16, block_k=32), "dx": dict(block_k=32, block_m=16, block_n=32),
                 "ds": dict(block_n=32, block_k=32, block_m=16), "select": dict(block=256)}
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU visible: use --cpu-smoke with TRITON_INTERPRET=1")
        device, shapes, sel_sizes = "cuda", SHAPES, [24] if args.quick else [24, 26]
        tiles = _GPU_TILES
    import triton

    bench = _timer(device, args.quick)
    print(f"torch {torch.__version__}, triton {triton.__version__}, device "
          f"{torch.cuda.get_device_name() if device == 'cuda' else 'cpu (interpreter)'}")
    ceil = _ceilings(device, args.quick, bench)
    print(f"ceilings: copy {ceil['bw'] / 1e12:.2f} TB/s, bf16 mm {ceil['tc'] / 1e12:.0f} TFLOP/s, fp32 mm "
          f"{ceil['tc_fp32'] / 1e12:.0f} TFLOP/s; {ceil['note']}")

    rows: list[dict] = []
    skipped: list = []
    if args.weightless:
        shapes, sel_sizes = [], []
    for shape in shapes:
        for density in DENSITIES:
            for dname, dtype in DTYPES.items():
                if time.perf_counter() - t_start > args.budget_s:
                    skipped.append((shape, density, dname))
                    continue
                p = _Providers(shape, density, dtype, device, tiles)
                B, K, N = shape
                for provider in PROVIDERS:
                    err = p.rel_err(provider)
                    variant = f"{provider}/{dname}/d={density}"
                    t = bench(lambda p=p, pr=provider: getattr(p, pr)(backward=False))
                    rows.append(_row("fwd", shape, variant, t, 2 * B * N * K, _bytes("fwd", provider, shape, dtype),
                                     ceil, err, dtype))
                    t = bench(p.step(provider))
                    rows.append(_row("step", shape, variant, t, 6 * B * N * K, _bytes("step", provider, shape, dtype),
                                     ceil, err, dtype))
                del p
    for log2n in sel_sizes:
        n = 2**log2n
        s = torch.randn(n, device=device)
        for density in DENSITIES:
            k = masks.keep_count(density, n)
            plan = sel.make_select_plan([n], [k], device=device, **tiles["select"])
            want = masks.topk_mask(s, k)
            thr = sel.select_thresholds([s], plan)[0]
            exact = bool(torch.equal(sel.threshold_mask(s, thr)[0], want))
            cases = {
                "original": (lambda s=s, d=density: _GetSubnet.apply(s.abs(), d), 164),
                "reference": (lambda s=s, k=k: masks.topk_mask(s, k), 16),
                "fused": (lambda s=s, plan=plan: sel.threshold_mask(s, sel.select_thresholds([s], plan)[0]), 17),
                "fused-tau-only": (lambda s=s, plan=plan: sel.select_thresholds([s], plan), 12),
            }
            for name, (fn, per) in cases.items():
                t = bench(fn)
                row = _row("select", (n,), f"{name}/fp32/d={density}", t, 0, per * n, ceil, 0.0 if exact else 1.0,
                           torch.float32)
                rows.append(row)
    _fill_speedups(rows)
    if args.weightless or (not args.skip_weightless and time.perf_counter() - t_start < args.budget_s):
        rows.extend(_weightless_rows(device, args.cpu_smoke, bench, ceil, t_start, args.budget_s, skipped))

    csv_path = out / ("bench_weightless.csv" if args.weightless else "bench_kernels.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    if not args.weightless:
        _plot(rows, out / "bench_kernels.png")
    if skipped:
        print(f"time guard ({args.budget_s:.0f} s): skipped {skipped}")
    print(f"wrote {csv_path}; total {time.perf_counter() - t_start:.0f} s; select rel err 0 = mask equals "
          f"strongticket.masks exactly")
    _print_table(rows)
    return 0


if __name__ == "__main__":
    main()
