"""One-pass C loops for the elementwise part of fake quantization, same values as the torch ops.

:mod:`qpolicy_train.fused_quant` spends most of its time in elementwise passes: a forward is four
(``x / s``, round, clamp, ``* s``) and its backward about ten, each a separate kernel launch that
reads and writes the whole tensor. Here each direction is one loop doing the same IEEE float
operations per element (division, round-half-to-even, clamp, multiplication, no fused multiply-add),
so every result is bit-identical to the torch ops; the two reductions of the scale gradient stay
``torch.sum`` calls on the products, so their summation order is torch's. ``tests/test_fused_quant.py``
compares the loops with the torch ops bit for bit.

The C source is compiled on first use with the system C compiler (:mod:`qpolicy_hw.cc`, IEEE flags) into a per-user cache (well under
a second) and loaded with :mod:`ctypes`. Without a compiler, or for tensors that are not contiguous
float32 on the CPU, callers fall back to the torch ops: the same numbers, only slower.
"""
from __future__ import annotations

import ctypes
import os
import subprocess

import torch

from qpolicy_hw.cc import shared_library

SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* torch.clamp(r, lo, hi): NaN propagates (both comparisons are false) */
static inline float clampf(float r, float lo, float hi) { return r < lo ? lo : (r > hi ? hi : r); }

/* out = clamp(round(x / s), lo, hi) * s */
void fq_forward(const float *x, float *out, int64_t n, float s, float lo, float hi) {
    for (int64_t i = 0; i < n; ++i) out[i] = clampf(nearbyintf(x[i] / s), lo, hi) * s;
}

/* The backward of out = c * s with c = clamp(round(z)), z = x / s, round straight-through:
   gx = gc / s with gc = g * s (zeroed where r lies outside [lo, hi] unless the clamp passes the gradient),
   p1 = g * c and p2 = gc * (z / s); the caller forms d/ds = sum(p1) + -sum(p2) with torch.sum. */
void fq_backward(const float *g, const float *x, float *gx, float *p1, float *p2, int64_t n,
                 float s, float lo, float hi, int clamp_passes_grad) {
    for (int64_t i = 0; i < n; ++i) {
        float z = x[i] / s;
        float r = nearbyintf(z);
        float c = clampf(r, lo, hi);
        float gc = g[i] * s;
        p1[i] = g[i] * c;
        if (!clamp_passes_grad && (r > hi || r < lo)) gc = 0.0f;
        gx[i] = gc / s;
        p2[i] = gc * (z / s);
    }
}

/* The gradient a per-tensor abs-max scale statistic v = max(|w|) sends back to w, added to gw: a full max
   spreads its gradient evenly over the maxima (``spread`` = grad / count, computed by the caller) and abs
   multiplies by sgn(w) (torch.sgn: (0 < w) - (w < 0)); every other element gets a signed zero, as in torch. */
int64_t fq_count_abs_equal(const float *w, int64_t n, float v) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i) count += fabsf(w[i]) == v;
    return count;
}

void fq_add_spread(float *gw, const float *w, int64_t n, float v, float spread) {
    for (int64_t i = 0; i < n; ++i) {
        float sgn = (float)((0.0f < w[i]) - (w[i] < 0.0f));
        gw[i] = gw[i] + (fabsf(w[i]) == v ? spread : 0.0f) * sgn;
    }
}
"""
_lib: ctypes.CDLL | None = None
_load_error: str | None = None


def _build() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(shared_library(SOURCE, "fakequant", "kernels")))
    f, i64 = ctypes.c_float, ctypes.c_int64
    ptr = ctypes.c_void_p
    lib.fq_forward.argtypes = [ptr, ptr, i64, f, f, f]
    lib.fq_forward.restype = None
    lib.fq_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, f, f, f, ctypes.c_int]
    lib.fq_backward.restype = None
    lib.fq_count_abs_equal.argtypes = [ptr, i64, f]
    lib.fq_count_abs_equal.restype = i64
    lib.fq_add_spread.argtypes = [ptr, ptr, i64, f, f]
    lib.fq_add_spread.restype = None
    return lib


def kernels() -> ctypes.CDLL | None:
    """The compiled loops, or None (with :func:`unavailable_reason` saying why) where they cannot be built."""
    global _lib, _load_error
    if _lib is None and _load_error is None:
        if os.environ.get("QPOLICY_NO_C_KERNELS"):
            _load_error = "disabled by QPOLICY_NO_C_KERNELS"
        else:
            try:
                _lib = _build()
            except (OSError, subprocess.CalledProcessError) as e:
                _load_error = f"{type(e).__name__}: {getattr(e, 'stderr', None) or e}".strip()
    return _lib


def unavailable_reason() -> str | None:
    kernels()
    return _load_error


def usable(t: torch.Tensor, scale: torch.Tensor | None = None) -> bool:
    """Whether the loops apply: ``t`` a contiguous float32 CPU tensor, ``scale`` (if given) float32,
    and a built library. (Called per quantizer and step, so it is kept cheap.)"""
    return t.dtype is torch.float32 and (scale is None or scale.dtype is torch.float32) and t.is_contiguous() \
        and t.device.type == "cpu" and (_lib is not None or kernels() is not None)


def forward(x: torch.Tensor, s: float, lo: float, hi: float) -> torch.Tensor:
    """``torch.clamp(torch.round(x / s), lo, hi) * s`` in one pass (``x`` contiguous float32)."""
    out = torch.empty_like(x)
    _lib.fq_forward(x.data_ptr(), out.data_ptr(), x.numel(), s, lo, hi)
    return out


def backward(g: torch.Tensor, x: torch.Tensor, s: float, lo: float, hi: float,
             clamp_passes_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input gradient and the two products whose ``torch.sum`` form the scale gradient."""
    gx, p1, p2 = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    _lib.fq_backward(g.data_ptr(), x.data_ptr(), gx.data_ptr(), p1.data_ptr(), p2.data_ptr(), x.numel(),
                     s, lo, hi, int(clamp_passes_grad))
    return gx, p1, p2


def add_abs_max_grad(g_w: torch.Tensor, w: torch.Tensor, v: torch.Tensor, g_v: torch.Tensor) -> None:
    """Add, in place, what ``v = max(abs(w))`` passes back to ``w`` for the gradient ``g_v`` of ``v``: the
    same values as autograd's ``MaxBackward1`` (``zeros.masked_fill_(|w| == v, g_v / count)``) then
    ``AbsBackward0`` (``* sgn(w)``), added as autograd's input buffer adds the two paths."""
    count = _lib.fq_count_abs_equal(w.data_ptr(), w.numel(), float(v))
    spread = g_v / torch.tensor(count)    # float32 / int64, as grad / mask.sum() in torch
    _lib.fq_add_spread(g_w.data_ptr(), w.data_ptr(), w.numel(), float(v), float(spread))
