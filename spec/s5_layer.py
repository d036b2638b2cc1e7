"""The S5 sequence layer (lindermanlab/S5 layers.py SequenceLayer, inference form).

ssm is an s5.Config or a liquid_s5.Config (the layer runs that variant). u (batch, L, H):

    skip = u;  x = norm(u) if prenorm else u;  x = ssm(x)
    full_glu:  g = gelu(x); x = out1(g) * sigmoid(out2(g))
    half_glu1: g = gelu(x); x = g * sigmoid(out2(g))
    half_glu2: x = x * sigmoid(out2(gelu(x)))
    gelu:      x = gelu(x)
    x = skip + x;  y = norm(x) if not prenorm else x
norm: BatchNorm in its inference form (running mean / var, eps 1e-5) or LayerNorm (eps 1e-6),
flax's epsilons; out1, out2: Dense(H -> H). Dropout = identity.

Parameters: the SSM's own names (flat, as the variant: "Lambda_re", ...), "norm_weight",
"norm_bias", ["norm_mean", "norm_var": batch norm running statistics], ["out1_weight",
"out1_bias": full_glu], ["out2_weight", "out2_bias": every GLU]. Init: the SSM's
init(ssm, seed); from default_rng(child_seed(seed, 1)): Dense weights lecun-normal stored (out,
in), biases 0, norm weight 1, bias 0, running mean 0, var 1. State: the SSM's; `timesteps`
(irregular sampling) goes to the SSM.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from . import nn
from ._common import (
    cast_arrays,
    check_array,
    check_bool,
    check_choice,
    check_config,
    check_int,
    check_params,
    check_seed,
    child_seed,
)

__all__ = ["Config", "param_shapes", "init", "initial_state", "forward", "step", "ACTIVATIONS",
           "NORMS"]

ACTIVATIONS = ("full_glu", "half_glu1", "half_glu2", "gelu")
NORMS = ("batch", "layer")
#: epsilons of flax's nn.LayerNorm and nn.BatchNorm (the published layer)
LAYER_NORM_EPS = 1e-6
BATCH_NORM_EPS = 1e-5
#: the running statistics of the batch norm (not trained)
STATISTICS = ("norm_mean", "norm_var")


def _ssm_types():
    from . import liquid_s5, s5

    return (s5.Config, liquid_s5.Config)


def ssm_module(config):
    """liquidssm.spec.s5 or liquidssm.spec.liquid_s5, by config.ssm's type."""
    return importlib.import_module(type(config.ssm).__module__)


@dataclass(frozen=True)
class Config:
    """ssm: an s5 or liquid_s5 Config. Defaults from the published run_train.py: half_glu1,
    prenorm, BatchNorm; flax's tanh-approximate GELU."""

    ssm: object
    activation: str = "half_glu1"
    prenorm: bool = True
    norm: str = "batch"
    approximate_gelu: bool = True

    def __post_init__(self):
        check_config(self.ssm, _ssm_types(), "ssm")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("norm", self.norm, NORMS)
        check_bool("prenorm", self.prenorm)
        check_bool("approximate_gelu", self.approximate_gelu)

    @property
    def d_model(self) -> int:
        return self.ssm.d_model


def _own_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    H = config.d_model
    shapes = {"norm_weight": (H,), "norm_bias": (H,)}
    if config.norm == "batch":
        shapes.update(norm_mean=(H,), norm_var=(H,))
    if config.activation == "full_glu":
        shapes.update(out1_weight=(H, H), out1_bias=(H,))
    if config.activation != "gelu":
        shapes.update(out2_weight=(H, H), out2_bias=(H,))
    return shapes


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """The SSM's names and the layer's own (module docstring)."""
    check_config(config, Config)
    return {**ssm_module(config).param_shapes(config.ssm), **_own_shapes(config)}


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """SSM init(ssm, seed) + the layer's own parameters (module docstring)."""
    check_config(config, Config)
    check_seed(seed)
    from .s5 import _lecun

    params = ssm_module(config).init(config.ssm, seed)
    rng = np.random.default_rng(child_seed(seed, 1))
    H = config.d_model
    for name, shape in _own_shapes(config).items():
        if name.startswith("out") and name.endswith("_weight"):  # flax Dense: lecun, (out, in)
            params[name] = _lecun(rng, (H, H)).T
        elif name in ("norm_weight", "norm_var"):
            params[name] = np.ones(shape)
        else:
            params[name] = np.zeros(shape)
    return params


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """The SSM's initial state."""
    check_config(config, Config)
    check_int("batch", batch)
    return ssm_module(config).initial_state(config.ssm, batch)


def _norm(config, params, x):
    if config.norm == "layer":
        return nn.layer_norm(x, params["norm_weight"], params["norm_bias"], LAYER_NORM_EPS)
    return nn.batch_norm(x, params["norm_mean"], params["norm_var"], params["norm_weight"],
                         params["norm_bias"], BATCH_NORM_EPS)


def _activation(config, params, x):
    g = nn.gelu(x, approximate=config.approximate_gelu)
    if config.activation == "full_glu":
        return nn.linear(g, params["out1_weight"], params["out1_bias"]) * nn.sigmoid(
            nn.linear(g, params["out2_weight"], params["out2_bias"]))
    if config.activation == "half_glu1":
        return g * nn.sigmoid(nn.linear(g, params["out2_weight"], params["out2_bias"]))
    if config.activation == "half_glu2":
        return x * nn.sigmoid(nn.linear(g, params["out2_weight"], params["out2_bias"]))
    return g


def _apply(config, params, u, ssm):
    x = _norm(config, params, u) if config.prenorm else u
    out = ssm(x)
    x, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
    x = u + _activation(config, params, x)
    if not config.prenorm:
        x = _norm(config, params, x)
    return (x, *rest) if rest else x


def forward(config: Config, params, u, *, state=None, return_state=False, timesteps=None,
            shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, the SSM's new state]; timesteps (batch, L);
    shards as the SSM's forward (the norms and activations are pointwise in time)."""
    check_config(config, Config)
    check_bool("return_state", return_state)
    check_array("u", u, ("batch", "length", config.d_model))
    check_params(params, param_shapes(config), inputs={"u": u})
    params = cast_arrays(params, u.dtype)  # the dtype policy: compute in u's dtype
    module = ssm_module(config)
    ssm = {k: params[k] for k in module.param_shapes(config.ssm)}
    return _apply(config, params, u, lambda x: module.forward(
        config.ssm, ssm, x, state=state, return_state=return_state, timesteps=timesteps,
        shards=shards))


def step(config: Config, params, state, u_t, *, timesteps=None):
    """One position: u_t (batch, H) -> (y_t, new state); timesteps (batch,)."""
    check_config(config, Config)
    check_array("u_t", u_t, ("batch", config.d_model))
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    params = cast_arrays(params, u_t.dtype)
    module = ssm_module(config)
    ssm = {k: params[k] for k in module.param_shapes(config.ssm)}
    return _apply(config, params, u_t, lambda x: module.step(config.ssm, ssm, state, x,
                                                             timesteps=timesteps))


def step_params(config: Config, params):
    """What `_step` reads: {"own": params, "ssm": the SSM's step_params} (None for a
    bidirectional SSM)."""
    module = ssm_module(config)
    ssm = module.step_params(config.ssm, {k: params[k] for k in module.param_shapes(config.ssm)})
    return None if ssm is None else {"own": params, "ssm": ssm}


def _step(config: Config, p, state, u_t, xp):
    """step's computation (timesteps None), unchecked (p = step_params(config, params))."""
    module = ssm_module(config)
    return _apply(config, p["own"], u_t, lambda x: module._step(config.ssm, p["ssm"], state, x,
                                                               xp))
