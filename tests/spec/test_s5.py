"""S5 specification: init, forward against an explicit loop, timesteps, streaming
(the S5 layer: test_s5_layer.py)."""

import math

import numpy as np
import pytest
from liquidssm.spec import hippo, s5


def _u(batch=2, L=6, H=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, L, H))


def _cfg(**kw):
    base = dict(d_model=3, d_state=8, blocks=2)
    base.update(kw)
    return s5.Config(**base)


def _random_params(config, seed=5):
    """Init, then perturb every parameter so that no structure of the init hides a bug."""
    p = s5.init(config, seed)
    rng = np.random.default_rng(seed + 1)
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in p.items()}
    p["Lambda_re"] = -np.abs(p["Lambda_re"])
    p["log_step"] = rng.uniform(math.log(0.05), math.log(0.5), p["log_step"].shape)
    return p


def _disc(lam, dt, method):
    """Independent discretisation: (Lambdabar, gamma) elementwise."""
    if method == "zoh":
        ab = np.exp(lam * dt)
        return ab, (ab - 1) / lam
    return (1 + lam * dt / 2) / (1 - lam * dt / 2), dt / (1 - lam * dt / 2)


def reference(config, p, u, tau=None, x0=None):
    """Plain loop over time with explicit Bbar matrices per position."""
    batch, L, H = u.shape
    re = np.minimum(p["Lambda_re"], -1e-4) if config.clip_eigs else p["Lambda_re"]
    lam = re + 1j * p["Lambda_im"]
    Bt = p["B_re"] + 1j * p["B_im"]
    C = p["C_re"] + 1j * p["C_im"]
    dt = config.step_rescale * np.exp(p["log_step"])
    tau = np.ones((batch, L)) if tau is None else tau
    Pp = lam.shape[0]
    ys = np.zeros((batch, L, H))
    xL = np.zeros((batch, Pp), complex)
    for n in range(batch):
        xf = np.zeros((L, Pp), complex)
        x = np.zeros(Pp, complex) if x0 is None else x0[n]
        for k in range(L):
            ab, g = _disc(lam, dt * tau[n, k], config.discretization)
            x = ab * x + (g[:, None] * Bt) @ u[n, k]
            xf[k] = x
        xL[n] = x
        xs = xf
        if config.bidirectional:
            xb = np.zeros((L, Pp), complex)
            x = np.zeros(Pp, complex)
            for k in reversed(range(L)):
                t = tau[n, k + 1] if k + 1 < L else 1.0
                ab, g = _disc(lam, dt * t, config.discretization)
                x = ab * x + (g[:, None] * Bt) @ u[n, k]
                xb[k] = x
            xs = np.concatenate([xf, xb], axis=1)
        z = xs @ C.T
        ys[n] = (2 * z.real if config.conj_sym else z.real) + p["D"] * u[n]
    return ys, xL


