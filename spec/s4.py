"""S4: the diagonal-plus-low-rank (DPLR) state space model with HiPPO-LegS (Gu et al. 2022).

Per channel h (n = N/2 modes kept; "full" means conjugate-expanded to N: v -> (v, conj v)):
    Lambda = -exp(log_Lambda_real) + i Lambda_imag (H, n);  P (rank, H, n);  B (H, n);  D (H,)
    A = diag(Lambda_full) - sum_r P_full,r P_full,r^*    (N, N) complex, dt = exp(log_dt)
    bilinear: Abar = (I - dt/2 A)^-1 (I + dt/2 A),  Bbar = dt (I - dt/2 A)^-1 B_full
The C parameter holds C-tilde = C (I - Abar^M) for M = l_max (as the published code); the model
is x_k = Abar x_{k-1} + Bbar u_k, y_k = Re(C_full x_k) + D u_k, C_full = Ct_full (I - Abar^M)^-1.

Kernel K_l = Re(C_full Abar^l Bbar), l < M, from the truncated generating function at the M-th
roots of unity omega_k = exp(-2 pi i k / M): with Q = conj(P) and Cauchy sums over the full modes
    t_ab(omega) = sum_n dt a_n b_n / (2 (1 - omega) - (1 + omega) dt Lambda_n),
    Khat = 2 [t_CB - (1 + omega) t_CP (I + (1 + omega) T_QP)^-1 t_QB]   (Woodbury, rank r)
    K = irfft(Khat, M)[:L].
This is the published r(z) = sum dt a b / (z - dt Lambda), z = 2(1 - omega)/(1 + omega),
Khat = 2/(1 + omega) [r_CB - r_CP (I + R_QP)^-1 r_QB], with r = (1 + omega) t substituted so that
the node omega = -1 needs no division by zero. For L > M the kernel is computed at length
J M (J = ceil(L / M)) with C-tilde replaced by Ct sum_{j<J} (Abar^M)^j = C (I - Abar^(J M)).

The state is the first half x (batch, H, n) of the conjugate-symmetric full state (x, conj x):
    x_k = Abar11 x + Abar12 conj(x) + Bbar1 u_k,  y_k = 2 Re(C1 x_k) + D u_k  (blocks of the
full matrices). The recurrence (mode="recurrent", `step`, any forward given or returning a state)
runs this map in real coordinates r = (Re x, Im x) (batch, H, 2n): with A11 = a + i b,
A12 = c + i d (real n x n blocks),
    r_k = M r_{k-1} + (Re, Im)(Bbar1 u_k),   M = [[a + c, d - b], [b + d, a - c]]  (H, 2n, 2n),
through the dense_scan primitive (scan.py), since Abar is not diagonal. (Abar's eigenvector basis
is not used: for HiPPO-LegS it is exponentially ill-conditioned, docs/spec/s4.md.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import hippo
from ._common import (
    check_bool,
    check_choice,
    check_int,
    check_params,
    check_seed,
    check_shards,
    complex_dtype,
    namespace,
)
from .s4d import (
    causal_fft_conv,
    check_dt_range,
    check_input,
    check_length,
    check_state_size,
    check_step_input,
    get_param,
    get_state,
    init_log_dt,
    to_channels_last,
)
from .scan import dense_scan

__all__ = ["Config", "param_shapes", "init", "forward", "step", "initial_state", "kernel", "dense"]


@dataclass(frozen=True)
class Config:
    """As s4d.Config plus rank (of P), l_max (the length M that C-tilde refers to) and B_clip
    (init: Im B clipped to [-B_clip, B_clip]; 2.0 as state-spaces/s4, None: no clip).
    S4 is HiPPO-LegS initialised (init="legs") and bilinear (discretization="bilinear")."""

    d_model: int
    d_state: int = 64
    init: str = "legs"
    discretization: str = "bilinear"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: str = "conv"
    rank: int = 1
    l_max: int = 1024
    B_clip: float | None = 2.0

    def __post_init__(self):
        check_int("d_model", self.d_model)
        check_state_size(self.d_state)
        check_choice("init", self.init, ("legs",))
        check_choice("discretization", self.discretization, ("bilinear",))
        check_choice("mode", self.mode, ("conv", "recurrent"))
        check_dt_range(self.dt_min, self.dt_max)
        check_int("rank", self.rank)
        check_int("l_max", self.l_max)
        hippo.check_b_clip(self.B_clip)


def param_shapes(config: Config) -> dict:
    """{name: shape} of the parameters (every entry point checks params exactly against it)."""
    return _shapes(config.d_model, config.d_state // 2, config.rank)


def _shapes(H, n, r):
    return {
        "log_dt": (H,),
        "log_Lambda_real": (H, n),
        "Lambda_imag": (H, n),
        "P_re": (r, H, n),
        "P_im": (r, H, n),
        "B_re": (H, n),
        "B_im": (H, n),
        "C_re": (H, n),
        "C_im": (H, n),
        "D": (H,),
    }


def _params(config, params, dtype):
    """Complex (dt, Lambda, P, B, Ct, D) from the real parameters, in `dtype` (None: own)."""
    H, n, r = config.d_model, config.d_state // 2, config.rank
    p = {k: get_param(params, k, s, dtype) for k, s in _shapes(H, n, r).items()}
    xp = namespace(p["D"])
    cdt = complex_dtype(xp, p["D"].dtype)
    c = lambda x: xp.astype(x, cdt)  # noqa: E731
    Lam = c(-xp.exp(p["log_Lambda_real"])) + 1j * c(p["Lambda_imag"])
    P = c(p["P_re"]) + 1j * c(p["P_im"])
    B = c(p["B_re"]) + 1j * c(p["B_im"])
    Ct = c(p["C_re"]) + 1j * c(p["C_im"])
    return c(xp.exp(p["log_dt"])), Lam, P, B, Ct, p["D"]


def _full(x):
    xp = namespace(x)
    return xp.concat([x, xp.conj(x)], axis=-1)


def _matpow(M, k):
    """M^k for a Python int k >= 0 by repeated squaring; M (..., N, N)."""
    xp = namespace(M)
    result = None
    while k:
        if k & 1:
            result = M if result is None else xp.matmul(result, M)
        k >>= 1
        if k:
            M = xp.matmul(M, M)
    if result is None:
        eye = xp.eye(M.shape[-1], dtype=M.dtype)
        return xp.broadcast_to(eye, M.shape)
    return result


def _bilinear(dt, Lam, P, B):
    """Abar (H, N, N), Bbar (H, N) of the full DPLR system (module docstring)."""
    xp = namespace(Lam)
    eye = xp.eye(2 * Lam.shape[-1], dtype=Lam.dtype)
    Pf = _full(P)  # (r, H, N)
    A = _full(Lam)[..., None] * eye - xp.sum(Pf[..., :, None] * xp.conj(Pf)[..., None, :], axis=0)
    half = (dt / 2)[:, None, None] * A
    back = eye - half
    Abar = xp.linalg.solve(back, eye + half)
    return Abar, dt[:, None] * xp.linalg.solve(back, _full(B)[..., None])[..., 0]


def dense(config: Config, params: dict, dtype=None):
    """The full bilinear system: (Abar (H, N, N), Bbar (H, N), C_full (H, N), D (H,)),
    C_full = Ct_full (I - Abar^M)^-1 (complex; dtype None: the parameters' dtype)."""
    dt, Lam, P, B, Ct, D = _params(config, params, dtype)
    xp = namespace(D)
    Abar, Bbar = _bilinear(dt, Lam, P, B)
    eye = xp.eye(config.d_state, dtype=Abar.dtype)
    AM = _matpow(Abar, config.l_max)
    C = xp.linalg.solve(xp.matrix_transpose(eye - AM), _full(Ct)[..., None])[..., 0]
    return Abar, Bbar, C, D


def _cauchy_kernel(dt, Lam, P, B, Ct, M):
    """irfft at length M of the DPLR generating function (module docstring): (H, M) real."""
    xp = namespace(Lam)
    r = P.shape[0]
    omega = xp.exp(-2j * math.pi / M * xp.astype(xp.arange(M // 2 + 1), Lam.dtype))  # (K,)
    one_p = (1 + omega)[:, None]
    G = 2 * (1 - omega)[:, None] - one_p * _full(dt[:, None] * Lam)[:, None, :]  # (H, K, N)
    Cside = xp.concat([_full(Ct)[None, ...], _full(xp.conj(P))], axis=0)  # (1 + r, H, N)
    Bside = xp.concat([_full(B)[None, ...], _full(P)], axis=0)  # (1 + r, H, N)
    W = dt[:, None] * Cside[:, None, ...] * Bside[None, ...]  # (1 + r, 1 + r, H, N)
    t = xp.matmul(W[..., None, :], xp.matrix_transpose(1 / G))[..., 0, :]  # (1+r, 1+r, H, K)
    t = xp.permute_dims(t, (2, 3, 0, 1))  # (H, K, 1 + r, 1 + r)
    s = (1 + omega)[:, None, None]
    eye = xp.eye(r, dtype=Lam.dtype)
    X = xp.linalg.solve(eye + s * t[..., 1:, 1:], t[..., 1:, :1])  # (H, K, r, 1)
    corr = xp.matmul(t[..., :1, 1:], X)[..., 0, 0]  # (H, K)
    khat = 2 * (t[..., 0, 0] - (1 + omega) * corr)
    return xp.fft.irfft(khat, n=M)


def kernel(config: Config, params: dict, length: int):
    """K (H, length): K_l = Re(C_full Abar^l Bbar), by Cauchy sums + Woodbury (module docs)."""
    check_params(params, param_shapes(config))
    return _kernel(config, params, length, None)


def _kernel(config, params, length, dtype):
    check_length(length)
    dt, Lam, P, B, Ct, D = _params(config, params, dtype)
    xp = namespace(D)
    M = config.l_max
    J = -(-length // M)
    if J > 1:  # C (I - Abar^(J M)) = Ct sum_{j<J} (Abar^M)^j, as a row vector times matrices
        Abar = dense(config, params, dtype)[0]
        AM = _matpow(Abar, M)
        row, acc = _full(Ct), _full(Ct)
        for _ in range(J - 1):
            row = xp.matmul(row[:, None, :], AM)[:, 0, :]
            acc = acc + row
        Ct = acc[:, : config.d_state // 2]
    return _cauchy_kernel(dt, Lam, P, B, Ct, J * M)[:, :length]


def initial_state(config: Config, batch: int) -> dict:
    """{"x": zeros (batch, H, n) complex128} (the first half of the full state)."""
    check_int("batch", batch)
    return {"x": np.zeros((batch, config.d_model, config.d_state // 2), dtype=np.complex128)}


def _real_system(config, params, dtype):
    """(M (H, 2n, 2n), b1 (H, n) complex, C1 (H, n) complex, D (H,)): the state map in the real
    coordinates r = (Re x, Im x) (module docstring), in the real dtype `dtype`."""
    n = config.d_state // 2
    Abar, Bbar, C, D = dense(config, params, dtype)
    xp = namespace(D)
    A11, A12 = Abar[:, :n, :n], Abar[:, :n, n:]
    a, b, c, d = xp.real(A11), xp.imag(A11), xp.real(A12), xp.imag(A12)
    M = xp.concat([xp.concat([a + c, d - b], axis=-1), xp.concat([b + d, a - c], axis=-1)],
                  axis=-2)
    return M, Bbar[:, :n], C[:, :n], D


def _recurrent(config, params, u, state, *, need_state=False):
    """The dense recurrence over u (batch, L, H) from state (None: zeros, unless need_state):
    y (batch, L, H) and the final x (batch, H, n)."""
    H, n = config.d_model, config.d_state // 2
    xp = namespace(u)
    batch = u.shape[0]
    M, b1, C1, D = _real_system(config, params, u.dtype)
    cdt = b1.dtype
    h0 = None
    if state is not None or need_state:
        x = get_state(state, "x", (batch, H, n), xp, cdt)
        h0 = xp.concat([xp.real(x), xp.imag(x)], axis=-1)
    bu = b1 * xp.astype(u, cdt)[..., None]  # (batch, L, H, n)
    r = dense_scan(M, xp.concat([xp.real(bu), xp.imag(bu)], axis=-1), h0)  # (batch, L, H, 2n)
    p, q = r[..., :n], r[..., n:]
    y = 2 * xp.sum(xp.real(C1) * p - xp.imag(C1) * q, axis=-1) + D * u
    last = xp.astype(p[:, -1, ...], cdt) + 1j * xp.astype(q[:, -1, ...], cdt)
    return y, last


def forward(config: Config, params: dict, u, *, state=None, return_state=False, shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, {"x": x_L}]. mode="conv" without a state: FFT
    convolution with `kernel`; otherwise the dense recurrence (module docstring). No sharded
    form (shards must be None)."""
    check_bool("return_state", return_state)
    check_shards(shards, unsupported="S4 (an FFT convolution or a dense recurrence) has no "
                 "sharded form")
    H = config.d_model
    check_input(u, H)
    check_params(params, param_shapes(config), inputs={"u": u})
    xp = namespace(u)
    L = u.shape[1]
    if config.mode == "conv" and state is None and not return_state:
        K = _kernel(config, params, L, u.dtype)
        D = get_param(params, "D", (H,), u.dtype)
        uT = xp.permute_dims(u, (0, 2, 1))
        return to_channels_last(causal_fft_conv(uT, K) + D[:, None] * uT)
    y, x = _recurrent(config, params, u, state)
    return (y, {"x": x}) if return_state else y


def step(config: Config, params: dict, state: dict, u_t):
    """One step of the dense recurrence: x <- Abar11 x + Abar12 conj(x) + Bbar1 u_t,
    y_t = 2 Re(C1 x) + D u_t; u_t (batch, H)."""
    check_step_input(u_t, config.d_model)
    check_params(params, param_shapes(config), inputs={"u_t": u_t})
    y, x = _recurrent(config, params, u_t[:, None, :], state, need_state=True)
    return y[:, 0, :], {"x": x}


def init(config: Config, seed: int = 0) -> dict:
    """HiPPO-LegS NPLR (hippo.nplr): Lambda, P = V^* P_legs, B = V^* B_legs with Im B clipped
    to [-config.B_clip, config.B_clip] (2.0, as state-spaces/s4; None: no clip, as
    raminmh/liquid-s4), tiled over H; log dt ~ U[log dt_min, log dt_max]; C complex standard
    normal, stored as C-tilde = C (I - Abar^M) (the published code converts C the same way
    before its first kernel); D ~ N(0, 1)."""
    H, n, r = config.d_model, config.d_state // 2, config.rank
    Lam, P, B, _ = hippo.nplr(config.d_state, r, B_clip=config.B_clip)
    rng = np.random.default_rng(check_seed(seed))
    log_dt = init_log_dt(rng, H, config.dt_min, config.dt_max)
    C = rng.normal(0.0, math.sqrt(0.5), (2, H, n))
    D = rng.normal(0.0, 1.0, H)
    Lam, P, B = np.tile(Lam, (H, 1)), np.tile(P[:, None], (1, H, 1)), np.tile(B, (H, 1))
    Abar, _ = _bilinear(np.exp(log_dt).astype(np.complex128), Lam, P, B)
    Cf = _full(C[0] + 1j * C[1])
    Ct = (Cf - np.einsum("hn,hnm->hm", Cf, _matpow(Abar, config.l_max)))[:, :n]
    return {
        "log_dt": log_dt,
        "log_Lambda_real": np.log(-Lam.real),
        "Lambda_imag": Lam.imag.copy(),
        "P_re": P.real.copy(),
        "P_im": P.imag.copy(),
        "B_re": B.real.copy(),
        "B_im": B.imag.copy(),
        "C_re": Ct.real.copy(),
        "C_im": Ct.imag.copy(),
        "D": D,
    }
