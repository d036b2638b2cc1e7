"""The LiquidMamba block: a pre-norm residual block around a liquid Mamba mixer, plus an FFN.

For u (batch, L, d_model), d = d_inner, N = d_state, r = dt_rank, K = d_conv, p = liquid_degree:
    h        = rms_norm(u, norm.weight)
    x, z     = split(mixer.in_proj(h))                                       (b, d, L) each
    conv = "plain":  x_c = silu(w_a * x + b_a)                                (as Mamba)
    conv = "gated":  x_c = (w_a * x + b_a) . sigmoid(w_g * x + b_g)
           (* = causal depthwise convolution of width K; w_a, b_a = mixer.conv1d.*,
            w_g, b_g = mixer.conv1d_gate.*)
    dt, B, C[, BL] = split(mixer.x_proj(x_c), [r, N, N(, N)]);  BL = B when tied
    y  = liquid_selective_scan(x_c, dt_proj.weight @ dt, -exp(A_log), B, C, D, z,
                               delta_bias = dt_proj.bias, delta_softplus = True,
                               liquid_degree = p, BL, lcontract)
         i.e. with Delta = softplus(delta + bias), c_t[d, n] = Delta_t[d] phi(BL_t[n] x_t[d]):
         h0_t = exp(Delta_t A) h0_{t-1} + Delta_t B_t x_t,
         hm_t = exp(Delta_t A) hm_{t-1} + c_t h(m-1)_{t-1}  (m = 1..p-1),
         y_t  = (C_t . sum_m hm_t + D x_t) silu(z_t)
    x1 = u + mixer.out_proj(y)
    ffn = "none":   out = x1
    ffn = "swiglu": out = x1 + fc2(a . silu(g)),  [a, g] = split(fc1(rms_norm(x1, norm2.weight)))
    ffn = "gelu":   out = x1 + fc2(gelu(fc1(rms_norm(x1, norm2.weight))))   (exact erf GELU)
with mlp.fc1, mlp.fc2 of hidden width int(ffn_expand d_model). With liquid_degree=1,
conv="plain", ffn="none" this is exactly u + mamba.forward(mixer, rms_norm(u)).
Cache: conv_state (b, d, K), the last K pre-conv inputs x (both conv branches read this same
window, so it is the whole conv cache); ssm_state (b, p, d, N), all p levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import mamba
from ._common import (
    cast_arrays,
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_params,
    check_shards,
    namespace,
    scan_options,
)
from .mamba import _causal_conv, _check_state, _sub, _t
from .nn import LCONTRACTS, gelu, linear, rms_norm, sigmoid, silu, softplus
from .selective import _liquid_state_update, liquid_selective_scan

__all__ = ["Config", "mamba_config", "param_shapes", "init", "initial_state", "forward", "step",
           "step_params"]


@dataclass(frozen=True)
class Config(mamba._MixerConfig):
    """mamba.Config's fields, plus: liquid_degree p >= 1 (2 by default: the seed paper's
    data-dependent state update needs p >= 2, and 2 is Liquid-S4's default); tied (BL = B) or
    untied (N extra x_proj rows); lcontract phi in {none, tanh, lecun}; conv in {plain, gated};
    ffn in {none, swiglu, gelu} of width int(ffn_expand d_model); norm_epsilon of both RMSNorms.
    The defaults switch all three of the paper's changes on."""

    liquid_degree: int = 2
    tied: bool = True
    lcontract: str = "none"
    conv: str = "gated"
    ffn: str = "swiglu"
    ffn_expand: float = 4.0
    norm_epsilon: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        check_int("liquid_degree", self.liquid_degree)
        check_bool("tied", self.tied)
        check_choice("lcontract", self.lcontract, LCONTRACTS)
        check_choice("conv", self.conv, ("plain", "gated"))
        check_choice("ffn", self.ffn, ("none", "swiglu", "gelu"))
        check_float("ffn_expand", self.ffn_expand, positive=True)
        if self.ffn != "none" and self.d_ffn < 1:
            raise ValueError(f"ffn_expand: expected int(ffn_expand * d_model) >= 1, got "
                             f"{self.ffn_expand} * {self.d_model}")
        check_float("norm_epsilon", self.norm_epsilon, positive=True)

    @property
    def d_ffn(self) -> int:
        return int(self.ffn_expand * self.d_model)


