"""AOT gate: every Triton launch the package can issue, compiled for real NVIDIA targets on a machine without a GPU.

    strongticket bench aot [--arch 80,89,90] [--json FILE] [--jobs N]

The package's own launchers (``kernels.masked_linear``, ``seeded``, ``packed_gemm``, ``mask_apply``, ``select``,
``philox``) are called on ``meta`` tensors under ``kernels.tiles.target_arch(arch)`` while
``JITFunction.run`` records each launch instead of running it: the kernel, its specialisation (argument types,
16-byte divisibility, constants) and its constexprs, num_warps and num_stages — exactly what the JIT would build on
that GPU, tile configuration included. The capture matrix crosses every launcher with the fp32/bf16 operand
dtypes, every mask source (threshold, bit-packed, bool), stored and seeded weights, bias, the fused SGD epilogue,
all three fp32 dot precisions, a small and a large batch (the two tile configurations of each table) and an
aligned and an odd shape. Each distinct launch is compiled with ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", arch, 32))`` — TTIR → TTGIR → LLVM → PTX → cubin with the ptxas in the triton wheel — in
parallel processes, and checked:

    shared memory   ≤ the architecture's per-block limit (sm_80 163 KiB, sm_86/89 99 KiB, sm_90 227 KiB)
    registers       no spill stores or loads (ptxas -v)
    tensor cores    every GEMM (tl.dot) launch has wgmma (sm_90) or mma.sync (sm_80/89) instructions, except with
                    input_precision="ieee", which asks for FMA on purpose
    coverage        every tile configuration the dispatch can choose there (``tiles.gemm_candidates``) is among
                    the captured launches

The exit status is 1 when any launch fails a check (or does not compile), 0 otherwise. ``--json`` writes one
object per (launch, arch): kernel, launcher, config (constexprs, num_warps, num_stages), operands (pointer
argument types), arch, gemm,
shared_bytes, shared_limit, registers, spill_bytes, stack_bytes, tensor_core_instructions, fma_instructions,
compile_s, ok, problems.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

GEMM_KERNELS = ("_forward_kernel", "_dx_kernel", "_dscores_kernel", "_packed_gemm_kernel")
_LAUNCHER = ["?"]  # the package call being recorded (set by _call)


@dataclasses.dataclass(frozen=True)
class Launch:
    """One specialised launch as the JIT would compile it."""

    module: str
    kernel: str
    launcher: str  # the package call that issued it
    signature: tuple  # ((arg name, type), ...)
    constexprs: tuple  # ((path, value), ...)
    attrs: tuple  # ((path, attr), ...)
    options: tuple  # ((name, value), ...) of the backend options
    grid: tuple

    def key(self) -> tuple:
        return self.module, self.kernel, self.signature, self.constexprs, self.attrs, self.options

    def config(self) -> dict:
        """Constexpr arguments by name, with num_warps and num_stages."""
        names = [name for name, _ in self.signature]
        cfg = {names[path[0]]: value for path, value in self.constexprs if len(path) == 1}
        opts = dict(self.options)
        cfg.update(num_warps=opts["num_warps"], num_stages=opts["num_stages"])
        return cfg


def _freeze(value):
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@contextlib.contextmanager
def recording(arch: int) -> Iterator[list[Launch]]:
    """Inside, Triton launches are recorded (specialised for ``arch``), not run; the tile dispatch targets ``arch``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    from .. import ops

    tiles = ops._kernels("tiles")
    backend = make_backend(GPUTarget("cuda", arch, 32))
    launches: list[Launch] = []
    binders: dict[int, Callable] = {}

    def record(self, *args, grid, warmup, **kwargs):
        binder = binders.setdefault(id(self), create_function_from_signature(self.signature, self.params, backend))
        bound_args, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization, options)
        launches.append(Launch(
            self.fn.__module__, self.fn.__name__, _LAUNCHER[0], tuple(signature.items()),
            tuple((k, _freeze(v)) for k, v in constexprs.items()), tuple((k, _freeze(v)) for k, v in attrs.items()),
            tuple((k, _freeze(v)) for k, v in vars(options).items()), tuple(grid)))

    real_run = JITFunction.run
    JITFunction.run = record
    try:
        with tiles.target_arch(arch):
            yield launches
    finally:
        JITFunction.run = real_run


def _call(what: str, fn: Callable, *args, **kwargs) -> None:
    _LAUNCHER[0] = what
    fn(*args, **kwargs)