# ---------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kw, arg",
    [
        (dict(d_model=0), "d_model"),
        (dict(d_state=6, blocks=4), "blocks"),
        (dict(d_state=9, blocks=3), "d_state"),  # odd block size with conj_sym
        (dict(C_init="normal"), "C_init"),
        (dict(discretization="euler"), "discretization"),
        (dict(dt_min=-1.0), "dt_min"),
        (dict(dt_min=0.2, dt_max=0.1), "dt_max"),
        (dict(step_rescale=0.0), "step_rescale"),
        (dict(conj_sym=1), "conj_sym"),
        (dict(bidirectional="yes"), "bidirectional"),
    ],
)
def test_config_rejects_bad_values(kw, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        _cfg(**kw)


def test_config_odd_blocks_ok_without_conj_sym():
    assert _cfg(d_state=6, blocks=3, conj_sym=False).n_modes == 6


# ---------------------------------------------------------------------------------- init


@pytest.mark.parametrize("conj_sym", [True, False])
def test_hippo_n_diagonalises_normal_part(conj_sym):
    N = 8
    A, _, P = hippo.legs(N)
    S = A + np.outer(P, P)
    lam, V = s5.hippo_n(N, conj_sym)
    assert lam.shape == (N // 2 if conj_sym else N,)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-14)
    np.testing.assert_allclose(S @ V, V * lam, atol=1e-12)
    np.testing.assert_allclose(V.conj().T @ V, np.eye(lam.shape[0]), atol=1e-12)
    if conj_sym:  # the published order keeps the negative frequencies
        assert np.all(lam.imag < 0)


def test_init_shapes_dtypes_determinism():
    cfg = _cfg(bidirectional=True)
    p = s5.init(cfg, seed=3)
    assert {k: v.shape for k, v in p.items()} == s5.param_shapes(cfg)
    assert p["C_re"].shape == (3, 8)
    assert all(v.dtype == np.float64 for v in p.values())
    q = s5.init(cfg, seed=3)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    r = s5.init(cfg, seed=4)
    assert not np.array_equal(p["B_re"], r["B_re"])


def test_init_follows_published_construction():
    cfg = _cfg(d_state=12, blocks=3, d_model=4)
    p = s5.init(cfg)
    lam, _ = s5.hippo_n(4)
    np.testing.assert_allclose(p["Lambda_re"], -0.5)
    np.testing.assert_array_equal(p["Lambda_im"], np.tile(lam.imag, 3))
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    assert np.all((p["log_step"] >= lo) & (p["log_step"] <= hi))
    assert p["log_step"].shape == (6,)


def test_init_B_is_V_star_of_a_real_truncated_lecun_matrix():
    # Without conj_sym and with one block V is unitary, so B = V Btilde must be the real sample,
    # bounded by the truncation 2 * sqrt(1/P) / 0.8796.
    P, H = 8, 5
    cfg = _cfg(d_state=P, blocks=1, d_model=H, conj_sym=False)
    p = s5.init(cfg)
    _, V = s5.hippo_n(P, conj_sym=False)
    B = V @ (p["B_re"] + 1j * p["B_im"])
    assert np.abs(B.imag).max() < 1e-12
    assert np.abs(B.real).max() <= 2 * math.sqrt(1 / P) / 0.87962566103423978
    assert np.abs(B.real).max() > 0.5 * math.sqrt(1 / P)


def test_init_C_is_a_truncated_sample_times_V():
    # conj_sym=False, one block: C = Ctilde V^*; trunc_standard_normal draws each row with
    # fan_in P, lecun_normal the whole (H, P, 2) with fan_in P * H (jax's variance_scaling).
    P, H = 8, 5
    bound = 2 / 0.87962566103423978
    _, V = s5.hippo_n(P, conj_sym=False)
    for C_init, fan_in in [("trunc_standard_normal", P), ("lecun_normal", P * H)]:
        p = s5.init(_cfg(d_state=P, blocks=1, d_model=H, conj_sym=False, C_init=C_init))
        C = (p["C_re"] + 1j * p["C_im"]) @ V.conj().T
        m = max(np.abs(C.real).max(), np.abs(C.imag).max())
        assert 0.6 * bound / math.sqrt(fan_in) < m <= bound / math.sqrt(fan_in)


@pytest.mark.parametrize("C_init", s5.C_INITS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_init_C_shapes(C_init, bidirectional):
    cfg = _cfg(C_init=C_init, bidirectional=bidirectional)
    p = s5.init(cfg)
    w = 8 if bidirectional else 4
    assert p["C_re"].shape == p["C_im"].shape == (3, w)
    assert np.all(np.isfinite(p["C_re"])) and np.abs(p["C_im"]).max() > 0


# ---------------------------------------------------------------------------------- forward


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(discretization="bilinear"),
        dict(conj_sym=False),
        dict(step_rescale=2.5, C_init="complex_normal"),
        dict(bidirectional=True),
        dict(bidirectional=True, conj_sym=False, discretization="bilinear"),
    ],
)
def test_forward_matches_loop(kw):
    cfg = _cfg(**kw)
    p = _random_params(cfg)
    u = _u()
    y_ref, _ = reference(cfg, p, u)
    np.testing.assert_allclose(s5.forward(cfg, p, u), y_ref, rtol=1e-12, atol=1e-12)


def test_clip_eigs_clips_unstable_modes():
    cfg = _cfg(clip_eigs=True)
    p = _random_params(cfg)
    p["Lambda_re"] = np.array([0.3, -0.2, 1e-6, -1e-5])
    u = _u()
    y_ref, _ = reference(cfg, p, u)
    np.testing.assert_allclose(s5.forward(cfg, p, u), y_ref, rtol=1e-12, atol=1e-12)
    y_noclip = s5.forward(_cfg(), p, u)
    assert np.abs(y_noclip - y_ref).max() > 1e-6


@pytest.mark.parametrize("bidirectional", [False, True])
def test_conj_sym_equals_full_system_with_conjugate_modes(bidirectional):
    cfg = _cfg(bidirectional=bidirectional)
    p = _random_params(cfg)
    u = _u()
    Pp = cfg.n_modes

    def pair_c(part, sign):  # (H, P') -> (H, 2P'): the modes and their conjugates
        return np.concatenate([part, sign * part], axis=1)

    def full_c(name, sign):  # bidirectional C = [C_fwd | C_bwd]: each half gets its conjugates
        v = p[name]
        halves = [v[:, :Pp], v[:, Pp:]] if bidirectional else [v]
        return np.concatenate([pair_c(h, sign) for h in halves], axis=1)

    full = {
        "Lambda_re": np.concatenate([p["Lambda_re"]] * 2),
        "Lambda_im": np.concatenate([p["Lambda_im"], -p["Lambda_im"]]),
        "B_re": np.concatenate([p["B_re"]] * 2),
        "B_im": np.concatenate([p["B_im"], -p["B_im"]]),
        "C_re": full_c("C_re", 1),
        "C_im": full_c("C_im", -1),
        "D": p["D"],
        "log_step": np.concatenate([p["log_step"]] * 2),
    }
    cfg_full = _cfg(conj_sym=False, bidirectional=bidirectional)
    y_half = s5.forward(cfg, p, u)
    np.testing.assert_allclose(s5.forward(cfg_full, full, u), y_half, rtol=1e-12, atol=1e-12)

    # and the full system's complex output C x has no imaginary part, in both directions:
    # Im(C x) = Re(-i C x) is the real readout of C' = C_im - i C_re with D = 0
    def imag_part(params):
        return s5.forward(cfg_full, {**params, "C_re": params["C_im"], "C_im": -params["C_re"],
                                     "D": np.zeros_like(params["D"])}, u)

    assert np.abs(imag_part(full)).max() < 1e-12
    # (the check can fail: without the conjugate pairing of C the output is not real)
    broken = {**full, "C_im": np.concatenate([p["C_im"]] * 2, axis=1)}
    assert np.abs(imag_part(broken)).max() > 1e-3
    if not bidirectional:
        _, xs = s5.forward(cfg_full, full, u[:, :1], return_state=True)
        z = xs["x"] @ (full["C_re"] + 1j * full["C_im"]).T
        assert np.abs(z.imag).max() < 1e-12


# ---------------------------------------------------------------------------------- timesteps


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_timesteps_one_is_exactly_plain(bidirectional, disc):
    cfg = _cfg(bidirectional=bidirectional, discretization=disc)
    p = _random_params(cfg)
    u = _u()
    np.testing.assert_array_equal(
        s5.forward(cfg, p, u, timesteps=np.ones(u.shape[:2])), s5.forward(cfg, p, u)
    )


@pytest.mark.parametrize("bidirectional", [False, True])
def test_timesteps_discretise_per_position(bidirectional):
    cfg = _cfg(bidirectional=bidirectional, step_rescale=1.5)
    p = _random_params(cfg)
    u = _u()
    tau = np.random.default_rng(9).uniform(0.1, 3.0, u.shape[:2])
    y_ref, _ = reference(cfg, p, u, tau)
    y = s5.forward(cfg, p, u, timesteps=tau)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    assert np.abs(y - s5.forward(cfg, p, u)).max() > 1e-3


def test_constant_timesteps_equal_step_rescale():
    cfg = _cfg()
    p = _random_params(cfg)
    u = _u()
    y2 = s5.forward(_cfg(step_rescale=2.0), p, u)
    np.testing.assert_allclose(
        s5.forward(cfg, p, u, timesteps=np.full(u.shape[:2], 2.0)), y2, rtol=1e-13, atol=1e-13
    )


# ---------------------------------------------------------------------------------- streaming


def test_chunked_forward_and_step_equal_one_forward():
    cfg = _cfg(discretization="bilinear")
    p = _random_params(cfg)
    u = _u(L=7)
    tau = np.random.default_rng(2).uniform(0.5, 2.0, u.shape[:2])
    y, st = s5.forward(cfg, p, u, return_state=True, timesteps=tau)
    _, x_ref = reference(cfg, p, u, tau)
    np.testing.assert_allclose(st["x"], x_ref, rtol=1e-12, atol=1e-12)
    y1, s1 = s5.forward(cfg, p, u[:, :3], return_state=True, timesteps=tau[:, :3])
    y2, s2 = s5.forward(cfg, p, u[:, 3:], state=s1, return_state=True, timesteps=tau[:, 3:])
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2["x"], st["x"], rtol=1e-12, atol=1e-12)
    state = s5.initial_state(cfg, 2)
    ys = []
    for k in range(u.shape[1]):
        yk, state = s5.step(cfg, p, state, u[:, k], timesteps=tau[:, k])
        ys.append(yk)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-12)


