"""Launch limits the CPU interpreter does not enforce: 64-bit offsets, grid sizes, tiles per architecture."""

import os

import pytest
import torch

from strongticket import masks, ops

triton = pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and triton was imported before TRITON_INTERPRET=1 was set", allow_module_level=True)

ml, sd, pg, tiles = (ops._kernels(name) for name in ("masked_linear", "seeded", "packed_gemm", "tiles"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FAR = 2**30 + 32  # row stride in elements: row 2 of a 3-row tensor starts past element 2**31


def _far_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` (3 rows) copied into rows ``FAR`` elements apart. The storage reserves 4–8 GiB of address space but only
    the pages holding the rows are ever touched (committed), so this costs kilobytes of memory; an index × stride
    computed in int32 wraps and reads or writes far away from them."""
    rows, cols = t.shape
    storage = torch.empty((rows - 1) * FAR + cols, dtype=t.dtype, device=t.device)
    far = storage.as_strided((rows, cols), (FAR, 1))
    far.copy_(t)
    return far


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm_offsets_past_2_31_elements_use_64_bit_addresses(dtype):
    g = torch.Generator().manual_seed(31)
    M, N, K = 3, 3, 40
    x, w, dy = (torch.randn(shape, generator=g).to(dtype).to(DEVICE) for shape in ((M, K), (N, K), (M, N)))
    s = torch.randn(N, K, generator=g).to(DEVICE)
    k = masks.keep_count(0.5, N * K)
    mask = masks.topk_mask(s, k)
    plan = ops._kernels("select").make_select_plan([N * K], [k], block=64, device=s.device)
    thr = ops._kernels("select").select_thresholds([s], plan)[0]
    w64, x64, dy64 = w.double() * mask, x.double(), dy.double()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    try:
        fx, fw, fdy, fs = _far_rows(x), _far_rows(w), _far_rows(dy), _far_rows(s)
    except RuntimeError as exc:  # strict overcommit (vm.overcommit_memory=2) refuses the address space
        pytest.skip(f"cannot reserve 4-8 GiB of address space here: {exc}")

    y, bits = ml.masked_linear_forward(fx, fw, scores=fs, threshold=thr, write_bits=True)
    torch.testing.assert_close(y.double(), x64 @ w64.T, **tol)
    assert torch.equal(bits.cpu(), ops.pack_bits(mask.cpu()))
    torch.testing.assert_close(ml.masked_linear_forward(fx, fw, mask=mask)[0].double(), x64 @ w64.T, **tol)
    torch.testing.assert_close(ml.masked_linear_dx(fdy, fw, scores=fs, threshold=thr).double(), dy64 @ w64, **tol)
    ds = ml.masked_linear_dscores(fdy, fx, fw, fs)
    expected = (dy64.T @ x64) * w.double() * torch.sign(s.double())
    torch.testing.assert_close(ds.double(), expected, rtol=1e-5, atol=1e-5)
    buf = _far_rows(torch.zeros(N, K, device=DEVICE))
    ml.masked_linear_dscores(fdy, fx, fw, fs, write_grad=False, lr=0.5, momentum_buffer=buf, momentum=0.9)
    torch.testing.assert_close(fs.double(), s.double() - 0.5 * expected, rtol=1e-5, atol=1e-5)  # SGD wrote far rows
    torch.testing.assert_close(buf.double(), expected, rtol=1e-5, atol=1e-5)

    signs = torch.randint(0, 2, (N, K), generator=g).bool().to(DEVICE)
    unit = torch.where(signs, -1.0, 1.0).double() * mask
    for gemv_max_batch in (16, 0):  # 3 rows: the GEMV kernel, then the tl.dot GEMM
        y = pg.packed_linear(fx, ops.pack_bits(mask), 0.5, sign_bits=ops.pack_bits(signs),
                             gemv_max_batch=gemv_max_batch)
        torch.testing.assert_close(y.double(), 0.5 * x64 @ unit.T, **tol)
    neg = ops._kernels("philox").sign_bits(7, N, K, device=DEVICE)  # the seeded weight's signs, stream 7
    y, _ = sd.seeded_linear_forward(fx, 7, 0.5, N, mask=mask)
    torch.testing.assert_close(y.double(), x64 @ (torch.where(neg, -0.5, 0.5).double() * mask).T, **tol)


def test_one_dimensional_grids_cover_more_than_65535_column_tiles():
    # 2-D grids cap the second axis at 65535 on a GPU; these launchers tile columns along the first axis instead.
    kernel = ops._kernels("philox")
    grids = []
    real = tiles.launch

    def spy(fn, grid, device, *args, **kwargs):
        grids.append(grid)
        return real(fn, grid, device, *args, **kwargs)

    try:
        tiles.launch = spy
        for module in (kernel, pg, ops._kernels("mask_apply")):
            module.launch = spy
        kernel.sign_bits(3, 40, 300, device=DEVICE, block_r=16, block_c=128)
        pg.sign_tile_words(3, 40, 300, device=DEVICE, block_r=16, block_k=128)
        ops._kernels("mask_apply").mask_apply(torch.ones(40, 300, device=DEVICE), block_r=16, block_c=128,
                                              mask=torch.ones(40, 300, dtype=torch.bool, device=DEVICE))
    finally:
        for module in (tiles, kernel, pg, ops._kernels("mask_apply")):
            module.launch = real
    assert grids == [(9,), (9,), (9,)]  # 3 row tiles x 3 column tiles on one axis (values: test_weightless)


def test_launch_rejects_grids_over_the_cuda_limits():
    with pytest.raises(ValueError, match=r"launch grid \(1, 65536\) exceeds the CUDA limits"):
        tiles.launch(None, (1, 65536), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"launch grid \(2147483648,\) exceeds the CUDA limits"):
        tiles.launch(None, (2**31,), torch.device("cpu"))


def test_tile_dispatch_per_architecture():
    for arch, cls in ((80, "sm80"), (86, "sm86"), (89, "sm86"), (90, "sm90"), (None, "interpret")):
        assert tiles.arch_class(arch) == cls
    with tiles.target_arch(90):
        assert tiles.device_arch(torch.device("cpu")) == 90
    assert tiles.device_arch(torch.device("cpu")) is None
    for kernel in ("forward", "dx", "dscores", "packed_gemm"):
        for arch in tiles.ARCHS:
            for dot in ("16bit", "tf32x3", "tf32", "ieee"):
                small = tiles.gemm_tiles(kernel, arch, dot, 16, 4096)
                large = tiles.gemm_tiles(kernel, arch, dot, 4096, 4096)
                assert set(tiles.gemm_candidates(kernel, arch, dot)) == {small, large}
                assert min(small.block_n, small.block_m, small.block_k) >= 16  # GPU tl.dot minimum
    # large tiles only where their grid fills two waves: batch 256 x N 4096 with 128x128 tiles is 64 CTAs
    assert tiles.gemm_tiles("forward", 90, "16bit", 256, 4096) == tiles.gemm_tiles("forward", 90, "16bit", 64, 4096)
    assert tiles.gemm_tiles("forward", 90, "16bit", 4096, 4096).block_m == 128
    assert tiles.gemm_tiles("forward", 90, "16bit", 256, 4096, sms=16).block_m == 128  # a small GPU fills up
    assert tiles.resolve_precision(None) == tiles.DEFAULT_PRECISION == "tf32x3"
    with pytest.raises(ValueError, match="input_precision must be one of tf32x3, tf32, ieee, got 'fp64'"):
        tiles.resolve_precision("fp64")


def test_explicit_tiles_override_the_dispatch_and_are_checked():
    x, w = torch.randn(5, 40, device=DEVICE), torch.randn(6, 40, device=DEVICE)
    mask = torch.rand(6, 40, device=DEVICE) < 0.5
    y, _ = ml.masked_linear_forward(x, w, mask=mask, block_n=16, block_m=16, block_k=16, num_warps=2)
    torch.testing.assert_close(y, x @ (w * mask).T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="num_warps must be a positive int, got 0"):
        ml.masked_linear_forward(x, w, mask=mask, num_warps=0)
    with pytest.raises(ValueError, match=r"block_k must be >= 32 \(one Philox word per 32 weights\), got 16"):
        sd.seeded_linear_forward(x, 1, 0.1, 6, mask=mask, block_k=16)
