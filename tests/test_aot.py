"""The AOT gate (`strongticket bench aot`): it captures every kernel of the package and reads compiled resources.

The full gate (every launch for sm_80/89/90, ~10 minutes on 2 cores) runs in CI as its own step (.ci/run); these
tests check the machinery in a few seconds. Capturing needs real JIT functions, so each test runs in a child
process without TRITON_INTERPRET (which tests/conftest.py sets for this process).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def test_capture_covers_every_kernel_and_tile_configuration_on_every_arch():
    code = """
import json, inspect, triton
from strongticket import ops
from strongticket.bench import aot
kernels = set()
for name in ("masked_linear", "seeded", "packed_gemm", "mask_apply", "select", "philox", "tiles"):
    module = ops._kernels(name)
    kernels |= {k for k, v in vars(module).items() if isinstance(v, triton.runtime.jit.JITFunction)
                and k.endswith("_kernel") and v.fn.__module__ == module.__name__}
out = {"kernels": sorted(kernels)}
for arch in (80, 89, 90):
    launches = aot.capture(arch)
    out[arch] = sorted({l.kernel for l in launches})
    out[f"{arch}-uncovered"] = aot.uncovered(launches, arch)
    out[f"{arch}-tiles"] = sorted({tuple(l.config()[k] for k in ("BLOCK_N", "BLOCK_M", "BLOCK_K", "num_stages"))
                                   for l in launches if l.kernel == "_forward_kernel"})
print(json.dumps(out))
"""
    result = _child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(out["kernels"]) >= 12
    for arch in ("80", "89", "90"):
        assert out[arch] == out["kernels"], f"sm_{arch}: captured {out[arch]}, the package has {out['kernels']}"
        assert out[f"{arch}-uncovered"] == []  # every tile configuration the dispatch can choose is compiled
    # the dispatch chooses per architecture: sm_86/89 get fewer pipeline stages (99 KiB) than sm_90
    assert out["89-tiles"] != out["90-tiles"]


def test_compiled_launch_reports_resources_and_the_gate_checks_them(tmp_path):
    code = f"""
import json, torch
from strongticket import ops
from strongticket.bench import aot
ml = ops._kernels("masked_linear")
t = lambda *s, dtype=torch.bfloat16: torch.empty(s, dtype=dtype, device="meta")
def step():
    aot._call("fwd", ml.masked_linear_forward, t(64, 256), t(128, 256), mask=t(128, 8, dtype=torch.int32))
    aot._call("fwd-ieee", ml.masked_linear_forward, t(64, 256, dtype=torch.float32), t(128, 256, dtype=torch.float32),
              mask=t(128, 8, dtype=torch.int32), input_precision="ieee")
    aot._call("fwd-huge", ml.masked_linear_forward, t(64, 256), t(128, 256), mask=t(128, 8, dtype=torch.int32),
              block_n=256, block_m=256, block_k=256, num_warps=4, num_stages=4)
rows = [aot.compile_launch(l, 89) for l in aot.capture(89, step)]
json.dump(rows, open({str(tmp_path / "rows.json")!r}, "w"))
"""
    result = _child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["launcher"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    fwd, ieee, huge = rows["fwd"], rows["fwd-ieee"], rows["fwd-huge"]
    for r in (fwd, ieee, huge):
        assert {"kernel", "config", "arch", "gemm", "shared_bytes", "registers", "spill_bytes",
                "tensor_core_instructions", "ok"} <= set(r)
        assert r["kernel"] == "_forward_kernel" and r["gemm"] and r["arch"] == 89
    assert fwd["ok"] and fwd["spill_bytes"] == 0 and fwd["tensor_core_instructions"] > 0  # mma.sync on sm_89
    assert fwd["config"]["num_warps"] >= 4 and 0 < fwd["shared_bytes"] <= 99 * 1024
    assert ieee["tensor_core_instructions"] == 0 and ieee["fma_instructions"] > 0  # FMA on purpose: allowed
    assert not huge["ok"] and any("shared memory" in p for p in huge["problems"])  # 256^3 tiles: far over 99 KiB


def test_bench_aot_rejects_bad_arguments():
    result = subprocess.run([sys.executable, "-m", "strongticket", "bench", "aot", "--arch", "75"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "--arch must be a comma list of compute capabilities >= 80 (e.g. 80,89,90), got '75'" in result.stderr


def test_static_report_compiles_the_fused_step_and_predicts_from_floors(tmp_path):
    code = f"""
from strongticket.bench import static
static.CARDS = static.CARDS[:1]  # H100: one card, one shape, to keep the test short
static.SHAPES = ((256, 1024, 1024),)
import sys
sys.exit(static.main(["--out", {str(tmp_path)!r}]))
"""
    result = _child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "static_report.csv")))
    ops = {(r["dtype"], r["op"]): r for r in rows}
    for dtype in ("bf16", "fp32"):
        for op in ("select", "forward", "dx", "dscores+sgd"):
            r = ops[dtype, op]
            assert int(r["spill_bytes"]) == 0 and int(r["registers"]) > 0 and int(r["ctas_per_sm"]) >= 1
            assert float(r["floor_us"]) > 0 and r["measured_us"] == ""  # no GPU here: not measured
        step = ops[dtype, "step"]
        floors = sum(float(ops[dtype, op]["floor_us"]) for op in ("select", "forward", "dx", "dscores+sgd"))
        assert abs(float(step["floor_us"]) - floors) < 1e-6 * floors
        assert float(step["predicted_speedup"]) == pytest.approx(float(step["original_floor_us"]) / floors)
    assert "not measured" in result.stdout
