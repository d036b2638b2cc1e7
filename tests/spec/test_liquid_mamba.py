"""Tests of the LiquidMamba block (liquidssm.spec.liquid_mamba)."""

import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import liquid_mamba as lm
from liquidssm.spec import mamba
from liquidssm.spec.nn import rms_norm
from liquidssm.spec.selective import selective_scan

B, L, M = 2, 8, 4
# dt in [0.1, 1] (and projections scaled in _params) so the liquid levels matter: at the published
# init (dt <= 0.1) the p = 2 term changes the block output by ~1e-7 only (measured).
SMALL = {"d_model": M, "d_state": 3, "dt_min": 0.1, "dt_max": 1.0}
ABLATED = lm.Config(**SMALL, liquid_degree=1, conv="plain", ffn="none")
VARIANTS = [
    lm.Config(**SMALL),  # the paper's block: p = 2, gated conv, SwiGLU FFN
    lm.Config(**SMALL, liquid_degree=3, tied=False, lcontract="tanh", ffn="gelu", bias=True,
              ffn_expand=1.5),
    lm.Config(**SMALL, liquid_degree=2, conv="plain", ffn="none", lcontract="lecun",
              conv_bias=False, d_conv=2),
]


def _u(seed=1, length=L):
    return np.random.default_rng(seed).normal(size=(B, length, M))


def _params(config, seed=0):
    """init, with non-trivial norm weights and in_proj, x_proj scaled by 3 (liquid term of the
    order of the output: 0.15 vs 0.8 measured in test_liquid_term_is_active...)."""
    p = lm.init(config, seed)
    p["mixer.in_proj.weight"] = 3 * p["mixer.in_proj.weight"]
    p["mixer.x_proj.weight"] = 3 * p["mixer.x_proj.weight"]
    rng = np.random.default_rng(seed + 100)
    for k in ("norm.weight", "norm2.weight"):
        if k in p:
            p[k] = rng.uniform(0.5, 1.5, M)
    return p


def _mixer(p):
    return {k[len("mixer."):]: v for k, v in p.items() if k.startswith("mixer.")}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------------------------------------
# Config and init


