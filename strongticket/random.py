"""Counter-based random streams and frozen-weight initialisers, reproducible bit for bit on every machine.

The generator is Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
one behind Triton's ``tl.randint4x``: a bijection of a 128-bit counter under a 64-bit key, so element ``i`` of
a weight tensor is a pure function of ``(seed, layer, kind, i)`` and a GPU kernel can regenerate any tile of
it without touching memory. One round, with ``hi``/``lo`` the halves of a 32x32 -> 64-bit product::

    c0, c1, c2, c3 <- hi(0xCD9E8D57 * c2) ^ c1 ^ k0,  lo(0xCD9E8D57 * c2),
                      hi(0xD2511F53 * c0) ^ c3 ^ k1,  lo(0xD2511F53 * c0)
    k0, k1 <- k0 + 0x9E3779B9,  k1 + 0xBB67AE85          (all mod 2**32)

Streams. A user seed in [0, 2**32) becomes key word 0; key word 1 is ``(kind << 24) | layer``, so every
(layer, tensor kind) pair has its own stream and ``stream_seed`` is the 64-bit integer a Triton kernel takes
as ``seed``. Counters are int32 offsets (c0 = offset < 2**31, c1 = c2 = c3 = 0): Triton 3.x changed how int64
offsets fill the counter (triton#6832), int32 offsets mean the same stream in every Triton version. Word c1 is
the ``generation`` (0 everywhere but IteRand's re-drawn weights, which the kernels never regenerate).

Layout. A weight of shape ``(fan_out, *rest)`` is a ``(rows, cols) = (shape[0], prod(rest))`` matrix; a 1-D
tensor is ``(1, shape[0])``. Counters run row-major so a kernel can rebuild a ``(BLOCK_R, BLOCK_C)`` tile:

- ``sign_bits``: 128 bits per call; element (r, c) is bit ``c % 32`` (LSB first) of word ``(c % 128) // 32``
  of counter ``r * ceil(cols / 128) + c // 128``. True = negative.
- ``uniform01``: 4 words per call; element (r, c) is word ``c % 4`` of counter ``r * ceil(cols / 4) + c // 4``
  mapped to ``(word + 0.5) * 2**-32``: exact in float64, in (0, 1), symmetric about 1/2 (so ``2u - 1`` is
  symmetric about 0 and never 0).
- ``standard_normal``: one call per element, counter ``r * cols + c``; the Box-Muller cos branch (as
  ``tl.randn``) ``sqrt(-2 log u1) cos(2 pi u2)`` with ``u1 = (w0 + 0.5) 2**-32`` and ``u2 = w1 2**-32``.
  numpy's ``log``/``cos`` may differ in the last bit between CPUs (SIMD code paths) and the weights are
  hashed, so log and cos are built here from IEEE-exact operations only (+ - * /, frexp, sqrt), fixed order.

Initialisers (``init_weight``), with ``fan = fan_in`` (``* density`` if ``scale_fan``, Ramanujan et al.,
"What's hidden in a randomly weighted neural network?", CVPR 2020) and ``gain = sqrt(2)`` (relu) or 1
(linear): ``signed_constant`` +-gain/sqrt(fan); ``kaiming_normal`` gain/sqrt(fan) * N(0, 1);
``kaiming_uniform`` U(-b, b), b = gain*sqrt(3/fan); ``glorot_normal`` sqrt(2/(fan_in + fan_out)) * N(0, 1), no
gain (Keras's ``glorot_normal``, Zhou et al.'s supermask weights; ``* density`` on the fan average with
``scale_fan``); ``uniform`` U(-1, 1); ``hyperbolic`` (below). All computed in float64 and cast to float32 once. No
torch RNG and no ``np.random`` anywhere.

Initial scores (``init_scores``), from the SCORES stream: ``edge-popup`` U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the
original's ``kaiming_uniform_(a=sqrt(5))``); ``kaiming-uniform`` U(-sqrt(6/fan_in), sqrt(6/fan_in)) (IteRand's
``kaiming_uniform_(mode="fan_in", nonlinearity="relu")``): the same words, sqrt(6) times wider.

``hyperbolic`` (Orseau, Hutter, Rivasplata, "Logarithmic pruning is all you need", NeurIPS 2020): random sign,
magnitude with density proportional to 1/|w| on [low, high] (log-uniform; defaults ``HYPERBOLIC_RANGE``; not
fan-scaled, like ``uniform``). It is a monotone map of the ``uniform`` init's value v = 2u - 1 (same words, same
layout, so the sign is that of v): w = sign(v) * low * (high/low)**|v|. |v| = (m + 1/2) 2**-31 with m a 31-bit
integer, so (high/low)**|v| = s_32 * prod_{k=1..31, bit k of |v| set} s_k with s_k = (high/low)**(2**-k), k
square roots of high/low: IEEE-754 sqrt and * are correctly rounded and the order is fixed, so the float64 (and
float32) values are the same on every machine. Relative error vs the exact power ~32 ulp (~1e-14).
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

__all__ = [
    "HYPERBOLIC_RANGE",
    "INITS",
    "NONLINEARITIES",
    "STREAM_BIAS",
    "STREAM_BIAS_SCORES",
    "STREAM_DATA",
    "STREAM_KINDS",
    "STREAM_REDRAW",
    "STREAM_SCORES",
    "STREAM_WEIGHT",
    "MAX_COUNTERS",
    "SCORE_INITS",
    "hyperbolic_from_words",
    "init_scores",
    "init_weight",
    "matrix_shape",
    "permutation",
    "philox4x32",
    "portable_cos_2pi",
    "portable_log",
    "random_words",
    "sign_bits",
    "standard_normal",
    "stream_seed",
    "uniform01",
]

STREAM_WEIGHT = 0
STREAM_BIAS = 1
STREAM_SCORES = 2
STREAM_DATA = 3
STREAM_BIAS_SCORES = 4
STREAM_REDRAW = 5  # IteRand's coin flips: which pruned weights are re-drawn at a re-randomization event
STREAM_KINDS = (STREAM_WEIGHT, STREAM_BIAS, STREAM_SCORES, STREAM_DATA, STREAM_BIAS_SCORES, STREAM_REDRAW)

# int32 offsets only (module docstring): counters of one stream are 0 .. MAX_COUNTERS - 1.
MAX_COUNTERS = 2**31

INITS = ("signed_constant", "kaiming_normal", "kaiming_uniform", "glorot_normal", "uniform", "hyperbolic")
SCORE_INITS = ("edge-popup", "kaiming-uniform")
# Default (low, high) magnitude range of the "hyperbolic" init.
HYPERBOLIC_RANGE = (1e-3, 1.0)
NONLINEARITIES = {"relu": math.sqrt(2.0), "linear": 1.0}

_LAYER_BITS = 24
_PHILOX_KEY_A = np.uint32(0x9E3779B9)
_PHILOX_KEY_B = np.uint32(0xBB67AE85)
_PHILOX_ROUND_A = np.uint64(0xD2511F53)
_PHILOX_ROUND_B = np.uint64(0xCD9E8D57)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
# Counters per numpy batch: bounds the uint64 temporaries to a few tens of MB for big layers.
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------------------------
# Philox4x32
# ----------------------------------------------------------------------------------------------------------


def philox4x32(
    key0, key1, c0, c1, c2, c3, rounds: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-``rounds`` of counter ``(c0, c1, c2, c3)`` under key ``(key0, key1)``.

    Arguments are anything numpy broadcasts (ints in [0, 2**32) or integer arrays); the four returned words
    are uint32 arrays of the broadcast shape. Bit-identical to Triton's ``philox_impl`` (and to Random123).
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    c0, c1, c2, c3, k0, k1 = np.broadcast_arrays(*(_as_uint32(x) for x in (c0, c1, c2, c3, key0, key1)))
    c0, c1, c2, c3, k0, k1 = (x.copy() for x in (c0, c1, c2, c3, k0, k1))
    # Wrap-around mod 2**32 is the point; numpy only warns about it for 0-d inputs.
    with np.errstate(over="ignore"):
        return _philox_rounds(c0, c1, c2, c3, k0, k1, rounds)


def _philox_rounds(c0, c1, c2, c3, k0, k1, rounds: int):
    for _ in range(rounds):
        # Exact 32x32 -> 64-bit products in uint64, split into the high and low words.
        prod_b = _PHILOX_ROUND_B * c2.astype(np.uint64)
        prod_a = _PHILOX_ROUND_A * c0.astype(np.uint64)
        c0 = (prod_b >> _SHIFT32).astype(np.uint32) ^ c1 ^ k0
        c2 = (prod_a >> _SHIFT32).astype(np.uint32) ^ c3 ^ k1
        c1 = (prod_b & _MASK32).astype(np.uint32)
        c3 = (prod_a & _MASK32).astype(np.uint32)
        # Bumping the key after the last round too is harmless (unused) and mirrors Triton's loop.
        k0 = k0 + _PHILOX_KEY_A
        k1 = k1 + _PHILOX_KEY_B
    return c0, c1, c2, c3


def _as_uint32(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.uint32:
        return arr
    if arr.dtype.kind not in "iu" and not (arr.dtype == object and arr.ndim == 0):
        raise ValueError(f"Philox inputs must be integers in [0, 2**32), got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**32):
        raise ValueError(f"Philox inputs must be in [0, 2**32), got range [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint32)


# ----------------------------------------------------------------------------------------------------------
# Streams
# ----------------------------------------------------------------------------------------------------------


def _check_int(name: str, value, low: int, high: int, high_text: str | None = None) -> int:
    """``value`` as a Python int in [low, high), else a ValueError naming the field, range and value."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an int in [{low}, {high_text or high}), got {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int in [{low}, {high_text or high}), got {value!r}") from None
    if not low <= as_int < high:
        raise ValueError(f"{name} must be in [{low}, {high_text or high}), got {as_int}")
    return as_int


