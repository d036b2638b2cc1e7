"""S5: a MIMO diagonal state space layer (lindermanlab/S5); its sequence layer is spec/s5_layer.py.

One complex diagonal state of P' modes is shared by all H channels (P' = P/2 with conj_sym,
P' = P without). With Lambda = Lambda_re + i Lambda_im (P',), Btilde (P', H), Ctilde (H, P'):

    dt = step_rescale * exp(log_step)                                   (P',)
    zoh:      Lambdabar = exp(dt Lambda),  gamma = (Lambdabar - 1) / Lambda
    bilinear: Lambdabar = (1 + dt Lambda/2) / (1 - dt Lambda/2),  gamma = dt / (1 - dt Lambda/2)
    Bbar = gamma * Btilde                  (row-wise: Bbar u = gamma * (Btilde u))
    x_k = Lambdabar x_{k-1} + Bbar u_k,    y_k = 2 Re(Ctilde x_k) + D * u_k   (Re without conj_sym)

Bidirectional: a second recursion x'_k = Lambdabar x'_{k+1} + Bbar u_k with its own half of C,
C = [C_fwd | C_bwd] (H, 2P'), y_k = 2 Re(C_fwd x_k + C_bwd x'_k) + D * u_k.

Irregular sampling (`timesteps=tau`, (batch, L)): position k uses dt_k = dt * tau_k, where tau_k
is the interval from the previous position (k-1) to k in units of the nominal step (tau_0: from
the initial state). The reverse recursion goes from k+1 to k, so it uses dt * tau_{k+1} at
position k and dt * 1 at k = L-1 (as the published irregular-sampling branch). tau = 1 everywhere
is exactly the plain forward (the same code runs with tau = 1).

Conjugate symmetry: the kept modes stand for the real system with modes (Lambda, conj Lambda),
inputs (Btilde, conj Btilde), outputs (Ctilde, conj Ctilde); its output C x + conj(C x) = 2 Re(C x)
is real, so the half system computes it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._common import (
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
from .hippo import legs
from .scan import diag_scan

__all__ = [
    "Config",
    "init",
    "forward",
    "initial_state",
    "step",
    "param_shapes",
    "hippo_n",
]

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
DISCRETIZATIONS = ("zoh", "bilinear")
#: jax.nn.initializers.truncated_normal: N(0, 1) truncated to [-2, 2], rescaled to unit variance
_TRUNC_STD = 0.87962566103423978


@dataclass(frozen=True)
class Config:
    """S5 configuration (defaults from lindermanlab/S5 run_train.py, except d_model)."""

    d_model: int
    d_state: int = 256
    blocks: int = 8
    conj_sym: bool = True
    C_init: str = "trunc_standard_normal"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    clip_eigs: bool = False
    bidirectional: bool = False
    step_rescale: float = 1.0

    def __post_init__(self):
        check_int("d_model", self.d_model)
        check_int("d_state", self.d_state)
        check_int("blocks", self.blocks)
        for name in ("conj_sym", "clip_eigs", "bidirectional"):
            check_bool(name, getattr(self, name))
        check_choice("C_init", self.C_init, C_INITS)
        check_choice("discretization", self.discretization, DISCRETIZATIONS)
        check_float("dt_min", self.dt_min, positive=True)
        check_float("dt_max", self.dt_max, positive=True)
        check_float("step_rescale", self.step_rescale, positive=True)
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_max: expected >= dt_min = {self.dt_min}, got {self.dt_max}")
        if self.d_state % self.blocks:
            raise ValueError(
                f"blocks: expected a divisor of d_state = {self.d_state}, got {self.blocks}"
            )
        if self.conj_sym and (self.d_state // self.blocks) % 2:
            raise ValueError(
                f"d_state: expected d_state / blocks even with conj_sym=True (conjugate pairs), "
                f"got d_state = {self.d_state}, blocks = {self.blocks}"
            )

    @property
    def n_modes(self) -> int:
        """P': the complex modes kept (P/2 with conj_sym, else P)."""
        return self.d_state // 2 if self.conj_sym else self.d_state