def test_config_defaults():
    c = lm.Config(d_model=8)
    assert (c.liquid_degree, c.tied, c.lcontract, c.conv, c.ffn) == (2, True, "none", "gated",
                                                                      "swiglu")
    assert (c.d_ffn, c.dt_rank, c.d_inner, c.norm_epsilon) == (32, 1, 16, 1e-5)
    assert lm.mamba_config(c) == mamba.Config(d_model=8)


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"liquid_degree": 0}, ValueError, "liquid_degree"),
    ({"tied": 1}, TypeError, "tied"),
    ({"lcontract": "relu"}, ValueError, "lcontract"),
    ({"conv": "dilated"}, ValueError, "conv"),
    ({"ffn": "relu"}, ValueError, "ffn"),
    ({"ffn_expand": 0.1}, ValueError, "ffn_expand"),
    ({"d_state": 0}, ValueError, "d_state"),
])
def test_config_errors(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        lm.Config(**{**SMALL, **kwargs})


@pytest.mark.parametrize("config", [ABLATED, *VARIANTS])
def test_init_shapes_and_mamba_prefix(config):
    p = lm.init(config, seed=4)
    assert {k: v.shape for k, v in p.items()} == lm.param_shapes(config)
    assert all(v.dtype == np.float64 for v in p.values())
    ref = mamba.init(lm.mamba_config(config), seed=4)
    n = ref["x_proj.weight"].shape[0]
    for k, v in ref.items():  # the mixer's draws come first, exactly as mamba.init's
        got = p["mixer." + k][:n] if k == "x_proj.weight" else p["mixer." + k]
        np.testing.assert_array_equal(got, v)
    assert p["mixer.x_proj.weight"].shape[0] == n + (0 if config.tied else config.d_state)
    if config.conv == "gated":
        assert np.abs(p["mixer.conv1d_gate.weight"]).max() <= config.d_conv**-0.5
    if config.ffn != "none":
        np.testing.assert_array_equal(p["norm2.weight"], 1.0)
        assert np.abs(p["mlp.fc2.weight"]).max() <= config.d_ffn**-0.5


# ---------------------------------------------------------------------------------------------
# The ablated block is the Mamba block


def test_ablated_block_equals_mamba_block_exactly():
    p, u = _params(ABLATED, seed=3), _u()
    mc, mix = lm.mamba_config(ABLATED), _mixer(p)
    y, s = lm.forward(ABLATED, p, u, return_state=True)
    ym, sm = mamba.forward(mc, mix, rms_norm(u, p["norm.weight"], 1e-5), return_state=True)
    # same operations in the same order (liquid_selective_scan at p = 1 is selective_scan)
    np.testing.assert_array_equal(y, u + ym)
    np.testing.assert_array_equal(s["ssm_state"][:, 0], sm["ssm_state"])
    np.testing.assert_array_equal(s["conv_state"], sm["conv_state"])
    yt, _ = lm.step(ABLATED, p, s, u[:, 0])
    ymt, _ = mamba.step(mc, mix, sm, rms_norm(u[:, 0], p["norm.weight"], 1e-5))
    np.testing.assert_allclose(yt, u[:, 0] + ymt, rtol=1e-13, atol=1e-15)


def test_liquid_term_is_active_and_vanishes_with_zero_BL():
    u = _u(seed=2)
    c2 = lm.Config(**SMALL, liquid_degree=2, conv="plain", ffn="none")
    p = _params(c2, seed=1)
    diff = np.abs(lm.forward(c2, p, u) - lm.forward(ABLATED, p, u)).max()
    assert diff > 1e-2
    untied = lm.Config(**SMALL, liquid_degree=3, tied=False, lcontract="tanh", conv="plain",
                       ffn="none")
    q = dict(p)
    q["mixer.x_proj.weight"] = np.concatenate([p["mixer.x_proj.weight"], np.zeros((3, 8))])
    # BL = 0 -> c_t = Delta_t tanh(0) = 0: levels 1, 2 stay 0 and the block is the p = 1 block
    np.testing.assert_array_equal(lm.forward(untied, q, u), lm.forward(ABLATED, p, u))


def test_untied_BL_equal_to_B_is_the_tied_block():
    tied = lm.Config(**SMALL, liquid_degree=2, ffn="none")
    untied = lm.Config(**SMALL, liquid_degree=2, tied=False, ffn="none")
    p, u = _params(tied, seed=5), _u(seed=6)
    W = p["mixer.x_proj.weight"]
    r = tied.dt_rank
    q = {**p, "mixer.x_proj.weight": np.concatenate([W, W[r:r + 3]])}
    np.testing.assert_allclose(lm.forward(untied, q, u), lm.forward(tied, p, u),
                               rtol=1e-13, atol=1e-15)
    q["mixer.x_proj.weight"] = np.concatenate([W, -W[r:r + 3]])
    assert np.abs(lm.forward(untied, q, u) - lm.forward(tied, p, u)).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Gated convolution and FFN against direct formulas


def _conv(x, w, b):
    """Causal depthwise conv with np.convolve: x (b, L, d), w (d, 1, K), b (d,)."""
    n = x.shape[1]
    y = np.stack([np.stack([np.convolve(x[i, :, c], w[c, 0, ::-1])[:n] for c in range(x.shape[2])],
                           -1) for i in range(x.shape[0])])
    return y + b


def test_gated_conv_block_matches_formula():
    c = lm.Config(**SMALL, liquid_degree=1, conv="gated", ffn="none")
    p, u = _params(c, seed=7), _u(seed=8)
    m, d, r, n = _mixer(p), c.d_inner, c.dt_rank, c.d_state
    xz = rms_norm(u, p["norm.weight"]) @ m["in_proj.weight"].T
    x, z = xz[..., :d], xz[..., d:]
    xc = _conv(x, m["conv1d.weight"], m["conv1d.bias"]) * _sigmoid(
        _conv(x, m["conv1d_gate.weight"], m["conv1d_gate.bias"]))
    dbl = xc @ m["x_proj.weight"].T
    T = (0, 2, 1)
    y = selective_scan(xc.transpose(T), (dbl[..., :r] @ m["dt_proj.weight"].T).transpose(T),
                       -np.exp(m["A_log"]), dbl[..., r:r + n].transpose(T),
                       dbl[..., r + n:].transpose(T), m["D"], z=z.transpose(T),
                       delta_bias=m["dt_proj.bias"], delta_softplus=True)
    expected = u + y.transpose(T) @ m["out_proj.weight"].T
    np.testing.assert_allclose(lm.forward(c, p, u), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ffn", ["swiglu", "gelu"])
def test_ffn_sublayer_matches_formula(ffn):
    c = lm.Config(**SMALL, ffn=ffn, bias=True, ffn_expand=2)
    p, u = _params(c, seed=9), _u(seed=10)
    no_ffn = lm.Config(**SMALL, ffn="none", bias=True)
    x1 = lm.forward(no_ffn, {k: v for k, v in p.items() if k in lm.param_shapes(no_ffn)}, u)
    a = rms_norm(x1, p["norm2.weight"]) @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]
    if ffn == "swiglu":
        a = a[..., :8] * a[..., 8:] * _sigmoid(a[..., 8:])
    else:
        a = 0.5 * a * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
    expected = x1 + a @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    np.testing.assert_allclose(lm.forward(c, p, u), expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Step, chunks, array API


@pytest.mark.parametrize("config", VARIANTS)
def test_prefill_then_step_equals_forward(config):
    p, u = _params(config, seed=11), _u(seed=12)
    y, final = lm.forward(config, p, u, return_state=True)
    y0, state = lm.forward(config, p, u[:, :3], return_state=True)
    assert state["ssm_state"].shape == (B, config.liquid_degree, 8, 3)
    ys = [y0]
    for t in range(3, L):
        yt, state = lm.step(config, p, state, u[:, t])
        ys.append(yt[:, None])
    np.testing.assert_allclose(np.concatenate(ys, 1), y, rtol=1e-12, atol=1e-14)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("config", VARIANTS[:2])
def test_chunked_forward_equals_one_forward(config):
    p, u = _params(config, seed=13), _u(seed=14)
    y = lm.forward(config, p, u)
    state, ys = lm.initial_state(config, B), []
    for a, b in [(0, 1), (1, 5), (5, 8)]:
        yc, state = lm.forward(config, p, u[:, a:b], state=state, return_state=True)
        ys.append(yc)
    np.testing.assert_allclose(np.concatenate(ys, 1), y, rtol=1e-12, atol=1e-14)


def test_forward_array_api_strict_matches_numpy():
    c = VARIANTS[1]
    p, u = _params(c, seed=15), _u(seed=16)
    ys = lm.forward(c, {k: xps.asarray(v) for k, v in p.items()}, xps.asarray(u))
    np.testing.assert_allclose(np.asarray(ys), lm.forward(c, p, u), rtol=1e-13, atol=1e-15)


def test_bad_inputs_name_the_argument():
    c = VARIANTS[0]
    p, u = _params(c), _u()
    gate_missing = {k: v for k, v in p.items() if "gate" not in k}
    with pytest.raises(ValueError, match=r"missing \['mixer.conv1d_gate.weight', "):
        lm.forward(c, gate_missing, u)
    mamba_state = {"conv_state": np.zeros((B, 8, 4)), "ssm_state": np.zeros((B, 8, 3))}
    with pytest.raises(ValueError, match=r"state\['ssm_state'\]: expected shape \(2, 2, 8, 3\)"):
        lm.step(c, p, mamba_state, u[:, 0])
    with pytest.raises(TypeError, match="config: expected a liquidssm.spec.liquid_mamba.Config"):
        lm.forward(lm.mamba_config(c), p, u)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 4\)"):
        lm.forward(c, p, u[0])