def _check_kind(kind) -> int:
    is_int = isinstance(kind, (int, np.integer)) and not isinstance(kind, (bool, np.bool_))
    if not is_int or kind not in STREAM_KINDS:
        raise ValueError(
            f"kind must be one of {STREAM_KINDS} (STREAM_WEIGHT, STREAM_BIAS, STREAM_SCORES, STREAM_DATA, "
            f"STREAM_BIAS_SCORES, STREAM_REDRAW), got {kind!r}"
        )
    return int(kind)


def _stream_key(seed: int, layer: int, kind: int) -> tuple[int, int]:
    seed = _check_int("seed", seed, 0, 2**32, "2**32")
    layer = _check_int("layer", layer, 0, 2**_LAYER_BITS, f"2**{_LAYER_BITS}")
    kind = _check_kind(kind)
    return seed, (kind << _LAYER_BITS) | layer


def stream_seed(seed: int, layer: int, kind: int = STREAM_WEIGHT) -> int:
    """The 64-bit ``seed`` a Triton kernel passes to ``tl.randint4x`` for stream (seed, layer, kind).

    ``seed | ((kind << 24 | layer) << 32)``; below 2**58, so it travels as an int64 kernel argument.
    """
    key0, key1 = _stream_key(seed, layer, kind)
    return key0 | (key1 << 32)


