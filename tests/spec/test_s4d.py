import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import hippo, s4d

H, N, B, L = 3, 6, 2, 9


def _u(seed=0, length=L, batch=B):
    return np.random.default_rng(seed).normal(size=(batch, length, H))


def _params(cfg, seed=1):
    """init, with dt enlarged so the kernel does not vanish within L steps."""
    p = s4d.init(cfg, seed)
    p["log_dt"] = np.log(np.random.default_rng(seed).uniform(0.05, 0.5, H))
    return p


def _numpy_discrete(cfg, p):
    A = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]
    Bc = p["B_re"] + 1j * p["B_im"]
    dt = np.exp(p["log_dt"])[:, None]
    if cfg.discretization == "zoh":
        Abar = np.exp(dt * A)
        Bbar = (Abar - 1) / A * Bc
    else:
        Abar = (1 + dt * A / 2) / (1 - dt * A / 2)
        Bbar = dt * Bc / (1 - dt * A / 2)
    return Abar, Bbar, p["C_re"] + 1j * p["C_im"]


CASES = [(i, d) for i in s4d.INITS for d in ("zoh", "bilinear")]


@pytest.mark.parametrize("init,disc", CASES)
def test_kernel_is_vandermonde_of_discrete_system(init, disc):
    cfg = s4d.Config(H, N, init=init, discretization=disc)
    p = _params(cfg)
    Abar, Bbar, C = _numpy_discrete(cfg, p)
    expected = np.stack([2 * np.sum(C * Bbar * Abar**l, -1).real for l in range(L)], -1)
    np.testing.assert_allclose(s4d.kernel(cfg, p, L), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("init,disc", CASES)
def test_conv_equals_recurrent_and_direct_convolution(init, disc):
    cfg = s4d.Config(H, N, init=init, discretization=disc)
    rec = s4d.Config(H, N, init=init, discretization=disc, mode="recurrent")
    p, u = _params(cfg), _u()
    y_conv, s_conv = s4d.forward(cfg, p, u, return_state=True)
    y_rec, s_rec = s4d.forward(rec, p, u, return_state=True)
    np.testing.assert_allclose(y_conv, y_rec, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s_conv["x"], s_rec["x"], rtol=0, atol=1e-10)
    K = s4d.kernel(cfg, p, L)
    direct = np.stack(
        [[np.convolve(u[b, :, h], K[h])[:L] for h in range(H)] for b in range(B)], 0
    ).transpose(0, 2, 1) + p["D"] * u
    np.testing.assert_allclose(y_conv, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_step_and_chunks_equal_forward(mode, disc):
    cfg = s4d.Config(H, N, discretization=disc, mode=mode)
    p, u = _params(cfg), _u(3)
    y, final = s4d.forward(cfg, p, u, return_state=True)
    state, ys = s4d.initial_state(cfg, B), []
    for t in range(L):
        y_t, state = s4d.step(cfg, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(state["x"], final["x"], rtol=0, atol=1e-10)
    y1, s1 = s4d.forward(cfg, p, u[:, :4], return_state=True)
    y2, s2 = s4d.forward(cfg, p, u[:, 4:], state=s1, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s2["x"], final["x"], rtol=0, atol=1e-10)


def test_init_values():
    n = np.arange(N // 2)
    lin = s4d.init(s4d.Config(H, N))
    assert set(lin) == {"log_dt", "log_A_real", "A_imag", "B_re", "B_im", "C_re", "C_im", "D"}
    assert all(v.dtype == np.float64 for v in lin.values())
    np.testing.assert_allclose(lin["A_imag"], np.tile(np.pi * n, (H, 1)))
    np.testing.assert_allclose(lin["log_A_real"], np.log(0.5))
    np.testing.assert_array_equal(lin["B_re"], 1.0)
    np.testing.assert_array_equal(lin["B_im"], 0.0)
    assert np.all(np.log(1e-3) <= lin["log_dt"]) and np.all(lin["log_dt"] <= np.log(1e-1))
    inv = s4d.init(s4d.Config(H, N, init="inv"))
    np.testing.assert_allclose(inv["A_imag"][0], N / np.pi * (N / (2 * n + 1) - 1))
    real = s4d.init(s4d.Config(H, N, init="real"))
    np.testing.assert_allclose(-np.exp(real["log_A_real"][0]), -(n + 1.0))
    np.testing.assert_array_equal(real["A_imag"], 0.0)
    legs = s4d.init(s4d.Config(H, N, init="legs"))
    np.testing.assert_allclose(legs["A_imag"][1], -hippo.nplr(N)[0].imag)
    again = s4d.init(s4d.Config(H, N), seed=0)
    assert all(np.array_equal(lin[k], again[k]) for k in lin)
    assert not np.array_equal(s4d.init(s4d.Config(H, N), seed=1)["C_re"], lin["C_re"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"d_state": 5}, "d_state"),
        ({"d_state": 0}, "d_state"),
        ({"init": "foo"}, "init"),
        ({"discretization": "euler"}, "discretization"),
        ({"mode": "scan"}, "mode"),
        ({"dt_min": float("nan")}, "dt_min"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "dt_max"),
        ({"dt_max": -1.0}, "dt_max"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        s4d.Config(H, **kwargs)
    with pytest.raises(TypeError, match="d_model"):
        s4d.Config(2.5)


def test_bad_inputs_are_named():
    cfg = s4d.Config(H, N)
    p = s4d.init(cfg)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 3\)"):
        s4d.forward(cfg, p, np.zeros((B, L, H + 1)))
    with pytest.raises(ValueError, match="u: expected shape"):
        s4d.forward(cfg, p, np.zeros((L, H)))
    with pytest.raises(ValueError, match="u: expected length >= 1"):
        s4d.forward(cfg, p, np.zeros((B, 0, H)))
    with pytest.raises(TypeError, match="u: expected a real floating"):
        s4d.forward(cfg, p, np.zeros((B, L, H), dtype=np.int64))
    with pytest.raises(ValueError, match=r"state\['x'\]: expected shape \(2, 3, 3\)"):
        s4d.forward(cfg, p, _u(), state={"x": np.zeros((B, H, N), complex)})
    with pytest.raises(ValueError, match="state: expected a dict with entry 'x'"):
        s4d.step(cfg, p, {"h": 0}, np.zeros((B, H)))
    with pytest.raises(ValueError, match="u_t: expected shape"):
        s4d.step(cfg, p, s4d.initial_state(cfg, B), np.zeros((B, H + 1)))
    with pytest.raises(ValueError, match="length"):
        s4d.kernel(cfg, p, 0)
    with pytest.raises(ValueError, match=r"missing \['C_im'\] and unexpected \[\]"):
        s4d.forward(cfg, {k: v for k, v in p.items() if k != "C_im"}, _u())
    with pytest.raises(ValueError, match=r"params\['D'\]: expected shape \(3,\)"):
        s4d.forward(cfg, {**p, "D": np.zeros(H + 1)}, _u())


@pytest.mark.parametrize("mode", ["conv", "recurrent"])
def test_array_api_strict_matches_numpy(mode):
    cfg = s4d.Config(H, N, mode=mode)
    p, u = _params(cfg), _u()
    state = {"x": np.random.default_rng(2).normal(size=(B, H, N // 2)) + 0j}
    y, s = s4d.forward(cfg, p, u, state=state, return_state=True)
    ps = {k: xps.asarray(v) for k, v in p.items()}
    ys, ss = s4d.forward(cfg, ps, xps.asarray(u), state=state, return_state=True)
    np.testing.assert_allclose(np.asarray(ys), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(ss["x"]), s["x"], rtol=0, atol=1e-12)


def test_float32_input_computes_in_float32():
    cfg = s4d.Config(H, N)
    p, u = _params(cfg), _u()
    y32 = s4d.forward(cfg, p, u.astype(np.float32))
    assert y32.dtype == np.float32
    # float32 rounding through an FFT of length 2L: measured max error ~3e-7
    np.testing.assert_allclose(y32, s4d.forward(cfg, p, u), rtol=0, atol=1e-5)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_array_api_strict_step_and_kernel_match_numpy(disc):
    cfg = s4d.Config(H, N, discretization=disc)
    p, u = _params(cfg), _u()
    ps = {k: xps.asarray(v) for k, v in p.items()}
    np.testing.assert_allclose(np.asarray(s4d.kernel(cfg, ps, L)), s4d.kernel(cfg, p, L),
                               rtol=0, atol=1e-12)
    x0 = np.random.default_rng(3).normal(size=(B, H, N // 2)) + 0j
    st, sts = {"x": x0}, {"x": xps.asarray(x0)}
    for t in range(3):
        y, st = s4d.step(cfg, p, st, u[:, t])
        ys, sts = s4d.step(cfg, ps, sts, xps.asarray(u[:, t]))
        assert type(ys) is type(sts["x"]) is type(ps["D"])  # strict arrays throughout
        np.testing.assert_allclose(np.asarray(ys), y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(sts["x"]), st["x"], rtol=0, atol=1e-12)
