"""The Mamba (S6) mixer (state-spaces/mamba mamba_simple.Mamba); its residual block is
spec/mamba_block.py and the language model spec/mamba_lm.py.

Mixer, for u (batch, L, d_model), d = d_inner = expand d_model, N = d_state, r = dt_rank,
K = d_conv, layout (b, d, L) inside:
    x, z     = split(in_proj(u))                                     (b, d, L) each
    x_c[t]   = silu(sum_k w[d, k] x[t - K + 1 + k] + b_conv)         causal depthwise conv
    dt, B, C = split(x_proj(x_c), [r, N, N]);  delta = dt_proj.weight @ dt   (no bias here)
    y        = selective_scan(x_c, delta, A = -exp(A_log), B, C, D, z,
                              delta_bias = dt_proj.bias, delta_softplus = True)
    out      = out_proj(y)
x[t] for t < 0 comes from the cache: conv_state (b, d, K) holds the last K pre-conv inputs x
(zeros at the start), ssm_state (b, d, N) the scan's state h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._common import (
    cast_arrays,
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_params,
    check_seed,
    check_shards,
    namespace,
    scan_options,
)
from ._dispatch import overridable
from .nn import linear, sigmoid, silu
from .selective import _state_update, selective_scan, selective_state_update

__all__ = [
    "Config", "param_shapes", "init", "initial_state", "forward", "step", "step_params",
]


@dataclass(frozen=True)
class _MixerConfig:
    """The fields of mamba_simple.Mamba (dt_rank 'auto' becomes ceil(d_model / 16))."""

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False

    def __post_init__(self):
        check_int("d_model", self.d_model)
        check_int("d_state", self.d_state)
        check_int("d_conv", self.d_conv)
        check_int("expand", self.expand)
        if self.dt_rank == "auto":
            object.__setattr__(self, "dt_rank", math.ceil(self.d_model / 16))
        elif isinstance(self.dt_rank, str):
            raise ValueError(f"dt_rank: expected 'auto' or an int >= 1, got {self.dt_rank!r}")
        check_int("dt_rank", self.dt_rank)
        check_float("dt_min", self.dt_min, positive=True)
        check_float("dt_max", self.dt_max, positive=True)
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min: expected <= dt_max = {self.dt_max}, got {self.dt_min}")
        check_choice("dt_init", self.dt_init, ("random", "constant"))
        check_float("dt_scale", self.dt_scale, positive=True)
        check_float("dt_init_floor", self.dt_init_floor, positive=True)
        check_bool("conv_bias", self.conv_bias)
        check_bool("bias", self.bias)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


@dataclass(frozen=True)
class Config(_MixerConfig):
    __doc__ = _MixerConfig.__doc__


def _check_config(config, cls=Config, name="config"):
    if not isinstance(config, cls):
        raise TypeError(f"{name}: expected a {cls.__module__}.{cls.__qualname__}, got {config!r}")


def param_shapes(config: _MixerConfig, *, xproj_extra: int = 0) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the mixer's parameters (mamba_simple.Mamba's state_dict).
    xproj_extra adds rows to x_proj (LiquidMamba's untied BL)."""
    if not isinstance(config, _MixerConfig):
        raise TypeError(f"config: expected a liquidssm.spec.mamba.Config, got {config!r}")
    d, n, r, m = config.d_inner, config.d_state, config.dt_rank, config.d_model
    shapes = {"in_proj.weight": (2 * d, m)}
    if config.bias:
        shapes["in_proj.bias"] = (2 * d,)
    shapes["conv1d.weight"] = (d, 1, config.d_conv)
    if config.conv_bias:
        shapes["conv1d.bias"] = (d,)
    shapes.update({
        "x_proj.weight": (r + 2 * n + xproj_extra, d),
        "dt_proj.weight": (d, r),
        "dt_proj.bias": (d,),
        "A_log": (d, n),
        "D": (d,),
        "out_proj.weight": (m, d),
    })
    if config.bias:
        shapes["out_proj.bias"] = (m,)
    return shapes


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, size=shape)