def _check_config(config):
    mamba._check_config(config, Config)


def mamba_config(config: Config) -> mamba.Config:
    """The mamba.Config with the same mixer fields."""
    _check_config(config)
    return mamba.Config(**{k: getattr(config, k) for k in mamba.Config.__dataclass_fields__})


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """norm.weight; mixer.<mamba names> (x_proj with N more rows when untied), and when gated
    mixer.conv1d_gate.weight (d, 1, K) [, .bias (d,)]; with an FFN norm2.weight,
    mlp.fc1.weight (2 d_ffn for swiglu else d_ffn, d_model), mlp.fc2.weight (d_model, d_ffn)
    [and their biases when bias]."""
    _check_config(config)
    m, d, h = config.d_model, config.d_inner, config.d_ffn
    extra = 0 if config.tied else config.d_state
    shapes = {"norm.weight": (m,)}
    shapes.update({f"mixer.{k}": s for k, s in
                   mamba.param_shapes(config, xproj_extra=extra).items()})
    if config.conv == "gated":
        shapes["mixer.conv1d_gate.weight"] = (d, 1, config.d_conv)
        if config.conv_bias:
            shapes["mixer.conv1d_gate.bias"] = (d,)
    if config.ffn != "none":
        h1 = 2 * h if config.ffn == "swiglu" else h
        shapes.update({"norm2.weight": (m,), "mlp.fc1.weight": (h1, m)})
        if config.bias:
            shapes["mlp.fc1.bias"] = (h1,)
        shapes["mlp.fc2.weight"] = (m, h)
        if config.bias:
            shapes["mlp.fc2.bias"] = (m,)
    return shapes


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Float64 parameters (names/shapes as param_shapes). The mixer's first draws are exactly
    mamba.init(mamba_config(config), seed); then the untied BL rows of x_proj and the gate conv
    (torch default init U(+-1/sqrt(fan_in)), as the other Linear/Conv1d), then fc1, fc2.
    Norm weights are 1."""
    _check_config(config)
    rng = mamba._rng(seed)
    d, m, h, K = config.d_inner, config.d_model, config.d_ffn, config.d_conv
    mixer = mamba._init_mixer(config, rng)
    if not config.tied:
        bl = rng.uniform(-(d**-0.5), d**-0.5, (config.d_state, d))
        mixer["x_proj.weight"] = np.concatenate([mixer["x_proj.weight"], bl])
    if config.conv == "gated":
        mixer["conv1d_gate.weight"] = rng.uniform(-(K**-0.5), K**-0.5, (d, 1, K))
        if config.conv_bias:
            mixer["conv1d_gate.bias"] = rng.uniform(-(K**-0.5), K**-0.5, (d,))
    p = {"norm.weight": np.ones(m), **{f"mixer.{k}": v for k, v in mixer.items()}}
    if config.ffn != "none":
        h1 = 2 * h if config.ffn == "swiglu" else h
        p["norm2.weight"] = np.ones(m)
        p["mlp.fc1.weight"] = rng.uniform(-(m**-0.5), m**-0.5, (h1, m))
        if config.bias:
            p["mlp.fc1.bias"] = rng.uniform(-(m**-0.5), m**-0.5, (h1,))
        p["mlp.fc2.weight"] = rng.uniform(-(h**-0.5), h**-0.5, (m, h))
        if config.bias:
            p["mlp.fc2.bias"] = rng.uniform(-(h**-0.5), h**-0.5, (m,))
    return p


def _state_shapes(config, batch):
    d = config.d_inner
    return {"conv_state": (batch, d, config.d_conv),
            "ssm_state": (batch, config.liquid_degree, d, config.d_state)}


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """Zeros: conv_state (batch, d_inner, d_conv), ssm_state (batch, p, d_inner, d_state)."""
    _check_config(config)
    check_int("batch", batch)
    return {k: np.zeros(s) for k, s in _state_shapes(config, batch).items()}


def _gated_conv(window, p):
    a = _causal_conv(window, p["conv1d.weight"], p.get("conv1d.bias"))
    return a * sigmoid(_causal_conv(window, p["conv1d_gate.weight"], p.get("conv1d_gate.bias")))


def _ffn(config, params, h):
    a = linear(h, params["mlp.fc1.weight"], params.get("mlp.fc1.bias"))
    if config.ffn == "swiglu":
        n = config.d_ffn
        a = a[..., :n] * silu(a[..., n:])
    else:
        a = gelu(a)
    return linear(a, params["mlp.fc2.weight"], params.get("mlp.fc2.bias"))


def forward(config: Config, params, u, *, state=None, return_state=False, shards=None):
    """The whole block (module docstring): u (batch, L, d_model) -> (batch, L, d_model), and the
    cache {"conv_state", "ssm_state"} after the last position if return_state. shards: u is
    this rank's slice of the sequence, as mamba.forward's."""
    _check_config(config)
    check_bool("return_state", return_state)
    check_array("u", u, ("batch", "length", config.d_model))
    check_params(params, param_shapes(config), inputs={"u": u})
    check_shards(shards, u=u, halo=config.d_conv - 1)
    if state is not None:
        _check_state(state, _state_shapes(config, u.shape[0]))
    params, state = cast_arrays(params, u.dtype), cast_arrays(state, u.dtype)
    xp, eps, mp = namespace(u), config.norm_epsilon, _sub(params, "mixer.")
    conv = _gated_conv if config.conv == "gated" else mamba._plain_conv
    xc, z, conv_state = mamba._in_conv(config, mp, rms_norm(u, params["norm.weight"], eps),
                                       None if state is None else state["conv_state"], conv,
                                       shards)
    delta, B, C, rest = mamba._x_proj(config, mp, xc)
    res = liquid_selective_scan(
        xc, delta, -xp.exp(mp["A_log"]), B, C, mp["D"], z=z, delta_bias=mp["dt_proj.bias"],
        delta_softplus=True, initial_state=None if state is None else state["ssm_state"],
        return_last_state=return_state, liquid_degree=config.liquid_degree,
        BL=None if config.tied else _t(rest), lcontract=config.lcontract,
        **scan_options(shards))
    y, h = res if return_state else (res, None)
    if return_state and shards is not None:
        conv_state = shards.last(conv_state)
    x = u + linear(_t(y), mp["out_proj.weight"], mp.get("out_proj.bias"))
    if config.ffn != "none":
        x = x + _ffn(config, params, rms_norm(x, params["norm2.weight"], eps))
    return (x, {"conv_state": conv_state, "ssm_state": h}) if return_state else x


def step(config: Config, params, state, u_t):
    """One position: u_t (batch, d_model) -> (y_t, new_state); the block's forward over a length-1
    sequence continuing from state (the FFN and norms are pointwise in time). Checks and casts,
    then `_step`."""
    _check_config(config)
    check_array("u_t", u_t, ("batch", config.d_model))
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    _check_state(state, _state_shapes(config, u_t.shape[0]))
    params, state = cast_arrays(params, u_t.dtype), cast_arrays(state, u_t.dtype)
    return _step(config, step_params(config, params), state, u_t, namespace(u_t))


def step_params(config: Config, params) -> dict:
    """What `_step` reads: params plus "mixer" = mamba.step_params of the mixer's (A, the conv
    weights as (d, K))."""
    return {**params, "mixer": mamba.step_params(config, _sub(params, "mixer."))}


def _step(config: Config, p, state, u_t, xp):
    """step's computation, unchecked (p = step_params(config, params); state, u_t in its
    dtype): one position of forward, the scan being one liquid_selective_scan step."""
    mp, eps = p["mixer"], config.norm_epsilon
    r, n = config.dt_rank, config.d_state
    xc, z, window, dbl = mamba._mixer_in(config, mp, state["conv_state"],
                                         rms_norm(u_t, p["norm.weight"], eps), xp)
    delta = softplus(linear(dbl[:, :r], mp["dt_proj.weight"], mp["dt_proj.bias"]))
    B3, C3 = dbl[:, None, r:r + n], dbl[:, None, r + n:r + 2 * n]
    L3 = B3 if config.tied else dbl[:, None, r + 2 * n:r + 3 * n]
    y, levels = _liquid_state_update(xp, state["ssm_state"], xc, delta, mp["A"], B3, C3, L3,
                                     mp["D"], z, config.liquid_degree, config.lcontract)
    x = u_t + linear(y, mp["out_proj.weight"], mp.get("out_proj.bias"))
    if config.ffn != "none":
        x = x + _ffn(config, p, rms_norm(x, p["norm2.weight"], eps))
    return x, {"conv_state": window, "ssm_state": levels}