def test_initial_state_is_zero_and_default():
    cfg = _cfg()
    st = s5.initial_state(cfg, 3)
    assert st["x"].shape == (3, 4) and st["x"].dtype == np.complex128 and not st["x"].any()
    p = _random_params(cfg)
    u = _u(batch=3)
    np.testing.assert_array_equal(s5.forward(cfg, p, u, state=st), s5.forward(cfg, p, u))


def test_bidirectional_cannot_stream():
    cfg = _cfg(bidirectional=True)
    p = s5.init(cfg)
    u = _u()
    with pytest.raises(ValueError, match="bidirectional"):
        s5.forward(cfg, p, u, return_state=True)
    with pytest.raises(ValueError, match="bidirectional"):
        s5.forward(cfg, p, u, state={"x": np.zeros((2, 4), complex)})
    with pytest.raises(ValueError, match="bidirectional"):
        s5.step(cfg, p, {"x": np.zeros((2, 4), complex)}, u[:, 0])


# ---------------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_argument():
    cfg = _cfg()
    p = s5.init(cfg)
    u = _u()
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 3\)"):
        s5.forward(cfg, p, u[..., :2])
    with pytest.raises(TypeError, match="u: expected a real floating dtype"):
        s5.forward(cfg, p, u.astype(np.int64))
    with pytest.raises(ValueError, match="missing.*'D'"):
        s5.forward(cfg, {k: v for k, v in p.items() if k != "D"}, u)
    with pytest.raises(ValueError, match=r"params\['B_re'\]: expected shape \(4, 3\)"):
        s5.forward(cfg, {**p, "B_re": p["B_re"][:, :2]}, u)
    with pytest.raises(ValueError, match=r"timesteps: expected shape \(2, 6\)"):
        s5.forward(cfg, p, u, timesteps=np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"state\['x'\]: expected shape \(2, 4\)"):
        s5.forward(cfg, p, u, state={"x": np.zeros((2, 3), complex)})
    with pytest.raises(TypeError, match="state: expected a dict"):
        s5.forward(cfg, p, u, state=np.zeros((2, 4)))
    # a dict without 'x' is a bad value (ValueError, as S4), not a bad type
    with pytest.raises(ValueError, match=r"state: expected a dict with key 'x' .*got keys \['h'\]"):
        s5.forward(cfg, p, u, state={"h": np.zeros((2, 4), complex)})
    with pytest.raises(ValueError, match=r"state: expected a dict with key 'x'"):
        s5.step(cfg, p, {}, u[:, 0])
    # a non-array parameter is named, with what was expected
    with pytest.raises(TypeError, match=r"params\['D'\]: expected an array of shape \(3,\), got an"
                                        " object of type list"):
        s5.forward(cfg, {**p, "D": [0.0, 0.0, 0.0]}, u)
    with pytest.raises(TypeError, match=r"params: expected a dict of arrays .*got list"):
        s5.forward(cfg, list(p.values()), u)
    with pytest.raises(ValueError, match=r"u_t: expected shape \(batch, 3\)"):
        s5.step(cfg, p, s5.initial_state(cfg, 2), u)
    with pytest.raises(TypeError, match="config: expected"):
        s5.forward("cfg", p, u)


