"""The Mamba residual block (mamba_ssm's Block with RMSNorm, d_intermediate = 0):

    y = u + mixer(rms_norm(u, norm.weight, norm_epsilon))          u (batch, L, d_model)

(mamba_ssm's Add -> RMSNorm -> Mixer ordering, with the residual carried to the next block,
computes exactly this sum.) Parameters: "norm.weight" (d_model,) and the mixer's own under
"mixer." (mamba_simple.Mamba's names: "mixer.in_proj.weight", ...). Init: the mixer's
`mamba.init(mixer, seed)`, norm weight 1. State: the mixer's (conv_state, ssm_state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import mamba
from ._common import (
    cast_arrays,
    check_array,
    check_bool,
    check_config,
    check_float,
    check_int,
    check_params,
    check_seed,
    namespace,
    strip_prefix,
    with_prefix,
)
from .nn import rms_norm

__all__ = ["Config", "param_shapes", "init", "initial_state", "forward", "step", "step_params"]


@dataclass(frozen=True)
class Config:
    """mixer: a mamba.Config; norm_epsilon: the RMSNorm's eps."""

    mixer: mamba.Config
    norm_epsilon: float = 1e-5

    def __post_init__(self):
        check_config(self.mixer, mamba.Config, "mixer")
        check_float("norm_epsilon", self.norm_epsilon, positive=True)

    @property
    def d_model(self) -> int:
        return self.mixer.d_model


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    check_config(config, Config)
    return {"norm.weight": (config.d_model,),
            **with_prefix(mamba.param_shapes(config.mixer), "mixer.")}


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    check_config(config, Config)
    return {"norm.weight": np.ones(config.d_model),
            **with_prefix(mamba.init(config.mixer, check_seed(seed)), "mixer.")}


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    check_config(config, Config)
    return mamba.initial_state(config.mixer, check_int("batch", batch))


def forward(config: Config, params, u, *, state=None, return_state=False, shards=None):
    """u (batch, L, d_model) -> y [, the mixer's new state]; shards as mamba.forward's."""
    check_config(config, Config)
    check_bool("return_state", return_state)
    check_array("u", u, ("batch", "length", config.d_model))
    check_params(params, param_shapes(config), inputs={"u": u})
    params = cast_arrays(params, u.dtype)  # the dtype policy: compute in u's dtype
    h = rms_norm(u, params["norm.weight"], config.norm_epsilon)
    out = mamba.forward(config.mixer, strip_prefix(params, "mixer."), h, state=state,
                        return_state=return_state, shards=shards)
    return (u + out[0], out[1]) if return_state else u + out


def step(config: Config, params, state, u_t):
    """One position: u_t (batch, d_model) -> (y_t, new state). Checks and casts, then `_step`."""
    check_config(config, Config)
    check_array("u_t", u_t, ("batch", config.d_model))
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    b, mixer = u_t.shape[0], config.mixer
    mamba._check_state(state, {"conv_state": (b, mixer.d_inner, mixer.d_conv),
                               "ssm_state": (b, mixer.d_inner, mixer.d_state)})
    params, state = cast_arrays(params, u_t.dtype), cast_arrays(state, u_t.dtype)
    return _step(config, step_params(config, params), state, u_t, namespace(u_t),
                 mamba._checked_update)


def step_params(config: Config, params) -> dict:
    """What `_step` reads: {"norm.weight", "mixer": mamba.step_params of the mixer's}."""
    return {"norm.weight": params["norm.weight"],
            "mixer": mamba.step_params(config.mixer, strip_prefix(params, "mixer."))}


def _step(config: Config, p, state, u_t, xp, update=mamba._state_update):
    """step's computation, unchecked (as mamba._step): u_t + mixer(rms_norm(u_t))."""
    h = rms_norm(u_t, p["norm.weight"], config.norm_epsilon)
    y, new = mamba._step(config.mixer, p["mixer"], state, h, xp, update)
    return u_t + y, new
