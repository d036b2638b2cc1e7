"""S4D: the diagonal structured state space model (Gu et al. 2022), one SISO SSM per channel.

Per channel h (H = d_model channels, n = N/2 complex modes, the conjugate half implied):
    A = -exp(log_A_real) + i A_imag,  B = B_re + i B_im,  C = C_re + i C_im   (H, n)
    dt = exp(log_dt) (H,);  (Abar, Bbar) = discretize(A, B, dt)   (zoh or bilinear)
    x_k = Abar x_{k-1} + Bbar u_k,  y_k = 2 Re(sum_n C_n x_k,n) + D u_k
equivalently y = K * u + D u with the kernel (Vandermonde, 2Re fold)
    K[h, l] = 2 Re sum_n C_n Bbar_n Abar_n^l,  l = 0..L-1.
mode="conv" computes y by a causal FFT convolution, mode="recurrent" by `diag_scan`.
A state x0 (batch, H, n) adds 2 Re(C Abar^(k+1) x0) to y_k; the final state is
x_L = Abar^L x0 + sum_j Abar^(L-1-j) Bbar u_j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import hippo
from ._common import (
    causal_fft_conv,
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_params,
    check_seed,
    check_shards,
    complex_dtype,
    discretize,
    namespace,
    scan_options,
)
from .scan import diag_scan

__all__ = [
    "Config", "param_shapes", "init", "forward", "step", "initial_state", "kernel", "discrete",
    "continuous", "step_params",
]

INITS = ("lin", "inv", "real", "legs")


@dataclass(frozen=True)
class Config:
    """d_model H, d_state N (counting conjugates: N/2 complex modes), init of A (S4D-Lin/Inv/Real/
    LegS), discretization (zoh | bilinear), dt range for log_dt's init, mode (conv | recurrent)."""

    d_model: int
    d_state: int = 64
    init: str = "lin"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "conv"

    def __post_init__(self):
        check_int("d_model", self.d_model)
        check_state_size(self.d_state)
        check_choice("init", self.init, INITS)
        check_choice("discretization", self.discretization, ("zoh", "bilinear"))
        check_choice("mode", self.mode, ("conv", "recurrent"))
        check_dt_range(self.dt_min, self.dt_max)


def check_state_size(N):
    check_int("d_state", N, minimum=2)
    if N % 2:
        raise ValueError(f"d_state: expected an even int (conjugate pairs), got {N}")


def check_dt_range(dt_min, dt_max):
    lo = check_float("dt_min", dt_min, positive=True)
    hi = check_float("dt_max", dt_max, positive=True)
    if lo > hi:
        raise ValueError(f"dt_max: expected a number >= dt_min={lo}, got {hi}")


def init_log_dt(rng, H, dt_min, dt_max):
    """log dt ~ U[log dt_min, log dt_max] (H,)."""
    return rng.uniform(math.log(dt_min), math.log(dt_max), size=H)


