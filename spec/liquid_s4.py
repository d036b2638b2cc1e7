"""Liquid-S4 (Hasani et al. 2022): S4 / S4D with a liquid (input-dependent) state transition.

The liquid recurrence, per channel and mode (diagonal base; phi = lcontract):
    x_k = (Abar + diag(c_k)) x_{k-1} + Bbar u_k,  c_k = BbarL phi(u_k),  y_k = 2 Re(C x_k) + D u_k
with BbarL = Bbar (tied) or discretised from its own BL (untied). Unrolled, y holds terms with
products of up to p inputs (p = liquid_degree; p = 1 is the base model). Three kernels:

scan (causal, S4D base): the exact truncation at degree p, levels m = 0..p-1 (`liquid_scan`):
    x0_k = Abar x0_{k-1} + Bbar u_k;  xm_k = Abar xm_{k-1} + c_k xm-1_{k-1};
    y_k = 2 Re(C sum_m xm_k) + D u_k.  State {"x": (batch, p, H, n)}.

pb, kb (the published whole-sequence kernels, S4 or S4D base): y = base(u) + sum_{q=2..p} term_q,
    s = 2 Re sum_n BbarL_n  (the sum over all N conjugate-expanded modes, real)
    v_q = input products (below), w_q = flip_time(phi(v_q))
    pb: term_q[t] = 2 Re(sum_n conj(C_n) Bbar_n) s^(2^(q-1) - 1) w_q[t]
    kb: term_q = (s^(q-1) K) * w_q, K the base kernel (H, L), "*" per kb_convolution:
        linear:    the causal linear convolution, (K * w)[t] = sum_{j<=t} K[j] w[t-j]
        published: irfft(rfft(w, 2L) fft(K, L+1), 2L)[:L]  (two frequency grids, as published)
C is the C of y = 2 Re(C x) + D u: the C parameter for the s4d base, and for the s4 base the
first half of s4.dense's C_full = Ct_full (I - Abar^M)^-1 (not the stored C-tilde). The conj
is the published convention: its liquid term reads the layer's C, the conjugate of its kernel's.
Input products: allcombs=False: v_2[t] = u[t] u[t-1], v_q[t] = v_{q-1}[t] v_{q-1}[t-1] (u[-1] = 0);
allcombs=True: n_q = the smallest n with C(n, q) >= L (n_q = L if none), the q-subsets of the
positions L-n_q..L-1 in lexicographic order, the last L of them; v_q[j] = prod_{i in subset j} u[i],
zero-padded at the end when fewer than L subsets exist. These kernels are not causal (the time
flip): `step` and states are refused for them. For the s4 base Bbar, BbarL use the diagonal
part Lambda only (bilinear, as the published code), and init does not clip B (base_config sets
s4.Config.B_clip = None, as raminmh/liquid-s4's `nplr`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from . import s4, s4d
from ._common import (
    check_bool,
    check_choice,
    check_int,
    check_params,
    check_shards,
    complex_dtype,
    discretize,
    namespace,
    scan_options,
)
from .nn import LCONTRACTS
from .nn import lcontract as _lcontract
from .s4d import check_input, check_step_input, get_param, get_state
from .scan import liquid_scan

__all__ = [
    "Config", "param_shapes", "init", "forward", "step", "initial_state", "kernel", "base_config",
    "input_products", "allcombs_indices", "published_kb_product",
]


@dataclass(frozen=True)
class Config:
    """Base model fields (init / discretization None: the base's default), liquid fields:
    base (s4 | s4d), liquid_kernel (pb | kb | scan), liquid_degree p >= 1, lcontract
    (none | tanh | lecun), allcombs, tied, kb_convolution (linear | published; kb only)."""

    d_model: int
    d_state: int = 64
    base: str = "s4d"
    liquid_kernel: str = "scan"
    liquid_degree: int = 2
    lcontract: str = "none"
    allcombs: bool = True
    tied: bool = True
    kb_convolution: str = "linear"
    init: str | None = None
    discretization: str | None = None
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "conv"
    rank: int = 1
    l_max: int = 1024

    def __post_init__(self):
        check_choice("base", self.base, ("s4", "s4d"))
        check_choice("liquid_kernel", self.liquid_kernel, ("pb", "kb", "scan"))
        check_int("liquid_degree", self.liquid_degree)
        check_choice("lcontract", self.lcontract, LCONTRACTS)
        check_choice("kb_convolution", self.kb_convolution, ("linear", "published"))
        for name in ("allcombs", "tied"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        # the s4 base's fields are validated whatever the base (base_config drops them for s4d)
        check_int("rank", self.rank)
        check_int("l_max", self.l_max)
        if self.liquid_kernel == "scan" and self.base != "s4d":
            raise ValueError(
                f"base: liquid_kernel='scan' needs the diagonal base 's4d', got {self.base!r}"
            )
        base_config(self)  # validates the base fields


def base_config(config: Config):
    """The s4d.Config / s4.Config of the base model."""
    kw = dict(d_model=config.d_model, d_state=config.d_state, dt_min=config.dt_min,
              dt_max=config.dt_max, mode=config.mode)
    if config.init is not None:
        kw["init"] = config.init
    if config.discretization is not None:
        kw["discretization"] = config.discretization
    if config.base == "s4":  # no B clip: raminmh/liquid-s4's nplr has none
        return s4.Config(rank=config.rank, l_max=config.l_max, B_clip=None, **kw)
    return s4d.Config(**kw)


def _module(config):
    return s4 if config.base == "s4" else s4d


def param_shapes(config: Config) -> dict:
    """{name: shape}: the base model's parameters, and BL_re, BL_im (H, n) when untied."""
    shapes = _module(config).param_shapes(base_config(config))
    if not config.tied:
        shapes["BL_re"] = shapes["BL_im"] = (config.d_model, config.d_state // 2)
    return shapes


def _base_params(config, params):
    """The base model's entries of params (the base checks its params exactly)."""
    return {k: params[k] for k in _module(config).param_shapes(base_config(config))}


def init(config: Config, seed: int = 0) -> dict:
    """The base model's parameters (the s4 base without the B clip: base_config sets
    B_clip=None, as raminmh/liquid-s4); untied adds BL_re, BL_im (H, n), initialised as copies
    of B_re, B_im (so an untied model starts equal to the tied one)."""
    params = _module(config).init(base_config(config), seed)
    if not config.tied:
        params["BL_re"], params["BL_im"] = params["B_re"].copy(), params["B_im"].copy()
    return params


def kernel(config: Config, params: dict, length: int):
    """The base model's kernel K (H, length) (the linear, degree-1 part)."""
    check_params(params, param_shapes(config))
    return _module(config).kernel(base_config(config), _base_params(config, params), length)


def _liquid_coefficients(config, params, dtype):
    """(Abar, Bbar, BbarL, C) (H, n) complex; Abar is None for the s4 base (not diagonal), whose
    Bbar, BbarL use the diagonal part Lambda only (bilinear) and whose C is the true C (the first
    half of s4.dense's C_full = Ct_full (I - Abar^M)^-1), not the stored C-tilde."""
    H, n = config.d_model, config.d_state // 2
    cfg = base_config(config)
    if config.base == "s4d":
        dt, A, B, C, _ = s4d.continuous(cfg, params, dtype)
        Abar, Bbar = discretize(A, B, dt, cfg.discretization)
    else:
        dt, A, _, B, _, _ = s4._params(cfg, params, dtype)
        dt = dt[:, None]
        Abar, Bbar = None, discretize(A, B, dt, cfg.discretization)[1]
        C = s4.dense(cfg, params, dtype)[2][:, : n]
    if config.tied:
        return Abar, Bbar, Bbar, C
    xp = namespace(C)
    BL_re, BL_im = (
        xp.astype(get_param(params, k, (H, n), dtype), C.dtype) for k in ("BL_re", "BL_im")
    )
    BL = BL_re + 1j * BL_im
    return Abar, Bbar, discretize(A, BL, dt, cfg.discretization)[1], C


def allcombs_indices(length: int, q: int) -> np.ndarray:
    """(count, q) int positions of the allcombs products for degree q (count <= length)."""
    n = next((m for m in range(q, length + 1) if math.comb(m, q) >= length), length)
    combos = list(itertools.combinations(range(length - n, length), q))[-length:]
    return np.asarray(combos, dtype=np.int64).reshape(len(combos), q)


def input_products(u, q: int, allcombs: bool):
    """v_q (..., L) from u (..., L) (time last): the module docstring's input products."""
    xp = namespace(u)
    L = u.shape[-1]
    if allcombs:
        idx = allcombs_indices(L, q)
        v = xp.ones(u.shape[:-1] + (idx.shape[0],), dtype=u.dtype)
        for j in range(q):
            v = v * xp.take(u, xp.asarray(idx[:, j]), axis=-1)
        pad = xp.zeros(u.shape[:-1] + (L - idx.shape[0],), dtype=u.dtype)
        return xp.concat([v, pad], axis=-1)
    v = u
    for _ in range(q - 1):
        v = v * xp.concat([xp.zeros(u.shape[:-1] + (1,), dtype=u.dtype), v[..., :-1]], axis=-1)
    return v


def _refuse_state(config, what):
    raise ValueError(
        f"{what}: liquid_kernel={config.liquid_kernel!r} is a whole-sequence (non-causal) kernel "
        "with no recurrent state; use liquid_kernel='scan' (base 's4d') to stream"
    )


def initial_state(config: Config, batch: int) -> dict:
    """scan: {"x": zeros (batch, p, H, n) complex128}; pb/kb have no state (ValueError)."""
    if config.liquid_kernel != "scan":
        _refuse_state(config, "initial_state")
    check_int("batch", batch)
    shape = (batch, config.liquid_degree, config.d_model, config.d_state // 2)
    return {"x": np.zeros(shape, dtype=np.complex128)}


def forward(config: Config, params: dict, u, *, state=None, return_state=False, shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, state] (see the module docstring). shards
    (liquidssm.spec.parallel.Shards, liquid_kernel "scan" only): u is this rank's slice of the
    sequence, y its slice; the state returned is the global last levels."""
    check_bool("return_state", return_state)
    H, n, p = config.d_model, config.d_state // 2, config.liquid_degree
    check_input(u, H)
    check_params(params, param_shapes(config), inputs={"u": u})
    check_shards(shards, unsupported=None if config.liquid_kernel == "scan" else
                 f"liquid_kernel={config.liquid_kernel!r} (a whole-sequence kernel) has no "
                 "sharded form; liquid_kernel='scan' has")
    xp = namespace(u)
    if config.liquid_kernel == "scan":
        Abar, Bbar, BbarL, C = _liquid_coefficients(config, params, u.dtype)
        D = get_param(params, "D", (H,), u.dtype)
        batch, L = u.shape[0], u.shape[1]
        x0 = None if state is None else get_state(state, "x", (batch, p, H, n), xp, C.dtype)
        uc = xp.astype(u, C.dtype)[..., None]
        phi = xp.astype(_lcontract(u, config.lcontract), C.dtype)[..., None]
        a = xp.broadcast_to(Abar[None, None, ...], (1, L, H, n))
        xs, last = liquid_scan(a, Bbar * uc, BbarL * phi, x0, degree=p, **scan_options(shards))
        y = 2 * xp.real(xp.sum(C * xs, axis=-1)) + D * u
        return (y, {"x": last}) if return_state else y
    if state is not None:
        _refuse_state(config, "state")
    if return_state:
        _refuse_state(config, "return_state")
    module, cfg = _module(config), base_config(config)
    y = module.forward(cfg, _base_params(config, params), u)
    if p == 1:
        return y
    _, Bbar, BbarL, C = _liquid_coefficients(config, params, u.dtype)
    s = 2 * xp.real(xp.sum(BbarL, axis=-1))  # (H,)
    uT = xp.permute_dims(u, (0, 2, 1))  # (batch, H, L)
    if config.liquid_kernel == "kb":
        K = xp.astype(module.kernel(cfg, _base_params(config, params), u.shape[1]), u.dtype)
    else:
        cb = 2 * xp.real(xp.sum(xp.conj(C) * Bbar, axis=-1))  # (H,)
    extra = xp.zeros_like(uT)
    for q in range(2, p + 1):
        w = xp.flip(_lcontract(input_products(uT, q, config.allcombs), config.lcontract), axis=-1)
        if config.liquid_kernel == "pb":
            extra = extra + (cb * s ** (2 ** (q - 1) - 1))[:, None] * w
        elif config.kb_convolution == "linear":
            extra = extra + s4d.causal_fft_conv(w, s[:, None] ** (q - 1) * K)
        else:
            extra = extra + published_kb_product(w, s[:, None] ** (q - 1) * K)
    return y + xp.permute_dims(extra, (0, 2, 1))


def published_kb_product(w, K):
    """The published kb frequency-grid product (kb_convolution="published"): w (..., H, L) real,
    K (H, L) real -> irfft(rfft(w, n=2L) * fft(K, n=L+1), n=2L)[..., :L].
    The L+1 bins of rfft(w, 2L) lie at frequencies k / (2L), those of the complex fft of K at
    k / (L+1): their product is no convolution of w and K; irfft reads it as the half spectrum of
    a real signal (the imaginary parts of bins 0 and L are dropped). This is the published
    `irfft(rfft(u_corr, n=L_kernel+L) * fft(k_b, n=(L_kernel+L)//2+1), n=L_kernel+L)[..., :L]`
    with L_kernel = L."""
    xp = namespace(w, K)
    L = w.shape[-1]
    cdt = complex_dtype(xp, w.dtype)
    Kf = xp.fft.fft(xp.astype(K, cdt), n=L + 1)
    return xp.fft.irfft(xp.fft.rfft(w, n=2 * L) * Kf, n=2 * L)[..., :L]


def step(config: Config, params: dict, state: dict, u_t):
    """scan: one step of all p levels (liquid_scan with L = 1); pb/kb: ValueError."""
    if config.liquid_kernel != "scan":
        _refuse_state(config, "step")
    H, n, p = config.d_model, config.d_state // 2, config.liquid_degree
    check_step_input(u_t, H)
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    xp = namespace(u_t)
    Abar, Bbar, BbarL, C = _liquid_coefficients(config, params, u_t.dtype)
    D = get_param(params, "D", (H,), u_t.dtype)
    x0 = get_state(state, "x", (u_t.shape[0], p, H, n), xp, C.dtype)
    b = (Bbar * xp.astype(u_t, C.dtype)[..., None])[:, None, ...]
    c = (BbarL * xp.astype(_lcontract(u_t, config.lcontract), C.dtype)[..., None])[:, None, ...]
    xs, last = liquid_scan(Abar[None, None, ...], b, c, x0, degree=p)
    return 2 * xp.real(xp.sum(C * xs[:, 0, ...], axis=-1)) + D * u_t, {"x": last}