def random_words(seed: int, layer: int, kind: int, counters: np.ndarray, generation: int = 0) -> np.ndarray:
    """The four Philox words of each counter: ``(4, *counters.shape)`` uint32.

    Equal to ``tl.randint4x(stream_seed(seed, layer, kind), counters)`` for int32 counters in [0, 2**31) and
    ``generation`` 0. ``generation`` in [0, 2**32) is counter word c1: a fresh draw of the same layout for every
    generation (IteRand's re-drawn weights); the kernels only ever use generation 0.
    """
    key0, key1 = _stream_key(seed, layer, kind)
    generation = _check_int("generation", generation, 0, 2**32, "2**32")
    counters = np.asarray(counters)
    if counters.dtype.kind not in "iu":
        raise ValueError(f"counters must be an integer array, got dtype {counters.dtype}")
    if counters.size and (int(counters.min()) < 0 or int(counters.max()) >= MAX_COUNTERS):
        raise ValueError(
            f"counters must be in [0, 2**31), got range [{int(counters.min())}, {int(counters.max())}]"
        )
    flat = counters.reshape(-1).astype(np.uint32)
    out = np.empty((4, flat.size), dtype=np.uint32)
    for start in range(0, flat.size, _CHUNK):
        stop = min(start + _CHUNK, flat.size)
        out[:, start:stop] = philox4x32(key0, key1, flat[start:stop], generation, 0, 0)
    return out.reshape((4, *counters.shape))


