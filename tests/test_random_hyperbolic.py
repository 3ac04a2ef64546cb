"""The "hyperbolic" init of strongticket.random (Orseau et al. 2020): exact, portable, log-uniform magnitudes."""

import hashlib

import numpy as np
import pytest
import torch

import strongticket.random as R


def test_hyperbolic_is_a_monotone_map_of_the_uniform_init():
    low, high = 1e-4, 2.0
    w = R.init_weight((64, 300), "hyperbolic", 1, 2, low=low, high=high).numpy().astype(np.float64)
    v = 2.0 * R.uniform01(1, 2, R.STREAM_WEIGHT, 64, 300) - 1.0
    exact = np.sign(v) * low * (high / low) ** np.abs(v)
    assert np.array_equal(np.sign(w), np.sign(v))
    assert np.max(np.abs(w / exact - 1.0)) < 1e-7  # float32 rounding only
    float64 = R.hyperbolic_from_words((v * 2**31 + 2**31 - 0.5).astype(np.uint32), low, high)
    assert np.max(np.abs(float64 / exact - 1.0)) < 1e-13


def test_hyperbolic_bits_are_pinned():
    w = R.init_weight((33, 70), "hyperbolic", 5, 3, low=1e-4, high=2.0)
    assert hashlib.sha256(w.numpy().tobytes()).hexdigest() == HYPERBOLIC_DIGEST
    default = R.init_weight((33, 70), "hyperbolic", 5, 3)
    assert hashlib.sha256(default.numpy().tobytes()).hexdigest() == DEFAULT_DIGEST
    assert torch.equal(default, R.init_weight((33, 70), "hyperbolic", 5, 3, low=R.HYPERBOLIC_RANGE[0],
                                              high=R.HYPERBOLIC_RANGE[1]))


HYPERBOLIC_DIGEST = "7ca1aa07cac53e643c5956aa84308e7104d8d9a76f10ed7cbfed901b4a18ac43"
DEFAULT_DIGEST = "2221353b8228e5fc90bed47115e0421ebd20a84cd447f7ded88fe17ee2f6e2dc"


def test_extreme_words_and_constant_range():
    words = np.array([0, 2**31 - 1, 2**31, 2**32 - 1], dtype=np.uint32)
    h = R.hyperbolic_from_words(words, 1e-3, 1.0)
    assert np.allclose(h, [-1.0, -1e-3, 1e-3, 1.0], rtol=1e-9)
    assert np.all(np.abs(h) >= 1e-3 * (1 - 1e-12)) and np.all(np.abs(h) <= 1.0 * (1 + 1e-12))
    constant = R.init_weight((4, 9), "hyperbolic", 0, 0, low=0.25, high=0.25)
    assert set(constant.abs().unique().tolist()) == {0.25}


def test_magnitudes_are_log_uniform_and_signs_balanced():
    low, high = 1e-4, 1.0
    w = R.init_weight((200, 500), "hyperbolic", 7, 0, low=low, high=high).numpy().astype(np.float64)
    t = np.log(np.abs(w) / low) / np.log(high / low)  # uniform on [0, 1]
    counts, _ = np.histogram(t, bins=10, range=(0, 1))
    assert np.all(np.abs(counts / w.size - 0.1) < 0.005)
    assert abs((w > 0).mean() - 0.5) < 0.01


def test_hyperbolic_depends_on_seed_layer_kind_and_range():
    base = R.init_weight((8, 40), "hyperbolic", 1, 1)
    assert torch.equal(base, R.init_weight((8, 40), "hyperbolic", 1, 1))
    for other in (R.init_weight((8, 40), "hyperbolic", 2, 1), R.init_weight((8, 40), "hyperbolic", 1, 2),
                  R.init_weight((8, 40), "hyperbolic", 1, 1, kind=R.STREAM_BIAS),
                  R.init_weight((8, 40), "hyperbolic", 1, 1, low=1e-2)):
        assert not torch.equal(base, other)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"init": "hyperbolic", "low": 0.0}, "low must be in (0, 2**64), got 0.0"),
        ({"init": "hyperbolic", "high": float("nan")}, "high must be in (0, 2**64), got nan"),
        ({"init": "hyperbolic", "low": "1"}, "low must be a finite number in (0, 2**64), got '1'"),
        ({"init": "hyperbolic", "low": 2.0, "high": 1.0}, "low must be <= high for the hyperbolic init"),
        ({"init": "uniform", "low": 0.1}, "low/high apply to init 'hyperbolic' only"),
    ],
)
def test_hyperbolic_rejects_bad_ranges(kwargs, message):
    init = kwargs.pop("init")
    with pytest.raises(ValueError) as err:
        R.init_weight((4, 4), init, 0, 0, **kwargs)
    assert message in str(err.value)


def test_hyperbolic_from_words_rejects_non_uint32():
    with pytest.raises(ValueError, match="words must be uint32"):
        R.hyperbolic_from_words(np.array([1, 2], dtype=np.int64), 0.1, 1.0)


def test_masked_linear_accepts_the_hyperbolic_init():
    from strongticket.nn import MaskedLinear

    layer = MaskedLinear(6, 4, bias=False, density=0.5, init="hyperbolic", seed=3, layer=1)
    assert torch.equal(layer.weight, R.init_weight((4, 6), "hyperbolic", 3, 1))
