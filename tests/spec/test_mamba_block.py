"""The Mamba residual block (liquidssm.spec.mamba_block): y = u + mixer(rms_norm(u)); and the
LiquidMamba block (its own module) reducing to it."""

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import liquid_mamba, mamba, mamba_block
from liquidssm.spec._common import strip_prefix

B, L, M = 2, 7, 4
MIXER = mamba.Config(d_model=M, d_state=3, d_conv=3, bias=True)
CFG = mamba_block.Config(MIXER)


def _u(seed=1, length=L):
    return np.random.default_rng(seed).normal(size=(B, length, M))


def _params(config=CFG, seed=0):
    p = mamba_block.init(config, seed)
    p["norm.weight"] = np.random.default_rng(seed + 5).uniform(0.5, 1.5, M)
    return p


def _oracle(config, p, u):
    """u + mixer(RMSNorm(u)) in NumPy; the mixer is spec.mamba (tested against mamba_simple's
    slow path in test_mamba.py)."""
    h = u / np.sqrt(np.mean(u * u, -1, keepdims=True) + config.norm_epsilon) * p["norm.weight"]
    mix = {k[len("mixer."):]: v for k, v in p.items() if k.startswith("mixer.")}
    return u + mamba.forward(config.mixer, mix, h)


@pytest.mark.parametrize("eps", [1e-5, 0.3])
def test_forward_matches_oracle(eps):
    c = mamba_block.Config(MIXER, norm_epsilon=eps)
    p, u = _params(c), _u()
    np.testing.assert_allclose(mamba_block.forward(c, p, u), _oracle(c, p, u), rtol=1e-12,
                               atol=1e-13)


def test_param_shapes_init_and_seeds():
    p = mamba_block.init(CFG, 3)
    assert {k: v.shape for k, v in p.items()} == mamba_block.param_shapes(CFG)
    assert mamba_block.param_shapes(CFG) == {
        "norm.weight": (M,), **{"mixer." + k: s for k, s in mamba.param_shapes(MIXER).items()}}
    np.testing.assert_array_equal(p["norm.weight"], 1.0)
    for k, v in mamba.init(MIXER, 3).items():  # the mixer's weights: mamba.init, same seed
        np.testing.assert_array_equal(p["mixer." + k], v)
    again, other = mamba_block.init(CFG, 3), mamba_block.init(CFG, 4)
    assert all(np.array_equal(p[k], again[k]) for k in p)
    assert not np.array_equal(p["mixer.in_proj.weight"], other["mixer.in_proj.weight"])
    with pytest.raises(TypeError, match="seed"):
        mamba_block.init(CFG, None)


def test_step_and_chunks_equal_forward():
    p, u = _params(), _u()
    y, final = mamba_block.forward(CFG, p, u, return_state=True)
    np.testing.assert_array_equal(y, mamba_block.forward(CFG, p, u))
    y1, s1 = mamba_block.forward(CFG, p, u[:, :3], return_state=True)
    y2, s2 = mamba_block.forward(CFG, p, u[:, 3:], state=s1, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-13)
    state, ys = mamba_block.initial_state(CFG, B), []
    assert set(state) == {"conv_state", "ssm_state"} == set(final)
    for t in range(L):
        y_t, state = mamba_block.step(CFG, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-13)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(s2[k], final[k], rtol=1e-12, atol=1e-13)


def test_array_api_strict_matches_numpy():
    p, u = _params(), _u(2)
    ys = mamba_block.forward(CFG, {k: xps.asarray(v) for k, v in p.items()}, xps.asarray(u))
    np.testing.assert_allclose(np.asarray(ys), mamba_block.forward(CFG, p, u), rtol=0,
                               atol=1e-12)


def test_liquid_mamba_block_reduces_to_the_mamba_block():
    """LiquidMamba is its own block (norm + mixer [+ FFN]); with p = 1, a plain conv and no FFN it
    is the Mamba block under the same names."""
    lc = liquid_mamba.Config(d_model=M, d_state=3, d_conv=3, bias=True, liquid_degree=1,
                             conv="plain", ffn="none")
    p, u = _params(), _u(3)
    assert liquid_mamba.param_shapes(lc) == mamba_block.param_shapes(CFG)
    np.testing.assert_allclose(liquid_mamba.forward(lc, p, u), mamba_block.forward(CFG, p, u),
                               rtol=1e-12, atol=1e-13)
    # and its init draws the mixer as mamba.init does (the same seed, the same mixer weights)
    q = liquid_mamba.init(lc, 6)
    for k, v in strip_prefix(mamba_block.init(CFG, 6), "mixer.").items():
        np.testing.assert_array_equal(q["mixer." + k], v)


def test_errors():
    with pytest.raises(TypeError, match=r"mixer: expected liquidssm.spec.mamba.Config, got "
                                         r"liquidssm.spec.liquid_mamba.Config"):
        mamba_block.Config(liquid_mamba.Config(d_model=M))
    with pytest.raises(ValueError, match="norm_epsilon"):
        mamba_block.Config(MIXER, norm_epsilon=0.0)
    p, u = _params(), _u()
    with pytest.raises(ValueError, match=r"missing \['norm.weight'\] and unexpected \['norm'\]"):
        mamba_block.forward(CFG, {**{k: v for k, v in p.items() if k != "norm.weight"},
                                  "norm": p["norm.weight"]}, u)
    with pytest.raises(ValueError, match=r"params\['mixer.D'\]: expected shape \(8,\)"):
        mamba_block.forward(CFG, {**p, "mixer.D": np.ones(3)}, u)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 4\)"):
        mamba_block.forward(CFG, p, u[..., :3])
    with pytest.raises(ValueError, match=r"u_t: expected shape \(batch, 4\)"):
        mamba_block.step(CFG, p, mamba_block.initial_state(CFG, B), u)
    with pytest.raises(TypeError, match="config: expected liquidssm.spec.mamba_block.Config"):
        mamba_block.forward(MIXER, p, u)
    with pytest.raises(ValueError, match="batch"):
        mamba_block.initial_state(CFG, 0)
