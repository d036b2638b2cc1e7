"""Liquid-S5: S5 whose state transition depends on the input, truncated at liquid degree p.

With the S5 discretisation (spec/s5.py: Lambdabar_k, gamma_k, per position with timesteps):

    b_k = gamma_k * (Btilde u_k),   c_k = gamma_k * (BLtilde phi(u_k))        (P',)
    full recurrence: x_k = (Lambdabar_k + diag(c_k)) x_{k-1} + b_k
    levels m = 0..p-1 (liquid_scan):
        x0_k = Lambdabar_k x0_{k-1} + b_k,   xm_k = Lambdabar_k xm_{k-1} + c_k * x(m-1)_{k-1}
    y_k = 2 Re(Ctilde sum_m xm_k) + D u_k         (Re without conj_sym)

sum_m xm_k keeps exactly the terms of the full recurrence with at most p-1 factors of c; p = 1
is S5. BLtilde = Btilde when tied, else BL_re + i BL_im (P', H), initialised to zero (the model
starts as S5). phi = lcontract (none | tanh | lecun). Bidirectional: the reverse direction runs
its own levels (x_k from x_{k+1}, with the reverse-direction gamma and Lambdabar).

Real output under conj_sym: each kept mode's conjugate has levels conj(xm) (its a, b, c are the
conjugates), so C x + conj(C x) = 2 Re(C x) at every level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import nn, s5
from ._common import check_choice, check_int, check_params, check_seed, scan_options
from .scan import liquid_scan

__all__ = [
    "Config",
    "init",
    "forward",
    "initial_state",
    "step",
    "param_shapes",
]

LCONTRACTS = nn.LCONTRACTS


@dataclass(frozen=True)
class Config(s5.Config):
    """Every s5.Config field, plus liquid_degree p >= 1 (Liquid-S4's default 2), lcontract phi,
    tied (BL = B)."""

    liquid_degree: int = 2
    lcontract: str = "none"
    tied: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_int("liquid_degree", self.liquid_degree)
        check_choice("lcontract", self.lcontract, LCONTRACTS)
        if not isinstance(self.tied, bool):
            raise TypeError(f"tied: expected a bool, got {self.tied!r}")


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """s5.param_shapes, plus BL_re, BL_im (P', H) when not tied."""
    shapes = s5.param_shapes(config)
    if not config.tied:
        shapes.update(BL_re=shapes["B_re"], BL_im=shapes["B_im"])
    return shapes


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """The S5 init (same draws for the same seed); untied BL_re = BL_im = 0."""
    s5._check_config(config, Config)
    check_seed(seed)
    params = s5.init(_as_s5(config), seed)
    if not config.tied:
        params["BL_re"] = np.zeros_like(params["B_re"])
        params["BL_im"] = np.zeros_like(params["B_im"])
    return params


def _as_s5(config: Config) -> s5.Config:
    fields = s5.Config.__dataclass_fields__
    return s5.Config(**{k: getattr(config, k) for k in fields})


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """{"x": zeros (batch, p, P') complex128}: the p levels."""
    s5._check_config(config, Config)
    check_int("batch", batch)
    shape = (batch, config.liquid_degree, config.n_modes)
    return {"x": np.zeros(shape, dtype=np.complex128)}


def forward(config: Config, params, u, *, state=None, return_state=False, timesteps=None,
            shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, {"x": levels after the last step (batch, p, P')}].

    Levels as in the module doc, through liquid_scan (degree p); timesteps as in s5.forward,
    applied to Lambdabar, Bbar and BbarL alike; shards as in s5.forward.
    """
    s5._check_config(config, Config)
    check_params(params, param_shapes(config), inputs={"u": u, "timesteps": timesteps})
    s5._check_stream(config, state, return_state)
    s5._check_shards(config, shards, timesteps)
    options = scan_options(shards)
    xp, p, dirs = s5._setup(config, params, u, timesteps)
    deg = config.liquid_degree
    bu = s5._project(xp, u, p["B_re"], p["B_im"])
    v = nn.lcontract(u, config.lcontract)
    if config.tied:
        cu = bu if config.lcontract == "none" else s5._project(xp, v, p["B_re"], p["B_im"])
    else:
        cu = s5._project(xp, v, p["BL_re"], p["BL_im"])
    h0 = None
    if state is not None:
        h0 = s5._state_x(state, (u.shape[0], deg, config.n_modes), xp, bu.dtype)
    a, gamma = dirs[0]
    xs, h_last = liquid_scan(a, gamma * bu, gamma * cu, h0, degree=deg, **options)
    if config.bidirectional:
        a, gamma = dirs[1]
        xr, _ = liquid_scan(a, gamma * bu, gamma * cu, degree=deg, reverse=True, **options)
        xs = xp.concat([xs, xr], axis=-1)
    y = s5._readout(config, xp, p, xs, u)
    return (y, {"x": h_last}) if return_state else y


def step(config: Config, params, state, u_t, *, timesteps=None):
    """One recurrent step: u_t (batch, H) -> (y_t (batch, H), new levels); unidirectional only.
    (forward over one position; `_step` is the same step without timesteps, unchecked.)"""
    s5._check_config(config, Config)
    if state is None:
        raise TypeError("state: expected a dict from initial_state or forward, got None")
    return s5._step_via_forward(forward, config, params, state, u_t, timesteps)


def step_params(config: Config, params):
    """s5.step_params (BL: the untied input matrix, B when tied)."""
    return s5.step_params(config, params)


def _step(config: Config, p, state, u_t, xp):
    """step's computation (timesteps None), unchecked: one liquid_scan step of forward's levels,
    a = Lambdabar, b = gamma B u, c = gamma BL phi(u); state["x"] (batch, p, P') complex."""
    bu = s5._project_w(xp, u_t, p["B"])
    if config.tied and config.lcontract == "none":
        cu = bu
    else:
        cu = s5._project_w(xp, nn.lcontract(u_t, config.lcontract), p.get("BL", p["B"]))
    a, h = p["abar"], state["x"]
    new = [a * h[:, 0, :] + p["gamma"] * bu]
    c = p["gamma"] * cu
    new += [a * h[:, m, :] + c * h[:, m - 1, :] for m in range(1, config.liquid_degree)]
    total = new[0]
    for m in range(1, config.liquid_degree):
        total = total + new[m]
    return s5._readout_c(config, xp, p["C"], p["D"], total, u_t), {"x": xp.stack(new, axis=1)}
