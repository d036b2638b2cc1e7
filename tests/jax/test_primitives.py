"""liquidssm.jax primitives against the spec: values and gradients in float64 (tight), float32 /
bfloat16 at mamba's kernel tolerances, every scan strategy, jit, vmap, continuation, errors."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import liquidssm.jax as lj  # noqa: E402
from liquidssm.jax import scans  # noqa: E402
from liquidssm.spec import scan as spec_scan  # noqa: E402
from liquidssm.spec import selective as S  # noqa: E402

b, d, n, l = 2, 4, 3, 11  # with CHUNK = 4 (the `strategy` fixture): chunks 4 + 4 + 3 (padded)
TIGHT = dict(rtol=1e-10, atol=1e-11)
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def rng(seed=0):
    return np.random.default_rng(seed)


def bc(r, form, cplx=False, length=l):
    """B / C / BL in a mamba form: const (d, n), var (b, n, l), g2 (b, 2, n, l)."""
    ll = 2 * length if cplx else length
    if form == "const":
        X = r.standard_normal((d, n))
        return X + 1j * r.standard_normal((d, n)) if cplx else X
    return r.standard_normal((b, n, ll) if form == "var" else (b, 2, n, ll))


def sel_args(r, bform="var", cform="g2", cplx=False, liquid=0, length=l):
    """Every argument of selective_scan (liquid=p: of liquid_selective_scan) as NumPy float64."""
    A = -np.exp(r.standard_normal((d, n)))
    a = dict(u=r.standard_normal((b, d, length)), delta=0.5 * r.standard_normal((b, d, length)),
             A=A + 1j * r.standard_normal((d, n)) if cplx else A,
             B=bc(r, bform, cplx, length), C=bc(r, cform, cplx, length),
             D=r.standard_normal(d), z=r.standard_normal((b, d, length)),
             delta_bias=0.3 * r.standard_normal(d))
    shape = (b, liquid, d, n) if liquid else (b, d, n)
    h0 = 0.5 * r.standard_normal(shape)
    a["initial_state"] = h0 + 1j * r.standard_normal(shape) if cplx else h0
    return a


def jx(args, dtype=None):
    return {k: None if v is None else jnp.asarray(v, dtype=dtype) for k, v in args.items()}


def jit(fn, **static):
    """fn(**arrays, **static) compiled afresh (so the current strategy and CHUNK apply)."""
    return jax.jit(lambda arrays: fn(**arrays, **static))


def close(x, ref, **tol):
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), **(tol or TIGHT))


# ---- the strategy switch ----------------------------------------------------------------------


def test_scan_strategy_switch(monkeypatch):
    monkeypatch.delenv("LIQUIDSSM_JAX_SCAN", raising=False)
    assert lj.scan_strategy(2048, "cpu") == "sequential"
    assert lj.scan_strategy(2048, "gpu") == "chunked"
    assert lj.scan_strategy(2048, "tpu") == "chunked"
    assert lj.scan_strategy(scans.CHUNK, "tpu") == "associative"
    assert lj.scan_strategy() == "sequential"  # this test machine is a CPU
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", " Associative ")
    assert lj.scan_strategy(2048, "gpu") == "associative"
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "parallel")
    with pytest.raises(ValueError, match="LIQUIDSSM_JAX_SCAN: expected one of .*'parallel'"):
        lj.scan_strategy()
    u = jnp.ones((1, 2, 3))
    with pytest.raises(ValueError, match="LIQUIDSSM_JAX_SCAN"):
        lj.selective_scan(u, u, -jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.ones((2, 1)))


# ---- diag_scan / liquid_scan --------------------------------------------------------------------


def test_diag_and_liquid_scan_match_spec(strategy):
    r = rng(1)
    a = r.uniform(-1, 1, (1, l, 2, 3)) + 1j * r.uniform(-0.5, 0.5, (1, l, 2, 3))
    bb = r.standard_normal((b, l, 2, 3))
    c = 0.3 * r.standard_normal((b, l, 2, 3))
    h0 = r.standard_normal((b, 2, 3))
    H0 = r.standard_normal((b, 3, 2, 3))

    @jax.jit
    def run(a, bb, c, h0, H0):
        return [(lj.diag_scan(a, bb, h0, reverse=rev), lj.diag_scan(a.real, bb, reverse=rev),
                 lj.liquid_scan(a.real, bb, c, H0, degree=3, reverse=rev))
                for rev in (False, True)]

    got = run(*map(jnp.asarray, (a, bb, c, h0, H0)))
    for rev, (h, h_real, (y, last)) in zip((False, True), got):
        assert h.dtype == jnp.complex128
        close(h, spec_scan.diag_scan.reference(a, bb, h0, reverse=rev))
        close(h_real, spec_scan.diag_scan.reference(a.real, bb, reverse=rev))
        ry, rh = spec_scan.liquid_scan.reference(a.real, bb, c, H0, degree=3, reverse=rev)
        close(y, ry)
        close(last, rh)


def test_diag_and_liquid_scan_grads_match_autodiff_of_spec(strategy):
    r = rng(2)
    a, bb, c = r.uniform(-1, 1, (b, l, 3)), r.standard_normal((b, l, 3)), r.standard_normal((b, l, 3))
    H0 = r.standard_normal((b, 2, 3))
    w = jnp.asarray(r.standard_normal((b, l, 3)))

    def loss(fn, *args):
        y, h = fn(*args, degree=2, reverse=True)
        return jnp.sum(w * y) + jnp.sum(jnp.sin(h))

    def grads(liquid, diag):
        g1 = jax.grad(lambda *x: loss(liquid, *x), argnums=(0, 1, 2, 3))(*args)
        g2 = jax.grad(lambda x, y, h: jnp.sum(w * diag(x, y, h)), (0, 1, 2))(*args[:2], H0[:, 0])
        return g1 + g2

    args, H0 = tuple(map(jnp.asarray, (a, bb, c, H0))), jnp.asarray(H0)
    got = jax.jit(lambda: grads(lj.liquid_scan, lj.diag_scan))()
    ref = jax.jit(lambda: grads(spec_scan.liquid_scan.reference, spec_scan.diag_scan.reference))()
    for g, gr in zip(got, ref):
        close(g, gr)


# ---- selective scans: values --------------------------------------------------------------------


@pytest.mark.parametrize("bform,cform,cplx", [("var", "g2", False), ("const", "var", False),
                                              ("g2", "const", True)])
def test_selective_scan_matches_spec(strategy, bform, cform, cplx):
    a = sel_args(rng(3), bform, cform, cplx)
    ref, ref_last = S.selective_scan(**a, delta_softplus=True, return_last_state=True)
    out, last = jit(lj.selective_scan, delta_softplus=True, return_last_state=True)(jx(a))
    assert out.dtype == jnp.float64 and last.dtype == (jnp.complex128 if cplx else jnp.float64)
    close(out, ref)
    close(last, ref_last)


def test_liquid_selective_scan_matches_spec(strategy):
    a = sel_args(rng(4), "const", "var", liquid=3)
    BL = 0.5 * bc(rng(5), "g2")
    for kw in (dict(BL=BL, lcontract="tanh"), dict(lcontract="lecun")):
        ref, ref_last = S.liquid_selective_scan(**a, delta_softplus=True, return_last_state=True,
                                                liquid_degree=3, **kw)
        arrays = jx(dict(a, BL=kw.pop("BL", None)))
        out, last = jit(lj.liquid_selective_scan, delta_softplus=True, liquid_degree=3,
                        return_last_state=True, **kw)(arrays)
        close(out, ref)
        close(last, ref_last)
    # degree 1 is the selective scan; no initial state means zeros
    a1 = dict(a, initial_state=None)
    close(jit(lj.liquid_selective_scan)(jx(a1)), S.selective_scan(**a1))


# ---- selective scans: gradients -----------------------------------------------------------------


def _vjp(fn, a, cts, **kw):
    keys = [k for k in a if a[k] is not None]

    def f(*xs):
        return fn(**dict(zip(keys, xs)), delta_softplus=True, return_last_state=True, **kw)

    pull = jax.jit(lambda xs, cts: jax.vjp(f, *xs)[1](cts))
    return dict(zip(keys, pull([jnp.asarray(a[k]) for k in keys], tuple(map(jnp.asarray, cts)))))


def test_selective_scan_grads_match_spec_vjp(strategy):
    r = rng(6)
    a = sel_args(r, "var", "g2")
    dout, dlast = r.standard_normal((b, d, l)), r.standard_normal((b, d, n))
    ref = S.selective_scan_vjp(**a, delta_softplus=True, dout=dout, dlast_state=dlast)
    got = _vjp(lj.selective_scan, a, (dout, dlast))
    assert set(got) == set(ref)
    for k in ref:
        close(got[k], ref[k])


def test_liquid_selective_scan_grads_match_spec_vjp(strategy):
    r = rng(7)
    a = sel_args(r, "const", "var", liquid=3)
    dout, dlast = r.standard_normal((b, d, l)), r.standard_normal((b, 3, d, n))
    for BL, phi in ((0.5 * bc(r, "g2"), "tanh"), (None, "lecun")):
        kw = dict(liquid_degree=3, lcontract=phi)
        ref = S.liquid_selective_scan_vjp(**a, BL=BL, delta_softplus=True, dout=dout,
                                          dlast_state=dlast, **kw)
        got = _vjp(lj.liquid_selective_scan, dict(a, BL=BL), (dout, dlast), **kw)
        assert set(got) == set(ref)
        for k in ref:
            close(got[k], ref[k])


def test_complex_selective_scan_grads_match_autodiff_of_spec(strategy):
    """The spec's vjp is real-A only: compare with jax autodiff through the spec's loop."""
    r = rng(8)
    a = sel_args(r, "g2", "const", cplx=True)
    cts = (r.standard_normal((b, d, l)), r.standard_normal((b, d, n)) + 1j * r.standard_normal(
        (b, d, n)))
    got = _vjp(lj.selective_scan, a, cts)
    ref = _vjp(S.selective_scan.reference, a, cts)
    for k in ref:
        close(got[k], ref[k])


# ---- continuation, step, jit, vmap ---------------------------------------------------------------


def test_chunked_continuation(strategy):
    a = sel_args(rng(9), "var", "g2", liquid=2)
    run = jit(lj.liquid_selective_scan, liquid_degree=2, return_last_state=True)
    full, last = run(jx(a))
    cut, timed = 5, ("u", "delta", "z", "B", "C")
    o1, s1 = run(jx({k: v[..., :cut] if k in timed else v for k, v in a.items()}))
    second = {k: v[..., cut:] if k in timed else v for k, v in a.items()}
    o2, s2 = run(dict(jx(second), initial_state=s1))
    close(jnp.concatenate([o1, o2], axis=-1), full)
    close(s2, last)


def test_step_equals_forward(small_chunks):
    a = jx(sel_args(rng(10), "var", "g2"))

    @jax.jit
    def steps(a):
        state, ys = a["initial_state"], []
        for t in range(l):
            y, state = lj.selective_state_update(
                state, a["u"][..., t], a["delta"][..., t], a["A"], a["B"][..., t],
                a["C"][..., t], a["D"], a["z"][..., t], a["delta_bias"], dt_softplus=True)
            ys.append(y)
        return jnp.stack(ys, axis=-1), state

    out, last = jit(lj.selective_scan, delta_softplus=True, return_last_state=True)(a)
    y, state = steps(a)
    close(y, out)
    close(state, last)


def test_jit_matches_eager_and_vmap(small_chunks):
    a = jx(sel_args(rng(11), "var", "g2", liquid=2))
    kw = dict(liquid_degree=2, lcontract="tanh", delta_softplus=True, return_last_state=True)
    eager = lj.liquid_selective_scan(**a, **kw)
    jitted = jit(lj.liquid_selective_scan, **kw)(a)
    for x, y in zip(eager, jitted):
        close(x, y, rtol=1e-13, atol=1e-13)
    # vmap over a new leading axis of every batched argument (the original and 2x)
    batched = ("u", "delta", "z", "B", "C", "initial_state")
    stacked = {k: jnp.stack([v, 2 * v]) if k in batched else v for k, v in a.items()}
    axes = {k: 0 if k in batched else None for k in a}
    vm = jax.jit(jax.vmap(lambda a: lj.liquid_selective_scan(**a, **kw), in_axes=(axes,)))(
        stacked)
    close(vm[0][0], eager[0])
    close(vm[1][0], eager[1])
    twice = jit(lj.liquid_selective_scan, **kw)({k: stacked[k][1] if k in batched else v
                                                 for k, v in a.items()})
    close(vm[0][1], twice[0])
    close(vm[1][1], twice[1])


def test_strategies_agree_under_jit_with_grad(monkeypatch):
    """Every strategy gives the same jitted value and gradient (float32, default CHUNK)."""
    a = jx(sel_args(rng(12), "var", "var", length=70), jnp.float32)

    def loss(x):
        out, last = lj.selective_scan(**x, delta_softplus=True, return_last_state=True)
        return jnp.sum(out * jnp.cos(x["u"])) + jnp.sum(last)

    res = {}
    for s in ("sequential", "associative", "chunked"):
        monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", s)
        res[s] = jax.jit(jax.value_and_grad(lambda x: loss(x)))(a)
    for s in ("associative", "chunked"):
        close(res[s][0], res["sequential"][0], rtol=1e-5)
        for k in a:
            # float32 sums over 70 steps in a different order: measured max rel. diff ~1e-6
            close(res[s][1][k], res["sequential"][1][k], rtol=1e-4, atol=1e-5)


# ---- dtypes --------------------------------------------------------------------------------------


def test_float32_and_bfloat16(small_chunks):
    r = rng(13)
    a = sel_args(r, "var", "g2")
    dout = r.standard_normal((b, d, l))
    run = jit(lj.selective_scan, delta_softplus=True, return_last_state=True)
    out32, last32 = run(jx(a, jnp.float32))
    assert out32.dtype == jnp.float32 and last32.dtype == jnp.float32
    ref, ref_last = S.selective_scan(**a, delta_softplus=True, return_last_state=True)
    close(out32, ref, rtol=6e-4, atol=2e-3)  # mamba's fp32 kernel tolerance
    close(last32, ref_last, rtol=6e-4, atol=2e-3)
    g32 = _vjp(lj.selective_scan, jx(a, jnp.float32), (jnp.asarray(dout, jnp.float32),
                                                       jnp.zeros((b, d, n), jnp.float32)))
    gref = S.selective_scan_vjp(**a, delta_softplus=True, dout=dout)
    for k in gref:
        assert g32[k].dtype == jnp.float32
        close(g32[k], gref[k], rtol=6e-4, atol=2e-3)
    a16 = jx(a, jnp.bfloat16)
    out16, last16 = run(a16)
    assert out16.dtype == jnp.bfloat16 and last16.dtype == jnp.float32
    # the same bf16-rounded inputs through the spec: float32 compute, one bf16 output rounding
    # (relative 2^-8 = 4e-3); tolerance 1e-2
    a_r = {k: np.asarray(v.astype(jnp.float64)) for k, v in a16.items()}
    ref16 = S.selective_scan(**a_r, delta_softplus=True)
    close(out16.astype(jnp.float64), ref16, rtol=1e-2, atol=1e-2)


# ---- memory ---------------------------------------------------------------------------------------


def test_backward_memory_is_bounded(monkeypatch):
    """Peak temporary memory of jit(grad) (XLA's plan): the chunked strategies keep states at
    chunk starts only, far below one (b, l, d, n) float32 array; the associative one stores
    several."""
    bb, dd, nn, ll = 1, 4, 16, 1024
    x = jnp.ones((bb, dd, ll), jnp.float32)
    args = (x, 0.1 * x, -jnp.ones((dd, nn)), jnp.ones((bb, nn, ll)), jnp.ones((bb, nn, ll)))
    full = bb * ll * dd * nn * 4
    peak = {}
    for s in ("sequential", "chunked", "associative"):
        monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", s)
        g = jax.jit(jax.grad(lambda *a: jnp.sum(lj.selective_scan(*a)), argnums=(0, 1, 2, 3, 4)))
        peak[s] = g.lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert peak["associative"] > 2 * full, peak
    assert peak["sequential"] < full / 2 and peak["chunked"] < full / 2, (peak, full)


# ---- bad input --------------------------------------------------------------------------------------


def _bad_cases():
    u = jnp.ones((b, d, l))
    ok = dict(u=u, delta=u, A=-jnp.ones((d, n)), B=jnp.ones((b, n, l)), C=jnp.ones((d, n)))
    yield dict(ok, u=jnp.ones((b, d))), ValueError, r"u: expected shape \(batch, d, length\)"
    yield dict(ok, u=u.astype(jnp.int32)), TypeError, "u: expected a real floating dtype"
    yield dict(ok, delta=jnp.ones((b, d, l + 1))), ValueError, r"delta: expected shape \(2, 4, 11\)"
    yield dict(ok, A=jnp.ones((d + 1, n))), ValueError, r"A: expected shape \(4, n\)"
    yield dict(ok, B=jnp.ones((b, n + 1, l))), ValueError, r"B: expected shape \(d, n\) = \(4, 3\)"
    yield dict(ok, C=jnp.ones((b, 3, n, l))), ValueError, "C: expected shape .* g dividing d"
    yield dict(ok, B=jnp.ones((b, n, l)) + 0j), TypeError, "B: expected a real floating dtype"
    yield dict(ok, D=jnp.ones(d + 1)), ValueError, r"D: expected shape \(4,\)"
    yield dict(ok, z=jnp.ones((b, d))), ValueError, r"z: expected shape \(2, 4, 11\)"
    yield dict(ok, delta_bias=[0.0] * d), TypeError, "delta_bias: expected an array"
    yield dict(ok, initial_state=jnp.ones((b, d))), ValueError, r"initial_state: expected shape"
    yield dict(ok, delta_softplus=1), TypeError, "delta_softplus: expected a bool"


@pytest.mark.parametrize("kwargs,err,match", list(_bad_cases()))
def test_bad_input_raises_clear_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        lj.selective_scan(**kwargs)


def test_bad_input_liquid_and_scans():
    u = jnp.ones((b, d, l))
    args = (u, u, -jnp.ones((d, n)), jnp.ones((d, n)), jnp.ones((d, n)))
    with pytest.raises(ValueError, match="liquid_degree: expected an int >= 1, got 0"):
        lj.liquid_selective_scan(*args, liquid_degree=0)
    with pytest.raises(ValueError, match="lcontract: expected one of"):
        lj.liquid_selective_scan(*args, liquid_degree=2, lcontract="relu")
    with pytest.raises(TypeError, match="A: expected a real floating dtype .*liquid"):
        lj.liquid_selective_scan(u, u, args[2] + 0j, args[3], args[4], liquid_degree=2)
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 2, 4, 3\)"):
        lj.liquid_selective_scan(*args, liquid_degree=2, initial_state=jnp.ones((b, d, n)))
    x = jnp.ones((b, l, 3))
    with pytest.raises(ValueError, match=r"a: expected shape \(1 or 2, 11, 3\)"):
        lj.diag_scan(jnp.ones((3, l, 3)), x)
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 3\)"):
        lj.diag_scan(x, x, jnp.ones((b, 4)))
    with pytest.raises(TypeError, match="b: expected a floating"):
        lj.diag_scan(x, x.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 2, 3\)"):
        lj.liquid_scan(x, x, x, jnp.ones((b, 3)), degree=2)
    with pytest.raises(TypeError, match="degree: expected an int"):
        lj.liquid_scan(x, x, x, degree=2.0)
