"""The masked search step on the CPU against a dense training step of the same shapes and the original sort way.

  ours       strongticket's MLP (edge-popup, density 0.5, signed constant) with ``optim.ScoreSGD``, as a search
             runs it: windowed selection, cached W ⊙ M, ``ops.premasked_linear``, the SGD step in the backward pass
  ours-numpy the same with STRONGTICKET_CPU_KERNELS=0: numpy and torch ops instead of the compiled loops
  dense      nn.Linear layers (no bias) trained by torch.optim.SGD: what the step costs without masks (the floor)
  original   allenai/hidden-networks' SupermaskConv applied to linear layers: sort |S| each forward, W * M,
             straight-through, torch.optim.SGD on the scores

Same data, batch, lr 0.2, momentum 0.9; the providers alternate step by step in one process (medians of the
per-step wall times), at each thread count (``torch.set_num_threads``). Reported as ratios to dense. Then where
the time of our step goes: selection and W ⊙ M, forward, backward (with the SGD step), optimizer bookkeeping.

    strongticket bench cpu [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models import MLP
from ..nn import masked_layers
from ..ops import _cpu
from ..optim import ScoreSGD
from .kernels import _GetSubnet

NETWORKS = {"lenet-300-100": (300, 100), "784-1024-1024-10": (1024, 1024)}
BATCHES, THREADS = (64, 256), (1, 2)
DENSITY, LR, MOMENTUM = 0.5, 0.2, 0.9
PROVIDERS = ("ours", "ours-numpy", "dense", "original")


class _OriginalLinear(nn.Module):
    """hidden-networks' masked layer (SupermaskConv, as a linear layer): the mask from a full sort every forward."""

    def __init__(self, weight: torch.Tensor, scores: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.scores = nn.Parameter(scores.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        subnet = _GetSubnet.apply(self.scores.abs(), DENSITY)
        return F.linear(x, self.weight * subnet)


def _models(widths: tuple[int, ...]) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    ours = MLP((1, 28, 28), 10, widths, density=DENSITY)
    numpy_route = MLP((1, 28, 28), 10, widths, density=DENSITY)
    layers = masked_layers(ours)
    dense = nn.Sequential(nn.Flatten(), *[m for layer in layers for m in (
        nn.Linear(layer.in_features, layer.out_features, bias=False), nn.ReLU())][:-1])
    original = nn.Sequential(nn.Flatten(), *[m for layer in layers for m in (
        _OriginalLinear(layer.weight, layer.scores.detach()), nn.ReLU())][:-1])

    def trained(model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    return {
        "ours": (ours, ScoreSGD(trained(ours), lr=LR, momentum=MOMENTUM)),
        "ours-numpy": (numpy_route, ScoreSGD(trained(numpy_route), lr=LR, momentum=MOMENTUM)),
        "dense": (dense, torch.optim.SGD(dense.parameters(), lr=LR, momentum=MOMENTUM)),
        "original": (original, torch.optim.SGD(trained(original), lr=LR, momentum=MOMENTUM)),
    }


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class _NumpyRoute:
    """STRONGTICKET_CPU_KERNELS=0 for the duration of a step."""

    def __enter__(self) -> None:
        self.before = os.environ.get("STRONGTICKET_CPU_KERNELS")
        os.environ["STRONGTICKET_CPU_KERNELS"] = "0"

    def __exit__(self, *exc: object) -> None:
        if self.before is None:
            del os.environ["STRONGTICKET_CPU_KERNELS"]
        else:
            os.environ["STRONGTICKET_CPU_KERNELS"] = self.before


def _compare(widths: tuple[int, ...], batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Median ms per step of every provider, alternating step by step on the same batches."""
    g = torch.Generator().manual_seed(batch)
    data = [(torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(8)]
    models = _models(widths)
    times: dict[str, list[float]] = {p: [] for p in PROVIDERS}
    for i in range(warmup + steps):
        x, y = data[i % len(data)]
        for name in PROVIDERS:
            model, opt = models[name]
            with _NumpyRoute() if name == "ours-numpy" else contextlib.nullcontext():
                t0 = time.perf_counter()
                _step(model, opt, x, y)
                elapsed = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(elapsed * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _phases(widths: tuple[int, ...], batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Where our step goes, median ms per phase: selection + W ⊙ M (every layer's, before the forward),
    forward, backward (the SGD step runs in it), optimizer (zero_grad + step)."""
    model, opt = _models(widths)["ours"]
    layers = masked_layers(model)
    g = torch.Generator().manual_seed(batch + 1)
    x, y = torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g)
    parts: dict[str, list[float]] = {"selection + W⊙M": [], "forward": [], "backward + SGD": [], "optimizer": []}
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        for layer in layers:
            layer._premasked_weight(torch.float32)
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if i >= warmup:
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t4 - t3, (t3 - t2) + (t5 - t4))):
                parts[key].append(dt * 1e3)
    return {key: statistics.median(v) for key, v in parts.items()}


def run(quick: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    steps, warmup = (20, 5) if quick else (80, 15)
    batches, threads = ((64,), (1,)) if quick else (BATCHES, THREADS)
    rows = []
    before = torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for name, widths in NETWORKS.items():
                for batch in batches:
                    ms = _compare(widths, batch, steps, warmup)
                    row = {"network": name, "batch": batch, "threads": n_threads, "ms": ms,
                           "ours_vs_dense": ms["ours"] / ms["dense"],
                           "numpy_vs_dense": ms["ours-numpy"] / ms["dense"],
                           "original_vs_ours": ms["original"] / ms["ours"],
                           "phases": _phases(widths, batch, max(steps // 2, 10), warmup)}
                    rows.append(row)
                    log(_line(row))
    finally:
        torch.set_num_threads(before)
    return rows


def _line(r: dict) -> str:
    ms = r["ms"]
    return (f"| {r['network']} | {r['batch']} | {r['threads']} | {ms['ours']:.2f} | {ms['dense']:.2f} | "
            f"**{r['ours_vs_dense']:.2f}×** | {ms['ours-numpy']:.2f} ({r['numpy_vs_dense']:.2f}×) | "
            f"{ms['original']:.2f} ({r['original_vs_ours']:.1f}× ours) | "
            + " / ".join(f"{v:.2f}" for v in r["phases"].values()) + " |")


HEADER = ("| network | batch | threads | ours ms | dense ms | ours / dense | ours-numpy ms (/ dense) | original ms "
          "(/ ours) | ours: selection+W⊙M / forward / backward+SGD / optimizer ms |\n"
          "|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="strongticket bench cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 64, 1 thread, fewer steps (a smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, compiled CPU loops: {'yes' if _cpu.available() else 'no (numpy route)'}, "
          f"{os.cpu_count()} CPUs")
    print(HEADER)
    rows = run(quick=args.quick)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