def _init_mixer(config: _MixerConfig, rng) -> dict[str, np.ndarray]:
    """As mamba_simple.Mamba.__init__: torch default Linear / Conv1d init U(+-1/sqrt(fan_in)) for
    weights and biases; dt_proj.weight U(+-dt_scale/sqrt(r)) (or that constant);
    dt = exp(U[log dt_min, log dt_max]) clipped below at dt_init_floor, dt_proj.bias = dt +
    log(-expm1(-dt)) (inverse softplus); A_log[d, n] = log(n + 1); D = 1."""
    d, n, r, m, K = config.d_inner, config.d_state, config.dt_rank, config.d_model, config.d_conv
    p = {"in_proj.weight": _uniform(rng, m**-0.5, (2 * d, m))}
    if config.bias:
        p["in_proj.bias"] = _uniform(rng, m**-0.5, (2 * d,))
    p["conv1d.weight"] = _uniform(rng, K**-0.5, (d, 1, K))
    if config.conv_bias:
        p["conv1d.bias"] = _uniform(rng, K**-0.5, (d,))
    p["x_proj.weight"] = _uniform(rng, d**-0.5, (r + 2 * n, d))
    std = config.dt_scale * r**-0.5
    if config.dt_init == "random":
        p["dt_proj.weight"] = _uniform(rng, std, (d, r))
    else:
        p["dt_proj.weight"] = np.full((d, r), std)
    lo, hi = math.log(config.dt_min), math.log(config.dt_max)
    dt = np.maximum(np.exp(rng.uniform(size=d) * (hi - lo) + lo), config.dt_init_floor)
    p["dt_proj.bias"] = dt + np.log(-np.expm1(-dt))
    p["A_log"] = np.log(np.tile(np.arange(1, n + 1, dtype=np.float64), (d, 1)))
    p["D"] = np.ones(d)
    p["out_proj.weight"] = _uniform(rng, d**-0.5, (m, d))
    if config.bias:
        p["out_proj.bias"] = _uniform(rng, d**-0.5, (m,))
    return p