def test_extra_params_keys_are_refused():
    # every variant checks params exactly (a stray key must never change an output)
    cfg = _cfg()
    p, u = _random_params(cfg), _u()
    extra = {**p, "note": "not an array", 3: None, "norm_weight": np.ones(3)}
    with pytest.raises(ValueError, match=r"unexpected \['norm_weight', 'note', 3\]"):
        s5.forward(cfg, extra, u)
    with pytest.raises(ValueError, match=r"unexpected \['norm_weight', 'note', 3\]"):
        s5.step(cfg, extra, s5.initial_state(cfg, 2), u[:, 0])


# ---------------------------------------------------------------------------------- array API


def test_forward_under_array_api_strict():
    xp = pytest.importorskip("array_api_strict")
    cfg = _cfg(bidirectional=True, discretization="bilinear", clip_eigs=True)
    p = _random_params(cfg)
    u = _u()
    tau = np.random.default_rng(3).uniform(0.5, 2.0, u.shape[:2])
    y = s5.forward(
        cfg, {k: xp.asarray(v) for k, v in p.items()}, xp.asarray(u), timesteps=xp.asarray(tau)
    )
    np.testing.assert_allclose(np.asarray(y), s5.forward(cfg, p, u, timesteps=tau), atol=1e-13)


def test_forward_float32_stays_float32():
    cfg = _cfg()
    p = _random_params(cfg)
    u = _u()
    y = s5.forward(cfg, {k: v.astype(np.float32) for k, v in p.items()}, u.astype(np.float32))
    assert y.dtype == np.float32
    # float32 round-off over 6 steps of a (3 x 4) system: measured ~2e-6 relative
    np.testing.assert_allclose(y, s5.forward(cfg, p, u), rtol=1e-4, atol=1e-4)
