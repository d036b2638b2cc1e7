"""Tests of the Mamba mixer (liquidssm.spec.mamba); its block and LM: test_mamba_block.py,
test_mamba_lm.py."""

import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import mamba

B, L, M = 2, 9, 4
CFG = mamba.Config(d_model=M, d_state=3, d_conv=4, expand=2, bias=True)


def _u(seed=1, length=L, batch=B):
    return np.random.default_rng(seed).normal(size=(batch, length, M))


def _silu(x):
    return x / (1 + np.exp(-x))


def _softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _oracle(config, p, u):
    """mamba_simple.Mamba's slow path in plain NumPy: np.convolve for the causal depthwise conv
    (torch's cross-correlation with padding d_conv - 1, cut to L) and an explicit time loop."""
    d, n, r, L_ = config.d_inner, config.d_state, config.dt_rank, u.shape[1]
    xz = u @ p["in_proj.weight"].T + p.get("in_proj.bias", 0.0)
    x, z = xz[..., :d], xz[..., d:]
    conv = np.stack([np.stack([np.convolve(x[b, :, c], p["conv1d.weight"][c, 0, ::-1])[:L_]
                               for c in range(d)], -1) for b in range(u.shape[0])])
    x = _silu(conv + p.get("conv1d.bias", 0.0))
    dbl = x @ p["x_proj.weight"].T
    dt = _softplus(dbl[..., :r] @ p["dt_proj.weight"].T + p["dt_proj.bias"])
    Bm, Cm, A = dbl[..., r:r + n], dbl[..., r + n:r + 2 * n], -np.exp(p["A_log"])
    h, ys = np.zeros((u.shape[0], d, n)), []
    for t in range(L_):
        dtt = dt[:, t, :, None]
        h = np.exp(dtt * A) * h + dtt * Bm[:, t, None] * x[:, t, :, None]
        ys.append((h * Cm[:, t, None]).sum(-1) + p["D"] * x[:, t])
    y = np.stack(ys, 1) * _silu(z)
    return y @ p["out_proj.weight"].T + p.get("out_proj.bias", 0.0)


# ---------------------------------------------------------------------------------------------
# Config and init


def test_config_defaults_and_dt_rank():
    c = mamba.Config(d_model=33)
    assert (c.d_state, c.d_conv, c.expand, c.dt_rank, c.d_inner) == (16, 4, 2, 3, 66)
    assert (c.dt_min, c.dt_max, c.dt_init_floor, c.conv_bias, c.bias) == (1e-3, 0.1, 1e-4,
                                                                          True, False)
    assert mamba.Config(d_model=33, dt_rank=5).dt_rank == 5


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"d_model": 0}, ValueError, "d_model"),
    ({"d_model": 4.0}, TypeError, "d_model"),
    ({"d_model": 4, "dt_rank": "big"}, ValueError, "dt_rank"),
    ({"d_model": 4, "dt_min": 0.2}, ValueError, "dt_min"),
    ({"d_model": 4, "dt_init": "zeros"}, ValueError, "dt_init"),
    ({"d_model": 4, "bias": 1}, TypeError, "bias"),
])
def test_config_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        mamba.Config(**kwargs)


def test_init_as_published():
    c = mamba.Config(d_model=32, d_state=5, dt_min=2e-3, dt_max=0.05)
    p = mamba.init(c, seed=3)
    assert {k: v.shape for k, v in p.items()} == mamba.param_shapes(c)
    assert list(p) == ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                       "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"]
    assert all(v.dtype == np.float64 for v in p.values())
    np.testing.assert_array_equal(p["A_log"], np.log(np.tile(np.arange(1.0, 6.0), (64, 1))))
    np.testing.assert_array_equal(p["D"], np.ones(64))
    dt = np.log1p(np.exp(p["dt_proj.bias"]))  # softplus inverts the stored inverse softplus
    assert dt.min() >= 2e-3 * (1 - 1e-12) and dt.max() <= 0.05 * (1 + 1e-12)
    assert np.abs(p["dt_proj.weight"]).max() <= c.dt_rank**-0.5
    assert np.abs(p["in_proj.weight"]).max() <= 32**-0.5
    assert np.abs(p["conv1d.weight"]).max() <= 0.5 and np.abs(p["x_proj.weight"]).max() <= 64**-0.5
    for k, v in mamba.init(c, seed=3).items():
        np.testing.assert_array_equal(v, p[k])
    assert not np.array_equal(mamba.init(c, seed=4)["in_proj.weight"], p["in_proj.weight"])
    const = mamba.init(mamba.Config(d_model=32, dt_init="constant", dt_scale=2.0))
    np.testing.assert_allclose(const["dt_proj.weight"], np.full((64, 2), math.sqrt(2)), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# Forward, step, state


@pytest.mark.parametrize("config", [CFG, mamba.Config(d_model=M, d_state=2, d_conv=2,
                                                      conv_bias=False, dt_rank=3)])
def test_forward_matches_published_slow_path(config):
    p = mamba.init(config, seed=2)
    u = _u()
    np.testing.assert_allclose(mamba.forward(config, p, u), _oracle(config, p, u),
                               rtol=1e-12, atol=1e-13)


def test_step_repeated_equals_forward():
    p, u = mamba.init(CFG), _u()
    y, final = mamba.forward(CFG, p, u, return_state=True)
    state, ys = mamba.initial_state(CFG, B), []
    for t in range(L):
        yt, state = mamba.step(CFG, p, state, u[:, t])
        ys.append(yt)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-14)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("prefill", [2, 6])  # shorter and longer than d_conv = 4
