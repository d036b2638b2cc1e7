"""Tests of the selective-scan primitives (spec/selective.py), float64 on tiny shapes."""

from __future__ import annotations

import cmath
import itertools
import math

import numpy as np
import pytest
from liquidssm.spec import nn
from liquidssm.spec.selective import (
    liquid_selective_scan,
    liquid_selective_scan_vjp,
    selective_scan,
    selective_scan_vjp,
    selective_state_update,
)

b, d, l, n = 2, 4, 5, 3


def rng(seed=0):
    return np.random.default_rng(seed)


def make_bc(r, form, cplx=False, length=l, batch=b):
    """B or C in one of mamba's forms: const (d, n), var (b, n, l), group g (b, g, n, l)."""
    ll = 2 * length if cplx else length
    if form == "const":
        X = r.standard_normal((d, n))
        return X + 1j * r.standard_normal((d, n)) if cplx else X
    if form == "var":
        return r.standard_normal((batch, n, ll))
    return r.standard_normal((batch, int(form[1:]), n, ll))  # "g2" -> 2 groups


def make_args(r, bform="var", cform="var", cplx=False, length=l, batch=b):
    u = r.standard_normal((batch, d, length))
    delta = 0.5 * r.standard_normal((batch, d, length))
    A = -np.exp(r.standard_normal((d, n)))
    if cplx:
        A = A + 1j * r.standard_normal((d, n))
    return dict(u=u, delta=delta, A=A, B=make_bc(r, bform, cplx, length, batch),
                C=make_bc(r, cform, cplx, length, batch))


# ---- a direct transcription, one scalar at a time ---------------------------------------------


def _coef(X, bi, di, ni, t, cplx, dd):
    """Entry n of B_t or C_t for batch bi, channel di (of dd); group di // (dd / g)."""
    if X.ndim == 2:
        return complex(X[di, ni]) if cplx else float(X[di, ni])
    row = X[bi] if X.ndim == 3 else X[bi, di // (dd // X.shape[1])]
    return complex(row[ni, 2 * t], row[ni, 2 * t + 1]) if cplx else float(row[ni, t])


def _delta(delta, bias, softplus, bi, di, t):
    x = float(delta[bi, di, t]) + (0.0 if bias is None else float(bias[di]))
    return (x if x > 20 else math.log1p(math.exp(x))) if softplus else x


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
               initial_state=None):
    bb, dd, ll = u.shape
    cplx = np.iscomplexobj(A)
    out = np.zeros((bb, dd, ll))
    last = np.zeros((bb, dd, A.shape[1]), dtype=complex if cplx else float)
    for bi, di, ni in itertools.product(range(bb), range(dd), range(A.shape[1])):
        h = 0.0 if initial_state is None else initial_state[bi, di, ni]
        for t in range(ll):
            dt = _delta(delta, delta_bias, delta_softplus, bi, di, t)
            a = cmath.exp(dt * A[di, ni]) if cplx else math.exp(dt * A[di, ni])
            h = a * h + dt * _coef(B, bi, di, ni, t, cplx, dd) * u[bi, di, t]
            y = _coef(C, bi, di, ni, t, cplx, dd) * h
            out[bi, di, t] += 2 * y.real if cplx else y
        last[bi, di, ni] = h
    for bi, di, t in itertools.product(range(bb), range(dd), range(ll)):
        if D is not None:
            out[bi, di, t] += D[di] * u[bi, di, t]
        if z is not None:
            zz = z[bi, di, t]
            out[bi, di, t] *= zz / (1 + math.exp(-zz))
    return out, last


FORMS = ["const", "var", "g2", "g4"]


@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("bform,cform", [("const", "const"), ("var", "g2"), ("g4", "var"),
                                         ("g2", "const")])
def test_scan_matches_transcription(cplx, bform, cform):
    r = rng(1)
    args = make_args(r, bform, cform, cplx)
    extra = dict(D=r.standard_normal(d), z=r.standard_normal((b, d, l)),
                 delta_bias=0.3 * r.standard_normal(d), delta_softplus=True)
    h0 = r.standard_normal((b, d, n)) + (1j * r.standard_normal((b, d, n)) if cplx else 0)
    for kw in ({}, dict(extra, initial_state=h0)):
        out, last = selective_scan(**args, **kw, return_last_state=True)
        ref_out, ref_last = naive_scan(**args, **kw)
        assert out.dtype == np.float64 and out.shape == (b, d, l)
        assert last.dtype == (np.complex128 if cplx else np.float64)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(last, ref_last, rtol=1e-12, atol=1e-12)
        assert np.array_equal(selective_scan(**args, **kw), out)


