"""Shared spec pieces: erf and activations, argument checks, discretisation, scans, FFT conv."""

import math

import numpy as np
import pytest
from liquidssm.spec import nn
from liquidssm.spec._common import (
    causal_fft_conv,
    check_array,
    check_bool,
    check_choice,
    check_float,
    check_int,
    discretize,
)
from liquidssm.spec.scan import dense_scan, diag_scan, liquid_scan

rng = np.random.default_rng(0)


def test_erf_matches_math_erf_to_float64_accuracy():
    x = np.concatenate([np.linspace(-9, 9, 20001), [0.0, 1.999999, 2.0, 2.000001, -2.0]])
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(nn.erf(x) - ref).max() < 1e-14


def test_gelu_exact_and_tanh_forms():
    x = np.linspace(-6, 6, 101)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(nn.gelu(x), exact, rtol=0, atol=1e-14)
    # the tanh form is a different function: within 1e-3 of the exact one, but not equal
    diff = np.abs(nn.gelu(x, approximate=True) - exact)
    assert 1e-6 < diff.max() < 1e-3


def test_softplus_sigmoid_silu():
    x = np.array([-1000.0, -30.0, -1.0, 0.0, 1.0, 19.0, 21.0, 1000.0])
    # underflow to 0 is exact enough; overflow or nan is not
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        sp, sg = nn.softplus(x), nn.sigmoid(x)
    np.testing.assert_allclose(sp[:6], np.log1p(np.exp(x[:6])), rtol=1e-15)
    assert sp[6] == 21.0 and sp[7] == 1000.0  # threshold 20: identity above
    np.testing.assert_allclose(sg[1:7], 1 / (1 + np.exp(-x[1:7])), rtol=1e-15)
    assert sg[0] == 0.0 and sg[-1] == 1.0
    np.testing.assert_allclose(nn.silu(x[1:7]), x[1:7] * sg[1:7])


def test_norms_and_glu():
    x = rng.standard_normal((3, 8))
    w, b = rng.standard_normal(8), rng.standard_normal(8)
    ln = nn.layer_norm(x, w, b)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(ln, ref, rtol=1e-13)
    rms = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(nn.rms_norm(x, w), rms)
    np.testing.assert_allclose(nn.glu(x), x[:, :4] / (1 + np.exp(-x[:, 4:])), rtol=1e-14)
    np.testing.assert_allclose(nn.lcontract(x, "lecun"), 1.7159 * np.tanh(0.666 * x))
    with pytest.raises(ValueError, match="lcontract: expected one of"):
        nn.lcontract(x, "relu")


def test_checks_name_the_argument():
    with pytest.raises(ValueError, match=r"u: expected shape \(2, \*, 3\), got shape \(2, 4, 4\)"):
        check_array("u", np.zeros((2, 4, 4)), (2, None, 3))
    with pytest.raises(ValueError, match="u: expected length >= 1"):
        check_array("u", np.zeros((2, 0, 3)), (2, "length", 3))
    with pytest.raises(TypeError, match="u: expected a real floating dtype"):
        check_array("u", np.zeros((2,), dtype=np.int64), (2,))
    with pytest.raises(TypeError, match="u: expected an array"):
        check_array("u", [1.0, 2.0], (2,))
    with pytest.raises(ValueError, match="d_state: expected an int >= 1, got 0"):
        check_int("d_state", 0)
    with pytest.raises(TypeError, match="d_state: expected an int"):
        check_int("d_state", 2.0)
    with pytest.raises(ValueError, match="dt_min: expected a finite number, got nan"):
        check_float("dt_min", float("nan"))
    with pytest.raises(ValueError, match="mode: expected one of"):
        check_choice("mode", "fft", ["conv", "recurrent"])
    assert check_bool("prenorm", False) is False
    for bad in (0, 1, None, np.True_, "True"):
        with pytest.raises(TypeError, match="prenorm: expected a bool, got"):
            check_bool("prenorm", bad)


def test_discretize_zoh_and_bilinear_scalar():
    A, B, dt = -0.7 + 2.0j, 1.3 - 0.2j, 0.05
    Abar, Bbar = discretize(np.array(A), np.array(B), dt, "zoh")
    assert abs(Abar - np.exp(dt * A)) < 1e-15
    # ZOH: Bbar = int_0^dt exp(s A) ds B
    s = np.linspace(0, dt, 200001)
    y = np.exp(s * A)
    integral = np.sum((y[1:] + y[:-1]) / 2) * (s[1] - s[0])
    assert abs(Bbar - integral * B) < 1e-12
    Abar, Bbar = discretize(np.array(A), np.array(B), dt, "bilinear")
    assert abs(Abar - (1 + dt * A / 2) / (1 - dt * A / 2)) < 1e-15
    assert abs(Bbar - dt * B / (1 - dt * A / 2)) < 1e-15
    with pytest.raises(ValueError, match="discretization"):
        discretize(np.array(A), np.array(B), dt, "euler")