def _check_config(config, cls):
    if type(config) is not cls:
        raise TypeError(
            f"config: expected {cls.__module__}.{cls.__qualname__}, got {type(config).__module__}."
            f"{type(config).__qualname__}"
        )


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of `config` (all real)."""
    H, Pp = config.d_model, config.n_modes
    Cw = 2 * Pp if config.bidirectional else Pp
    return {
        "Lambda_re": (Pp,),
        "Lambda_im": (Pp,),
        "B_re": (Pp, H),
        "B_im": (Pp, H),
        "C_re": (H, Cw),
        "C_im": (H, Cw),
        "D": (H,),
        "log_step": (Pp,),
    }


# ----------------------------------------------------------------------------------------------
# initialisation (NumPy, float64)


def hippo_n(N: int, conj_sym: bool = True):
    """HiPPO-N: the normal part S = A + P P^T of HiPPO-LegS (N, N), diagonalised.

    Lambda_re = mean(diag S) = -1/2; (Lambda_im, V) = eigh(-i S) (ascending Lambda_im), so that
    S = V diag(Lambda) V^*. conj_sym keeps the first N/2 modes (Lambda_im < 0), as published.
    Returns Lambda (N',) complex128 and V (N, N') complex128, N' = N/2 or N.
    """
    A, _, P = legs(N)
    S = A + np.outer(P, P)
    lam_im, V = np.linalg.eigh(-1j * S)
    Lambda = np.mean(np.diag(S)) + 1j * lam_im
    keep = N // 2 if conj_sym else N
    return Lambda[:keep], V[:, :keep]


def _trunc_normal(rng, shape, std):
    """jax truncated_normal: N(0, 1) restricted to [-2, 2], times std / 0.8796 (variance std^2)."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return z * (std / _TRUNC_STD)


def _lecun(rng, shape):
    """jax lecun_normal: truncated normal of variance 1/fan_in,
    fan_in = shape[-2] * prod(shape[:-2])."""
    fan_in = shape[-2] * math.prod(shape[:-2])
    return _trunc_normal(rng, shape, math.sqrt(1.0 / fan_in))


def _sample_C(config, rng, V):
    """Ctilde (H, P') complex: C V with C sampled over all P states (or direct complex normal)."""
    H, P = config.d_model, config.d_state
    if config.C_init == "trunc_standard_normal":  # one lecun_normal (1, P, 2) draw per row
        C = np.stack([_lecun(rng, (1, P, 2))[0] for _ in range(H)])
    else:
        C = _lecun(rng, (H, P, 2))
    return (C[..., 0] + 1j * C[..., 1]) @ V


