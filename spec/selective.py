"""Selective scans (S6 / Mamba) and the liquid selective scan, as sequential reference loops.

Layout and semantics of mamba's `selective_scan_ref` (b batch, d channels, l length, n state):
u, delta, z (b, d, l); A (d, n) real or complex; D, delta_bias (d,); B, C (and BL) each one of
    constant     (d, n)         (complex allowed when A is complex)
    input-dep.   (b, n, l)      (b, n, 2l) interleaved (re, im) when A is complex
    grouped      (b, g, n, l)   (b, g, n, 2l) when A is complex; channel i uses group i // (d/g)
Forward, per (b, d, n), t = 0..l-1, h_{-1} = initial_state (zeros if None):
    Delta = softplus(delta + delta_bias) (threshold 20) if delta_softplus else delta + delta_bias
    h_t = exp(Delta_t A) h_t-1 + Delta_t B_t u_t                      (Euler for B)
    y_t = sum_n C_t h_t  (2 Re(...) for complex A);  out = (y + D u) * silu(z)
Liquid (real A): c_t = Delta_t phi(BL_t u_t), levels m = 0..p-1:
    h0_t = Abar_t h0_t-1 + Delta_t B_t u_t,   hm_t = Abar_t hm_t-1 + c_t h(m-1)_t-1,
    y_t = sum_n C_t sum_m hm_t.
Compute dtype: float64 for float64 u, else float32 (complex128 / complex64 for complex A);
out has u's dtype, states have the compute dtype. The vjp functions compute in float64
(complex128 for complex A; the liquid vjp, like the liquid scan, takes real A only).
Arguments are checked by `_checks.selective_scan_args` / `selective_state_update_args` (the
checks every backend runs); zero batch or length gives an empty out and last_state =
initial_state (zeros if None).
"""

from __future__ import annotations

from ._checks import selective_scan_args, selective_state_update_args
from ._common import check_array, check_choice, check_int, complex_dtype, namespace, to_complex
from ._dispatch import overridable
from .nn import LCONTRACTS, lcontract_grad, sigmoid, silu, softplus
from .nn import lcontract as _lcontract

__all__ = [
    "selective_scan",
    "selective_state_update",
    "liquid_selective_scan",
    "selective_scan_vjp",
    "liquid_selective_scan_vjp",
]


def _work_dtype(xp, u, force64=False):
    """float64 for float64 u (or force64), else float32; and the matching complex dtype."""
    wdt = xp.float64 if (force64 or u.dtype == xp.float64) else xp.float32
    return wdt, complex_dtype(xp, wdt)