def init(config: Config, seed: int = 0) -> dict:
    """A_n = -1/2 + i A_imag,n with A_imag,n = pi n (lin), (N/pi)(N/(2n+1) - 1) (inv),
    the imaginary parts of HiPPO-LegS's normal part (legs); real: A_n = -(n+1), A_imag = 0.
    B = 1; C complex standard normal (C_re, C_im ~ N(0, 1/2)); D ~ N(0, 1).
    seed: a Python int >= 0 (_common.check_seed)."""
    check_seed(seed)
    H, N = config.d_model, config.d_state
    n = np.arange(N // 2, dtype=np.float64)
    a_re = np.full(N // 2, 0.5)
    if config.init == "lin":
        a_im = np.pi * n
    elif config.init == "inv":
        a_im = N / np.pi * (N / (2 * n + 1) - 1)
    elif config.init == "real":
        a_re, a_im = n + 1, np.zeros(N // 2)
    else:
        a_im = -hippo.nplr(N)[0].imag
    rng = np.random.default_rng(seed)
    tile = lambda v: np.tile(v, (H, 1))  # noqa: E731
    return {
        "log_dt": init_log_dt(rng, H, config.dt_min, config.dt_max),
        "log_A_real": tile(np.log(a_re)),
        "A_imag": tile(a_im),
        "B_re": np.ones((H, N // 2)),
        "B_im": np.zeros((H, N // 2)),
        "C_re": rng.normal(0.0, math.sqrt(0.5), (H, N // 2)),
        "C_im": rng.normal(0.0, math.sqrt(0.5), (H, N // 2)),
        "D": rng.normal(0.0, 1.0, H),
    }


# ---------------------------------------------------------------- shared checks and helpers


def get_param(params, name, shape, dtype):
    """params[name], checked against `shape`, cast to the real compute dtype."""
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    if name not in params:
        raise ValueError(f"params: expected an entry {name!r}, got keys {sorted(params)}")
    x = check_array(f"params[{name!r}]", params[name], shape)
    return x if dtype is None else namespace(x).astype(x, dtype)


def check_input(u, H):
    """u: (batch, length >= 1, H) real floating."""
    return check_array("u", u, ("batch", "length", H))


def check_step_input(u_t, H):
    return check_array("u_t", u_t, ("batch", H))


def get_state(state, key, shape, xp, cdtype):
    """state[key] checked against `shape` (complex allowed), as cdtype in namespace xp."""
    if not isinstance(state, dict) or key not in state:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state: expected a dict with entry {key!r}, got {got}")
    x = check_array(f"state[{key!r}]", state[key], shape, complex_ok=True)
    return xp.astype(xp.asarray(x), cdtype)


def to_channels_last(y):
    """(batch, H, L) -> (batch, L, H)."""
    return namespace(y).permute_dims(y, (0, 2, 1))


def continuous(config: Config, params: dict, dtype):
    """(dt (H, 1), A, B, C (H, n)) complex and D (H,) real, in `dtype` (None: the parameters'
    own dtype)."""
    H, n = config.d_model, config.d_state // 2
    p = {k: get_param(params, k, s, dtype) for k, s in _shapes(H, n).items()}
    xp = namespace(p["D"])
    cdt = complex_dtype(xp, p["D"].dtype)
    c = lambda x: xp.astype(x, cdt)  # noqa: E731
    A = c(-xp.exp(p["log_A_real"])) + 1j * c(p["A_imag"])
    B = c(p["B_re"]) + 1j * c(p["B_im"])
    C = c(p["C_re"]) + 1j * c(p["C_im"])
    return c(xp.exp(p["log_dt"]))[:, None], A, B, C, p["D"]


def discrete(config: Config, params: dict, dtype):
    """(Abar, Bbar, C, D, log_Abar): Abar, Bbar, C (H, n) complex, D (H,) real, in `dtype`
    (None: the parameters' own dtype); log_Abar = dt A (zoh) or log(Abar) (bilinear), so that
    Abar^l = exp(l log_Abar)."""
    dt, A, B, C, D = continuous(config, params, dtype)
    Abar, Bbar = discretize(A, B, dt, config.discretization)
    log_Abar = dt * A if config.discretization == "zoh" else namespace(D).log(Abar)
    return Abar, Bbar, C, D, log_Abar


def param_shapes(config: Config) -> dict:
    """{name: shape} of the parameters (every entry point checks params exactly against it)."""
    return _shapes(config.d_model, config.d_state // 2)


def _shapes(H, n):
    return {
        "log_dt": (H,),
        "log_A_real": (H, n),
        "A_imag": (H, n),
        "B_re": (H, n),
        "B_im": (H, n),
        "C_re": (H, n),
        "C_im": (H, n),
        "D": (H,),
    }


def powers(log_a, start, length):
    """a^l for l = start..start+length-1, as exp(l log a): (..., length)."""
    xp = namespace(log_a)
    ls = xp.astype(xp.arange(start, start + length), log_a.dtype)
    return xp.exp(log_a[..., None] * ls)


def check_length(length):
    return check_int("length", length, minimum=1)


# ---------------------------------------------------------------- the model


def kernel(config: Config, params: dict, length: int):
    """K (H, length): K[h, l] = 2 Re sum_n C_n Bbar_n Abar_n^l, in the parameters' dtype."""
    check_length(length)
    check_params(params, param_shapes(config))
    Abar, Bbar, C, D, log_Abar = discrete(config, params, None)
    xp = namespace(D)
    return 2 * xp.real(xp.sum((C * Bbar)[..., None] * powers(log_Abar, 0, length), axis=1))


def initial_state(config: Config, batch: int) -> dict:
    """{"x": zeros (batch, H, n) complex128}."""
    check_int("batch", batch)
    return {"x": np.zeros((batch, config.d_model, config.d_state // 2), dtype=np.complex128)}


def forward(config: Config, params: dict, u, *, state=None, return_state=False, shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, {"x": x_L}] (see the module docstring).
    shards (liquidssm.spec.parallel.Shards, mode "recurrent" only): u is this rank's slice of
    the sequence, y its slice; the state returned is the global last one."""
    check_bool("return_state", return_state)
    H, n = config.d_model, config.d_state // 2
    check_input(u, H)
    check_params(params, param_shapes(config), inputs={"u": u})
    check_shards(shards, unsupported=None if config.mode == "recurrent" else
                 f"S4D mode={config.mode!r} (an FFT convolution over the whole sequence) has no "
                 "sharded form; mode='recurrent' has")
    xp = namespace(u)
    Abar, Bbar, C, D, log_Abar = discrete(config, params, u.dtype)
    cdt = Abar.dtype
    batch, L = u.shape[0], u.shape[1]
    x0 = None if state is None else get_state(state, "x", (batch, H, n), xp, cdt)
    if config.mode == "recurrent":
        uc = xp.astype(u, cdt)[..., None]
        a = xp.broadcast_to(Abar[None, None, ...], (1, L, H, n))
        xs = diag_scan(a, Bbar * uc, x0, **scan_options(shards))
        y = 2 * xp.real(xp.sum(C * xs, axis=-1)) + D * u
        if not return_state:
            return y
        return y, {"x": xs[:, -1, ...] if shards is None else shards.last(xs[:, -1, ...])}
    uT = xp.permute_dims(u, (0, 2, 1))  # (batch, H, L)
    K = 2 * xp.real(xp.sum((C * Bbar)[..., None] * powers(log_Abar, 0, L), axis=1))
    yT = causal_fft_conv(uT, K) + D[:, None] * uT
    if x0 is not None:  # zero-input response 2 Re sum_n C_n Abar_n^(k+1) x0_n
        V1 = powers(log_Abar, 1, L)  # (H, n, L)
        yT = yT + 2 * xp.real(xp.sum((C[None, ...] * x0)[..., None] * V1[None, ...], axis=2))
    y = to_channels_last(yT)
    if not return_state:
        return y
    V = powers(log_Abar, 0, L)  # (H, n, L)
    uflip = xp.astype(xp.flip(uT, axis=-1), cdt)[..., None]  # (batch, H, L, 1)
    xL = Bbar * xp.matmul(V, uflip)[..., 0]
    if x0 is not None:
        xL = xL + xp.exp(L * log_Abar) * x0
    return y, {"x": xL}


def step(config: Config, params: dict, state: dict, u_t):
    """One step: x <- Abar x + Bbar u_t, y_t = 2 Re(C x) + D u_t; u_t (batch, H). Checks and
    casts, then `_step`."""
    H, n = config.d_model, config.d_state // 2
    check_step_input(u_t, H)
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    xp = namespace(u_t)
    p = step_params(config, {k: xp.astype(v, u_t.dtype) for k, v in params.items()})
    x = get_state(state, "x", (u_t.shape[0], H, n), xp, p["Abar"].dtype)
    return _step(config, p, {"x": x}, u_t, xp)


def step_params(config: Config, params: dict) -> dict:
    """What `_step` reads: {"Abar", "Bbar", "C" (H, n) complex, "D" (H,)} (`discrete`) in the
    parameters' dtype."""
    Abar, Bbar, C, D, _ = discrete(config, params, None)
    return {"Abar": Abar, "Bbar": Bbar, "C": C, "D": D}


def _step(config: Config, p: dict, state: dict, u_t, xp):
    """step's computation, unchecked: p = step_params(config, params), state["x"] (batch, H, n)
    complex and u_t (batch, H) of p's precision. One step of the diag_scan recurrence."""
    x = p["Abar"] * state["x"] + p["Bbar"] * xp.astype(u_t, p["Abar"].dtype)[..., None]
    return 2 * xp.real(xp.sum(p["C"] * x, axis=-1)) + p["D"] * u_t, {"x": x}