def _rng(seed):
    check_seed(seed)
    return np.random.default_rng(seed)


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Mixer parameters (float64 NumPy, names/shapes as `param_shapes`), deterministic in seed."""
    _check_config(config)
    return _init_mixer(config, _rng(seed))


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """Zeros: conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state)."""
    _check_config(config)
    check_int("batch", batch)
    d = config.d_inner
    return {"conv_state": np.zeros((batch, d, config.d_conv)),
            "ssm_state": np.zeros((batch, d, config.d_state))}


def _check_state(state, shapes):
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict with keys {sorted(shapes)}, got "
                        f"{type(state).__name__}")
    for name, shape in shapes.items():
        if name not in state:
            raise ValueError(f"state: expected a key {name!r} of shape {shape}, got keys "
                             f"{sorted(state)}")
        check_array(f"state[{name!r}]", state[name], shape)


def _sub(params, prefix):
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def _t(x):
    """(b, L, c) <-> (b, c, L)."""
    return namespace(x).permute_dims(x, (0, 2, 1))


def _causal_conv(window, weight, bias):
    """Depthwise valid convolution: window (b, d, K - 1 + L), weight (d, 1, K), bias (d,) or None
    -> y (b, d, L), y[..., t] = sum_k weight[:, 0, k] window[..., t + k] + bias."""
    K = weight.shape[-1]
    L = window.shape[-1] - K + 1
    y = weight[:, 0, 0:1] * window[..., 0:L]
    for k in range(1, K):
        y = y + weight[:, 0, k:k + 1] * window[..., k:k + L]
    return y if bias is None else y + bias[:, None]


def _in_conv(config, p, u, conv_state, conv_fn, shards=None):
    """in_proj and the short convolution. u (b, L, d_model) -> x_c, z (b, d, L), new conv_state
    (the last K entries of [conv_state, x]). conv_fn(window, p) is the conv + activation.
    With shards (a slice of the sequence): the window starts with the previous slice's last
    K - 1 entries of x (conv_state's on the first slice), and the conv_state returned is this
    slice's last K window entries (the caller takes the last slice's)."""
    xp = namespace(u)
    d, K = config.d_inner, config.d_conv
    xz = _t(linear(u, p["in_proj.weight"], p.get("in_proj.bias")))
    x, z = xz[:, :d, :], xz[:, d:, :]
    if shards is not None:
        halo = shards.previous_tail(x, K - 1, None if conv_state is None else
                                    conv_state[..., 1:])
        window = xp.concat([halo, x], axis=-1)
        return conv_fn(window, p), z, window[..., window.shape[-1] - K:]
    if conv_state is None:
        # zeros (b, d, K) of x's dtype and device
        conv_state = xp.zeros_like(xp.broadcast_to(x[..., :1], (x.shape[0], d, K)))
    ext = xp.concat([conv_state, x], axis=-1)
    return conv_fn(ext[..., 1:], p), z, ext[..., ext.shape[-1] - K:]


def _plain_conv(window, p):
    return silu(_causal_conv(window, p["conv1d.weight"], p.get("conv1d.bias")))


def _x_proj(config, p, xc):
    """xc (b, d, L) -> delta (b, d, L) without bias, B, C (b, N, L), rest (b, L, extra rows)."""
    r, n = config.dt_rank, config.d_state
    dbl = linear(_t(xc), p["x_proj.weight"])
    delta = _t(linear(dbl[..., :r], p["dt_proj.weight"]))
    return delta, _t(dbl[..., r:r + n]), _t(dbl[..., r + n:r + 2 * n]), dbl[..., r + 2 * n:]


def _prepare(config, params, u, state, shards=None):
    _check_config(config)
    check_array("u", u, ("batch", "length", config.d_model))
    check_params(params, param_shapes(config), inputs={"u": u})
    check_shards(shards, u=u, halo=config.d_conv - 1)
    if state is not None:
        b, d = u.shape[0], config.d_inner
        _check_state(state, {"conv_state": (b, d, config.d_conv),
                             "ssm_state": (b, d, config.d_state)})


def forward(config: Config, params, u, *, state=None, return_state=False, shards=None):
    """The bare mixer (module docstring). u (batch, L, d_model) -> y (batch, L, d_model),
    and the cache {"conv_state", "ssm_state"} after the last position if return_state.
    shards (liquidssm.spec.parallel.Shards): u is this rank's slice of the sequence (length
    >= d_conv - 1), y its slice of the output, the cache the global one (state: the cache
    before the whole sequence)."""
    check_bool("return_state", return_state)
    _prepare(config, params, u, state, shards)
    params, state = cast_arrays(params, u.dtype), cast_arrays(state, u.dtype)
    xp = namespace(u)
    xc, z, conv_state = _in_conv(config, params, u, None if state is None else
                                 state["conv_state"], _plain_conv, shards)
    delta, B, C, _ = _x_proj(config, params, xc)
    res = selective_scan(
        xc, delta, -xp.exp(params["A_log"]), B, C, params["D"], z=z,
        delta_bias=params["dt_proj.bias"], delta_softplus=True,
        initial_state=None if state is None else state["ssm_state"],
        return_last_state=return_state, **scan_options(shards))
    y, h = res if return_state else (res, None)
    if return_state and shards is not None:
        conv_state = shards.last(conv_state)
    out = linear(_t(y), params["out_proj.weight"], params.get("out_proj.bias"))
    return (out, {"conv_state": conv_state, "ssm_state": h}) if return_state else out


def step(config: Config, params, state, u_t):
    """One decode step (mamba_simple.Mamba.step): u_t (batch, d_model) -> (y_t, new_state).
    conv_state <- [conv_state[..., 1:], x_t]; x_c = silu(sum_k w[:, k] conv_state[..., k] + b);
    ssm_state <- exp(dt A) ssm_state + dt B x_c (selective_state_update); y = out_proj(...).
    The arguments are checked and cast to u_t's dtype here; `_step` computes."""
    _check_config(config)
    check_array("u_t", u_t, ("batch", config.d_model))
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    b, d = u_t.shape[0], config.d_inner
    _check_state(state, {"conv_state": (b, d, config.d_conv), "ssm_state": (b, d, config.d_state)})
    params, state = cast_arrays(params, u_t.dtype), cast_arrays(state, u_t.dtype)
    return _step(config, step_params(config, params), state, u_t, namespace(u_t),
                 _checked_update)


