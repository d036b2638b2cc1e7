"""Elementwise functions and layers shared by every block of the specification.

All functions take and return arrays of any array-API library, in the dtype of their input.
Dropout is the identity in the spec (it is a training-time regulariser, not part of the map).
erf, sigmoid, silu, softplus and linear are `overridable`: a backend may register its
framework's own function of the same definition (torch: torch.special.erf, torch.sigmoid,
F.silu, F.softplus with threshold 20, F.linear), one fused call instead of several array ops.
"""

from __future__ import annotations

import math

from ._common import LCONTRACTS, LECUN_SCALE, LECUN_SLOPE, namespace
from ._dispatch import overridable

__all__ = [
    "erf", "gelu", "sigmoid", "silu", "softplus", "lcontract", "linear", "glu",
    "layer_norm", "rms_norm", "batch_norm",
]

_SQRT_PI = math.sqrt(math.pi)


@overridable
def erf(x):
    """erf(x) = 2/sqrt(pi) int_0^x exp(-t^2) dt, to float64 accuracy (|error| < 1e-14).

    |x| < 2: Taylor series sum_k (-1)^k x^(2k+1) / (k! (2k+1)), 45 terms.
    |x| >= 2: erf = sign(x) (1 - erfc(|x|)), erfc(x) = exp(-x^2) / (sqrt(pi) K(x)) with the
    continued fraction K(x) = x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))), 80 levels.
    """
    xp = namespace(x)
    small = xp.clip(x, -2.0, 2.0)
    x2 = small * small
    term = small
    series = small
    for k in range(1, 45):
        term = -term * x2 / k
        series = series + term / (2 * k + 1)
    series = 2 / _SQRT_PI * series
    big = xp.clip(xp.abs(x), 2.0, None)
    frac = big
    for k in range(80, 0, -1):
        frac = big + (k / 2) / frac
    tail = 1 - xp.exp(-big * big) / (_SQRT_PI * frac)
    return xp.where(xp.abs(x) < 2.0, series, xp.where(x < 0, -tail, tail))


def gelu(x, approximate: bool = False):
    """GELU: x Phi(x) = x (1 + erf(x / sqrt 2)) / 2; approximate=True: the tanh form
    x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (jax.nn.gelu's default)."""
    xp = namespace(x)
    if approximate:
        return 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


@overridable
def sigmoid(x):
    """1 / (1 + exp(-x)), evaluated without overflow for large |x|."""
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@overridable
def silu(x):
    """x sigmoid(x)."""
    return x * sigmoid(x)


@overridable
def softplus(x, threshold: float = 20.0):
    """log(1 + exp(x)), and x itself where x > threshold (as torch and mamba do)."""
    xp = namespace(x)
    return xp.where(x > threshold, x, xp.log1p(xp.exp(xp.clip(x, None, threshold))))




def lcontract(x, kind: str):
    """The liquid input nonlinearity phi: none -> x, tanh -> tanh(x),
    lecun -> 1.7159 tanh(0.666 x) (LeCun's scaled tanh, as Liquid-S4)."""
    xp = namespace(x)
    if kind == "none":
        return x
    if kind == "tanh":
        return xp.tanh(x)
    if kind == "lecun":
        return LECUN_SCALE * xp.tanh(LECUN_SLOPE * x)
    raise ValueError(f"lcontract: expected one of {list(LCONTRACTS)}, got {kind!r}")


def lcontract_grad(x, kind: str):
    """d phi / dx of lcontract(x, kind): 1, 1 - tanh(x)^2, SCALE SLOPE (1 - tanh(SLOPE x)^2)."""
    xp = namespace(x)
    if kind == "none":
        return xp.ones_like(x)
    if kind == "tanh":
        return 1 - xp.tanh(x) ** 2
    return LECUN_SCALE * LECUN_SLOPE * (1 - xp.tanh(LECUN_SLOPE * x) ** 2)


@overridable
def linear(x, weight, bias=None):
    """x @ weight^T + bias; x (..., in), weight (out, in), bias (out,) -> (..., out)."""
    xp = namespace(x, weight)
    y = xp.matmul(x, xp.matrix_transpose(weight))
    return y if bias is None else y + bias


def glu(x):
    """Split x into halves a, b along the last axis; a * sigmoid(b)."""
    n = x.shape[-1] // 2
    return x[..., :n] * sigmoid(x[..., n:])


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    xp = namespace(x)
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    y = (x - mean) / xp.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def rms_norm(x, weight=None, eps: float = 1e-5):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (mamba's RMSNorm)."""
    xp = namespace(x)
    y = x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def batch_norm(x, running_mean, running_var, weight=None, bias=None, eps: float = 1e-5):
    """Inference-form BatchNorm over the last axis with given running statistics:
    (x - running_mean) / sqrt(running_var + eps) * weight + bias."""
    xp = namespace(x)
    y = (x - running_mean) / xp.sqrt(running_var + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias
