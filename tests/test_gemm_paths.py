"""The two Triton paths of the masked linear ops (``STRONGTICKET_GEMM``): ``fused`` (our GEMM kernels) and
``materialize`` (W ⊙ M written once, the library GEMM, the score gradient / SGD step in one elementwise pass).
Both against float64 on odd shapes, fp32 and bf16, in the CPU interpreter or on a CUDA GPU: same bits, same masks,
same gradients within the dtype's tolerance; and the dispatch rule itself.
"""

import contextlib
import os

import pytest
import torch

from strongticket import masks, ops
from strongticket.backend import interpret_on_cpu
from strongticket.ops._common import MATERIALIZE_FROM, _gemm_path

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)
PATHS = ["fused", "materialize"]
RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # relative to the largest |entry| of the reference


def _triton():
    """Where the ops run Triton: CPU tensors inside interpret_on_cpu here, CUDA tensors on a GPU."""
    return interpret_on_cpu() if DEVICE == "cpu" else contextlib.nullcontext()


def _close(got, ref, dtype):
    got, ref = got.cpu(), ref.cpu()
    err = float((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    assert err <= RTOL[dtype], err


def _inputs(B, K, N, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(dtype)
    s = torch.randn(N, K, generator=g)
    dy = torch.randn(B, N, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    return (t.to(DEVICE) for t in (x, w, s, dy, b))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B, K, N, density", [(5, 37, 3, 0.5), (33, 70, 65, 0.1), (1, 129, 7, 0.013)])
def test_threshold_op_forward_and_backward_match_float64(path, dtype, B, K, N, density, monkeypatch):
    monkeypatch.setenv("STRONGTICKET_GEMM", path)
    x, w, s, dy, b = _inputs(B, K, N, dtype, seed=B + K)
    k = masks.keep_count(density, N * K)
    thr = ops.topk_thresholds([s], [k], [0])[0]
    want_mask = masks.topk_mask(s.cpu(), k).to(DEVICE)
    s_req = s.clone().requires_grad_()
    x_req = x.clone().requires_grad_()
    with _triton():
        y, bits = ops.masked_linear_threshold(x_req, w, s_req, thr, b)
        y.backward(dy)
    assert torch.equal(bits, ops.pack_bits(want_mask))
    x, w, s, dy, b, want_mask = (t.cpu() for t in (x, w, s, dy, b, want_mask))
    wm = w.double() * want_mask
    _close(y.detach(), x.double() @ wm.t() + b.double(), dtype)
    _close(x_req.grad, dy.double() @ wm, dtype)
    _close(s_req.grad, (dy.double().t() @ x.double()) * w.double() * torch.sign(s.double()), dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bool_mask_op_and_the_sgd_step_match_float64(path, dtype, monkeypatch):
    monkeypatch.setenv("STRONGTICKET_GEMM", path)
    x, w, s, dy, b = _inputs(19, 45, 11, dtype, seed=3)
    mask = masks.topk_mask(s.cpu(), 150).to(DEVICE)
    lr, mu, wd = 0.3, 0.9, 1e-3
    buf0 = torch.randn(s.shape, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    scores, buf = s.clone(), buf0.clone()
    with _triton():
        y = ops.masked_linear(x, w, s, mask, b)
        ops.masked_linear_sgd(dy, x, w, scores, buf, lr, mu, wd)
    x, w, s, dy, b, mask, buf0 = (t.cpu() for t in (x, w, s, dy, b, mask, buf0))
    _close(y, x.double() @ (w.double() * mask).t() + b.double(), dtype)
    ds = (dy.double().t() @ x.double()) * w.double() * torch.sign(s.double())
    want_buf = mu * buf0.double() + ds + wd * s.double()
    _close(buf, want_buf, dtype)
    _close(scores.cpu() - s, -lr * want_buf, dtype)


def test_the_materialize_path_runs_the_library_gemm_on_the_masked_weight(monkeypatch):
    """materialize: no launch of the fused GEMM kernels, one mask-apply per product; fused: no mask-apply."""
    launched = []
    kernel_class = type(ops._kernels("mask_apply")._mask_apply_kernel)
    real_run = kernel_class.run
    monkeypatch.setattr(kernel_class, "run",
                        lambda self, *a, **kw: launched.append(self.fn.__name__) or real_run(self, *a, **kw))
    x, w, s, dy, b = _inputs(6, 40, 9, torch.float32, seed=1)
    thr = ops.topk_thresholds([s], [100], [0])[0]
    for path in PATHS:
        monkeypatch.setenv("STRONGTICKET_GEMM", path)
        launched.clear()
        s_req = s.clone().requires_grad_()
        with _triton():
            y, _ = ops.masked_linear_threshold(x.requires_grad_(), w, s_req, thr, b)
            y.backward(dy)
        if path == "materialize":
            assert launched == ["_threshold_mask_kernel", "_mask_apply_kernel", "_mask_apply_kernel",
                                "_score_grad_kernel"], launched
        else:
            assert "_mask_apply_kernel" not in launched and len(launched) == 3, launched


def test_the_dispatch_rule_and_a_bad_value(monkeypatch):
    cuda, cpu, big = torch.device("cuda"), torch.device("cpu"), MATERIALIZE_FROM
    monkeypatch.delenv("STRONGTICKET_GEMM", raising=False)
    assert _gemm_path(cuda, big) == "materialize" and _gemm_path(cuda, big - 1) == "fused"
    assert _gemm_path(cpu, big) == "fused"
    monkeypatch.setenv("STRONGTICKET_GEMM", "fused")
    assert _gemm_path(cuda, big) == "fused"
    monkeypatch.setenv("STRONGTICKET_GEMM", "materialize")
    assert _gemm_path(cuda, 1) == "materialize" and _gemm_path(cpu, 1) == "materialize"
    monkeypatch.setenv("STRONGTICKET_GEMM", "cublas")
    with pytest.raises(ValueError, match="STRONGTICKET_GEMM must be one of auto, fused, materialize, got 'cublas'"):
        _gemm_path(cpu, 1)