def step_params(config: _MixerConfig, params) -> dict:
    """What `_step` reads, from params (checked, in the compute dtype): params themselves
    plus "A" = -exp(A_log) (d, N) and "conv_wt" = conv1d.weight[:, 0, :]^T (K, d) ("gate_wt" the
    same of conv1d_gate.weight where given). The decode fast paths compute it once per
    parameter change."""
    xp = namespace(params["A_log"])
    out = {**params, "A": -xp.exp(params["A_log"]), "conv_wt": params["conv1d.weight"][:, 0, :].mT}
    if "conv1d_gate.weight" in params:
        out["gate_wt"] = params["conv1d_gate.weight"][:, 0, :].mT
    return out


def _checked_update(xp, state, x, dt, A, B3, C3, D, z, dt_bias, dt_softplus):
    """The step's state update through the dispatching selective_state_update (a backend's
    kernel where it registers one); B3, C3 (b, 1, n) are its grouped form with g = 1."""
    return selective_state_update(state, x, dt, A, B3, C3, D, z=z, dt_bias=dt_bias,
                                  dt_softplus=dt_softplus)


def _conv_step(rows, wt, bias, xp):
    """_causal_conv at one position, on the window's transpose: rows (b, K, d), wt (K, d), bias
    (d,) or None -> (b, d), sum_k wt[k] rows[:, k] + bias."""
    y = xp.sum(rows * wt, axis=1)
    return y if bias is None else y + bias


def _mixer_in(config, p, conv_state, u_t, xp):
    """in_proj, the conv-state shift and the projections of one position (unchecked):
    u_t (b, d_model) -> (x_c (b, d), z (b, d), window = the new conv_state (b, d, K),
    dbl = x_proj(x_c) (b, r + 2N [+ N])). A gated conv (LiquidMamba) where p has "gate_wt".
    The shift concatenates whole rows: rows = [conv_state^T[:, 1:], x] (b, K, d) is one concat
    along axis 1 and window = rows^T (a view in torch and NumPy: its rows stay contiguous, so
    the shift, the conv's sum over K and the next step's shift read d-long runs; along a last
    axis of length K they cost up to 3x at batch 16, benchmarks/README.md)."""
    d = config.d_inner
    xz = linear(u_t, p["in_proj.weight"], p.get("in_proj.bias"))
    rows = xp.concat([conv_state.mT[:, 1:, :], xz[:, None, :d]], axis=1)
    a = _conv_step(rows, p["conv_wt"], p.get("conv1d.bias"), xp)
    if "gate_wt" in p:
        xc = a * sigmoid(_conv_step(rows, p["gate_wt"], p.get("conv1d_gate.bias"), xp))
    else:
        xc = silu(a)
    return xc, xz[:, d:], rows.mT, linear(xc, p["x_proj.weight"])


@overridable(on=3, name="mamba_step")
def _step(config: _MixerConfig, p, state, u_t, xp, update=_state_update):
    """step's computation, unchecked: p = step_params(config, params), state and u_t in one
    real floating dtype (p's), shapes as step checks them; xp their namespace; update the
    state update (_state_update's signature; step passes the dispatching one). A backend may
    register a kernel of the whole step as "mamba_step" (dispatched on u_t)."""
    r, n = config.dt_rank, config.d_state
    xc, z, window, dbl = _mixer_in(config, p, state["conv_state"], u_t, xp)
    dt = linear(dbl[:, :r], p["dt_proj.weight"], p["dt_proj.bias"])  # the bias in one call
    y, h = update(xp, state["ssm_state"], xc, dt, p["A"], dbl[:, None, r:r + n],
                  dbl[:, None, r + n:r + 2 * n], p["D"], z, None, True)
    out = linear(y, p["out_proj.weight"], p.get("out_proj.bias"))
    return out, {"conv_state": window, "ssm_state": h}