def test_prefill_then_step_equals_forward(prefill):
    p, u = mamba.init(CFG, seed=5), _u(seed=6)
    y = mamba.forward(CFG, p, u)
    y0, state = mamba.forward(CFG, p, u[:, :prefill], return_state=True)
    np.testing.assert_array_equal(state["conv_state"][..., 4 - min(prefill, 4):],
                                  (u[:, max(prefill - 4, 0):prefill] @ p["in_proj.weight"][:8].T
                                   + p["in_proj.bias"][:8]).transpose(0, 2, 1))
    ys = [y0]
    for t in range(prefill, L):
        yt, state = mamba.step(CFG, p, state, u[:, t])
        ys.append(yt[:, None])
    np.testing.assert_allclose(np.concatenate(ys, 1), y, rtol=1e-12, atol=1e-14)


def test_chunked_forward_equals_one_forward():
    p, u = mamba.init(CFG, seed=7), _u(seed=8)
    y, final = mamba.forward(CFG, p, u, return_state=True)
    state, ys = None, []
    for a, b in [(0, 2), (2, 3), (3, 8), (8, 9)]:
        yc, state = mamba.forward(CFG, p, u[:, a:b], state=state, return_state=True)
        ys.append(yc)
    np.testing.assert_allclose(np.concatenate(ys, 1), y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state["ssm_state"], final["ssm_state"], rtol=1e-12, atol=1e-14)


def test_forward_array_api_strict_matches_numpy():
    p, u = mamba.init(CFG), _u()
    ys, s = mamba.forward(CFG, {k: xps.asarray(v) for k, v in p.items()}, xps.asarray(u),
                          return_state=True)
    y, s_np = mamba.forward(CFG, p, u, return_state=True)
    np.testing.assert_allclose(np.asarray(ys), y, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.asarray(s["ssm_state"]), s_np["ssm_state"], rtol=1e-13)


def test_bad_inputs_name_the_argument():
    p, u = mamba.init(CFG), _u()
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 4\)"):
        mamba.forward(CFG, p, u[..., :3])
    with pytest.raises(TypeError, match="u: expected a real floating"):
        mamba.forward(CFG, p, u.astype(np.int64))
    missing = {k: v for k, v in p.items() if k != "A_log"}
    with pytest.raises(ValueError, match=r"missing \['A_log'\]"):
        mamba.forward(CFG, missing, u)
    with pytest.raises(ValueError, match=r"params\['D'\]: expected shape \(8,\)"):
        mamba.forward(CFG, {**p, "D": np.ones(7)}, u)
    bad = {**mamba.initial_state(CFG, B), "ssm_state": np.zeros((B, 8, 4))}
    with pytest.raises(ValueError, match=r"state\['ssm_state'\]: expected shape \(2, 8, 3\)"):
        mamba.forward(CFG, p, u, state=bad)
    with pytest.raises(ValueError, match="state: expected a key 'conv_state'"):
        mamba.step(CFG, p, {"ssm_state": np.zeros((B, 8, 3))}, u[:, 0])
    with pytest.raises(ValueError, match="u_t: expected shape"):
        mamba.step(CFG, p, mamba.initial_state(CFG, B), u)
    with pytest.raises(TypeError, match="config: expected a liquidssm.spec.mamba.Config"):
        mamba.forward({"d_model": 4}, p, u)
