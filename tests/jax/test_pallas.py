"""The Pallas kernels (liquidssm.jax.pallas) in the Pallas interpreter, against the XLA scans.

The interpreter's plan has channel blocks of 8, sequence blocks of T = 8 steps and chunks of
K = 4 steps, so the shapes below cross every boundary: length 1, lengths that are not a multiple
of K or T (13, 21: several sequence blocks, the last one padded), channel counts that are not a
multiple of the block (10, 12: padded per group), several groups, state sizes 1-4. Each new
shape compiles for seconds, so the cases are few and the checks per case many (outputs, last
state and every gradient, float64 to 1e-12).
"""

import jax
import jax.numpy as jnp
import liquidssm.jax as lj
import numpy as np
import pytest
from liquidssm.jax import pallas, scans
from liquidssm.jax import selective as sel
from liquidssm.jax.pallas import _plan, _selective


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("LIQUIDSSM_PALLAS_INTERPRET", "1")


def _rand(rng, *shape, cplx=False):
    x = rng.normal(size=shape)
    if cplx:
        x = x + 1j * rng.normal(size=shape)
    return jnp.asarray(x)


def _loss(fn):
    """A real loss of all outputs with a non-trivial cotangent for each."""

    def loss(*args):
        outs = fn(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return sum(jnp.sum(jnp.real(o) * jnp.cos(jnp.real(o)) + jnp.imag(o) ** 2) for o in outs)

    return loss


def _compare(fn_ref, fn, args, tol=1e-12):
    """Outputs and gradients (all args) of fn (Pallas) against fn_ref (XLA)."""
    want, got = jax.jit(fn_ref)(*args), jax.jit(fn)(*args)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)
    argn = tuple(i for i, a in enumerate(args) if a is not None)
    gw = jax.jit(jax.grad(_loss(fn_ref), argnums=argn))(*args)
    gg = jax.jit(jax.grad(_loss(fn), argnums=argn))(*args)
    for i, w, g in zip(argn, gw, gg, strict=True):
        assert g.shape == w.shape, i
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol,
                                   err_msg=f"gradient of argument {i}")


# ---- selective scan core ---------------------------------------------------------------------

SELECTIVE = [
    # (L, b, d, n, p, phi, forms of B, C, BL: "c" constant (d, n), "v<g>" varying with g groups)
    (13, 2, 10, 3, 1, "none", ("v1", "v1", None)),
    (1, 1, 3, 1, 2, "tanh", ("v1", "c", "c")),
    (21, 1, 12, 4, 3, "lecun", ("c", "v2", "v4")),
]


def _selective_args(rng, L, b, d, n, p, forms):
    u = _rand(rng, L, b, d)
    dt = jnp.asarray(rng.uniform(0.05, 0.6, size=(L, b, d)))
    A = -jnp.asarray(rng.uniform(0.3, 2.0, size=(d, n)))

    def bc(form):
        if form is None:
            return None
        return _rand(rng, d, n) if form == "c" else _rand(rng, L, b, int(form[1:]), n)

    B, C, BL = (bc(f) for f in forms)
    return u, dt, A, B, C, BL if p > 1 else None, _rand(rng, p, b, d, n)


@pytest.mark.parametrize("L,b,d,n,p,phi,forms", SELECTIVE)
def test_selective_core_matches_xla(interpret, L, b, d, n, p, phi, forms):
    args = _selective_args(np.random.default_rng(L), L, b, d, n, p, forms)
    cfg = (p, phi, "sequential", 4, False)
    _compare(lambda *a: sel._core(cfg, *a), lambda *a: pallas.selective_core(p, phi, *a), args)