def test_softplus_threshold_and_real_constant_bc_with_complex_a():
    r = rng(2)
    args = make_args(r, "const", "var", cplx=True)
    args["B"] = args["B"].real  # a real constant B is accepted with complex A (cast to complex)
    args["delta"] = args["delta"] + 21.0 * (r.random((b, d, l)) > 0.5)  # some above threshold
    out = selective_scan(**args, delta_softplus=True)
    np.testing.assert_allclose(out, naive_scan(**args, delta_softplus=True)[0], rtol=1e-11,
                               atol=1e-12)


def test_float32_and_float16_inputs():
    r = rng(3)
    args = make_args(r)
    ref = selective_scan(**args)
    a32 = {k: v.astype(np.float32) for k, v in args.items()}
    out32, last32 = selective_scan(**a32, return_last_state=True)
    assert out32.dtype == np.float32 and last32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, rtol=1e-4, atol=1e-5)
    a16 = dict(a32, u=args["u"].astype(np.float16))
    out16 = selective_scan(**a16)  # computed in float32, returned as float16
    assert out16.dtype == np.float16
    np.testing.assert_allclose(out16, selective_scan(**dict(a32, u=a16["u"].astype(np.float32))),
                               rtol=2e-3, atol=2e-3)  # one float16 rounding of the output


