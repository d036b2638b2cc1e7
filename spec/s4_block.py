"""The S4 block: the standard residual block around an S4-family sequence mixer.

    prenorm:  y = u + FF(ssm(LN(u)))        postnorm:  y = LN(u + FF(ssm(u)))
    FF(z) = GLU(Linear_{H -> 2H}(GELU(z))),  GLU(a, b) = a * sigmoid(b)
LN is LayerNorm over the channel axis (eps 1e-5); dropout is the identity in the spec.
ssm is an s4d, s4 or liquid_s4 Config; u (batch, L, H) -> y (batch, L, H). Every block map acts
on the last axis, so the same code wraps the SSM's `forward` (sequences) and `step` (one
position, u_t (batch, H)).

Parameters (real float64 from `init`): "norm.weight" (H,), "norm.bias" (H,),
"output_linear.weight" (2H, H), "output_linear.bias" (2H,), and the SSM's own under "ssm."
(e.g. "ssm.log_dt"). Init: the SSM's `init(ssm, seed)` (the same weights as the variant alone),
LayerNorm 1 / 0, Linear weight and bias ~ U[-1/sqrt(H), 1/sqrt(H)] (torch.nn.Linear's default,
as the published S4 block) drawn from default_rng(child_seed(seed, 1)).
State: the SSM's state dict (the same keys).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np

from ._common import (
    cast_arrays,
    check_array,
    check_bool,
    check_config,
    check_int,
    check_params,
    check_seed,
    child_seed,
    shapes_of,
    strip_prefix,
    with_prefix,
)
from .nn import gelu, glu, layer_norm, linear

__all__ = ["Config", "param_shapes", "init", "initial_state", "forward", "step",
           "feedforward", "residual"]

LAYER_NORM_EPS = 1e-5


def _ssm_types():
    from . import liquid_s4, s4, s4d

    return (s4d.Config, s4.Config, liquid_s4.Config)


def ssm_module(config):
    """The variant module of config.ssm (liquidssm.spec.s4d, .s4 or .liquid_s4)."""
    return importlib.import_module(type(config.ssm).__module__)


@dataclass(frozen=True)
class Config:
    """ssm: an s4d, s4 or liquid_s4 Config; prenorm; approximate_gelu (tanh GELU)."""

    ssm: object
    prenorm: bool = True
    approximate_gelu: bool = False

    def __post_init__(self):
        check_config(self.ssm, _ssm_types(), "ssm")
        check_bool("prenorm", self.prenorm)
        check_bool("approximate_gelu", self.approximate_gelu)

    @property
    def d_model(self) -> int:
        return self.ssm.d_model


def _own_shapes(H):
    return {"norm.weight": (H,), "norm.bias": (H,), "output_linear.weight": (2 * H, H),
            "output_linear.bias": (2 * H,)}


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """The block's names and shapes (module docstring), the SSM's under "ssm."."""
    check_config(config, Config)
    ssm = shapes_of(ssm_module(config), config.ssm)
    return {**_own_shapes(config.d_model), **with_prefix(ssm, "ssm.")}


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """SSM init(ssm, seed); norm 1 / 0; output_linear ~ U(+-1/sqrt(H)) (module docstring)."""
    check_config(config, Config)
    check_seed(seed)
    H = config.d_model
    rng = np.random.default_rng(child_seed(seed, 1))
    bound = 1 / math.sqrt(H)
    own = {
        "norm.weight": np.ones(H),
        "norm.bias": np.zeros(H),
        "output_linear.weight": rng.uniform(-bound, bound, (2 * H, H)),
        "output_linear.bias": rng.uniform(-bound, bound, 2 * H),
    }
    return {**own, **with_prefix(ssm_module(config).init(config.ssm, seed), "ssm.")}


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """The SSM's initial state."""
    check_config(config, Config)
    check_int("batch", batch)
    return ssm_module(config).initial_state(config.ssm, batch)


def feedforward(params: dict, z, *, approximate_gelu: bool = False):
    """GLU(Linear(GELU(z))): z (..., H) -> (..., H)."""
    check_bool("approximate_gelu", approximate_gelu)
    W, b = params["output_linear.weight"], params["output_linear.bias"]
    return glu(linear(gelu(z, approximate=approximate_gelu), W, b))


def residual(params: dict, u, sublayer, *, prenorm: bool = True, eps: float = LAYER_NORM_EPS):
    """u + sublayer(LN(u)) (prenorm) or LN(u + sublayer(u)) (postnorm); u (..., H); LN with
    params "norm.weight", "norm.bias". `sublayer` returns an array or (array, state); the
    result is y or (y, state) accordingly."""
    check_bool("prenorm", prenorm)
    w, b = params["norm.weight"], params["norm.bias"]
    out = sublayer(layer_norm(u, w, b, eps) if prenorm else u)
    z, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
    y = u + z if prenorm else layer_norm(u + z, w, b, eps)
    return (y, *rest) if rest else y


def _apply(config, params, u, mixer):
    def sublayer(x):
        out = mixer(x)
        z, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        y = feedforward(params, z, approximate_gelu=config.approximate_gelu)
        return (y, *rest) if rest else y

    return residual(params, u, sublayer, prenorm=config.prenorm)


def forward(config: Config, params, u, *, state=None, return_state=False, shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, the SSM's new state]; shards as the SSM's forward
    (the block's other operations are pointwise in time)."""
    check_config(config, Config)
    check_bool("return_state", return_state)
    check_array("u", u, ("batch", "length", config.d_model))
    check_params(params, param_shapes(config), inputs={"u": u})
    params = cast_arrays(params, u.dtype)  # the dtype policy: compute in u's dtype
    ssm, module = strip_prefix(params, "ssm."), ssm_module(config)
    return _apply(config, params, u, lambda x: module.forward(
        config.ssm, ssm, x, state=state, return_state=return_state, shards=shards))


def step(config: Config, params, state, u_t):
    """One position: u_t (batch, H) -> (y_t (batch, H), new state)."""
    check_config(config, Config)
    check_array("u_t", u_t, ("batch", config.d_model))
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    params = cast_arrays(params, u_t.dtype)
    ssm, module = strip_prefix(params, "ssm."), ssm_module(config)
    return _apply(config, params, u_t, lambda x: module.step(config.ssm, ssm, state, x))


def step_params(config: Config, params):
    """What `_step` reads: {"own": the block's own params, "ssm": the SSM module's step_params}
    (None where the SSM has no `_step`: S4, Liquid-S4)."""
    module = ssm_module(config)
    if not hasattr(module, "step_params"):
        return None
    ssm = module.step_params(config.ssm, strip_prefix(params, "ssm."))
    return None if ssm is None else {"own": params, "ssm": ssm}


def _step(config: Config, p, state, u_t, xp):
    """step's computation, unchecked (p = step_params(config, params))."""
    module = ssm_module(config)
    return _apply(config, p["own"], u_t, lambda x: module._step(config.ssm, p["ssm"], state, x,
                                                               xp))
