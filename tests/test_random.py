"""Philox streams and frozen-weight inits: known answers, Triton parity, layouts, portability, validation."""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import sys

import numpy as np
import pytest
import torch

from strongticket import random as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and "triton" not in sys.modules:
    # Triton reads this when its own @jit functions (tl.randint4x ...) are decorated, i.e. at `import triton`.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _philox_kernels():
    """The Triton module, in the CPU interpreter when there is no GPU; skips when triton is missing."""
    pytest.importorskip("triton")
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and triton was imported before TRITON_INTERPRET=1 was set")
    try:
        return importlib.import_module("strongticket.kernels.philox")
    except ImportError:
        return importlib.import_module("kernels.philox")


def _hex(words) -> list[str]:
    return [f"{int(w):08x}" for w in words]


# ----------------------------------------------------------------------------------------------------------
# Philox itself
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "counter", "expected"),
    [
        ((0, 0), (0, 0, 0, 0), "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 4, "408f276d 41c83b0e a20bc7c6 6d5451fd"),
        (
            (0xA4093822, 0x299F31D0),
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            "d16cfe09 94fdcceb 5001e420 24126ea1",
        ),
    ],
)
def test_philox4x32_10_matches_random123_known_answers(key, counter, expected):
    assert _hex(R.philox4x32(*key, *counter)) == expected.split()


def test_philox4x32_is_elementwise_over_broadcast_arrays():
    counters = np.array([[0, 5], [7, 2**32 - 1]], dtype=np.uint32)
    words = R.philox4x32(3, 9, counters, 0, 0, 0)
    for index in np.ndindex(counters.shape):
        scalar = R.philox4x32(3, 9, int(counters[index]), 0, 0, 0)
        assert [int(w[index]) for w in words] == [int(s) for s in scalar]
    assert all(w.dtype == np.uint32 and w.shape == (2, 2) for w in words)


def test_stream_seed_packs_kind_and_layer_above_the_user_seed():
    assert R.stream_seed(7, 5, R.STREAM_SCORES) == 7 | (((2 << 24) | 5) << 32)
    assert R.stream_seed(2**32 - 1, 0) == 2**32 - 1
    assert (R.STREAM_WEIGHT, R.STREAM_BIAS, R.STREAM_SCORES, R.STREAM_DATA) == (0, 1, 2, 3)


def test_random_words_are_philox_under_the_stream_key():
    counters = np.array([0, 1, 2**31 - 1])
    words = R.random_words(11, 5, R.STREAM_SCORES, counters)
    assert words.shape == (4, 3) and words.dtype == np.uint32
    expected = R.philox4x32(11, (2 << 24) | 5, counters, 0, 0, 0)
    np.testing.assert_array_equal(words, np.stack(expected))


def test_random_words_are_pinned_forever():
    # Golden values: any change here silently changes every stored ticket's weights.
    words = R.random_words(0, 0, R.STREAM_WEIGHT, np.arange(2))
    assert _hex(words[:, 0]) == _hex(R.philox4x32(0, 0, 0, 0, 0, 0))
    assert _hex(words[:, 0]) == "6627e8d5 e169c58d bc57ac4c 9b00dbd8".split()


# ----------------------------------------------------------------------------------------------------------
# Triton parity (interpreter on CPU, compiled on CUDA)
# ----------------------------------------------------------------------------------------------------------

# (seed, layer, kind): key word 1 = 0 (Triton specialises seed 1 to a constexpr), then high key-word-1 bits.
TRITON_STREAMS = [
    (0, 0, 0),
    (1, 0, 0),
    (12345, 0, 0),
    (2**32 - 1, 0, 0),
    (7, 5, R.STREAM_SCORES),
    (2**32 - 1, 2**24 - 1, R.STREAM_DATA),
]


@pytest.mark.parametrize(("seed", "layer", "kind"), TRITON_STREAMS)
def test_numpy_words_equal_triton_randint4x(seed, layer, kind):
    kernels = _philox_kernels()
    counters = np.array([0, 1, 2, 3, 1000, 65537, 2**31 - 2, 2**31 - 1, 123456789], dtype=np.int64)  # odd N
    stream = R.stream_seed(seed, layer, kind)
    got = kernels.philox_words(stream, torch.from_numpy(counters).to(DEVICE), block=4)
    assert got.shape == (counters.size, 4) and got.dtype == torch.int32
    expected = R.random_words(seed, layer, kind, counters).T
    np.testing.assert_array_equal(got.cpu().numpy().view(np.uint32), expected)


@pytest.mark.parametrize(("rows", "cols"), [(3, 130), (7, 1), (5, 257), (17, 128)])
def test_triton_sign_kernel_equals_sign_bits(rows, cols):
    kernels = _philox_kernels()
    seed = R.stream_seed(3, 5, R.STREAM_WEIGHT)
    got = kernels.sign_bits(seed, rows, cols, device=DEVICE, block_r=4, block_c=128)
    assert got.shape == (rows, cols) and got.dtype == torch.bool
    np.testing.assert_array_equal(got.cpu().numpy(), R.sign_bits(3, 5, R.STREAM_WEIGHT, rows, cols))


def test_triton_sign_kernel_does_not_depend_on_tile_size():
    kernels = _philox_kernels()
    seed = R.stream_seed(9, 1, R.STREAM_BIAS)
    small = kernels.sign_bits(seed, 9, 300, device=DEVICE, block_r=2, block_c=128)
    large = kernels.sign_bits(seed, 9, 300, device=DEVICE, block_r=16, block_c=512)
    assert torch.equal(small, large)


def test_triton_launchers_reject_bad_inputs():
    kernels = _philox_kernels()
    with pytest.raises(ValueError, match=r"counters must be in \[0, 2\*\*31\), got range \[-1, 3\]"):
        kernels.philox_words(0, torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63\)"):
        kernels.sign_bits(-1, 2, 2)
    with pytest.raises(ValueError, match="block_c must be a power of two >= 128, got 64"):
        kernels.sign_bits(0, 2, 2, block_c=64)


# ----------------------------------------------------------------------------------------------------------
# Layouts: element (r, c) -> (counter, word, bit), exactly as the GPU kernels regenerate tiles
# ----------------------------------------------------------------------------------------------------------