def _check_matrix(rows, cols, per_counter: int) -> tuple[int, int, int]:
    """Validated ``(rows, cols, counters_per_row)`` for a layout with ``per_counter`` elements per call."""
    rows = _check_int("rows", rows, 1, MAX_COUNTERS, "2**31")
    cols = _check_int("cols", cols, 1, 2**63, "2**63")
    groups = -(-cols // per_counter)
    if rows * groups > MAX_COUNTERS:
        raise ValueError(
            f"a ({rows}, {cols}) tensor needs {rows * groups} Philox counters, one stream holds at most "
            f"2**31 (int32 offsets)"
        )
    return rows, cols, groups


def _row_words(seed: int, layer: int, kind: int, rows: int, groups: int, generation: int = 0) -> np.ndarray:
    """Words of counters ``r * groups + g`` as ``(rows, groups, 4)``: word axis last, as kernels use them."""
    words = random_words(seed, layer, kind, np.arange(rows * groups, dtype=np.int64), generation)
    return words.T.reshape(rows, groups, 4)


def sign_bits(seed: int, layer: int, kind: int, rows: int, cols: int, generation: int = 0) -> np.ndarray:
    """``(rows, cols)`` bool, True = negative: 128 sign bits per Philox call (layout: module docstring)."""
    rows, cols, groups = _check_matrix(rows, cols, 128)
    words = _row_words(seed, layer, kind, rows, groups, generation)  # (rows, groups, 4)
    bits = (words[..., None] >> np.arange(32, dtype=np.uint32)) & np.uint32(1)  # (rows, groups, 4, 32)
    return bits.reshape(rows, groups * 128)[:, :cols].astype(bool)


def uniform01(seed: int, layer: int, kind: int, rows: int, cols: int, generation: int = 0) -> np.ndarray:
    """``(rows, cols)`` float64 ``(word + 0.5) * 2**-32``: exact, in (0, 1), symmetric about 1/2."""
    rows, cols, groups = _check_matrix(rows, cols, 4)
    words = _row_words(seed, layer, kind, rows, groups, generation).reshape(rows, groups * 4)[:, :cols]
    return (words.astype(np.float64) + 0.5) * 2.0**-32


def standard_normal(seed: int, layer: int, kind: int, rows: int, cols: int, generation: int = 0) -> np.ndarray:
    """``(rows, cols)`` float64 N(0, 1), bit-exact on every IEEE-754 machine (Box-Muller cos branch)."""
    rows, cols, _ = _check_matrix(rows, cols, 1)
    words = random_words(seed, layer, kind, np.arange(rows * cols, dtype=np.int64), generation)
    u1 = (words[0].astype(np.float64) + 0.5) * 2.0**-32  # never 0, so the log is finite
    radius = np.sqrt(-2.0 * portable_log(u1))  # sqrt is correctly rounded by IEEE-754
    return (radius * portable_cos_2pi(words[1])).reshape(rows, cols)


def permutation(seed: int, n: int, layer: int = 0, kind: int = STREAM_DATA) -> np.ndarray:
    """A permutation of ``range(n)`` as int64, fixed forever by (seed, layer, kind).

    Stable argsort of the 64-bit keys ``w0 << 32 | w1`` of counters 0..n-1; equal keys keep index order.
    """
    n = _check_int("n", n, 0, MAX_COUNTERS + 1, "2**31 + 1")
    words = random_words(seed, layer, kind, np.arange(n, dtype=np.int64))
    keys = (words[0].astype(np.uint64) << _SHIFT32) | words[1].astype(np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Portable log and cos: +, -, *, / and frexp only, fixed evaluation order => identical bits on every CPU.
# ----------------------------------------------------------------------------------------------------------

# ln 2 split (fdlibm) so that e * _LN2_HI is exact for |e| < 2**11.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.7071067811865476
# log(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m - 1)/(m + 1), |s| <= 0.1716 for m in
# [sqrt(1/2), sqrt(2)): s^2 <= 0.0295, so the terms up to s^25 leave a truncation error below 1e-19 * |s|.
_ATANH_COEFFS = tuple(1.0 / (2 * k + 1) for k in range(13))
# 2 pi / 2**32 split so that an int below 2**30 times _TWO_PI_HI (21 significant bits) is exact.
_TWO_PI_HI = math.ldexp(float(round(math.ldexp(2.0 * math.pi, 18))), -18 - 32)
_TWO_PI_LO = math.ldexp(2.0 * math.pi, -32) - _TWO_PI_HI
# Taylor coefficients on |phi| <= pi/4: the first omitted terms, (pi/4)^20/20! and (pi/4)^21/21!, are < 1e-20.
_COS_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(10))
_SIN_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(10))