def test_selective_saves_chunk_states_only(interpret):
    """The forward keeps the states at chunk starts, (L/K, p, b, d, n), never one per step."""
    L, b, d, n, p = 21, 1, 12, 4, 2
    args = _selective_args(np.random.default_rng(0), L, b, d, n, p, ("v1", "v1", "c"))
    (_, _), res = _selective._core_fwd(p, "none", *args)
    plan = _plan.plan()
    lay = _selective._Layout(plan, args[0], args[2], args[3:6])
    assert res[-1].shape == (lay.Lp // plan.chunk, p, b, lay.dpad, n)
    assert lay.Lp // plan.chunk < L


# ---- diag / liquid scans through the public functions ----------------------------------------


def _public(monkeypatch, fn, **kw):
    def run(strategy):
        def f(*a):
            monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", strategy)
            return fn(*a, **kw)
        return f

    return run("sequential"), run("pallas")


@pytest.mark.parametrize("cplx,reverse,abatch,L,S", [
    (False, False, 1, 13, (3, 3)),
    (True, True, 2, 1, (10,)),
])
def test_diag_scan_matches_xla(interpret, monkeypatch, cplx, reverse, abatch, L, S):
    rng = np.random.default_rng(L)
    a = jnp.asarray(rng.uniform(0.5, 1.0, size=(abatch, L) + S))
    if cplx:
        a = a * jnp.exp(1j * _rand(rng, abatch, L, *S))
    args = (a, _rand(rng, 2, L, *S, cplx=cplx), _rand(rng, 2, *S, cplx=cplx))
    _compare(*_public(monkeypatch, lj.diag_scan, reverse=reverse), args)


@pytest.mark.parametrize("cplx,reverse,degree,L,F", [
    (False, True, 2, 21, 9),
    (True, False, 3, 7, 2),
])
def test_liquid_scan_matches_xla(interpret, monkeypatch, cplx, reverse, degree, L, F):
    rng = np.random.default_rng(L)
    a = jnp.asarray(rng.uniform(0.5, 1.0, size=(2, L, F)))
    if cplx:
        a = a * jnp.exp(1j * _rand(rng, 2, L, F))
    args = (a, _rand(rng, 2, L, F, cplx=cplx), 0.5 * _rand(rng, 1, L, F, cplx=cplx),
            _rand(rng, 2, degree, F, cplx=cplx))
    _compare(*_public(monkeypatch, lj.liquid_scan, degree=degree, reverse=reverse), args)


def test_bfloat16_computes_in_float32(interpret, monkeypatch):
    """bfloat16 inputs: the kernel loads them, computes in float32 and rounds the output once
    (the float32 scan of the same bfloat16 values, rounded to bfloat16)."""
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.uniform(0.9, 1.0, size=(1, 13, 10)), jnp.bfloat16)
    b = jnp.asarray(rng.normal(size=(2, 13, 10)), jnp.bfloat16)
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "pallas")
    got = lj.diag_scan(a, b)
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "sequential")
    want = lj.diag_scan(a.astype(jnp.float32), b.astype(jnp.float32)).astype(jnp.bfloat16)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_selective_scan_public_and_complex_fallback(interpret, monkeypatch):
    """selective_scan under pallas (real A: the kernel; complex A: the XLA strategy)."""
    rng = np.random.default_rng(5)
    b, d, L, n = 2, 10, 13, 3
    u, delta = _rand(rng, b, d, L), _rand(rng, b, d, L)
    A = -jnp.asarray(rng.uniform(0.5, 2.0, size=(d, n)))
    B, C = _rand(rng, b, n, L), _rand(rng, b, 2, n, L)
    extra = (jnp.ones(d), _rand(rng, b, d, L), jnp.zeros(d))
    _compare(*_public(monkeypatch, lj.selective_scan, delta_softplus=True),
             (u, delta, A, B, C) + extra)
    Ac = A + 1j * _rand(rng, d, n)
    Bc = _rand(rng, b, n, 2 * L)
    _compare(*_public(monkeypatch, lj.selective_scan, return_last_state=True),
             (u, delta, Ac, Bc, _rand(rng, d, n, cplx=True)))


# ---- the strategy switch ---------------------------------------------------------------------


def test_strategy_auto_and_explicit(monkeypatch):
    monkeypatch.delenv("LIQUIDSSM_JAX_SCAN", raising=False)
    monkeypatch.delenv("LIQUIDSSM_PALLAS_INTERPRET", raising=False)
    assert lj.scan_strategy(64, "gpu") == lj.scan_strategy(None, "tpu") == "pallas"
    assert lj.scan_strategy(64, "cpu") == "sequential"
    monkeypatch.setenv("LIQUIDSSM_PALLAS_INTERPRET", "1")
    assert lj.scan_strategy(64, "cpu") == "sequential"  # auto never picks the interpreter
    assert scans.xla_strategy(4096, "gpu") == "chunked"
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "pallas")
    assert lj.scan_strategy(64, "cpu") == "pallas"
    monkeypatch.delenv("LIQUIDSSM_PALLAS_INTERPRET")
    with pytest.raises(RuntimeError, match="LIQUIDSSM_PALLAS_INTERPRET=1"):
        lj.scan_strategy(64, "cpu")
    with pytest.raises(RuntimeError, match="platform is 'cpu'"):
        lj.diag_scan(jnp.ones((1, 3, 2)), jnp.ones((1, 3, 2)))
    assert lj.scan_strategy(64, "gpu") == "pallas"


def test_plans():
    gpu, tpu = _plan.PLANS["gpu"], _plan.PLANS["tpu"]
    assert gpu.steps(13) == 16 and gpu.chan(10) == 16 and gpu.chan(100) == 32  # powers of two
    assert tpu.steps(13) == 128 and tpu.chan(100) == 100 and tpu.chan(300) == 128
    for p in _plan.PLANS.values():
        assert p.steps(1000) % p.chunk == 0


def test_decode_step_matches_spec(interpret, monkeypatch):
    """selective_state_update under pallas (the length-1 kernel) against the XLA function,
    outputs and gradients; bad input keeps the spec's error message."""
    rng = np.random.default_rng(7)
    b, d, n = 2, 10, 3
    args = (_rand(rng, b, d, n), _rand(rng, b, d), _rand(rng, b, d),
            -jnp.asarray(rng.uniform(0.5, 2.0, size=(d, n))), _rand(rng, b, 2, n),
            _rand(rng, b, n), _rand(rng, d), _rand(rng, b, d), _rand(rng, d))
    _compare(*_public(monkeypatch, lj.selective_state_update, dt_softplus=True), args)
    monkeypatch.setenv("LIQUIDSSM_JAX_SCAN", "pallas")
    with pytest.raises(ValueError, match="dt: expected shape"):
        lj.selective_state_update(args[0], args[1], args[1][:, :3], *args[3:6])
