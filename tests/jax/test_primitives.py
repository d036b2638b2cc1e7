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


def value_and_vjp(fn, a, cts, **static):
    """Compiled once: fn(**a, **static) and the vjp of its outputs with cotangents `cts` w.r.t.
    every array of `a` (dict name -> gradient)."""
    keys = [k for k in a if a[k] is not None]

    def run(xs, cts):
        out, pull = jax.vjp(lambda *x: fn(**dict(zip(keys, x)), **static), *xs)
        return out, dict(zip(keys, pull(cts)))

    return jax.jit(run)([jnp.asarray(a[k]) for k in keys], jax.tree.map(jnp.asarray, cts))


def check_by_finite_differences(loss, a, grads, seed=0, eps=1e-6):
    """For every gradient: Re sum(grad * v) == (loss(a + eps v) - loss(a - eps v)) / (2 eps)
    along a random direction v (complex where the argument is; jax's pairing for complex
    arguments is dL = Re sum(grad * da)). float64 central differences: error ~eps^2 + 1e-16/eps,
    measured below 1e-8 here; tolerance 1e-6."""
    r = rng(seed)
    for k, g in grads.items():
        v = r.standard_normal(a[k].shape)
        if np.iscomplexobj(a[k]):
            v = v + 1j * r.standard_normal(a[k].shape)
        fd = (loss(dict(a, **{k: a[k] + eps * v})) - loss(dict(a, **{k: a[k] - eps * v}))) / (
            2 * eps)
        np.testing.assert_allclose(np.real(np.sum(np.asarray(g) * v)), fd, rtol=1e-6, atol=1e-6,
                                   err_msg=k)


# ---- the strategy switch ----------------------------------------------------------------------


def test_scan_strategy_switch(monkeypatch):
    monkeypatch.delenv("LIQUIDSSM_JAX_SCAN", raising=False)
    assert lj.scan_strategy(2048, "cpu") == lj.scan_strategy(None, "cpu") == "sequential"
    assert lj.scan_strategy(2048, "gpu") == lj.scan_strategy(None, "gpu") == "chunked"
    assert lj.scan_strategy(2048, "tpu") == "chunked"
    assert lj.scan_strategy(scans.CHUNK, "tpu") == "associative"
    assert lj.scan_strategy() == lj.scan_strategy(None, jax.default_backend())
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", " Associative ")
    assert lj.scan_strategy(2048, "gpu") == lj.scan_strategy(8, "cpu") == "associative"
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "parallel")
    with pytest.raises(ValueError, match="LIQUIDSSM_JAX_SCAN: expected one of .*'parallel'"):
        lj.scan_strategy()
    u = jnp.ones((1, 2, 3))
    with pytest.raises(ValueError, match="LIQUIDSSM_JAX_SCAN"):
        lj.selective_scan(u, u, -jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.ones((2, 1)))


# ---- every strategy: values and gradients against the spec (float64) -----------------------------


@pytest.mark.parametrize("cplx,length", [(True, l), (False, 1)])
def test_dense_scan(strategy, cplx, length):
    r = rng(4)
    A = 0.3 * r.standard_normal((2, 3, 3))  # (S, N, N): S = 2 channels
    bb, h0 = r.standard_normal((b, length, 2, 3)), r.standard_normal((b, 2, 3))
    if cplx:
        A, bb = A + 0.3j * r.standard_normal(A.shape), bb + 1j * r.standard_normal(bb.shape)
    a = dict(A=A, b=bb, h0=h0)
    w = r.standard_normal(bb.shape)

    def loss(args):
        return np.sum(np.real(w * spec_scan.dense_scan.reference(**args)))

    out, grads = value_and_vjp(lambda **x: lj.dense_scan(**x), a, w + (0j if cplx else 0))
    close(out, spec_scan.dense_scan.reference(**a))
    check_by_finite_differences(loss, a, grads)
    close(jit(lj.dense_scan)(jx(dict(A=A, b=bb))), spec_scan.dense_scan.reference(A, bb))
    with pytest.raises(ValueError, match="b: expected shape"):
        lj.dense_scan(jnp.asarray(A), jnp.asarray(bb[..., :2]))


