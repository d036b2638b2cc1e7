"""Liquid-S5 specification: p = 1 is S5, levels = brute-force expansion, streaming
(the S5 layer: test_s5_layer.py)."""

import itertools
import math

import numpy as np
import pytest
from liquidssm.spec import liquid_s5, s5


def _u(batch=2, L=5, H=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, L, H))


def _cfg(**kw):
    base = dict(d_model=3, d_state=4, blocks=1)
    base.update(kw)
    return liquid_s5.Config(**base)


def _s5cfg(cfg):
    return s5.Config(**{k: getattr(cfg, k) for k in s5.Config.__dataclass_fields__})


def _random_params(config, seed=5):
    p = liquid_s5.init(config, seed)
    rng = np.random.default_rng(seed + 1)
    p = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in p.items()}
    p["Lambda_re"] = -np.abs(p["Lambda_re"])
    # large steps so that the liquid terms are O(1) and truncation differences are visible
    p["log_step"] = rng.uniform(math.log(0.3), math.log(1.0), p["log_step"].shape)
    return p


def _coeffs(config, p, u, tau=None, reverse=False):
    """Independent discretisation of one direction: a, b, c each (batch, L, P')."""
    batch, L, _ = u.shape
    lam = p["Lambda_re"] + 1j * p["Lambda_im"]
    tau = np.ones((batch, L)) if tau is None else tau
    if reverse:
        tau = np.concatenate([tau[:, 1:], np.ones((batch, 1))], axis=1)
    dt = config.step_rescale * np.exp(p["log_step"]) * tau[..., None]
    if config.discretization == "zoh":
        a = np.exp(lam * dt)
        g = (a - 1) / lam
    else:
        a = (1 + lam * dt / 2) / (1 - lam * dt / 2)
        g = dt / (1 - lam * dt / 2)
    B = p["B_re"] + 1j * p["B_im"]
    BL = B if config.tied else p["BL_re"] + 1j * p["BL_im"]
    phi = {"none": u, "tanh": np.tanh(u), "lecun": 1.7159 * np.tanh(0.666 * u)}[config.lcontract]
    return a, g * (u @ B.T), g * (phi @ BL.T)


def _readout(config, p, xs, u):
    z = xs @ (p["C_re"] + 1j * p["C_im"]).T
    return (2 * z.real if config.conj_sym else z.real) + p["D"] * u


def brute_force_levels(a, b, c, degree):
    """Level m at k: sum_j b_j sum_{S subset of (j, k], |S| = m} prod_S c prod_(rest) a."""
    L = a.shape[0]
    lev = np.zeros((degree, L) + a.shape[1:], complex)
    for k in range(L):
        for j in range(k + 1):
            idx = range(j + 1, k + 1)
            for m in range(min(degree, len(idx) + 1)):
                for S in itertools.combinations(idx, m):
                    t = b[j].copy()
                    for i in idx:
                        t = t * (c[i] if i in S else a[i])
                    lev[m, k] += t
    return lev


def full_recurrence(a, b, c, reverse=False):
    """x_k = (a_k + c_k) x_{k-1} + b_k (x_{k+1} when reverse), untruncated."""
    L = a.shape[0]
    xs = np.zeros_like(b)
    x = np.zeros_like(b[0])
    for k in reversed(range(L)) if reverse else range(L):
        x = (a[k] + c[k]) * x + b[k]
        xs[k] = x
    return xs