def test_large_d_state():
    r = np.random.default_rng(4)
    nn_ = 300  # beyond the CUDA kernel's 256
    u = r.standard_normal((1, 2, 3))
    A = -np.exp(r.standard_normal((2, nn_)))
    B, C = r.standard_normal((1, nn_, 3)), r.standard_normal((1, nn_, 3))
    out, last = selective_scan(u, u, A, B, C, return_last_state=True)
    assert last.shape == (1, 2, nn_)
    np.testing.assert_allclose(out, naive_scan(u, u, A, B, C)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cplx", [False, True])
def test_chunked_continuation(cplx):
    r = rng(5)
    L = 7
    args = make_args(r, "g2", "var", cplx, length=L)
    kw = dict(D=r.standard_normal(d), z=r.standard_normal((b, d, L)),
              delta_bias=r.standard_normal(d), delta_softplus=True)
    full, last = selective_scan(**args, **kw, return_last_state=True)
    k = 3

    def cut(x, lo, hi, interleaved):
        if x.ndim == 2:
            return x
        return x[..., 2 * lo:2 * hi] if interleaved else x[..., lo:hi]

    def part(lo, hi):
        a = {key: cut(v, lo, hi, cplx and key in "BC") for key, v in args.items()}
        return a, dict(kw, z=kw["z"][..., lo:hi])

    a1, k1 = part(0, k)
    a2, k2 = part(k, L)
    o1, s1 = selective_scan(**a1, **k1, return_last_state=True)
    o2, s2 = selective_scan(**a2, **k2, initial_state=s1, return_last_state=True)
    np.testing.assert_allclose(np.concatenate([o1, o2], axis=-1), full, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s2, last, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("form", ["var", "g2"])
def test_state_update_repeated_equals_scan(form):
    r = rng(6)
    args = make_args(r, form, form)
    D, z, bias = r.standard_normal(d), r.standard_normal((b, d, l)), r.standard_normal(d)
    h0 = r.standard_normal((b, d, n))
    out, last = selective_scan(**args, D=D, z=z, delta_bias=bias, delta_softplus=True,
                               initial_state=h0, return_last_state=True)
    state, steps = h0, []
    for t in range(l):
        before = (state.copy(), args["u"].copy(), args["B"].copy())
        y, new = selective_state_update(state, args["u"][..., t], args["delta"][..., t],
                                        args["A"], args["B"][..., t], args["C"][..., t], D=D,
                                        z=z[..., t], dt_bias=bias, dt_softplus=True)
        for x, x0 in zip((state, args["u"], args["B"]), before):
            assert np.array_equal(x, x0)  # pure: inputs unchanged
        steps.append(y)
        state = new
    np.testing.assert_allclose(np.stack(steps, axis=-1), out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(state, last, rtol=1e-12, atol=1e-13)


# ---- gradients ----------------------------------------------------------------------------


def _fd_check(fn, grads, args, eps=1e-6):
    """Central differences of the scalar fn(args) against grads, every entry of every array.

    A complex entry x = p + i q is differenced along p and along q: dL/dp + i dL/dq."""
    for name, v in args.items():
        fd = np.zeros_like(v)
        for i in np.ndindex(v.shape):
            for unit in (1, 1j) if np.iscomplexobj(v) else (1,):
                e = np.zeros_like(v)
                e[i] = eps * unit
                fd[i] += unit * (fn({**args, name: v + e}) - fn({**args, name: v - e})) / (2 * eps)
        assert np.asarray(grads[name]).dtype == v.dtype, name
        # central differences at eps 1e-6 on O(1) values: truncation ~1e-12, rounding ~1e-10
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("bform,cform", [("var", "g2"), ("const", "var"), ("g2", "const")])
def test_vjp_matches_finite_differences(bform, cform):
    r = rng(7)
    bb, L = 1, 4
    args = make_args(r, bform, cform, length=L, batch=bb)
    args.update(D=r.standard_normal(d), z=r.standard_normal((bb, d, L)),
                delta_bias=0.3 * r.standard_normal(d), initial_state=r.standard_normal((bb, d, n)))
    dout, dlast = r.standard_normal((bb, d, L)), r.standard_normal((bb, d, n))

    def loss(a):
        out, last = selective_scan(**a, delta_softplus=True, return_last_state=True)
        return float(np.sum(out * dout) + np.sum(last * dlast))

    grads = selective_scan_vjp(**args, delta_softplus=True, dout=dout, dlast_state=dlast)
    assert set(grads) == set(args)
    _fd_check(loss, grads, args)
    # minimal arguments: only the five required gradients, dlast_state None
    g = selective_scan_vjp(args["u"], args["delta"], args["A"], args["B"], args["C"], dout=dout)
    assert set(g) == {"u", "delta", "A", "B", "C"}
    base = {k: args[k] for k in ("u", "delta", "A", "B", "C")}
    _fd_check(lambda a: float(np.sum(selective_scan(**a) * dout)), g, base)


@pytest.mark.parametrize("tied,phi", [(True, "tanh"), (False, "lecun"), (False, "none")])
def test_liquid_vjp_matches_finite_differences(tied, phi):
    r = rng(8)
    bb, L, p = 1, 4, 3
    args = make_args(r, "g2", "var", length=L, batch=bb)
    args.update(D=r.standard_normal(d), z=r.standard_normal((bb, d, L)),
                delta_bias=0.3 * r.standard_normal(d),
                initial_state=r.standard_normal((bb, p, d, n)))
    if not tied:
        args["BL"] = r.standard_normal((d, n))
    dout, dlast = r.standard_normal((bb, d, L)), r.standard_normal((bb, p, d, n))
    kw = dict(delta_softplus=True, liquid_degree=p, lcontract=phi)

    def loss(a):
        out, last = liquid_selective_scan(**a, **kw, return_last_state=True)
        return float(np.sum(out * dout) + np.sum(last * dlast))

    grads = liquid_selective_scan_vjp(**args, **kw, dout=dout, dlast_state=dlast)
    assert set(grads) == set(args)
    _fd_check(loss, grads, args)


@pytest.mark.parametrize("bform,cform", [("var", "const"), ("const", "g2"), ("g2", "var"),
                                         ("real_const", "var")])
def test_complex_vjp_matches_finite_differences(bform, cform):
    r = rng(9)
    bb, L = 1, 3
    args = make_args(r, bform.replace("real_", ""), cform, cplx=True, length=L, batch=bb)
    if bform == "real_const":  # a real constant B with complex A: a real gradient
        args["B"] = args["B"].real.copy()
    h0 = r.standard_normal((bb, d, n)) + 1j * r.standard_normal((bb, d, n))
    args.update(D=r.standard_normal(d), z=r.standard_normal((bb, d, L)),
                delta_bias=0.3 * r.standard_normal(d), initial_state=h0)
    dout = r.standard_normal((bb, d, L))
    dlast = r.standard_normal((bb, d, n)) + 1j * r.standard_normal((bb, d, n))

    def loss(a):  # <dout, out> + <dlast, last>, <a, b> = sum Re(conj(a) b)
        out, last = selective_scan(**a, delta_softplus=True, return_last_state=True)
        return float(np.sum(out * dout) + np.sum(np.real(np.conj(dlast) * last)))

    grads = selective_scan_vjp(**args, delta_softplus=True, dout=dout, dlast_state=dlast)
    assert set(grads) == set(args)
    _fd_check(loss, grads, args)
    # a real initial state (cast to complex) gets a real gradient; dlast_state None
    base = {k: args[k] for k in ("u", "delta", "A", "B", "C")} | {"initial_state": h0.real.copy()}
    g = selective_scan_vjp(**base, dout=dout)
    _fd_check(lambda a: float(np.sum(selective_scan(**a) * dout)), g, base)


# ---- liquid selective scan ------------------------------------------------------------------


def test_liquid_degree_one_equals_selective_scan():
    r = rng(10)
    args = make_args(r, "g2", "const")
    kw = dict(D=r.standard_normal(d), z=r.standard_normal((b, d, l)),
              delta_bias=r.standard_normal(d), delta_softplus=True)
    h0 = r.standard_normal((b, d, n))
    out, last = selective_scan(**args, **kw, initial_state=h0, return_last_state=True)
    lout, llast = liquid_selective_scan(**args, **kw, initial_state=h0[:, None],
                                        return_last_state=True, liquid_degree=1,
                                        BL=r.standard_normal((b, n, l)), lcontract="tanh")
    np.testing.assert_allclose(lout, out, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(llast[:, 0], last, rtol=1e-13, atol=1e-14)
    assert llast.shape == (b, 1, d, n)


def _brute_levels(a, c, e, h0, p):
    """Levels of x_t = (a_t + c_t) x_{t-1} + e_t, x_{-1} = sum_k h0[k], by enumerating terms.

    A term picks, for each step r after its source, a_r or c_r; its degree is the number of c's
    (plus k for the source h0[k]). Returns levels (L, p): the sum of the terms of each degree.
    """
    L = len(a)
    lv = np.zeros((L, p))
    for t in range(L):
        sources = [(s, e[s], 0) for s in range(t + 1)] + [(-1, h0[k], k) for k in range(p)]
        for s, val, k in sources:
            steps = range(s + 1, t + 1)
            for m in range(k, p):
                for picks in itertools.combinations(steps, m - k):
                    term = val
                    for rr in steps:
                        term *= c[rr] if rr in picks else a[rr]
                    lv[t, m] += term
    return lv


def test_liquid_levels_equal_brute_force_expansion():
    r = rng(11)
    p = 3
    args = make_args(r, "g2", "var")
    BL = r.standard_normal((b, 2, n, l))
    D, z, bias = r.standard_normal(d), r.standard_normal((b, d, l)), r.standard_normal(d)
    h0 = r.standard_normal((b, p, d, n))
    out, last = liquid_selective_scan(**args, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                      initial_state=h0, return_last_state=True, liquid_degree=p,
                                      BL=BL, lcontract="lecun")
    ref = np.zeros((b, d, l))
    for bi, di, ni in itertools.product(range(b), range(d), range(n)):
        g = di // (d // 2)
        dt = [_delta(args["delta"], bias, True, bi, di, t) for t in range(l)]
        a = [math.exp(dt[t] * args["A"][di, ni]) for t in range(l)]
        ut = args["u"][bi, di]
        e = [dt[t] * args["B"][bi, g, ni, t] * ut[t] for t in range(l)]
        c = [dt[t] * 1.7159 * math.tanh(0.666 * BL[bi, g, ni, t] * ut[t]) for t in range(l)]
        lv = _brute_levels(a, c, e, h0[bi, :, di, ni], p)
        np.testing.assert_allclose(last[bi, :, di, ni], lv[-1], rtol=1e-12, atol=1e-13)
        ref[bi, di] += args["C"][bi, ni] * lv.sum(axis=1)
    ref = (ref + D[:, None] * args["u"]) * z / (1 + np.exp(-z))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)


def test_liquid_chunked_continuation():
    r = rng(12)
    L, p, k = 8, 3, 5
    args = make_args(r, "var", "g4", length=L)
    BL = r.standard_normal((b, n, L))
    kw = dict(liquid_degree=p, lcontract="tanh", delta_softplus=True)
    full, last = liquid_selective_scan(**args, **kw, BL=BL, return_last_state=True)
    s1 = args | dict(u=args["u"][..., :k], delta=args["delta"][..., :k], B=args["B"][..., :k],
                     C=args["C"][..., :k])
    s2 = args | dict(u=args["u"][..., k:], delta=args["delta"][..., k:], B=args["B"][..., k:],
                     C=args["C"][..., k:])
    o1, h1 = liquid_selective_scan(**s1, **kw, BL=BL[..., :k], return_last_state=True)
    o2, h2 = liquid_selective_scan(**s2, **kw, BL=BL[..., k:], initial_state=h1,
                                   return_last_state=True)
    np.testing.assert_allclose(np.concatenate([o1, o2], -1), full, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h2, last, rtol=1e-12, atol=1e-13)


def test_liquid_state_bound_long_sequence():
    """|hm_t| <= H_m with H_0 = K M, H_m = K Phi H_(m-1), K = exp(|A| Dmax) / |A| (A < 0,
    Delta >= 0, zero initial state), M = max_t |B_t u_t|, Phi = max_t |phi(BL_t u_t)|, per
    (b, d, n). The full (untruncated) recurrence overflows float64 on the same input."""
    r = rng(13)
    bb, dd, nn_, L, p = 1, 2, 2, 100_000, 3
    u = np.abs(r.standard_normal((bb, dd, L))) + 0.5
    delta = r.uniform(0.01, 0.1, (bb, dd, L))
    A = -np.full((dd, nn_), 0.05)
    B = np.abs(r.standard_normal((bb, nn_, L)))  # tied BL = B > 0: c_t > 0
    C = r.standard_normal((bb, nn_, L))
    Bu = B[:, None, :, :] * u[:, :, None, :]  # (b, d, n, L)
    growth = np.sum(np.log(np.exp(delta[:, :, None] * A[..., None]) + delta[:, :, None] *
                           np.tanh(Bu)), axis=-1)
    assert np.all(growth > 800)  # prod_t (Abar_t + c_t) > e^800: the full recurrence overflows
    K = np.exp(np.abs(A) * delta.max(axis=-1)[..., None]) / np.abs(A)  # (b, d, n)
    M, Phi = np.abs(Bu).max(axis=-1), np.abs(np.tanh(Bu)).max(axis=-1)
    H = [K * M]
    for _ in range(1, p):
        H.append(K * Phi * H[-1])
    H = np.stack(H, axis=1)  # (b, p, d, n)
    state, chunk = None, 25_000
    for lo in range(0, L, chunk):
        sl = slice(lo, lo + chunk)
        out, state = liquid_selective_scan(u[..., sl], delta[..., sl], A, B[..., sl],
                                           C[..., sl], initial_state=state,
                                           return_last_state=True, liquid_degree=p,
                                           lcontract="tanh")
        assert np.all(np.isfinite(out)) and np.all(np.abs(state) <= H)
        bound_y = np.sum(np.abs(C[:, None, :, sl]) * H.sum(axis=1)[..., None], axis=2)
        assert np.all(np.abs(out) <= bound_y)
    assert np.all(state[:, p - 1] > 1e-3 * H[:, p - 1])  # the top level is not trivially small


# ---- other namespaces, tracing, errors ---------------------------------------------------------


def test_array_api_strict_equals_numpy():
    xps = pytest.importorskip("array_api_strict")
    r = rng(14)
    cases = [
        (selective_scan, make_args(r, "g2", "var", cplx=True),
         dict(delta_softplus=True, return_last_state=True)),
        (liquid_selective_scan, make_args(r, "var", "const"),
         dict(liquid_degree=2, lcontract="tanh", return_last_state=True)),
    ]
    for fn, args, kw in cases:
        ref = fn(**args, **kw)
        got = fn(**{k: xps.asarray(v) for k, v in args.items()}, **kw)
        for x, y in zip(got, ref):
            np.testing.assert_allclose(np.asarray(x), y, rtol=1e-13, atol=1e-14)
    a = make_args(r)
    st = r.standard_normal((b, d, n))
    step = [st, a["u"][..., 0], a["delta"][..., 0], a["A"], a["B"][..., 0], a["C"][..., 0]]
    ref = selective_state_update(*step)
    got = selective_state_update(*[xps.asarray(v) for v in step])
    for x, y in zip(got, ref):
        np.testing.assert_allclose(np.asarray(x), y, rtol=1e-13, atol=1e-14)


def test_traceable_by_jax_jit():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    r = rng(15)
    args = make_args(r, "g2", "var")
    f = jax.jit(lambda u, dl, A, B, C: liquid_selective_scan.reference(
        u, dl, A, B, C, delta_softplus=True, liquid_degree=2, lcontract="tanh"))
    got = f(*[jnp.asarray(v, dtype=jnp.float32) for v in args.values()])
    ref = liquid_selective_scan(**args, delta_softplus=True, liquid_degree=2, lcontract="tanh")
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5)  # float32 under jax


def test_reference_attribute_and_phi():
    assert selective_scan.reference is not selective_scan
    x = np.linspace(-3, 3, 7)
    assert np.allclose(nn.lcontract(x, "lecun"), 1.7159 * np.tanh(0.666 * x))


@pytest.mark.parametrize("change,exc,pattern", [
    (dict(B=np.zeros((b, n, l + 1))), ValueError, r"B: expected shape .*got shape \(2, 3, 6\)"),
    (dict(C=np.zeros((b, 3, n, l))), ValueError, r"C: expected shape .*g dividing d"),
    (dict(B=np.zeros((n,))), ValueError, r"B: expected shape \(d, n\) = \(4, 3\)"),
    (dict(B=np.zeros((b, n, l), dtype=np.int64)), TypeError, r"B: expected a real floating"),
    (dict(delta=np.zeros((b, d, l + 1))), ValueError, r"delta: expected shape \(2, 4, 5\)"),
    (dict(A=np.zeros((d + 1, n))), ValueError, r"A: expected shape \(4, n\)"),
    (dict(D=np.zeros(d + 1)), ValueError, r"D: expected shape \(4,\)"),
    (dict(z=np.zeros((b, d))), ValueError, r"z: expected shape"),
    (dict(delta_bias=np.zeros((d, 1))), ValueError, r"delta_bias: expected shape"),
    (dict(initial_state=np.zeros((b, d, n + 1))), ValueError, r"initial_state: expected shape"),
    (dict(delta_softplus=1), TypeError, r"delta_softplus: expected a bool"),
    (dict(u=[[1.0]]), TypeError, r"u: expected an array"),
])
def test_scan_errors(change, exc, pattern):
    args = make_args(rng(16)) | change
    with pytest.raises(exc, match=pattern):
        selective_scan(**args)


@pytest.mark.parametrize("bad", [0, 1, None, np.True_])
def test_flags_must_be_real_bools(bad):
    args = make_args(rng(18))
    for flag in ("delta_softplus", "return_last_state"):
        with pytest.raises(TypeError, match=f"{flag}: expected a bool, got"):
            selective_scan(**args, **{flag: bad})
        with pytest.raises(TypeError, match=f"{flag}: expected a bool, got"):
            liquid_selective_scan(**args, **{flag: bad})
    st = np.zeros((b, d, n))
    with pytest.raises(TypeError, match="dt_softplus: expected a bool, got"):
        selective_state_update(st, st[..., 0], st[..., 0], args["A"], np.zeros((b, n)),
                               np.zeros((b, n)), dt_softplus=bad)


def test_complex_and_liquid_errors():
    r = rng(17)
    ca = make_args(r, "var", "var", cplx=True)
    with pytest.raises(ValueError, match=r"B: expected shape .*2 length\) = \(2, 3, 10\)"):
        selective_scan(**(ca | dict(B=r.standard_normal((b, n, l)))))
    ra = make_args(r)
    with pytest.raises(TypeError, match=r"B: expected a real floating"):
        selective_scan(**(ra | dict(B=np.zeros((d, n), dtype=complex))))
    with pytest.raises(TypeError, match=r"A: expected a real floating dtype \(the liquid"):
        liquid_selective_scan(**ca, liquid_degree=2)
    with pytest.raises(ValueError, match=r"liquid_degree: expected an int >= 1, got 0"):
        liquid_selective_scan(**ra, liquid_degree=0)
    with pytest.raises(ValueError, match=r"lcontract: expected one of"):
        liquid_selective_scan(**ra, lcontract="relu")
    with pytest.raises(ValueError, match=r"BL: expected shape"):
        liquid_selective_scan(**ra, BL=np.zeros((b, n, l + 1)))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 2, 4, 3\)"):
        liquid_selective_scan(**ra, liquid_degree=2, initial_state=np.zeros((b, d, n)))
    with pytest.raises(ValueError, match=r"dout: expected shape"):
        selective_scan_vjp(**ra, dout=np.zeros((b, d)))
    st = np.zeros((b, d, n))
    with pytest.raises(ValueError, match=r"B: expected shape \(batch, n\) = \(2, 3\)"):
        selective_state_update(st, st[..., 0], st[..., 0], ra["A"], np.zeros((b, n + 1)),
                               np.zeros((b, n)))
    with pytest.raises(TypeError, match=r"A: expected a real floating"):
        selective_state_update(st, st[..., 0], st[..., 0], ca["A"], np.zeros((b, n)),
                               np.zeros((b, n)))