def test_sign_bits_layout_is_128_bits_per_counter_row_major():
    rows, cols = 4, 300
    signs = R.sign_bits(5, 2, R.STREAM_WEIGHT, rows, cols)
    per_row = math.ceil(cols / 128)
    words = R.random_words(5, 2, R.STREAM_WEIGHT, np.arange(rows * per_row))
    for r, c in [(0, 0), (0, 31), (0, 32), (0, 127), (1, 128), (2, 299), (3, 200), (3, 257)]:
        word = int(words[(c % 128) // 32, r * per_row + c // 128])
        assert signs[r, c] == bool((word >> (c % 32)) & 1)
    assert signs.dtype == bool and signs.shape == (rows, cols)


def test_uniform01_layout_and_values_are_exact_centred_words():
    rows, cols = 3, 7
    u = R.uniform01(5, 2, R.STREAM_WEIGHT, rows, cols)
    per_row = math.ceil(cols / 4)
    words = R.random_words(5, 2, R.STREAM_WEIGHT, np.arange(rows * per_row))
    for r in range(rows):
        for c in range(cols):
            assert u[r, c] == (int(words[c % 4, r * per_row + c // 4]) + 0.5) * 2.0**-32
    assert np.all((u > 0.0) & (u < 1.0))


def test_standard_normal_layout_is_one_counter_per_element():
    rows, cols = 3, 5
    z = R.standard_normal(5, 2, R.STREAM_WEIGHT, rows, cols)
    words = R.random_words(5, 2, R.STREAM_WEIGHT, np.arange(rows * cols))
    u1 = (words[0].astype(np.float64) + 0.5) * 2.0**-32
    u2 = words[1].astype(np.float64) * 2.0**-32
    np.testing.assert_allclose(z.ravel(), np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2), rtol=1e-13)


# ----------------------------------------------------------------------------------------------------------
# Portable log / cos and the normal draws
# ----------------------------------------------------------------------------------------------------------


def test_portable_log_matches_numpy_to_one_ulp():
    x = np.concatenate(
        [
            (np.arange(0, 2**32, 4099, dtype=np.float64) + 0.5) * 2.0**-32,  # the u1 grid, incl. both ends
            np.geomspace(1e-300, 1e300, 20001),
            [0.5, 1.0, 2.0, math.sqrt(0.5), math.sqrt(0.5) * (1 - 2**-53), 1 - 2**-53, 1 + 2**-52],
        ]
    )
    np.testing.assert_allclose(R.portable_log(x), np.log(x), rtol=1e-15, atol=0)
    assert R.portable_log(np.array([1.0]))[0] == 0.0


def test_portable_cos_matches_numpy():
    words = np.concatenate(
        [
            np.arange(0, 2**32, 4099, dtype=np.uint64),
            [0, 1, 2**29 - 1, 2**29, 2**29 + 1, 2**30, 2**31, 3 * 2**30, 2**32 - 2**29, 2**32 - 1],
        ]
    ).astype(np.uint32)
    got = R.portable_cos_2pi(words)
    ref = np.cos(2.0 * np.pi * words.astype(np.float64) * 2.0**-32)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)
    assert R.portable_cos_2pi(np.array([0, 2**31], dtype=np.uint32)).tolist() == [1.0, -1.0]


def test_standard_normal_is_a_standard_normal():
    stats = pytest.importorskip("scipy.stats")
    z = R.standard_normal(123, 0, R.STREAM_WEIGHT, 100, 1000).ravel()
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.std() - 1.0) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_normal_weights_are_pinned_forever():
    # Golden hash of bits built from +, -, *, /, frexp and sqrt only: equal on every IEEE-754 machine.
    weight = R.init_weight((64, 48), "kaiming_normal", 2024, 3)
    digest = hashlib.sha256(weight.numpy().tobytes()).hexdigest()
    assert digest == NORMAL_DIGEST


NORMAL_DIGEST = "538a7a250d75eaaf89bc0f19db21cce6540b7cc53505cb130352b29bc1a23230"


# ----------------------------------------------------------------------------------------------------------
# Initialisers
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", R.INITS)
def test_init_weight_is_bit_identical_and_depends_on_seed_layer_kind(init):
    shape = (16, 3, 3, 3)
    weight = R.init_weight(shape, init, 1, 4)
    assert weight.dtype == torch.float32 and weight.device.type == "cpu" and tuple(weight.shape) == shape
    assert torch.equal(weight, R.init_weight(shape, init, 1, 4))
    for other in (
        R.init_weight(shape, init, 2, 4),
        R.init_weight(shape, init, 1, 5),
        R.init_weight(shape, init, 1, 4, kind=R.STREAM_BIAS),
    ):
        assert not torch.equal(weight, other)


def test_signed_constant_is_exactly_plus_minus_gain_over_sqrt_fan():
    weight = R.init_weight((32, 8, 3, 3), "signed_constant", 0, 0)
    magnitude = np.float32(math.sqrt(2.0) / math.sqrt(8 * 9))
    assert set(weight.abs().unique().tolist()) == {float(magnitude)}
    negative = R.sign_bits(0, 0, R.STREAM_WEIGHT, 32, 72).reshape(32, 8, 3, 3)
    assert torch.equal(weight < 0, torch.from_numpy(negative))
    linear = R.init_weight((4, 25), "signed_constant", 0, 0, nonlinearity="linear")
    assert set(linear.abs().unique().tolist()) == {float(np.float32(1 / 5))}


def test_scale_fan_divides_fan_by_density():
    full = R.init_weight((8, 100), "signed_constant", 0, 0, density=0.25)
    scaled = R.init_weight((8, 100), "signed_constant", 0, 0, density=0.25, scale_fan=True)
    # density alone changes nothing; with scale_fan the fan is 25 instead of 100
    assert torch.equal(full, R.init_weight((8, 100), "signed_constant", 0, 0))
    assert torch.equal(scaled, 2 * full)


def test_kaiming_and_uniform_magnitudes():
    fan = 400
    normal = R.init_weight((500, fan), "kaiming_normal", 1, 0).double()
    assert abs(normal.std().item() - math.sqrt(2 / fan)) < 0.01 * math.sqrt(2 / fan)
    uniform = R.init_weight((500, fan), "kaiming_uniform", 1, 0).double()
    bound = math.sqrt(2.0) * math.sqrt(3 / fan)
    assert uniform.abs().max().item() <= bound and uniform.abs().max().item() > 0.999 * bound
    assert abs(uniform.std().item() - math.sqrt(2 / fan)) < 0.01 * math.sqrt(2 / fan)
    plain = R.init_weight((500, fan), "uniform", 1, 0)
    assert plain.abs().max().item() <= 1.0 and plain.abs().max().item() > 0.999


def test_bias_is_one_row_and_takes_fan_in_from_the_caller():
    bias = R.init_weight((10,), "signed_constant", 0, 2, kind=R.STREAM_BIAS, fan_in=36)
    assert tuple(bias.shape) == (10,)
    assert set(bias.abs().unique().tolist()) == {float(np.float32(math.sqrt(2) / 6))}
    negative = R.sign_bits(0, 2, R.STREAM_BIAS, 1, 10)[0]
    assert torch.equal(bias < 0, torch.from_numpy(negative))


def test_init_scores_are_edge_popup_uniform_from_the_scores_stream_and_never_zero():
    scores = R.init_scores((64, 50), 3, 1)
    assert scores.dtype == torch.float32 and tuple(scores.shape) == (64, 50)
    assert (scores != 0).all()
    assert scores.abs().max().item() <= 1 / math.sqrt(50)
    u = R.uniform01(3, 1, R.STREAM_SCORES, 64, 50)
    assert torch.equal(scores, torch.from_numpy(((2 * u - 1) / math.sqrt(50)).astype(np.float32)))
    assert not torch.equal(scores, R.init_weight((64, 50), "kaiming_uniform", 3, 1))


def test_permutation_is_a_deterministic_permutation():
    perm = R.permutation(7, 1000)
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(np.sort(perm), np.arange(1000))
    np.testing.assert_array_equal(perm, R.permutation(7, 1000))
    assert not np.array_equal(perm, R.permutation(8, 1000))
    assert not np.array_equal(perm, R.permutation(7, 1000, layer=1))
    assert R.permutation(7, 0).size == 0 and R.permutation(7, 1).tolist() == [0]


def test_permutation_of_a_prefix_keeps_the_relative_order():
    # Key of item i depends on i only, so growing n never reshuffles the items already there.
    perm = R.permutation(7, 1000)
    np.testing.assert_array_equal(perm[perm < 100], R.permutation(7, 100))


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: R.stream_seed(-1, 0), r"seed must be in \[0, 2\*\*32\), got -1"),
        (lambda: R.stream_seed(2**32, 0), r"seed must be in \[0, 2\*\*32\), got 4294967296"),
        (lambda: R.stream_seed(1.5, 0), r"seed must be an int in \[0, 2\*\*32\), got 1.5"),
        (lambda: R.stream_seed(True, 0), r"seed must be an int"),
        (lambda: R.stream_seed(0, 2**24), r"layer must be in \[0, 2\*\*24\), got 16777216"),
        (lambda: R.stream_seed(0, 0, 6), r"kind must be one of \(0, 1, 2, 3, 4, 5\)"),
        (lambda: R.random_words(0, 0, 0, np.array([2**31])), r"counters must be in \[0, 2\*\*31\)"),
        (lambda: R.random_words(0, 0, 0, np.array([0.5])), "counters must be an integer array"),
        (lambda: R.sign_bits(0, 0, 0, 2**30, 257), r"needs 3221225472 Philox counters.*2\*\*31"),
        (lambda: R.standard_normal(0, 0, 0, 2**16, 2**16), r"needs 4294967296 Philox counters"),
        (lambda: R.uniform01(0, 0, 0, 0, 4), r"rows must be in \[1, 2\*\*31\), got 0"),
        (lambda: R.init_weight((4, 4), "xavier", 0, 0), r"init must be one of \('signed_constant'"),
        (lambda: R.init_weight((4, 0), "uniform", 0, 0), r"shape\[1\] must be in \[1, 2\*\*63\), got 0"),
        (lambda: R.init_weight((), "uniform", 0, 0), "shape must be a non-empty tuple of positive ints"),
        (lambda: R.init_weight((4,), "uniform", 0, 0, density=0.0), r"density must be in \(0, 1\], got 0.0"),
        (lambda: R.init_weight((4,), "uniform", 0, 0, density=1.5), r"density must be in \(0, 1\], got 1.5"),
        (lambda: R.init_weight((4,), "uniform", 0, 0, fan_in=0), r"fan_in must be in \[1, 2\*\*63\), got 0"),
        (lambda: R.init_weight((4,), "uniform", 0, 0, nonlinearity="tanh"), "nonlinearity must be one of"),
        (lambda: R.init_weight((4, 4), "uniform", -3, 0), r"seed must be in \[0, 2\*\*32\), got -3"),
        (lambda: R.init_scores((4, 4), 0, -1), r"layer must be in \[0, 2\*\*24\), got -1"),
        (lambda: R.permutation(0, -1), r"n must be in \[0, 2\*\*31 \+ 1\), got -1"),
        (lambda: R.philox4x32(0, 0, 0, 0, 0, 0, rounds=0), "rounds must be an int >= 1, got 0"),
        (lambda: R.philox4x32(2**32, 0, 0, 0, 0, 0), r"Philox inputs must be in \[0, 2\*\*32\)"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_field_range_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
