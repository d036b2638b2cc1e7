"""Tests of the Mamba mixer, its residual model and the Mamba LM (liquidssm.spec.mamba)."""

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
    with pytest.raises(ValueError, match="'A_log' of shape"):
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


# ---------------------------------------------------------------------------------------------
# Residual model and language model

LMC = mamba.LMConfig(d_model=M, n_layer=2, vocab_size=11, ssm_cfg={"d_state": 3})


def test_lm_config():
    assert LMC.padded_vocab_size == 16 and LMC.mixer == mamba.Config(d_model=M, d_state=3)
    assert mamba.LMConfig(d_model=768, n_layer=24, vocab_size=50277).padded_vocab_size == 50280
    with pytest.raises(ValueError, match="ssm_cfg: expected a dict with keys among"):
        mamba.LMConfig(d_model=4, n_layer=1, vocab_size=5, ssm_cfg={"d_stat": 3})
    with pytest.raises(ValueError, match="d_state"):
        mamba.LMConfig(d_model=4, n_layer=1, vocab_size=5, ssm_cfg={"d_state": 0})


def test_lm_init_names_and_published_rescaling():
    p = mamba.lm_init(LMC, seed=1)
    shapes = {"backbone." + k: s for k, s in mamba.model_param_shapes(LMC).items()}
    shapes["backbone.embedding.weight"] = (16, M)
    assert {k: v.shape for k, v in p.items()} == shapes
    assert "backbone.layers.1.mixer.A_log" in p and "backbone.norm_f.weight" in p
    assert np.abs(p["backbone.layers.0.mixer.out_proj.weight"]).max() <= 8**-0.5 / math.sqrt(2)
    biased = mamba.LMConfig(d_model=M, n_layer=1, vocab_size=4, ssm_cfg={"bias": True})
    q = mamba.lm_init(biased)
    np.testing.assert_array_equal(q["backbone.layers.0.mixer.in_proj.bias"], 0.0)
    assert np.all(q["backbone.layers.0.mixer.dt_proj.bias"] != 0)


def _lm_oracle(config, p, tokens):
    """MixerModel's Add -> RMSNorm -> Mixer ordering, then norm_f and the tied head."""
    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-5) * w

    E = p["backbone.embedding.weight"]
    hidden, residual = E[tokens], None
    for i in range(config.n_layer):
        pre = f"backbone.layers.{i}."
        residual = hidden if residual is None else hidden + residual
        mix = {k[len(pre + "mixer."):]: v for k, v in p.items() if k.startswith(pre + "mixer.")}
        hidden = mamba.forward(config.mixer, mix, norm(residual, p[pre + "norm.weight"]))
    return norm(hidden + residual, p["backbone.norm_f.weight"]) @ E.T


def test_lm_forward_matches_mixer_model_and_steps():
    p = mamba.lm_init(LMC, seed=2)
    tokens = np.array([[1, 5, 10, 0, 3, 3, 7], [2, 2, 9, 4, 6, 1, 0]])
    logits, final = mamba.lm_forward(LMC, p, tokens, return_state=True)
    assert logits.shape == (2, 7, 16)
    np.testing.assert_allclose(logits, _lm_oracle(LMC, p, tokens), rtol=1e-12, atol=1e-14)
    _, state = mamba.lm_forward(LMC, p, tokens[:, :3], return_state=True)
    steps = []
    for t in range(3, 7):
        lt, state = mamba.lm_step(LMC, p, state, tokens[:, t])
        steps.append(lt)
    np.testing.assert_allclose(np.stack(steps, 1), logits[:, 3:], rtol=1e-12, atol=1e-13)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12, atol=1e-14)
    head = np.random.default_rng(0).normal(size=(16, M))
    untied = mamba.lm_forward(LMC, {**p, "lm_head.weight": head}, tokens)
    hidden = np.linalg.lstsq(p["backbone.embedding.weight"], logits[0].T, rcond=None)[0].T
    np.testing.assert_allclose(untied[0], hidden @ head.T, rtol=1e-8, atol=1e-10)


def test_model_chunked_and_errors():
    p = {k[len("backbone."):]: v for k, v in mamba.lm_init(LMC).items()}
    u = _u(seed=3, length=5)
    y = mamba.model_forward(LMC, p, u)
    y1, s = mamba.model_forward(LMC, p, u[:, :2], state=mamba.model_initial_state(LMC, B),
                                return_state=True)
    y2 = mamba.model_forward(LMC, p, u[:, 2:], state=s)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-14)
    lp = mamba.lm_init(LMC)
    with pytest.raises(TypeError, match="tokens: expected an integer dtype"):
        mamba.lm_forward(LMC, lp, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"tokens: expected an integer array of shape"):
        mamba.lm_forward(LMC, lp, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="state: expected a key 'layers.1.conv_state'"):
        mamba.model_forward(LMC, p, u, state={k: v for k, v in s.items() if "1.conv" not in k})