def _bc(X, form, b, d, n, cplx, xp, wdt, cdt):
    """B, C or BL (checked, of `form`) -> X4 (b|1, d|1, n, l|1) in the compute dtype."""
    if form[0] == "const":
        X = xp.astype(X, cdt if cplx else wdt)
        return X[None, :, :, None]
    X = xp.astype(X, wdt)
    if form[0] == "var":
        X = X[:, None, ...]
    else:
        g, ll = form[1], X.shape[-1]
        X = xp.reshape(xp.broadcast_to(X[:, :, None, ...], (b, g, d // g, n, ll)), (b, d, n, ll))
    if cplx:
        X = to_complex(X[..., 0::2], X[..., 1::2])
    return X


def _at(X4, t):
    """The (b|1, d|1, n) slice of a normalised B/C/BL at time t."""
    return X4[..., t if X4.shape[-1] > 1 else 0]


def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state=None,
             return_last_state=False, *, liquid, force64=False, p=1, BL=None, phi="none"):
    """Check every argument (_checks); return the namespace, compute dtypes and arrays in them."""
    s = selective_scan_args(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                            return_last_state, liquid=liquid, liquid_degree=p, BL=BL,
                            lcontract=phi)
    xp = namespace(u, delta, A, B, C, D, z, delta_bias, BL)
    b, d, l, n, cplx = s.b, s.d, s.l, s.n, s.cplx
    wdt, cdt = _work_dtype(xp, u, force64)
    A = xp.astype(A, cdt if cplx else wdt)
    bform, cform, blform = s.forms
    B4 = _bc(B, bform, b, d, n, cplx, xp, wdt, cdt)
    C4 = _bc(C, cform, b, d, n, cplx, xp, wdt, cdt)
    BL4 = B4 if BL is None else _bc(BL, blform, b, d, n, False, xp, wdt, cdt)
    if D is not None:
        D = xp.astype(D, wdt)
    if z is not None:
        z = xp.astype(z, wdt)
    raw = xp.astype(delta, wdt)
    if delta_bias is not None:
        raw = raw + xp.astype(delta_bias, wdt)[:, None]
    dt = softplus(raw) if delta_softplus else raw
    return dict(xp=xp, b=b, d=d, l=l, n=n, wdt=wdt, cdt=cdt, cplx=cplx, u=xp.astype(u, wdt),
                raw=raw, dt=dt, A=A, B4=B4, C4=C4, BL4=BL4, D=D, z=z, forms=s.forms)


def _run(a, levels, p, phi, history=None):
    """The level recurrence; returns (y (b, d, l) real, last levels [p x (b, d, n)]).

    If `history` is a list, the levels after every step are appended to it.
    """
    xp, u, dt, A = a["xp"], a["u"], a["dt"], a["A"]
    if a["l"] == 0:  # an empty result; the levels stay as they were
        return xp.zeros((a["b"], a["d"], 0), dtype=a["wdt"]), levels
    ys = []
    for t in range(a["l"]):
        dtt, ut = dt[:, :, t, None], u[:, :, t, None]
        Abar = xp.exp(dtt * A)
        new = [Abar * levels[0] + dtt * _at(a["B4"], t) * ut]
        if p > 1:
            c = dtt * _lcontract(_at(a["BL4"], t) * ut, phi)
            new += [Abar * levels[m] + c * levels[m - 1] for m in range(1, p)]
        levels = new
        if history is not None:
            history.append(levels)
        total = levels[0]
        for m in range(1, p):
            total = total + levels[m]
        y = xp.sum(_at(a["C4"], t) * total, axis=-1)
        ys.append(2 * xp.real(y) if a["cplx"] else y)
    return xp.stack(ys, axis=2), levels


def _finish(a, y, out_dtype):
    xp = a["xp"]
    out = y if a["D"] is None else y + a["D"][:, None] * a["u"]
    if a["z"] is not None:
        out = out * silu(a["z"])
    return xp.astype(out, out_dtype)


def _initial_levels(a, initial_state, p, liquid):
    """initial_state (b, d, n) or (b, p, d, n) -> list of p (b, d, n) arrays in compute dtype."""
    xp, b, d, n = a["xp"], a["b"], a["d"], a["n"]
    sdt = a["cdt"] if a["cplx"] else a["wdt"]
    if initial_state is None:
        return [xp.zeros((b, d, n), dtype=sdt)] * p
    h0 = xp.astype(initial_state, sdt)  # checked by _prepare
    return [h0[:, m, ...] for m in range(p)] if liquid else [h0]


@overridable
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_last_state=False):
    """Mamba's selective scan (see the module docstring for shapes and the recurrence).

    initial_state (b, d, n): h_{-1} (complex for complex A). Returns out (b, d, l) in u's dtype,
    and last_state = h_{l-1} (b, d, n) if return_last_state.
    """
    a = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                 return_last_state, liquid=False)
    y, levels = _run(a, _initial_levels(a, initial_state, 1, False), 1, "none")
    out = _finish(a, y, u.dtype)
    return (out, levels[0]) if return_last_state else out


@overridable
def liquid_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, initial_state=None, return_last_state=False, *,
                          liquid_degree=1, BL=None, lcontract="none"):
    """Liquid selective scan truncated at degree p = liquid_degree (real A only).

    c_t = Delta_t * phi(BL_t u_t) (phi = spec.nn.lcontract(., lcontract); BL None = B);
    h0_t = Abar_t h0_{t-1} + Delta_t B_t u_t; hm_t = Abar_t hm_{t-1} + c_t h(m-1)_{t-1};
    y_t = C_t . sum_m hm_t; out = (y + D u) * silu(z).
    initial_state / last_state: (b, p, d, n), the levels. p = 1 is selective_scan.
    """
    a = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                 return_last_state, liquid=True, p=liquid_degree, BL=BL, phi=lcontract)
    p = liquid_degree
    y, levels = _run(a, _initial_levels(a, initial_state, p, True), p, lcontract)
    out = _finish(a, y, u.dtype)
    return (out, a["xp"].stack(levels, axis=1)) if return_last_state else out


def reference_scan(*args, liquid, liquid_degree=1, BL=None, lcontract="none"):
    """The spec's own loop (never a backend's) of liquid_selective_scan (liquid) or
    selective_scan on the positional `args`: what a backend runs where its kernels have nothing
    to do (zero-size inputs)."""
    if liquid:
        return liquid_selective_scan.reference(*args, liquid_degree=liquid_degree, BL=BL,
                                               lcontract=lcontract)
    return selective_scan.reference(*args)


