"""The CPU's fused elementwise kernels: a few loops in C, compiled once per machine and loaded with ctypes.

On the CPU a masked step's extra work is elementwise and bound by memory: each torch or numpy op is one pass over
every weight (~1 ms per 2^20 floats out of cache on one core), and the masked step took a dozen of them where the
dense step takes its three SGD passes. These loops do each job in one pass, with the rounding of the torch ops
they replace (checked bit for bit against them by tests/test_cpu_kernels.py):

  score_grad(G, W, S, out)           out = (G·W)·sign(S)                         as G * W * torch.sign(S)
  score_sgd(G, W, S!, buf!, lr, μ, λ)  d = (G·W)·sign(S); d = fma(S, λ, d); buf = buf·μ + d; S = fma(buf, −lr, S)
                                     as torch.optim.SGD's single-tensor step (add_ with alpha is one fma there)
  window_select(group, bits!, flagged!, lo, hi, k) -> (τ, cut) or a miss
                                     one pass for strongticket.masks.WindowTopK: the group's |S| bits into
                                     ``bits`` (the last call's are there), the indices whose old or new bits lie
                                     in [lo, hi) or that crossed it into ``flagged``, the counts below and inside;
                                     then τ by quickselect among the window's scores, and the tie cut
  threshold_weight(S, W, τ, cut, out) out = W where |S| bits > τ or (== τ and index <= cut), else W·0 (a signed 0)
  patch_weight(S, W, out!, where, offset, τ, cut)
                                     the same, only at the flat indices ``where`` − offset (the scores that moved)

Compiled with the system C compiler (``cc`` or $CC) into $STRONGTICKET_CACHE (default ~/.cache/strongticket),
keyed by the source, the compiler and the CPU; loaded by ctypes, which releases the GIL during a call. Without a
compiler (or with STRONGTICKET_CPU_KERNELS=0) :func:`available` is False and the callers run their torch/numpy
reference instead: same results, slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["available", "usable", "score_grad", "score_sgd", "WindowSelect", "threshold_weight", "patch_weight"]

_ENV = "STRONGTICKET_CPU_KERNELS"

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float sign_of(float s) { return (float)((s > 0.0f) - (s < 0.0f)); }

void score_grad(const float *g, const float *w, const float *s, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = (g[i] * w[i]) * sign_of(s[i]);
}

void score_sgd(const float *g, const float *w, float *s, float *buf, int64_t n, float neg_lr, float mu, float wd,
               int has_wd, int has_buf) {
    for (int64_t i = 0; i < n; i++) {
        float sv = s[i];
        float d = (g[i] * w[i]) * sign_of(sv);
        if (has_wd) d = fmaf(sv, wd, d);
        if (has_buf) {
            float b = buf[i] * mu;
            b = b + d;
            buf[i] = b;
            d = b;
        }
        s[i] = fmaf(d, neg_lr, sv);
    }
}

void patch_weight(const int32_t *s, const int32_t *w, int32_t *out, const int64_t *where, int64_t m,
                  int64_t offset, int32_t tau, int64_t cut) {
    for (int64_t j = 0; j < m; j++) {
        int64_t i = where[j] - offset;
        int32_t b = s[i] & 0x7FFFFFFF;
        int keep = (b > tau) | ((b == tau) & (i <= cut));
        out[i] = keep ? w[i] : (w[i] & (int32_t)0x80000000);
    }
}

static int32_t select_rank(int32_t *v, int64_t m, int64_t rank) {
    /* the value of ascending rank ``rank`` (0-based) of v[0..m), reordering v (quickselect, median of three) */
    int64_t lo = 0, hi = m - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2;
        int32_t a = v[lo], b = v[mid], c = v[hi];
        int32_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) { int32_t t = v[i]; v[i] = v[j]; v[j] = t; i++; j--; }
        }
        if (rank <= j) hi = j;
        else if (rank >= i) lo = i;
        else return v[rank];
    }
    return v[rank];
}

static void window_pass(const int32_t *restrict s, int32_t *restrict bits, uint8_t *restrict flags, int64_t n,
                        int32_t lo, int32_t hi, int64_t *below, int64_t *inside) {
    int64_t nb_lo = 0, nb_in = 0;  /* a loop without stores that depend on each other: it vectorizes */
    for (int64_t i = 0; i < n; i++) {
        int32_t nb = s[i] & 0x7FFFFFFF, ob = bits[i];
        int n_lo = nb < lo, n_hi = nb >= hi, o_lo = ob < lo, o_hi = ob >= hi;
        bits[i] = nb;
        flags[i] = (uint8_t)!((n_lo & o_lo) | (n_hi & o_hi));
        nb_lo += n_lo;
        nb_in += !(n_lo | n_hi);
    }
    *below += nb_lo;
    *inside += nb_in;
}

int window_select(int64_t count, const int64_t *scores, const int64_t *numels, int32_t *bits, uint8_t *flags,
                  int64_t *flagged, int32_t *scratch, int32_t lo, int32_t hi, int64_t k, int64_t keep_all,
                  int64_t *out) {
    /* One step of strongticket.masks.WindowTopK over a group of tensors (flat order): new |S| bits into bits,
       the flat indices whose old or new bits lie in [lo, hi) or that crossed it into flagged (ascending); then,
       if τ lies in the window, out = (τ, cut, number flagged) and 1, else out[2] = number flagged and 0. */
    int64_t below = 0, inside = 0, nf = 0, base = 0;
    for (int64_t l = 0; l < count; l++) {
        window_pass((const int32_t *)scores[l], bits + base, flags + base, numels[l], lo, hi, &below, &inside);
        base += numels[l];
    }
    int64_t i = 0;
    for (; i + 8 <= base; i += 8) {  /* compaction: most flags are 0, eight at a time */
        uint64_t word;
        memcpy(&word, flags + i, 8);
        if (!word) continue;
        for (int j = 0; j < 8; j++) if (flags[i + j]) flagged[nf++] = i + j;
    }
    for (; i < base; i++) if (flags[i]) flagged[nf++] = i;
    out[2] = nf;
    int64_t above_hi = base - below - inside;
    if (!(above_hi < k && k <= above_hi + inside)) return 0;
    int64_t m = 0;
    for (int64_t j = 0; j < nf; j++) {
        int32_t v = bits[flagged[j]];
        if (v >= lo && v < hi) scratch[m++] = v;
    }
    int32_t tau = select_rank(scratch, m, m - (k - above_hi));
    int64_t at_or_above = above_hi, tied = 0;
    for (int64_t j = 0; j < m; j++) {
        at_or_above += scratch[j] >= tau;
        tied += scratch[j] == tau;
    }
    int64_t cut = keep_all;
    if (at_or_above != k) {
        int64_t need = k - (at_or_above - tied), seen = 0;
        for (int64_t j = 0; j < nf; j++) {
            if (bits[flagged[j]] == tau && ++seen == need) { cut = flagged[j]; break; }
        }
    }
    out[0] = tau;
    out[1] = cut;
    return 1;
}

void threshold_weight(const int32_t *s, const int32_t *w, int32_t *out, int64_t n, int32_t tau, int64_t cut) {
    for (int64_t i = 0; i < n; i++) {
        int32_t b = s[i] & 0x7FFFFFFF;
        int keep = (b > tau) | ((b == tau) & (i <= cut));
        out[i] = keep ? w[i] : (w[i] & (int32_t)0x80000000);
    }
}
"""

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
_lib: ctypes.CDLL | None = None
_tried = False
_I64, _F32, _INT, _P = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p