def exercise() -> None:
    """Every launcher of the package across its constexpr space, on meta tensors (records only).

    Stored-weight GEMMs: fp32 and bf16 operands with every mask source, the mixed dtypes and the other two fp32
    dot precisions with the threshold source (the heaviest loads), a batch in each tile class (small, large), an
    aligned shape and an odd one (no 16-divisible sizes or strides: other specialisations); seeded GEMMs, packed
    GEMV/GEMM, conv helpers, selection and Philox utilities on the aligned shape.
    """
    import torch

    from .. import ops

    ml, sd, pg, ma, sel, ph = (ops._kernels(n) for n in ("masked_linear", "seeded", "packed_gemm", "mask_apply",
                                                          "select", "philox"))
    f32, bf16 = torch.float32, torch.bfloat16

    def t(*shape, dtype=f32):
        return torch.empty(shape, dtype=dtype, device="meta")

    def sources(n, k):
        return {"threshold": dict(scores=t(n, k), threshold=t(2, dtype=torch.int64)),
                "bits": dict(mask=t(n, -(-k // 32), dtype=torch.int32)), "bool": dict(mask=t(n, k, dtype=torch.bool))}

    def stored(m, n, k, x_dt, w_dt, mask_sources, precision=None, dscores=("grad", "sgd")):
        x, w, dy = t(m, k, dtype=x_dt), t(n, k, dtype=w_dt), t(m, n, dtype=x_dt)
        for name, src in sources(n, k).items():
            if name in mask_sources:
                bias = t(n, dtype=x_dt) if name == "bool" else None
                _call(f"masked_linear_forward/{name}", ml.masked_linear_forward, x, w, **src, bias=bias,
                      write_bits=name == "threshold", input_precision=precision)
                _call(f"masked_linear_dx/{name}", ml.masked_linear_dx, dy, w, **src, input_precision=precision)
        if "grad" in dscores:
            _call("masked_linear_dscores", ml.masked_linear_dscores, dy, x, w, t(n, k), input_precision=precision)
        if "sgd" in dscores:
            _call("masked_linear_dscores/sgd", ml.masked_linear_dscores, dy, x, w, t(n, k), write_grad=False, lr=0.1,
                  momentum=0.9, momentum_buffer=t(n, k), weight_decay=5e-4, input_precision=precision)

    every = ("threshold", "bits", "bool")
    n, k = 4096, 4096
    for m in (64, 4096):  # small- and large-batch tiles (at 4096 the large tiles' grid fills every GPU)
        for dt in (f32, bf16):
            stored(m, n, k, dt, dt, every)
        for x_dt, w_dt in ((bf16, f32), (f32, bf16)):
            stored(m, n, k, x_dt, w_dt, ("threshold",))
        for precision in ("tf32", "ieee"):
            stored(m, n, k, f32, f32, ("threshold",), precision, ("grad",))
        for dt in (f32, bf16):
            x, dy = t(m, k, dtype=dt), t(m, n, dtype=dt)
            for name, src in sources(n, k).items():
                if name != "bool":  # seeded layers come with thresholds or bits
                    _call(f"seeded_linear_forward/{name}", sd.seeded_linear_forward, x, 1, 0.01, n, weight_dtype=dt,
                          **src, write_bits=name == "threshold")
                    _call(f"seeded_linear_dx/{name}", sd.seeded_linear_dx, dy, 1, 0.01, k, weight_dtype=dt, **src)
            _call("seeded_linear_dscores/sgd", sd.seeded_linear_dscores, dy, x, 1, 0.01, t(n, k), weight_dtype=dt,
                  write_grad=False, lr=0.1, momentum=0.9, momentum_buffer=t(n, k))
    for m in (33, 100):  # odd shapes (LeNet-300-100's first layer, odd batches)
        for dt in (f32, bf16):
            stored(m, 300, 784, dt, dt, ("threshold", "bool"), dscores=("sgd",))
    bits = t(n, k // 32, dtype=torch.int32)
    for dt in (f32, bf16):
        for m in (1, 16, 4096):  # GEMV below 16 rows, then the small- and large-batch tl.dot tiles
            _call("packed_linear/2bit", pg.packed_linear, t(m, k, dtype=dt), bits, 0.01, sign_bits=bits,
                  bias=t(n, dtype=dt))
            _call("packed_linear/seed", pg.packed_linear, t(m, k, dtype=dt), bits, 0.01, seed=1)
            if dt == f32 and m > 1:
                for precision in ("tf32", "ieee"):
                    _call("packed_linear/seed", pg.packed_linear, t(m, k, dtype=dt), bits, 0.01, seed=1,
                          input_precision=precision)
    # conv helpers, on the weight viewed as (out channels, in channels · kh · kw)
    for w_dt in (f32, bf16):
        cw = t(64, 32, 3, 3, dtype=w_dt)
        for name, src in {"threshold": dict(scores=t(64, 32, 3, 3), threshold=t(2, dtype=torch.int64)),
                          "bits": dict(mask=t(64, 9, dtype=torch.int32)),
                          "bool": dict(mask=t(64, 32, 3, 3, dtype=torch.bool))}.items():
            _call(f"mask_apply/{name}", ma.mask_apply, cw, **src, dtype=bf16)
        _call("score_grad", ma.score_grad, t(64, 32, 3, 3, dtype=w_dt), cw, t(64, 32, 3, 3))
        _call("score_grad/sgd", ma.score_grad, t(64, 32, 3, 3, dtype=w_dt), cw, t(64, 32, 3, 3), write_grad=False,
              lr=0.1, momentum=0.9, momentum_buffer=t(64, 32, 3, 3))
    # selection, per layer and global; the threshold -> mask / bits kernel; Philox utilities
    layers = [t(4096, 4096), t(300, 784), t(10, 100)]
    for slots in ((0, 1, 2), (0, 0, 0)):
        ks = [max(1, s.numel() // 2) for s in layers] if slots == (0, 1, 2) else [sum(s.numel() for s in layers) // 2]
        _call("select_thresholds", sel.select_thresholds, layers,
              sel.make_select_plan([s.numel() for s in layers], ks, slots, device="meta"))
    _call("threshold_mask", sel.threshold_mask, layers[1], t(2, dtype=torch.int64), want_mask=True, want_bits=True)
    _call("threshold_mask", sel.threshold_mask, layers[1], t(2, dtype=torch.int64))  # mask only: one flat row
    _call("sign_bits", ph.sign_bits, 1, 300, 784, device="meta")
    _call("philox_words", ph.philox_words, 1, torch.arange(1000, dtype=torch.int32))  # validates values: CPU
    _call("sign_tile_words", pg.sign_tile_words, 1, 300, 784, device="meta")


_TABLES = {"_forward_kernel": ("forward", "x_ptr"), "_dx_kernel": ("dx", "dy_ptr"),
           "_dscores_kernel": ("dscores", "dy_ptr"), "_packed_gemm_kernel": ("packed_gemm", "x_ptr")}


def uncovered(launches: list[Launch], arch: int) -> list[str]:
    """Tile configurations the dispatch can choose on ``arch`` (``tiles.gemm_candidates``) that no captured launch
    uses: the gate would otherwise pass without compiling them."""
    from .. import ops

    tiles = ops._kernels("tiles")
    seen = set()
    for launch in launches:
        if launch.kernel in _TABLES:
            table, operand = _TABLES[launch.kernel]
            cfg = launch.config()
            dot = "16bit" if dict(launch.signature)[operand] in ("*bf16", "*fp16") else cfg["INPUT_PRECISION"]
            seen.add((table, dot, tiles.Tiles(cfg["BLOCK_N"], cfg["BLOCK_M"], cfg["BLOCK_K"], cfg["num_warps"],
                                              cfg["num_stages"])))
    return [f"{table} {dot} {t} on sm_{arch} is never captured"
            for table, _ in _TABLES.values() for dot in ("16bit", "tf32x3", "tf32", "ieee")
            for t in tiles.gemm_candidates(table, arch, dot) if (table, dot, t) not in seen]


def capture(arch: int, driver: Callable[[], None] = exercise) -> list[Launch]:
    """The distinct launches ``driver`` issues when the dispatch targets ``arch``."""
    with recording(arch) as launches:
        driver()
    return list({launch.key(): launch for launch in launches}.values())


_PTXAS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STACK = re.compile(r"(\d+) bytes stack frame")


def compile_launch(launch: Launch, arch: int) -> dict:
    """Compile ``launch`` for sm_``arch`` and read its resources; a row of the gate's table."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ..ops import _kernels

    tiles = _kernels("tiles")
    fn = getattr(importlib.import_module(launch.module), launch.kernel)
    row = {"kernel": launch.kernel, "launcher": launch.launcher, "config": launch.config(),
           "operands": {name: ty for name, ty in launch.signature if ty.startswith("*")}, "arch": arch,
           "gemm": launch.kernel in GEMM_KERNELS, "shared_limit": tiles.SHARED_LIMIT.get(arch)}
    log = io.StringIO()
    t0 = time.perf_counter()
    triton.knobs.nvidia.dump_ptxas_log = True
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn, dict(launch.signature), dict(launch.constexprs),
                                                dict(launch.attrs)),
                                      target=GPUTarget("cuda", arch, 32), options=dict(launch.options))
    except Exception as exc:  # a compile error is a gate failure, reported with its first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        row.update(ok=False, problems=[f"compile error: {first}"], compile_s=round(time.perf_counter() - t0, 2))
        return row
    ptx = compiled.asm["ptx"]
    text = log.getvalue()
    if not _PTXAS.search(text):  # a binary from Triton's cache: no ptxas ran, so run it for its report
        text = _ptxas_report(ptx, arch)
    spills = [(int(a), int(b)) for a, b in _SPILL.findall(text)]
    regs = [int(r) for r in _PTXAS.findall(text)]
    row.update(
        shared_bytes=int(compiled.metadata.shared),
        registers=max(regs) if regs else None,
        spill_bytes=sum(a + b for a, b in spills),
        stack_bytes=max((int(s) for s in _STACK.findall(text)), default=0),
        tensor_core_instructions=ptx.count("wgmma.mma_async") + ptx.count("mma.sync"),
        fma_instructions=ptx.count("fma.rn.f32"),
        compile_s=round(time.perf_counter() - t0, 2),
    )
    problems = []
    if row["shared_limit"] is not None and row["shared_bytes"] > row["shared_limit"]:
        problems.append(f"shared memory {row['shared_bytes']} B > {row['shared_limit']} B")
    if row["spill_bytes"]:
        problems.append(f"{row['spill_bytes']} bytes of register spills")
    if regs == []:
        problems.append("no ptxas register report")
    if row["gemm"] and row["config"].get("INPUT_PRECISION") != "ieee" and not row["tensor_core_instructions"]:
        problems.append("GEMM without tensor-core instructions")
    row.update(ok=not problems, problems=problems)
    return row


def _ptxas_report(ptx: str, arch: int) -> str:
    """``ptxas -v`` on ``ptx`` with the flags Triton uses; its stderr (registers, spills, stack)."""
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory(prefix="strongticket-aot-") as folder:
        src = Path(folder) / "kernel.ptx"
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", str(Path(folder) / "kernel.cubin")]
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stderr


def _compile_job(job: tuple[Launch, int]) -> dict:
    return compile_launch(*job)


def _summary(rows: list[dict]) -> None:
    """One line per (kernel, arch): launches, worst shared memory / registers, spills, tensor-core use, failures."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["arch"]), []).append(r)
    head = ("kernel", "arch", "launches", "max shared KiB", "limit KiB", "max regs", "spill B", "TC instr (min)",
            "failed")
    lines = [head]
    for (kernel, arch), rs in sorted(groups.items()):
        done = [r for r in rs if "shared_bytes" in r]
        tc = [r["tensor_core_instructions"] for r in done if r["gemm"] and r["config"].get("INPUT_PRECISION") != "ieee"]
        lines.append((kernel, f"sm_{arch}", str(len(rs)),
                      f"{max((r['shared_bytes'] for r in done), default=0) / 1024:.1f}",
                      f"{(rs[0]['shared_limit'] or 0) / 1024:.0f}",
                      str(max((r["registers"] or 0 for r in done), default=0)),
                      str(sum(r["spill_bytes"] for r in done)),
                      str(min(tc)) if tc else "-", str(sum(not r["ok"] for r in rs))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def reexec_without_interpreter(module: str, argv: list[str]) -> int:
    """``triton.jit`` picks the interpreter at import time: run ``module.main(argv)`` in a child process without
    TRITON_INTERPRET (compiling needs real JIT functions; nothing runs, so no GPU is needed)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call([sys.executable, "-c", code, *argv], env=env)


def _archs(text: str) -> list[int]:
    try:
        archs = [int(a) for a in text.split(",") if a.strip()]
    except ValueError:
        archs = []
    if not archs or any(a < 80 for a in archs):
        raise argparse.ArgumentTypeError(f"--arch must be a comma list of compute capabilities >= 80 "
                                         f"(e.g. 80,89,90), got {text!r}")
    return archs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="strongticket bench aot", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=_archs, default=[80, 89, 90],
                        help="compute capabilities to compile for (default 80,89,90)")
    parser.add_argument("--json", metavar="FILE", help="write every (launch, arch) row as a JSON list")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles (default: all CPUs)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return reexec_without_interpreter("strongticket.bench.aot", list(argv if argv is not None else sys.argv[1:]))
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns unless set; 1 is what runs today
    t0 = time.perf_counter()
    captured = {arch: capture(arch) for arch in args.arch}
    missing = [line for arch in args.arch for line in uncovered(captured[arch], arch)]
    jobs = [(launch, arch) for arch in args.arch for launch in captured[arch]]
    print(f"strongticket bench aot: {len(jobs)} launches for sm_{', sm_'.join(map(str, args.arch))}, "
          f"compiling on {args.jobs} processes", flush=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_compile_job, jobs, chunksize=1))
    _summary(rows)
    failed = [r for r in rows if not r["ok"]]
    for line in missing:
        print(f"FAIL coverage: {line}")
    for r in failed:
        operands = " ".join(f"{k}:{v}" for k, v in r["operands"].items())
        print(f"FAIL {r['kernel']} sm_{r['arch']} {r['launcher']} {r['config']} {operands}: {'; '.join(r['problems'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"{len(rows) - len(failed)}/{len(rows)} launches pass (shared memory within the limit, no spills, tensor "
          f"cores on every GEMM but ieee) in {time.perf_counter() - t0:.0f} s")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