def _horner(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    acc = np.full_like(x, coeffs[-1])
    for coeff in reversed(coeffs[:-1]):
        acc = acc * x + coeff
    return acc


def portable_log(x: np.ndarray) -> np.ndarray:
    """Natural log of positive finite float64 ``x`` (relative error ~1e-16), same bits on every machine."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and not (np.all(x > 0.0) and np.all(np.isfinite(x))):
        raise ValueError("portable_log needs positive finite inputs")
    mantissa, exponent = np.frexp(x)  # x = m 2^e, m in [1/2, 1): exact
    low = mantissa < _SQRT_HALF
    mantissa = np.where(low, mantissa * 2.0, mantissa)  # exact; m in [sqrt(1/2), sqrt(2))
    exponent = (exponent - low).astype(np.float64)
    s = (mantissa - 1.0) / (mantissa + 1.0)  # m - 1 exact (Sterbenz)
    log_m = 2.0 * s * _horner(_ATANH_COEFFS, s * s)
    return exponent * _LN2_HI + (log_m + exponent * _LN2_LO)


def portable_cos_2pi(words: np.ndarray) -> np.ndarray:
    """``cos(2 pi u)`` for ``u = words * 2**-32`` (uint32 words), same bits on every machine.

    The reduction is exact in integers: ``u = j/4 + f`` with j the nearest quarter turn and ``|f| <= 1/8``,
    then ``cos(2 pi u)`` is cos, -sin, -cos or sin of ``phi = 2 pi f`` (|phi| <= pi/4) by Taylor polynomials.
    """
    words = np.asarray(words)
    if words.dtype != np.uint32:
        raise ValueError(f"words must be uint32, got dtype {words.dtype}")
    w = words.astype(np.int64)
    turns = (w + 2**29) >> 30  # nearest multiple of 2**30 (a quarter turn), 0..4
    quadrant = turns & 3
    frac = (w - (turns << 30)).astype(np.float64)  # integer in [-2**29, 2**29]: exact
    phi = frac * _TWO_PI_HI + frac * _TWO_PI_LO  # first product exact, so phi is within ~1 ulp
    phi2 = phi * phi
    cos_phi = _horner(_COS_COEFFS, phi2)
    sin_phi = phi * _horner(_SIN_COEFFS, phi2)
    return np.select(
        [quadrant == 0, quadrant == 1, quadrant == 2], [cos_phi, -sin_phi, -cos_phi], default=sin_phi
    )


# ----------------------------------------------------------------------------------------------------------
# Initialisers
# ----------------------------------------------------------------------------------------------------------


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(rows, cols)`` matrix view of a weight: ``(shape[0], prod(shape[1:]))``, 1-D ``(1, shape[0])``."""
    if isinstance(shape, (int, np.integer)) or not isinstance(shape, (tuple, list, torch.Size)) or not shape:
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    dims = []
    for i, dim in enumerate(shape):
        dims.append(_check_int(f"shape[{i}]", dim, 1, 2**63, "2**63"))
    if len(dims) == 1:
        return 1, dims[0]
    return dims[0], math.prod(dims[1:])


def _check_gain(nonlinearity: str) -> float:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}")
    return NONLINEARITIES[nonlinearity]


def _check_hyperbolic_range(low, high) -> tuple[float, float]:
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"{name} must be a finite number in (0, 2**64), got {value!r}")
        if not 0.0 < float(value) < 2.0**64:  # also rejects NaN and inf
            raise ValueError(f"{name} must be in (0, 2**64), got {value}")
    if not float(low) <= float(high):
        raise ValueError(f"low must be <= high for the hyperbolic init, got low {low} > high {high}")
    return float(low), float(high)


def hyperbolic_from_words(words: np.ndarray, low: float, high: float) -> np.ndarray:
    """float64 ``sign(v) * low * (high/low)**|v|`` of uint32 words, v = 2 (word + 1/2) 2**-32 - 1 (module docstring).

    Bit-exact everywhere (sqrt and * only, fixed order); magnitudes in [low, high] up to ~1e-14 relative.
    """
    low, high = _check_hyperbolic_range(low, high)
    words = np.asarray(words)
    if words.dtype != np.uint32:
        raise ValueError(f"words must be uint32, got dtype {words.dtype}")
    w = words.astype(np.int64)
    negative = w < 2**31
    # |v| = (m + 1/2) 2**-31: m = w - 2**31 for v > 0, 2**31 - 1 - w for v < 0 (the mirror image).
    m = np.where(negative, 2**31 - 1 - w, w - 2**31)
    ratio = high / low
    roots = []  # roots[k - 1] = ratio ** (2 ** -k), k = 1..32, by repeated correctly rounded square roots
    root = ratio
    for _ in range(32):
        root = math.sqrt(root)
        roots.append(root)
    power = np.full(w.shape, roots[31], dtype=np.float64)  # the 1/2 of (m + 1/2): 2**-32
    for k in range(1, 32):  # bit k (weight 2**-k of |v|) is bit 31 - k of m
        power = np.where((m >> (31 - k)) & 1 == 1, power * roots[k - 1], power)
    magnitude = low * power
    return np.where(negative, -magnitude, magnitude)


def _fan_out(shape: tuple[int, ...]) -> int:
    """Output channels times the receptive field (Keras and torch); a 1-D tensor's fan_out is its length."""
    return int(shape[0]) * math.prod(int(d) for d in shape[2:])