def test_diag_and_liquid_scan(strategy):
    r = rng(1)
    a = dict(a=r.uniform(-1, 1, (1, l, 2, 3)) + 1j * r.uniform(-0.5, 0.5, (1, l, 2, 3)),
             b=r.standard_normal((b, l, 2, 3)), c=0.3 * r.standard_normal((b, l, 2, 3)),
             h0=r.standard_normal((b, 2, 3)), H0=r.standard_normal((b, 3, 2, 3)))
    w = [r.standard_normal((b, l, 2, 3)) for _ in range(4)]

    def scans_of(diag, liquid, a, b, c, h0, H0):
        return (diag(a, b, h0), diag(a, b, reverse=True),
                *liquid(a.real, b, c, H0, degree=3), liquid(a.real, b, c, degree=3, reverse=True))

    def loss(args):  # real, from the spec's loops
        h, hr, y, last, (yr, _) = scans_of(spec_scan.diag_scan.reference,
                                           spec_scan.liquid_scan.reference, **args)
        return sum(np.sum(np.real(wi * x)) for wi, x in zip(w, (h, hr, y, yr))) + np.sum(last)

    # diag_scan's output is complex: a real cotangent w (as complex) pairs as Re sum(w * h)
    ct = (w[0] + 0j, w[1] + 0j, w[2], np.ones((b, 3, 2, 3)), (w[3], np.zeros((b, 3, 2, 3))))
    out, grads = value_and_vjp(lambda **x: scans_of(lj.diag_scan, lj.liquid_scan, **x), a, ct)
    ref = scans_of(spec_scan.diag_scan.reference, spec_scan.liquid_scan.reference, **a)
    assert out[0].dtype == jnp.complex128
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        close(x, y)
    check_by_finite_differences(loss, a, grads)


def test_selective_scan(strategy):
    r = rng(3)
    a = sel_args(r, "var", "g2")
    dout, dlast = r.standard_normal((b, d, l)), r.standard_normal((b, d, n))
    kw = dict(delta_softplus=True, return_last_state=True)
    (out, last), grads = value_and_vjp(lj.selective_scan, a, (dout, dlast), **kw)
    ref, ref_last = S.selective_scan(**a, **kw)
    assert out.dtype == last.dtype == jnp.float64
    close(out, ref)
    close(last, ref_last)
    ref_grads = S.selective_scan_vjp(**a, delta_softplus=True, dout=dout, dlast_state=dlast)
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        close(grads[k], ref_grads[k])


def test_liquid_selective_scan(strategy):
    r = rng(4)
    a = dict(sel_args(r, "const", "var", liquid=3), BL=0.5 * bc(r, "g2"))
    dout, dlast = r.standard_normal((b, d, l)), r.standard_normal((b, 3, d, n))
    kw = dict(delta_softplus=True, liquid_degree=3, lcontract="tanh")
    (out, last), grads = value_and_vjp(lj.liquid_selective_scan, a, (dout, dlast),
                                       return_last_state=True, **kw)
    ref, ref_last = S.liquid_selective_scan(**a, return_last_state=True, **kw)
    close(out, ref)
    close(last, ref_last)
    ref_grads = S.liquid_selective_scan_vjp(**a, dout=dout, dlast_state=dlast, **kw)
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        close(grads[k], ref_grads[k])


def test_complex_selective_scan(strategy):
    """Complex A (B interleaved re/im in groups, C constant complex); the spec's vjp is real-A
    only, so gradients are checked by finite differences of the spec."""
    r = rng(5)
    a = sel_args(r, "g2", "const", cplx=True)
    dout = r.standard_normal((b, d, l))
    dlast = r.standard_normal((b, d, n)) + 1j * r.standard_normal((b, d, n))
    kw = dict(delta_softplus=True, return_last_state=True)
    (out, last), grads = value_and_vjp(lj.selective_scan, a, (dout, dlast), **kw)
    ref, ref_last = S.selective_scan(**a, **kw)
    assert last.dtype == jnp.complex128
    close(out, ref)
    close(last, ref_last)

    def loss(x):
        o, h = S.selective_scan(**x, **kw)
        return np.sum(dout * o) + np.sum(np.real(dlast * h))

    check_by_finite_differences(loss, a, grads)


def test_chunked_continuation(strategy):
    a = sel_args(rng(9), "var", "g2", liquid=2, length=10)
    run = jit(lj.liquid_selective_scan, liquid_degree=2, return_last_state=True)
    timed = ("u", "delta", "z", "B", "C")
    full, last = run(jx(a))
    o1, s1 = run(jx({k: v[..., :5] if k in timed else v for k, v in a.items()}))
    o2, s2 = run(dict(jx({k: v[..., 5:] if k in timed else v for k, v in a.items()}),
                      initial_state=s1))
    close(jnp.concatenate([o1, o2], axis=-1), full)
    close(s2, last)


# ---- one strategy (auto, chunks of 4) ------------------------------------------------------------