def init(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Published S5 init: HiPPO-N per block of size P/J, V = blockdiag(V_1..V_J),
    Btilde = V^* B with B (P, H) lecun-normal, Ctilde = C V (or complex normal, variance 1/2 per
    part, without V), D ~ N(0, 1), log_step ~ U[log dt_min, log dt_max] (P',)."""
    _check_config(config, Config)
    rng = np.random.default_rng(check_seed(seed))
    H, P, J, Pp = config.d_model, config.d_state, config.blocks, config.n_modes
    lam, Vb = hippo_n(P // J, config.conj_sym)
    Lambda = np.tile(lam, J)
    V = np.zeros((P, Pp), dtype=np.complex128)
    nb, mb = Vb.shape
    for j in range(J):
        V[j * nb : (j + 1) * nb, j * mb : (j + 1) * mb] = Vb
    Bt = V.conj().T @ _lecun(rng, (P, H))
    if config.C_init == "complex_normal":
        Cw = 2 * Pp if config.bidirectional else Pp
        C = rng.normal(0.0, math.sqrt(0.5), (H, Cw, 2))
        Ct = C[..., 0] + 1j * C[..., 1]
    elif config.bidirectional:
        Ct = np.concatenate([_sample_C(config, rng, V), _sample_C(config, rng, V)], axis=-1)
    else:
        Ct = _sample_C(config, rng, V)
    D = rng.standard_normal(H)
    log_step = rng.uniform(math.log(config.dt_min), math.log(config.dt_max), Pp)
    return {
        "Lambda_re": np.ascontiguousarray(Lambda.real),
        "Lambda_im": np.ascontiguousarray(Lambda.imag),
        "B_re": np.ascontiguousarray(Bt.real),
        "B_im": np.ascontiguousarray(Bt.imag),
        "C_re": np.ascontiguousarray(Ct.real),
        "C_im": np.ascontiguousarray(Ct.imag),
        "D": D,
        "log_step": log_step,
    }


def initial_state(config: Config, batch: int) -> dict[str, np.ndarray]:
    """{"x": zeros (batch, P') complex128}."""
    _check_config(config, Config)
    check_int("batch", batch)
    return {"x": np.zeros((batch, config.n_modes), dtype=np.complex128)}


# ----------------------------------------------------------------------------------------------
# shared compute pieces (also used by liquid_s5)


def _check_stream(config, state, return_state):
    check_bool("return_state", return_state)
    if config.bidirectional and (state is not None or return_state):
        raise ValueError(
            "state: a bidirectional S5 cannot stream (its reverse recursion needs the whole "
            f"sequence); expected state=None and return_state=False, got state="
            f"{'a dict' if state is not None else None} and return_state={return_state}"
        )


def _state_x(state, shape, xp, cdt):
    """state["x"] checked against `shape` and cast to the complex dtype."""
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict with key 'x' of shape {shape}, got "
                        f"{type(state).__name__}")
    if "x" not in state:
        raise ValueError(f"state: expected a dict with key 'x' of shape {shape}, got keys "
                         f"{sorted(map(str, state))}")
    return xp.astype(check_array("state['x']", state["x"], shape, complex_ok=True), cdt)


def _continuous(config, xp, p, cdt):
    """(Lambda (P',) complex cdt, clipped to Re <= -1e-4 when clip_eigs; dt = step_rescale
    exp(log_step) (P',) real) from params p in one real dtype."""
    re = p["Lambda_re"]
    if config.clip_eigs:
        re = xp.clip(re, None, -1e-4)
    Lambda = xp.astype(re, cdt) + 1j * xp.astype(p["Lambda_im"], cdt)
    return Lambda, config.step_rescale * xp.exp(p["log_step"])


def _setup(config, params, u, timesteps):
    """Check u/timesteps; discretise. Returns (xp, p, dirs): p the params cast to u's dtype,
    dirs = [(Lambdabar, gamma)] (+ the reverse pair when bidirectional), each broadcast to
    (1 or batch, L, P')."""
    H, Pp = config.d_model, config.n_modes
    check_array("u", u, ("batch", "length", H))
    xp = namespace(u, *params.values())
    p = {k: xp.astype(v, u.dtype) for k, v in params.items()}
    batch, L = u.shape[0], u.shape[1]
    cdt = complex_dtype(xp, u.dtype)
    Lambda, dt0 = _continuous(config, xp, p, cdt)
    dt0 = xp.reshape(dt0, (1, 1, Pp))
    taus = [None]
    if timesteps is not None:
        check_array("timesteps", timesteps, (batch, L))
        tau = xp.astype(timesteps, u.dtype)
        taus = [tau]
        if config.bidirectional:  # reverse step k -> k-1 spans tau_{k+1}; the last one spans 1
            taus.append(xp.concat([tau[:, 1:], xp.ones((batch, 1), dtype=u.dtype)], axis=1))
    dirs = []
    for tau in taus:
        dt = dt0 if tau is None else dt0 * tau[..., None]
        abar, gamma = discretize(Lambda, 1.0, dt, config.discretization)
        shape = (dt.shape[0], L, Pp)
        dirs.append((xp.broadcast_to(abar, shape), xp.broadcast_to(gamma, shape)))
    if config.bidirectional and len(dirs) == 1:
        dirs.append(dirs[0])
    return xp, p, dirs


def _complex(xp, re, im, cdt):
    return xp.astype(re, cdt) + 1j * xp.astype(im, cdt)


def _project(xp, v, re, im):
    """v (batch, L, H) real -> (re + i im) v: (batch, L, P') complex."""
    cdt = complex_dtype(xp, v.dtype)
    return _project_w(xp, v, _complex(xp, re, im, cdt))


def _project_w(xp, v, W):
    """v (..., H) real -> v W^T (..., P') for W (P', H) complex."""
    return xp.matmul(xp.astype(v, W.dtype), xp.matrix_transpose(W))


def _readout(config, xp, p, xs, u):
    """xs (batch, L, P' or 2P') -> y = (2 if conj_sym else 1) Re(xs Ctilde^T) + D u."""
    cdt = complex_dtype(xp, u.dtype)
    return _readout_c(config, xp, _complex(xp, p["C_re"], p["C_im"], cdt), p["D"], xs, u)


def _readout_c(config, xp, C, D, xs, u):
    """_readout with Ctilde = C (H, P' or 2P') complex given."""
    y = xp.real(xp.matmul(xs, xp.matrix_transpose(C)))
    return (2 * y if config.conj_sym else y) + D * u


# ----------------------------------------------------------------------------------------------
# forward / step


def _check_shards(config, shards, timesteps):
    """shards (liquidssm.spec.parallel.Shards) for an S5 / Liquid-S5 forward: refused for a
    bidirectional layer with timesteps (its reverse steps read the next slice's tau)."""
    return check_shards(shards, unsupported=(
        "a bidirectional layer with timesteps has no sharded form (the reverse step at a "
        "slice's end spans the next slice's first interval)")
        if config.bidirectional and timesteps is not None else None)


def forward(config: Config, params, u, *, state=None, return_state=False, timesteps=None,
            shards=None):
    """u (batch, L, H) -> y (batch, L, H) [, {"x": x_{L-1} (batch, P')}].

    x_k = Lambdabar_k x_{k-1} + gamma_k (Btilde u_k), x_{-1} = state["x"] (zeros if None);
    y_k = 2 Re(Ctilde x_k) + D u_k. timesteps tau (batch, L): dt_k = dt * tau_k (module doc).
    shards (liquidssm.spec.parallel.Shards): u (and timesteps) are this rank's slice of the
    sequence, y its slice; the state returned is the global last one.
    """
    _check_config(config, Config)
    check_params(params, param_shapes(config), inputs={"u": u, "timesteps": timesteps})
    _check_stream(config, state, return_state)
    _check_shards(config, shards, timesteps)
    xp, p, dirs = _setup(config, params, u, timesteps)
    Pp, options = config.n_modes, scan_options(shards)
    bu = _project(xp, u, p["B_re"], p["B_im"])
    h0 = None
    if state is not None:
        h0 = _state_x(state, (u.shape[0], Pp), xp, bu.dtype)
    a, gamma = dirs[0]
    xs = diag_scan(a, gamma * bu, h0, **options)
    if config.bidirectional:
        a, gamma = dirs[1]
        xs = xp.concat([xs, diag_scan(a, gamma * bu, reverse=True, **options)], axis=-1)
    y = _readout(config, xp, p, xs, u)
    if not return_state:
        return y
    return y, {"x": xs[:, -1, :] if shards is None else shards.last(xs[:, -1, :])}


def _step_via_forward(module_forward, config, params, state, u_t, timesteps):
    if config.bidirectional:
        raise ValueError(
            "config: step needs bidirectional=False (a bidirectional layer sees the whole "
            "sequence); use forward instead"
        )
    check_array("u_t", u_t, ("batch", config.d_model))
    tau = None
    if timesteps is not None:
        check_array("timesteps", timesteps, (u_t.shape[0],))
        tau = timesteps[:, None]
    y, new = module_forward(
        config, params, u_t[:, None, :], state=state, return_state=True, timesteps=tau
    )
    return y[:, 0, :], new


def step(config: Config, params, state, u_t, *, timesteps=None):
    """One recurrent step: u_t (batch, H) -> (y_t (batch, H), new state); timesteps tau_t (batch,)
    scales this step's dt as in forward. Unidirectional only. (forward over one position;
    `_step` is the same step without timesteps, unchecked.)"""
    _check_config(config, Config)
    if state is None:
        raise TypeError("state: expected a dict from initial_state or forward, got None")
    return _step_via_forward(forward, config, params, state, u_t, timesteps)


def step_params(config: Config, params):
    """What `_step` reads, from params (checked, in the compute dtype): Lambdabar, gamma (P',)
    (the discretisation of forward at tau = 1), B (P', H), C (H, P') complex, D (and BL for an
    untied Liquid-S5); None for a bidirectional config (it does not stream)."""
    if config.bidirectional:
        return None
    xp = namespace(params["D"])
    cdt = complex_dtype(xp, params["D"].dtype)
    Lambda, dt = _continuous(config, xp, params, cdt)
    abar, gamma = discretize(Lambda, 1.0, dt, config.discretization)
    out = {"abar": abar, "gamma": gamma, "D": params["D"],
           "B": _complex(xp, params["B_re"], params["B_im"], cdt),
           "C": _complex(xp, params["C_re"], params["C_im"], cdt)}
    if "BL_re" in params:
        out["BL"] = _complex(xp, params["BL_re"], params["BL_im"], cdt)
    return out


def _step(config: Config, p, state, u_t, xp):
    """step's computation (timesteps None), unchecked: p = step_params(config, params), state
    ["x"] (batch, P') complex, u_t (batch, H) of p's precision. One diag_scan step."""
    x = p["abar"] * state["x"] + p["gamma"] * _project_w(xp, u_t, p["B"])
    return _readout_c(config, xp, p["C"], p["D"], x, u_t), {"x": x}
