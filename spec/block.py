"""The standard S4 block around a sequence mixer (an SSM), shared by the S4-family variants.

    prenorm:  y = u + FF(mixer(LN(u)))        postnorm:  y = LN(u + FF(mixer(u)))
    FF(z) = GLU(Linear_{H -> 2H}(GELU(z))),  GLU(a, b) = a * sigmoid(b)
LN is LayerNorm over the channel axis (eps 1e-5); dropout is the identity in the spec.
Works on sequences (batch, L, H) and on single steps (batch, H) alike (every map acts on the
last axis), so the same call wraps `forward` and `step`.

Parameters (real float64 from `init`): "norm.weight" (H,), "norm.bias" (H,),
"output_linear.weight" (2H, H), "output_linear.bias" (2H,). A model keeps the mixer's own
parameters beside them under a prefix, e.g. "ssm.log_dt" (`with_prefix` / `strip_prefix`).
"""

from __future__ import annotations

import math

import numpy as np

from ._common import check_array, check_bool, check_int
from .nn import gelu, glu, layer_norm, linear

__all__ = ["init", "feedforward", "residual", "forward", "with_prefix", "strip_prefix"]


def init(d_model: int, seed: int = 0) -> dict:
    """LayerNorm weight 1, bias 0; Linear weight and bias ~ U[-1/sqrt(H), 1/sqrt(H)]
    (torch.nn.Linear's default, as the published S4 block)."""
    H = check_int("d_model", d_model)
    rng = np.random.default_rng(seed)
    bound = 1 / math.sqrt(H)
    return {
        "norm.weight": np.ones(H),
        "norm.bias": np.zeros(H),
        "output_linear.weight": rng.uniform(-bound, bound, (2 * H, H)),
        "output_linear.bias": rng.uniform(-bound, bound, 2 * H),
    }


def _get(params, name, shape):
    if not isinstance(params, dict) or name not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected an entry {name!r}, got {got}")
    return check_array(f"params[{name!r}]", params[name], shape)


def feedforward(params: dict, z, *, approximate_gelu: bool = False):
    """GLU(Linear(GELU(z))): z (..., H) -> (..., H)."""
    check_bool("approximate_gelu", approximate_gelu)
    H = z.shape[-1]
    W = _get(params, "output_linear.weight", (2 * H, H))
    b = _get(params, "output_linear.bias", (2 * H,))
    return glu(linear(gelu(z, approximate=approximate_gelu), W, b))


def _split(out):
    """A sublayer returns an array or a tuple (array, *extra)."""
    return (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, ())


def residual(params: dict, u, sublayer, *, prenorm: bool = True, eps: float = 1e-5):
    """u + sublayer(LN(u)) (prenorm) or LN(u + sublayer(u)) (postnorm); u (..., H).

    `sublayer` maps (..., H) -> (..., H), or to a tuple (y, *extra) (e.g. a state); the extra
    items are returned after the output: y or (y, *extra)."""
    check_bool("prenorm", prenorm)
    check_array("u", u, (None,) * (len(getattr(u, "shape", ())) - 1) + (None,))
    H = u.shape[-1]
    w, b = _get(params, "norm.weight", (H,)), _get(params, "norm.bias", (H,))
    out, extra = _split(sublayer(layer_norm(u, w, b, eps) if prenorm else u))
    y = u + out if prenorm else layer_norm(u + out, w, b, eps)
    return (y, *extra) if extra else y


def forward(params: dict, u, mixer, *, prenorm: bool = True, approximate_gelu: bool = False):
    """The S4 block: residual(u, FF o mixer). `mixer` as residual's `sublayer`, e.g.
    lambda x: s4d.forward(cfg, strip_prefix(params, "ssm."), x, state=st, return_state=True)."""
    check_bool("prenorm", prenorm)
    check_bool("approximate_gelu", approximate_gelu)

    def sublayer(x):
        z, extra = _split(mixer(x))
        y = feedforward(params, z, approximate_gelu=approximate_gelu)
        return (y, *extra) if extra else y

    return residual(params, u, sublayer, prenorm=prenorm)


def with_prefix(params: dict, prefix: str) -> dict:
    """{prefix + name: value}."""
    return {prefix + k: v for k, v in params.items()}


def strip_prefix(params: dict, prefix: str) -> dict:
    """The entries whose name starts with `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