def init_weight(
    shape: tuple[int, ...],
    init: str,
    seed: int,
    layer: int,
    *,
    kind: int = STREAM_WEIGHT,
    density: float = 1.0,
    scale_fan: bool = False,
    nonlinearity: str = "relu",
    fan_in: int | None = None,
    low: float | None = None,
    high: float | None = None,
    generation: int = 0,
) -> torch.Tensor:
    """A frozen random weight of ``shape`` as a float32 CPU tensor, a pure function of its arguments.

    ``generation`` > 0 gives an independent draw of the same distribution (counter word c1; IteRand's
    re-randomized weights); generation 0 is the weight every other code path uses.
    ``fan_in`` defaults to the column count of the matrix view (pass it for biases, whose matrix view is
    ``(1, n)``). With ``scale_fan`` the fan is ``fan_in * density``, keeping the variance of the pruned layer
    (``glorot_normal``: the fan average ``(fan_in + fan_out) / 2`` times the density).
    ``low``/``high``: magnitude range of the ``hyperbolic`` init (default ``HYPERBOLIC_RANGE``; 0 < low <= high);
    only that init takes them.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init != "hyperbolic" and (low is not None or high is not None):
        raise ValueError(f"low/high apply to init 'hyperbolic' only, got init {init!r} with low {low}, high {high}")
    rows, cols = matrix_shape(shape)
    gain = _check_gain(nonlinearity)
    if isinstance(density, bool) or not isinstance(density, (int, float, np.floating, np.integer)):
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    fan = cols if fan_in is None else _check_int("fan_in", fan_in, 1, 2**63, "2**63")
    if init == "glorot_normal":
        fan = (fan + _fan_out(shape)) / 2  # Keras's fan_avg
    fan = fan * float(density) if scale_fan else float(fan)

    if init == "signed_constant":
        negative = sign_bits(seed, layer, kind, rows, cols, generation)
        magnitude = gain / math.sqrt(fan)
        values = np.where(negative, -magnitude, magnitude)
    elif init == "kaiming_normal":
        values = (gain / math.sqrt(fan)) * standard_normal(seed, layer, kind, rows, cols, generation)
    elif init == "glorot_normal":  # no gain: Keras's glorot_normal is the same for every nonlinearity
        values = math.sqrt(1.0 / fan) * standard_normal(seed, layer, kind, rows, cols, generation)
    elif init == "kaiming_uniform":
        bound = gain * math.sqrt(3.0 / fan)
        values = (2.0 * uniform01(seed, layer, kind, rows, cols, generation) - 1.0) * bound
    elif init == "hyperbolic":
        low_h = HYPERBOLIC_RANGE[0] if low is None else low
        high_h = HYPERBOLIC_RANGE[1] if high is None else high
        low_h, high_h = _check_hyperbolic_range(low_h, high_h)
        words = _row_words(seed, layer, kind, rows, -(-cols // 4), generation).reshape(rows, -1)[:, :cols]
        values = hyperbolic_from_words(words, low_h, high_h)
    else:  # "uniform"
        values = 2.0 * uniform01(seed, layer, kind, rows, cols, generation) - 1.0
    return torch.from_numpy(values.astype(np.float32).reshape(tuple(shape)))


def init_scores(
    shape: tuple[int, ...],
    seed: int,
    layer: int,
    *,
    fan_in: int | None = None,
    kind: int = STREAM_SCORES,
    mode: str = "edge-popup",
) -> torch.Tensor:
    """Initial scores from the SCORES stream (``kind=STREAM_BIAS_SCORES`` for the scores of a bias), float32:
    ``mode="edge-popup"`` U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``"kaiming-uniform"`` U(-sqrt(6/fan_in), sqrt(6/fan_in)).

    Edge-popup's matches ``kaiming_uniform_(scores, a=sqrt(5))`` of the original code in distribution, IteRand's
    ``kaiming_uniform_(scores, mode="fan_in", nonlinearity="relu")``; both are the same words scaled, never exactly
    0 since ``2u - 1`` is an odd multiple of 2**-32. ``fan_in`` defaults to the column count of the matrix view.
    """
    if mode not in SCORE_INITS:
        raise ValueError(f"mode must be one of {', '.join(SCORE_INITS)}, got {mode!r}")
    rows, cols = matrix_shape(shape)
    fan = cols if fan_in is None else _check_int("fan_in", fan_in, 1, 2**63, "2**63")
    bound = 1.0 / math.sqrt(fan) if mode == "edge-popup" else math.sqrt(6.0 / fan)
    values = (2.0 * uniform01(seed, layer, kind, rows, cols) - 1.0) * bound
    return torch.from_numpy(values.astype(np.float32).reshape(tuple(shape)))