def test_causal_fft_conv_is_a_linear_convolution():
    u, K = rng.standard_normal((2, 3, 17)), rng.standard_normal((3, 17))
    ref = np.stack([[np.convolve(u[b, h], K[h])[:17] for h in range(3)] for b in range(2)])
    np.testing.assert_allclose(causal_fft_conv(u, K), ref, atol=1e-12)


def test_diag_scan_forward_reverse_and_initial_state():
    a = rng.uniform(-1, 1, (1, 6, 2, 3)) + 1j * rng.uniform(-1, 1, (1, 6, 2, 3))
    b = rng.standard_normal((2, 6, 2, 3)) + 0j
    h0 = rng.standard_normal((2, 2, 3)) + 0j
    h = diag_scan(a, b, h0)
    ref, state = [], h0
    for t in range(6):
        state = a[:, t] * state + b[:, t]
        ref.append(state)
    np.testing.assert_allclose(h, np.stack(ref, 1), rtol=1e-14)
    # reverse == forward on the time-flipped sequence
    hr = diag_scan(a, b, h0, reverse=True)
    np.testing.assert_allclose(hr, diag_scan(a[:, ::-1], b[:, ::-1], h0)[:, ::-1], rtol=1e-14)
    # chunked == whole
    h1 = diag_scan(a[:, :4], b[:, :4], h0)
    np.testing.assert_allclose(diag_scan(a[:, 4:], b[:, 4:], h1[:, -1]), h[:, 4:], rtol=1e-14)


def test_dense_scan_is_the_matrix_power_sum():
    # h_t = A^(t+1) h0 + sum_{s<=t} A^(t-s) b_s, A (2, 3, 3) broadcast over batch and time
    A = rng.standard_normal((2, 3, 3)) + 1j * rng.standard_normal((2, 3, 3))
    b = rng.standard_normal((2, 5, 2, 3)) + 0j
    h0 = rng.standard_normal((2, 2, 3)) + 0j
    mp = np.linalg.matrix_power
    ref = np.stack([np.einsum("sij,bsj->bsi", mp(A, t + 1), h0)
                    + sum(np.einsum("sij,bsj->bsi", mp(A, t - s), b[:, s]) for s in range(t + 1))
                    for t in range(5)], axis=1)
    np.testing.assert_allclose(dense_scan(A, b, h0), ref, rtol=1e-12)
    np.testing.assert_allclose(dense_scan(A.real, b.real), dense_scan(A.real, b.real, 0 * h0.real))
    h = dense_scan(A, b, h0)
    np.testing.assert_allclose(dense_scan(A, b[:, 2:], h[:, 1]), h[:, 2:], rtol=1e-13)


def test_liquid_scan_truncation():
    a, c = rng.uniform(-0.9, 0.9, (2, 9, 3)), rng.uniform(-0.05, 0.05, (2, 9, 3))
    b = rng.standard_normal((2, 9, 3))
    # degree 1 is the plain scan
    y1, last1 = liquid_scan(a, b, c, degree=1)
    np.testing.assert_allclose(y1, diag_scan(a, b), rtol=1e-14)
    assert last1.shape == (2, 1, 3)
    # degree >= length keeps every term: the full recurrence x_t = (a_t + c_t) x_{t-1} + b_t
    full = diag_scan(a + c, b)
    y9, _ = liquid_scan(a, b, c, degree=9)
    np.testing.assert_allclose(y9, full, rtol=1e-13)
    # degree 2 keeps exactly the terms with at most one factor of c: d/dc at c=0 matches
    eps = 1e-6
    y2p, _ = liquid_scan(a, b, eps * c, degree=2)
    yfp = diag_scan(a + eps * c, b)
    assert np.abs(y2p - yfp).max() < 1e-9  # the neglected terms are O(eps^2)
    # chunked continuation carries every level
    ya, la = liquid_scan(a[:, :5], b[:, :5], c[:, :5], degree=3)
    yb, lb = liquid_scan(a[:, 5:], b[:, 5:], c[:, 5:], la, degree=3)
    y3, l3 = liquid_scan(a, b, c, degree=3)
    np.testing.assert_allclose(np.concatenate([ya, yb], 1), y3, rtol=1e-14)
    np.testing.assert_allclose(lb, l3, rtol=1e-14)


def test_scans_run_under_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    a, b = rng.uniform(-1, 1, (2, 5, 3)), rng.standard_normal((2, 5, 3))
    out = diag_scan(xps.asarray(a), xps.asarray(b))
    np.testing.assert_allclose(np.asarray(out), diag_scan(a, b), rtol=1e-15)
    y, _ = liquid_scan(xps.asarray(a), xps.asarray(b), xps.asarray(0.1 * a), degree=2)
    np.testing.assert_allclose(np.asarray(y), liquid_scan(a, b, 0.1 * a, degree=2)[0], rtol=1e-15)
    np.testing.assert_allclose(np.asarray(nn.erf(xps.asarray(a))), nn.erf(a), rtol=1e-15)