@overridable
def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False):
    """One decode step of the selective scan (real A), without mutating any input.

    state (b, d, n); x, dt, z (b, d); A (d, n) real; B, C (b, n) or grouped (b, g, n);
    D, dt_bias (d,).  Delta = softplus(dt + dt_bias) if dt_softplus else dt + dt_bias;
    new_state = exp(Delta A) state + Delta B x;  out = (sum_n C new_state + D x) * silu(z).
    Returns (out (b, d) in x's dtype, new_state (b, d, n) in the compute dtype).
    The arguments are checked, cast to the compute dtype and B, C brought to (b, 1 | d, n);
    then `_state_update` computes.
    """
    s = selective_state_update_args(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    xp = namespace(state, x, dt, A, B, C, D, z, dt_bias)
    wdt, _ = _work_dtype(xp, x)
    cast = lambda v: None if v is None else xp.astype(v, wdt)  # noqa: E731
    out, new_state = _state_update(xp, cast(state), cast(x), cast(dt), cast(A),
                                  _per_channel(xp, cast(B), s.d), _per_channel(xp, cast(C), s.d),
                                  cast(D), cast(z), cast(dt_bias), dt_softplus)
    return xp.astype(out, x.dtype), new_state


def _per_channel(xp, X, d):
    """A decode step's B or C as _state_update reads it: (b, n) -> (b, 1, n), shared by the d
    channels; grouped (b, g, n) -> (b, d, n), channel c reading group c // (d / g)."""
    if len(X.shape) == 2:
        return X[:, None, :]
    b, g, n = X.shape
    return xp.reshape(xp.broadcast_to(X[:, :, None, :], (b, g, d // g, n)), (b, d, n))


@overridable(on=1)
def _state_update(xp, state, x, dt, A, B3, C3, D=None, z=None, dt_bias=None, dt_softplus=False):
    """selective_state_update's computation, unchecked (the decode fast paths call it once the
    arguments are known good; a backend may register a kernel of it for its arrays, dispatched
    on `state`): every array in one real floating dtype of namespace xp; state
    (b, d, n), x, dt, z (b, d), A (d, n), B3, C3 (b, 1 or d, n), D, dt_bias (d,) or None.
    Returns (out (b, d), new_state (b, d, n)), both in that dtype."""
    delta = dt if dt_bias is None else dt + dt_bias
    delta = softplus(delta) if dt_softplus else delta
    new_state = xp.exp(delta[..., None] * A) * state + (delta * x)[..., None] * B3
    out = xp.sum(C3 * new_state, axis=-1)
    if D is not None:
        out = out + D * x
    if z is not None:
        out = out * silu(z)
    return out, new_state


@overridable(on=1)
def _liquid_state_update(xp, levels, x, delta, A, B3, C3, L3, D, z, p, phi):
    """One step of liquid_selective_scan, unchecked (the liquid decode fast path; overridable
    as _state_update, dispatched on `levels`): levels
    (b, p, d, n), x, delta (= Delta, after bias and softplus), z (b, d), A (d, n), B3, C3, L3
    (b, 1 or d, n) (L3 = BL, B3 when tied), D (d,) or None, z None allowed, one real dtype.
    Abar = exp(Delta A), c = Delta phi(BL x): h0' = Abar h0 + Delta B x,
    hm' = Abar hm + c h(m-1) (old levels), y = (C . sum_m hm' + D x) silu(z).
    Returns (y (b, d), new levels (b, p, d, n))."""
    dt = delta[..., None]
    Abar = xp.exp(dt * A)
    xn = x[..., None]
    new = [Abar * levels[:, 0, ...] + (delta * x)[..., None] * B3]
    if p > 1:
        c = dt * _lcontract(L3 * xn, phi)
        new += [Abar * levels[:, m, ...] + c * levels[:, m - 1, ...] for m in range(1, p)]
    total = new[0]
    for m in range(1, p):
        total = total + new[m]
    y = xp.sum(C3 * total, axis=-1)
    if D is not None:
        y = y + D * x
    if z is not None:
        y = y * silu(z)
    return y, xp.stack(new, axis=1)


# ----------------------------------------------------------------------------------------------
# Reference gradients (adjoint reverse scan), float64.


def _reduce(G, form, xp):
    """Gradient w.r.t. the normalised (b, d, n, l) B/C/BL -> gradient of the argument's form."""
    if form[0] == "const":
        return xp.sum(G, axis=(0, 3))
    if form[0] == "var":
        return xp.sum(G, axis=1)
    b, d, n, l = G.shape
    g = form[1]
    return xp.sum(xp.reshape(G, (b, g, d // g, n, l)), axis=2)


def _vjp(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, dout, dlast_state,
         p, BL, phi, liquid):
    a = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                 liquid=liquid, force64=True, p=p, BL=BL, phi=phi)
    xp, b, d, l, n, f64 = a["xp"], a["b"], a["d"], a["l"], a["n"], a["wdt"]
    u64, dt, A64, raw = a["u"], a["dt"], a["A"], a["raw"]
    B4, C4, BL4 = a["B4"], a["C4"], a["BL4"]
    # complex A (plain scan only): gradients of complex x = p + i q are dL/dp + i dL/dq, so
    # w = v x gives dL/dx = conj(v) dL/dw and a real s gets Re(conj(dL/dw) dw/ds)
    cplx = a["cplx"]
    sdt = a["cdt"] if cplx else f64
    cj = xp.conj if cplx else (lambda x: x)
    re = xp.real if cplx else (lambda x: x)
    g = xp.astype(check_array("dout", dout, (b, d, l)), f64)
    lam_next = [xp.zeros((b, d, n), dtype=sdt)] * p
    if dlast_state is not None:
        shape = (b, p, d, n) if liquid else (b, d, n)
        dls = xp.astype(check_array("dlast_state", dlast_state, shape, complex_ok=cplx), sdt)
        lam_next = [dls[:, m, ...] for m in range(p)] if liquid else [dls]

    # forward, keeping every level: hs[t + 1] = levels after step t, hs[0] = initial levels
    hs = [_initial_levels(a, initial_state, p, liquid)]
    y, _ = _run(a, hs[0], p, phi, history=hs)

    grads = {}
    pre_gate = y if a["D"] is None else y + a["D"][:, None] * u64
    if a["z"] is not None:
        zz = a["z"]
        s = sigmoid(zz)
        grads["z"] = g * pre_gate * s * (1 + zz * (1 - s))
        g = g * zz * s
    du_direct = xp.zeros_like(u64) if a["D"] is None else a["D"][:, None] * g
    if a["D"] is not None:
        grads["D"] = xp.sum(g * u64, axis=(0, 2))

    dA = xp.zeros((d, n), dtype=sdt)
    ddt, du, dB, dC, dBL = [None] * l, [None] * l, [None] * l, [None] * l, [None] * l
    for t in reversed(range(l)):
        dtt, ut, gt = dt[:, :, t, None], u64[:, :, t, None], g[:, :, t, None]
        Bt, Ct, BLt = _at(B4, t), _at(C4, t), _at(BL4, t)
        Abar = xp.exp(dtt * A64)
        gy = 2 * gt if cplx else gt  # y = 2 Re(C h) for complex A
        lam = [cj(Ct) * gy + lam_next[m] for m in range(p)]
        prev, cur = hs[t], hs[t + 1]
        dAbar = lam[0] * cj(prev[0])
        total = cur[0]
        for m in range(1, p):
            dAbar = dAbar + lam[m] * cj(prev[m])
            total = total + cur[m]
        dA = dA + xp.sum(dAbar * dtt * cj(Abar), axis=0)
        dC[t] = gy * cj(total)
        dB[t] = lam[0] * dtt * ut
        ddt_t = re(xp.sum(dAbar * cj(A64) * cj(Abar) + lam[0] * cj(Bt) * ut, axis=-1))
        du_t = re(xp.sum(lam[0] * dtt * cj(Bt), axis=-1))
        dBL[t] = xp.zeros_like(dB[t])
        c = 0.0
        if p > 1:
            pre = BLt * ut
            ph = _lcontract(pre, phi)
            c = dtt * ph
            dc = lam[1] * prev[0]
            for m in range(2, p):
                dc = dc + lam[m] * prev[m - 1]
            ddt_t = ddt_t + xp.sum(dc * ph, axis=-1)
            dpre = dc * dtt * lcontract_grad(pre, phi)
            dBL[t] = dpre * ut
            du_t = du_t + xp.sum(dpre * BLt, axis=-1)
        ddt[t], du[t] = ddt_t, du_t
        lam_next = [cj(Abar) * lam[m] + (c * lam[m + 1] if m + 1 < p else 0.0)
                    for m in range(p)]

    def as_given(G, X, form):
        """The gradient in the form of argument X: complex A takes Re for a real (d, n) X and
        interleaves (Re, Im) along the last axis for input-dependent X, as the forward reads it."""
        G = _reduce(G, form, xp) if form is not None else G
        if not cplx:
            return G
        if form is not None and form[0] != "const":
            G = xp.stack([xp.real(G), xp.imag(G)], axis=-1)
            return xp.reshape(G, G.shape[:-2] + (2 * G.shape[-2],))
        return G if xp.isdtype(X.dtype, "complex floating") else xp.real(G)

    bform, cform, blform = a["forms"]
    dB_full, dBL_full = xp.stack(dB, axis=3), xp.stack(dBL, axis=3)
    if BL is None:
        dB_full = dB_full + dBL_full
    else:
        grads["BL"] = _reduce(dBL_full, blform, xp)
    dnet = xp.stack(ddt, axis=2)
    if delta_softplus:
        dnet = dnet * xp.where(raw > 20.0, xp.ones_like(raw), sigmoid(raw))
    grads.update(u=du_direct + xp.stack(du, axis=2), delta=dnet, A=dA,
                 B=as_given(dB_full, B, bform), C=as_given(xp.stack(dC, axis=3), C, cform))
    if delta_bias is not None:
        grads["delta_bias"] = xp.sum(dnet, axis=(0, 2))
    if initial_state is not None:
        h0 = xp.stack(lam_next, axis=1) if liquid else lam_next[0]
        grads["initial_state"] = as_given(h0, initial_state, None)
    return grads


def selective_scan_vjp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, *, dout, dlast_state=None):
    """Reference gradients of selective_scan, float64, by the adjoint reverse scan.

    With g = dout * silu(z) and lambda_t = dL/dh_t:
        lambda_t = C_t g_t + Abar_{t+1} lambda_{t+1},   lambda_{l-1} = C g + dlast_state
        dA = sum lambda_t Delta_t Abar_t h_{t-1};  dDelta_t = sum_n lambda_t (A Abar_t h_{t-1}
        + B_t u_t);  dB_t = lambda_t Delta_t u_t;  dC_t = g_t h_t;  du = D g + sum_n lambda
        Delta B; d initial_state = Abar_0 lambda_0; ddelta = dDelta softplus'(delta + bias).
    Complex A: the gradient of a complex x = p + i q is dL/dp + i dL/dq (torch's convention);
    the same recurrences with g -> 2 g (y = 2 Re(C h)), each coefficient conjugated
    (lambda_t = 2 conj(C_t) g_t + conj(Abar_{t+1}) lambda_{t+1}, dA = sum lambda Delta
    conj(Abar h_{t-1}), dC_t = 2 g_t conj(h_t), ...) and Re of the sums for the real arguments;
    input-dependent B/C get (Re, Im) interleaved as they were given, real arguments real
    gradients. dlast_state is then complex (b, d, n) (a real one is cast).
    dout (b, d, l); dlast_state (b, d, n) or None. Returns {name: gradient} for every array
    argument given (u, delta, A, B, C and D, z, delta_bias, initial_state when not None).
    """
    return _vjp(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, dout,
                dlast_state, 1, None, "none", False)


def liquid_selective_scan_vjp(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False, initial_state=None, *, liquid_degree=1,
                              BL=None, lcontract="none", dout, dlast_state=None):
    """Reference gradients of liquid_selective_scan, float64 (adjoint of the level recurrence).

    lambda^m_t = C_t g_t + Abar_{t+1} lambda^m_{t+1} + c_{t+1} lambda^{m+1}_{t+1}
    (lambda^p = 0; at t = l-1 the carried term is dlast_state[:, m]); then
    dAbar_t = sum_m lambda^m_t hm_{t-1}, dc_t = sum_{m>=1} lambda^m_t h(m-1)_{t-1},
    dDelta_t += sum_n (dAbar_t A Abar_t + dc_t phi + lambda^0_t B_t u_t),
    dBL_t = dc_t Delta_t phi'(BL_t u_t) u_t (added to dB when BL is tied).
    dlast_state (b, p, d, n) or None. Returns the gradients as selective_scan_vjp, plus "BL".
    """
    p = check_int("liquid_degree", liquid_degree)
    check_choice("lcontract", lcontract, LCONTRACTS)
    return _vjp(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, dout,
                dlast_state, p, BL, lcontract, True)