# ---------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kw, arg",
    [
        (dict(liquid_degree=0), "liquid_degree"),
        (dict(liquid_degree=1.5), "liquid_degree"),
        (dict(lcontract="relu"), "lcontract"),
        (dict(tied=0), "tied"),
        (dict(d_state=5), "d_state"),
    ],
)
def test_config_rejects_bad_values(kw, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        _cfg(**kw)


def test_init_is_s5_plus_zero_untied_BL():
    cfg = _cfg(tied=False, d_state=8, blocks=2)
    p = liquid_s5.init(cfg, seed=4)
    q = s5.init(_s5cfg(cfg), seed=4)
    assert set(p) == set(q) | {"BL_re", "BL_im"}
    assert all(np.array_equal(p[k], q[k]) for k in q)
    assert p["BL_re"].shape == (4, 3) and not p["BL_re"].any() and not p["BL_im"].any()
    assert set(liquid_s5.init(_cfg())) == set(q)


def test_initial_state_has_levels():
    st = liquid_s5.initial_state(_cfg(liquid_degree=3), 2)
    assert st["x"].shape == (2, 3, 2) and st["x"].dtype == np.complex128 and not st["x"].any()


# ---------------------------------------------------------------------------------- semantics


def _s5p(cfg, p):
    """The S5 entries of a Liquid-S5 params dict (S5 checks its params exactly)."""
    return {k: p[k] for k in s5.param_shapes(_s5cfg(cfg))}


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(bidirectional=True, discretization="bilinear"),
        dict(conj_sym=False, lcontract="tanh", tied=False),
        dict(clip_eigs=True, step_rescale=0.7),
    ],
)
def test_degree_one_is_s5(kw):
    cfg = _cfg(liquid_degree=1, **kw)
    p = _random_params(cfg)
    u = _u()
    tau = np.random.default_rng(4).uniform(0.5, 2.0, u.shape[:2])
    for t in (None, tau):
        y = liquid_s5.forward(cfg, p, u, timesteps=t)
        np.testing.assert_allclose(y, s5.forward(_s5cfg(cfg), _s5p(cfg, p), u, timesteps=t),
                                   rtol=0, atol=1e-12)


def test_zero_untied_BL_is_s5_at_any_degree():
    cfg = _cfg(tied=False, liquid_degree=3)
    p = liquid_s5.init(cfg, seed=2)
    u = _u()
    np.testing.assert_allclose(
        liquid_s5.forward(cfg, p, u), s5.forward(_s5cfg(cfg), _s5p(cfg, p), u), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("degree", [2, 3])
@pytest.mark.parametrize("kw", [dict(), dict(lcontract="lecun", tied=False, conj_sym=False)])
def test_levels_equal_brute_force_expansion(degree, kw):
    cfg = _cfg(liquid_degree=degree, **kw)
    p = _random_params(cfg)
    u = _u(L=4)
    tau = np.random.default_rng(6).uniform(0.5, 2.0, u.shape[:2])
    y, st = liquid_s5.forward(cfg, p, u, return_state=True, timesteps=tau)
    a, b, c = _coeffs(cfg, p, u, tau)
    for n in range(u.shape[0]):
        lev = brute_force_levels(a[n], b[n], c[n], degree)
        np.testing.assert_allclose(st["x"][n], lev[:, -1], rtol=1e-12, atol=1e-12)
        y_ref = _readout(cfg, p, lev.sum(0), u[n])
        np.testing.assert_allclose(y[n], y_ref, rtol=1e-12, atol=1e-12)
    # the liquid terms matter: degree p differs from S5 by more than round-off
    assert np.abs(y - s5.forward(_s5cfg(cfg), _s5p(cfg, p), u, timesteps=tau)).max() > 1e-3


def test_full_degree_equals_untruncated_recurrence():
    L = 5
    cfg = _cfg(liquid_degree=L, lcontract="tanh", discretization="bilinear")
    p = _random_params(cfg)
    u = _u(L=L)
    a, b, c = _coeffs(cfg, p, u)
    y = liquid_s5.forward(cfg, p, u)
    for n in range(u.shape[0]):
        y_ref = _readout(cfg, p, full_recurrence(a[n], b[n], c[n]), u[n])
        np.testing.assert_allclose(y[n], y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use_tau", [False, True])
def test_bidirectional_reverse_has_its_own_levels(use_tau):
    L = 4
    cfg = _cfg(liquid_degree=L, bidirectional=True, tied=False)
    p = _random_params(cfg)
    u = _u(L=L)
    tau = np.random.default_rng(8).uniform(0.5, 2.0, u.shape[:2]) if use_tau else None
    af, bf, cf = _coeffs(cfg, p, u, tau)
    ar, br, cr = _coeffs(cfg, p, u, tau, reverse=True)
    y = liquid_s5.forward(cfg, p, u, timesteps=tau)
    for n in range(u.shape[0]):
        xs = np.concatenate(
            [full_recurrence(af[n], bf[n], cf[n]), full_recurrence(ar[n], br[n], cr[n], True)],
            axis=-1,
        )
        np.testing.assert_allclose(y[n], _readout(cfg, p, xs, u[n]), rtol=1e-12, atol=1e-12)
    # the reverse liquid levels are not dropped: degree 1 in the reverse half differs
    xs_lin = np.concatenate(
        [full_recurrence(af[0], bf[0], cf[0]), full_recurrence(ar[0], br[0], 0 * cr[0], True)],
        axis=-1,
    )
    assert np.abs(y[0] - _readout(cfg, p, xs_lin, u[0])).max() > 1e-3


def test_conj_sym_output_is_the_real_full_system():
    cfg = _cfg(liquid_degree=3, lcontract="tanh")
    p = _random_params(cfg)
    u = _u()
    full = {}
    for k, v in p.items():
        if k in ("D",):
            full[k] = v
        elif k.startswith("C"):
            full[k] = np.concatenate([v, -v if k.endswith("_im") else v], axis=1)
        else:
            full[k] = np.concatenate([v, -v if k.endswith("_im") else v], axis=0)
    cfg_full = _cfg(liquid_degree=3, lcontract="tanh", conj_sym=False)
    np.testing.assert_allclose(
        liquid_s5.forward(cfg_full, full, u), liquid_s5.forward(cfg, p, u), rtol=0, atol=1e-12
    )
    _, st = liquid_s5.forward(cfg_full, full, u, return_state=True)
    z = st["x"] @ (full["C_re"] + 1j * full["C_im"]).T  # every level's output is real
    assert np.abs(z.imag).max() < 1e-12 and np.abs(z.real).max() > 1e-3


# ---------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("tied", [True, False])
def test_step_and_chunks_equal_forward(tied):
    cfg = _cfg(liquid_degree=3, tied=tied, lcontract="lecun")
    p = _random_params(cfg)
    u = _u(L=6)
    tau = np.random.default_rng(1).uniform(0.5, 2.0, u.shape[:2])
    y, st = liquid_s5.forward(cfg, p, u, return_state=True, timesteps=tau)
    y1, s1 = liquid_s5.forward(cfg, p, u[:, :2], return_state=True, timesteps=tau[:, :2])
    y2, s2 = liquid_s5.forward(
        cfg, p, u[:, 2:], state=s1, return_state=True, timesteps=tau[:, 2:]
    )
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s2["x"], st["x"], rtol=1e-12, atol=1e-12)
    state = liquid_s5.initial_state(cfg, 2)
    ys = []
    for k in range(u.shape[1]):
        yk, state = liquid_s5.step(cfg, p, state, u[:, k], timesteps=tau[:, k])
        ys.append(yk)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-12)


