"""liquidssm.numpy with LIQUIDSSM_NUMPY_IMPL=numba: the scan primitives run liquidssm.cpu's
forward kernels on NumPy arrays (the spec's outputs and dtypes); every other value runs the spec
itself; arrays of another library and zero-size calls run the spec."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

import liquidssm.numpy as lnp  # noqa: E402
from liquidssm import registry  # noqa: E402
from liquidssm.cpu import _numpy as K  # noqa: E402
from liquidssm.spec import scan as spec_scan  # noqa: E402
from liquidssm.spec import selective as spec_sel  # noqa: E402


@pytest.fixture
def numba_env(monkeypatch):
    monkeypatch.setenv("LIQUIDSSM_NUMPY_IMPL", "numba")


def _selective(form, cplx=False, dtype=np.float64, b=2, d=4, n=3, l=21, seed=0, p=None):
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    ll = 2 * l if cplx else l
    bc = {"const": lambda G: r(d, n), "var": lambda G: r(b, n, ll),
          "group": lambda G: r(b, G, n, ll)}[form]
    A = -rng.random((d, n)).astype(dtype) - 0.2
    h0 = r(b, d, n) if p is None else r(b, p, d, n)
    if cplx:
        A, h0 = A + 1j * r(d, n), h0 + 1j * r(*h0.shape)
    return dict(u=r(b, d, l), delta=0.5 * r(b, d, l), A=A, B=bc(2), C=bc(4), D=r(d),
                z=r(b, d, l), delta_bias=0.3 * r(d), initial_state=h0)


@pytest.mark.parametrize("form", ["const", "var", "group"])
@pytest.mark.parametrize("cplx", [False, True])
def test_selective_scan_runs_the_kernel(numba_env, form, cplx):
    x = _selective(form, cplx)
    assert lnp.implementation("selective_scan") == "numba"
    out, last = lnp.selective_scan(**x, delta_softplus=True, return_last_state=True)
    kout, klast = K.selective_scan(**x, delta_softplus=True, return_last_state=True)
    assert np.array_equal(out, kout) and np.array_equal(last, klast)  # the kernel ran
    ref, ref_last = spec_sel.selective_scan(**x, delta_softplus=True, return_last_state=True)
    assert out.dtype == ref.dtype and last.dtype == ref_last.dtype
    np.testing.assert_allclose(out, ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(last, ref_last, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("form,bl,p,phi", [("var", None, 2, "tanh"), ("group", "var", 3, "lecun"),
                                           ("const", None, 1, "none")])
def test_liquid_selective_scan_matches_the_spec(numba_env, form, bl, p, phi):
    x = _selective(form, p=p)
    if bl is not None:
        x["BL"] = np.random.default_rng(1).standard_normal(x["B"].shape)
    kw = dict(delta_softplus=True, return_last_state=True, liquid_degree=p, lcontract=phi)
    out, last = lnp.liquid_selective_scan(**x, **kw)
    ref, ref_last = spec_sel.liquid_selective_scan(**x, **kw)
    np.testing.assert_allclose(out, ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(last, ref_last, rtol=1e-11, atol=1e-11)


def test_float32_inputs_compute_in_float32(numba_env):
    x = _selective("var", dtype=np.float32)
    out, last = lnp.selective_scan(**x, return_last_state=True)
    assert out.dtype == np.float32 and last.dtype == np.float32
    ref = spec_sel.selective_scan(**{k: v.astype(np.float64) for k, v in x.items()})
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5
    y = _selective("const", cplx=True, dtype=np.float32)
    assert lnp.selective_scan(**y, return_last_state=True)[1].dtype == np.complex64


@pytest.mark.parametrize("p,reverse,cplx,bcast,S", [
    (None, False, False, False, (5,)), (None, True, True, True, (3, 2)),
    (2, False, False, True, (40,)), (3, True, True, False, (4,))])
def test_level_scans_match_the_spec(numba_env, p, reverse, cplx, bcast, S):
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s) + (1j * rng.standard_normal(s) if cplx else 0)  # noqa
    b, l = 2, 19
    lead = 1 if bcast else b
    a, bb = 0.6 * r(lead, l, *S), r(b, l, *S)
    if p is None:
        h0 = r(b, *S)
        got = (lnp.diag_scan(a, bb, h0, reverse=reverse),)
        ref = (spec_scan.diag_scan(a, bb, h0, reverse=reverse),)
        assert lnp.implementation("diag_scan") == "numba"
    else:
        c, h0 = 0.4 * r(lead, l, *S), r(b, p, *S)
        got = lnp.liquid_scan(a, bb, c, h0, degree=p, reverse=reverse)
        ref = spec_scan.liquid_scan(a, bb, c, h0, degree=p, reverse=reverse)
    for g, want in zip(got, ref):
        assert g.dtype == want.dtype and g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-12)
    low = np.complex64 if cplx else np.float32
    assert lnp.diag_scan(a.astype(low), bb.astype(low)).dtype == low


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("groups,drop", [(None, ()), (2, ()), (4, ("D", "z", "dt_bias"))])
def test_selective_state_update_runs_the_kernel(numba_env, monkeypatch, dtype, groups, drop):
    rng = np.random.default_rng(3)
    b, d, n = 3, 4, 5
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    bc = (b, n) if groups is None else (b, groups, n)
    x = dict(state=r(b, d, n), x=r(b, d), dt=r(b, d), A=-rng.random((d, n)).astype(dtype) - 0.2,
             B=r(*bc), C=r(*bc), D=r(d), z=r(b, d), dt_bias=0.3 * r(d))
    x = {k: None if k in drop else v for k, v in x.items()}
    assert lnp.implementation("selective_state_update") == "numba"
    calls = []
    kernel = K.K.state_step
    monkeypatch.setattr(K.K, "state_step", lambda *a: calls.append(1) or kernel(*a))
    y, h = lnp.selective_state_update(**x, dt_softplus=True)
    assert calls == [1]
    ref = {k: None if v is None else v.astype(np.float64) for k, v in x.items()}
    y_ref, h_ref = spec_sel.selective_state_update(**ref, dt_softplus=True)
    assert y.dtype == h.dtype == dtype
    # float32: float32 arithmetic against float64 (the kernel's exp / softplus / sigmoid:
    # relative errors <= 3e-7); as in tests/torch/test_numba.py
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(h, h_ref, rtol=tol, atol=tol)


def test_the_default_and_other_values_run_the_spec(monkeypatch):
    x = _selective("var")
    ref = spec_sel.selective_scan(**x)
    for value in (None, "auto", "spec", "array_api_strict"):
        if value is None:
            monkeypatch.delenv("LIQUIDSSM_NUMPY_IMPL", raising=False)
        else:
            monkeypatch.setenv("LIQUIDSSM_NUMPY_IMPL", value)
        assert lnp.implementation() == "spec"
        assert np.array_equal(lnp.selective_scan(**x), ref)
    monkeypatch.setenv("LIQUIDSSM_NUMPY_IMPL", "numba")
    assert lnp.implementation("dense_scan") == "spec"  # no kernel: the spec
    monkeypatch.setattr(K, "selective_scan", lambda *args, **kwargs: "kernel")
    assert lnp.selective_scan(**x) == "kernel"  # the record's module, looked up per call
    monkeypatch.setenv("LIQUIDSSM_NUMPY_IMPL", "nope")
    with pytest.raises(ValueError, match="LIQUIDSSM_NUMPY_IMPL: expected one of"):
        lnp.selective_scan(**x)
    assert registry.get("numpy:numba").module == K.__name__


def test_zero_size_other_arrays_and_bad_input_are_the_spec(numba_env):
    x = _selective("var", l=0)
    out, last = lnp.selective_scan(**x, return_last_state=True)
    ref, ref_last = spec_sel.selective_scan(**x, return_last_state=True)
    assert out.shape == (2, 4, 0) and np.array_equal(last, ref_last)
    bad = _selective("var")
    bad["delta"] = bad["delta"][..., :-1]
    with pytest.raises(ValueError, match=r"delta: expected shape"):
        lnp.selective_scan(**bad)
    xp = pytest.importorskip("array_api_strict")
    a, b = np.full((1, 5, 2), 0.5), np.ones((2, 5, 2))
    got = lnp.diag_scan(xp.asarray(a), xp.asarray(b))
    assert type(got).__module__.startswith("array_api_strict")
    assert np.array_equal(np.from_dlpack(got), spec_scan.diag_scan(a, b))