@pytest.mark.parametrize("bform,cform", [("const", "var"), ("g2", "const")])
def test_other_forms_and_tied_liquid(small_chunks, bform, cform):
    r = rng(6)
    a = sel_args(r, bform, cform, liquid=2)
    dout = r.standard_normal((b, d, l))
    kw = dict(liquid_degree=2, lcontract="lecun")  # BL tied to B
    out, grads = value_and_vjp(lj.liquid_selective_scan, a, dout, **kw)
    close(out, S.liquid_selective_scan(**a, **kw))
    ref_grads = S.liquid_selective_scan_vjp(**a, dout=dout, **kw)
    for k in ref_grads:
        close(grads[k], ref_grads[k])
    # degree 1 is the selective scan (no initial state: zeros)
    a1 = {k: v for k, v in a.items() if k != "initial_state"}
    close(jit(lj.liquid_selective_scan)(jx(a1)), S.selective_scan(**a1))


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
    a = sel_args(rng(11), "var", "g2", liquid=2)
    kw = dict(liquid_degree=2, lcontract="tanh", delta_softplus=True, return_last_state=True)
    eager = lj.liquid_selective_scan(**jx(a), **kw)
    jitted = jit(lj.liquid_selective_scan, **kw)(jx(a))
    for x, y in zip(eager, jitted):
        close(x, y, rtol=1e-13, atol=1e-13)
    # vmap over a new leading axis of every batched argument (the original and 2x)
    batched = ("u", "delta", "z", "B", "C", "initial_state")
    twice = {k: 2 * v if k in batched else v for k, v in a.items()}
    stacked = {k: jnp.stack([a[k], twice[k]]) if k in batched else jnp.asarray(v)
               for k, v in a.items()}
    axes = {k: 0 if k in batched else None for k in a}
    vm = jax.jit(jax.vmap(lambda x: lj.liquid_selective_scan(**x, **kw), in_axes=(axes,)))(
        stacked)
    for i, args in enumerate((a, twice)):
        ref = S.liquid_selective_scan(**args, **kw)
        close(vm[0][i], ref[0])
        close(vm[1][i], ref[1])


def test_float32_and_bfloat16(small_chunks):
    r = rng(13)
    a = sel_args(r, "var", "g2")
    dout = r.standard_normal((b, d, l))
    kw = dict(delta_softplus=True, return_last_state=True)
    zero = np.zeros((b, d, n))
    (out32, last32), g32 = value_and_vjp(lj.selective_scan, jx(a, jnp.float32),
                                         (jnp.asarray(dout, jnp.float32),
                                          jnp.asarray(zero, jnp.float32)), **kw)
    assert out32.dtype == jnp.float32 and last32.dtype == jnp.float32
    ref, ref_last = S.selective_scan(**a, **kw)
    close(out32, ref, rtol=6e-4, atol=2e-3)  # mamba's fp32 kernel tolerance
    close(last32, ref_last, rtol=6e-4, atol=2e-3)
    gref = S.selective_scan_vjp(**a, delta_softplus=True, dout=dout)
    for k in gref:
        assert g32[k].dtype == jnp.float32
        close(g32[k], gref[k], rtol=6e-4, atol=2e-3)
    a16 = jx(a, jnp.bfloat16)
    out16, last16 = jit(lj.selective_scan, **kw)(a16)
    assert out16.dtype == jnp.bfloat16 and last16.dtype == jnp.float32
    # the same bf16-rounded inputs through the spec: float32 compute, one bf16 output rounding
    # (relative 2^-8 = 4e-3); tolerance 1e-2
    a_r = {k: np.asarray(v.astype(jnp.float64)) for k, v in a16.items()}
    ref16, ref16_last = S.selective_scan(**a_r, **kw)
    close(out16.astype(jnp.float64), ref16, rtol=1e-2, atol=1e-2)
    close(last16, ref16_last, rtol=6e-4, atol=2e-3)


def test_backward_memory_is_bounded(monkeypatch):
    """XLA's planned temporary memory of jit(grad): doubling l adds far less than one
    (b, l, d, n) float32 array for the sequential and chunked strategies (states kept at chunk
    starts only; measured 0.20x at d=32, n=16; the associative strategy adds 14x)."""
    bb, dd, nn = 1, 32, 16

    def temp(ll):
        x = jnp.ones((bb, dd, ll), jnp.float32)
        args = (x, 0.1 * x, -jnp.ones((dd, nn)), jnp.ones((bb, nn, ll)), jnp.ones((bb, nn, ll)))
        g = jax.jit(jax.grad(lambda *a: jnp.sum(lj.selective_scan(*a)), argnums=(0, 1, 2, 3, 4)))
        return g.lower(*args).compile().memory_analysis().temp_size_in_bytes

    full = bb * 1024 * dd * nn * 4  # the added (b, l, d, n) float32 array
    for s in ("sequential", "chunked"):
        monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", s)
        assert temp(2048) - temp(1024) < 0.3 * full, s


# ---- bad input ------------------------------------------------------------------------------


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
    with pytest.raises(TypeError, match="b: expected a real or complex floating dtype"):
        lj.diag_scan(x, x.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 2, 3\)"):
        lj.liquid_scan(x, x, x, jnp.ones((b, 3)), degree=2)
    with pytest.raises(TypeError, match="degree: expected an int"):
        lj.liquid_scan(x, x, x, degree=2.0)