def test_errors():
    cfg = _cfg(liquid_degree=2, tied=False)
    p = liquid_s5.init(cfg)
    u = _u()
    with pytest.raises(ValueError, match="missing.*BL_im"):
        liquid_s5.forward(cfg, {k: v for k, v in p.items() if k != "BL_im"}, u)
    with pytest.raises(ValueError, match=r"state\['x'\]: expected shape \(2, 2, 2\)"):
        liquid_s5.forward(cfg, p, u, state=s5.initial_state(_s5cfg(cfg), 2))
    with pytest.raises(ValueError, match=r"state: expected a dict with key 'x' of shape"):
        liquid_s5.forward(cfg, p, u, state={"levels": np.zeros((2, 2, 2), complex)})
    bcfg = _cfg(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        liquid_s5.step(bcfg, liquid_s5.init(bcfg), liquid_s5.initial_state(bcfg, 2), u[:, 0])
    with pytest.raises(TypeError, match="config: expected liquidssm.spec.s5.Config"):
        s5.forward(cfg, p, u)
    with pytest.raises(TypeError, match="config: expected liquidssm.spec.liquid_s5.Config"):
        liquid_s5.forward(_s5cfg(cfg), _s5p(cfg, p), u)


def test_forward_under_array_api_strict():
    xp = pytest.importorskip("array_api_strict")
    cfg = _cfg(liquid_degree=3, tied=False, lcontract="tanh", bidirectional=True)
    p = _random_params(cfg)
    u = _u()
    tau = np.random.default_rng(3).uniform(0.5, 2.0, u.shape[:2])
    y = liquid_s5.forward(
        cfg, {k: xp.asarray(v) for k, v in p.items()}, xp.asarray(u), timesteps=xp.asarray(tau)
    )
    ref = liquid_s5.forward(cfg, p, u, timesteps=tau)
    np.testing.assert_allclose(np.asarray(y), ref, atol=1e-13)