def _cache_dir() -> Path:
    root = os.environ.get("STRONGTICKET_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "strongticket"


def _cpu_id() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compile() -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256("\0".join([_SOURCE, cc, version, " ".join(_FLAGS), _cpu_id()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"cpu_kernels_{key}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                src = Path(tmp) / "kernels.c"
                src.write_text(_SOURCE)
                out = Path(tmp) / "kernels.so"
                done = subprocess.run([cc, *_FLAGS, "-o", str(out), str(src), "-lm"], capture_output=True, timeout=120)
                if done.returncode != 0:
                    return None
                os.replace(out, target)  # atomic: a concurrent process loads a whole file or compiles its own
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        lib = ctypes.CDLL(str(target))
        _declare(lib)
    except (OSError, AttributeError):  # not loadable, or a file from elsewhere without our symbols
        return None
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    lib.score_grad.argtypes = [_P, _P, _P, _P, _I64]
    lib.score_sgd.argtypes = [_P, _P, _P, _P, _I64, _F32, _F32, _F32, _INT, _INT]
    lib.threshold_weight.argtypes = [_P, _P, _P, _I64, ctypes.c_int32, _I64]
    lib.patch_weight.argtypes = [_P, _P, _P, _P, _I64, _I64, ctypes.c_int32, _I64]
    lib.window_select.argtypes = [_I64, _P, _P, _P, _P, _P, _P, ctypes.c_int32, ctypes.c_int32, _I64, _I64, _P]
    lib.window_select.restype = ctypes.c_int
    for fn in (lib.score_grad, lib.score_sgd, lib.threshold_weight, lib.patch_weight):
        fn.restype = None


def available() -> bool:
    """Whether the compiled kernels run (compiled on first use; False without a C compiler or when
    STRONGTICKET_CPU_KERNELS=0)."""
    global _lib, _tried
    value = os.environ.get(_ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{_ENV} must be 0 (numpy and torch ops) or 1 (the compiled loops, where a C compiler "
                         f"exists), got {value!r}")
    if value == "0":
        return False
    if not _tried:
        _tried = True
        _lib = _compile()
    return _lib is not None


def usable(*tensors: Tensor, same_size: bool = True) -> bool:
    """Whether these tensors can go to the kernels: :func:`available`, and every one a contiguous float32 CPU
    tensor (of the same number of elements, unless ``same_size=False``)."""
    if not available():
        return False
    n = tensors[0].numel()
    for t in tensors:
        if not (t.is_cpu and t.dtype is torch.float32 and t.is_contiguous() and (t.numel() == n or not same_size)):
            return False
    return True


def score_grad(g: Tensor, w: Tensor, s: Tensor, out: Tensor) -> Tensor:
    _lib.score_grad(g.data_ptr(), w.data_ptr(), s.data_ptr(), out.data_ptr(), g.numel())
    return out


def score_sgd(g: Tensor, w: Tensor, s: Tensor, buf: Tensor | None, lr: float, momentum: float,
              weight_decay: float) -> None:
    """One SGD step on ``s`` (and ``buf``) in place; the caller bumps their version counters."""
    _lib.score_sgd(g.data_ptr(), w.data_ptr(), s.data_ptr(), 0 if buf is None else buf.data_ptr(), g.numel(),
                   -lr, momentum, weight_decay, int(weight_decay != 0), int(buf is not None and momentum != 0))


def threshold_weight(s: Tensor, w: Tensor, tau: int, cut: int, out: Tensor) -> Tensor:
    _lib.threshold_weight(s.data_ptr(), w.data_ptr(), out.data_ptr(), s.numel(), tau, min(cut, 2**62))
    return out


def patch_weight(s: Tensor, w: Tensor, out: Tensor, where: np.ndarray, offset: int, tau: int, cut: int) -> None:
    """:func:`threshold_weight` at the flat indices ``where`` − ``offset`` only (int64, within the tensors)."""
    if where.dtype != np.int64 or not where.flags.c_contiguous:
        where = np.ascontiguousarray(where, dtype=np.int64)
    _lib.patch_weight(s.data_ptr(), w.data_ptr(), out.data_ptr(), _address(where), where.size, offset, tau,
                      min(cut, 2**62))


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class WindowSelect:
    """:func:`window_select` with its buffers for a group of tensors of ``numels`` elements: bits (the last call's
    |S| bits), flags, flagged indices and a scratch of window values; their addresses are taken once."""

    def __init__(self, numels: tuple[int, ...]) -> None:
        n = sum(numels)
        self.bits = np.empty(n, dtype=np.int32)
        self.flags = np.empty(n, dtype=np.uint8)
        self.flagged = np.empty(n, dtype=np.int64)
        self.scratch = np.empty(n, dtype=np.int32)
        self.out = np.zeros(3, dtype=np.int64)
        self.numels = np.array(numels, dtype=np.int64)
        self.ptrs = np.zeros(len(numels), dtype=np.int64)
        self._addresses = tuple(_address(a) for a in (self.ptrs, self.numels, self.bits, self.flags, self.flagged,
                                                      self.scratch, self.out))

    def __deepcopy__(self, memo: dict) -> WindowSelect:
        return WindowSelect(tuple(int(n) for n in self.numels))  # fresh buffers: the addresses belong to these

    def __call__(self, flats: list[Tensor], lo: int, hi: int, k: int, keep_all: int) -> tuple[int, int] | None:
        """(τ, cut) when τ lies in [lo, hi), else None; ``self.flagged[:self.out[2]]`` lists the flagged indices.
        ``flats``: contiguous float32 CPU tensors of the ``numels`` this was made for."""
        for i, f in enumerate(flats):
            self.ptrs[i] = f.data_ptr()
        ptrs, numels, bits, flags, flagged, scratch, out = self._addresses
        found = _lib.window_select(len(flats), ptrs, numels, bits, flags, flagged, scratch, lo, hi, k, keep_all, out)
        return (int(self.out[0]), int(self.out[1])) if found else None
