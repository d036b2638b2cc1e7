"""The S5 sequence layer (liquidssm.spec.s5_layer) around S5 and Liquid-S5: a direct NumPy
composition for every activation and norm, init and seeds, streaming, errors."""

import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import liquid_s5, s5, s5_layer
from liquidssm.spec._common import child_seed

H = 3
SSMS = {
    "s5": s5.Config(d_model=H, d_state=8, blocks=2),
    "liquid_s5": liquid_s5.Config(d_model=H, d_state=4, blocks=1, liquid_degree=2),
}
MODULES = {s5.Config: s5, liquid_s5.Config: liquid_s5}


def _u(batch=2, L=6, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, L, H))


def _gelu(x, approximate=True):
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _layer_reference(lc, p, u):
    """The layer written out from docs/spec/models.md in NumPy; the SSM is the variant's own
    forward (tested against explicit loops in test_s5.py / test_liquid_s5.py)."""
    def norm(x):
        if lc.norm == "layer":
            m = x.mean(-1, keepdims=True)
            v = ((x - m) ** 2).mean(-1, keepdims=True)
            return (x - m) / np.sqrt(v + 1e-6) * p["norm_weight"] + p["norm_bias"]
        return (x - p["norm_mean"]) / np.sqrt(p["norm_var"] + 1e-5) * p["norm_weight"] + p[
            "norm_bias"
        ]

    module = MODULES[type(lc.ssm)]
    x = norm(u) if lc.prenorm else u
    x = module.forward(lc.ssm, {k: p[k] for k in module.param_shapes(lc.ssm)}, x)
    g = _gelu(x, lc.approximate_gelu)
    if lc.activation == "full_glu":
        gate = _sig(g @ p["out2_weight"].T + p["out2_bias"])
        x = (g @ p["out1_weight"].T + p["out1_bias"]) * gate
    elif lc.activation == "half_glu1":
        x = g * _sig(g @ p["out2_weight"].T + p["out2_bias"])
    elif lc.activation == "half_glu2":
        x = x * _sig(g @ p["out2_weight"].T + p["out2_bias"])
    else:
        x = g
    x = u + x
    return x if lc.prenorm else norm(x)


def _perturbed(lc, seed=2):
    """init, then every parameter moved so that no structure of the init hides a bug."""
    p = s5_layer.init(lc, seed=seed)
    rng = np.random.default_rng(7)
    p = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in p.items()}
    if "norm_var" in p:
        p["norm_var"] = np.abs(p["norm_var"]) + 0.5
    p["Lambda_re"] = -np.abs(p["Lambda_re"])
    return p


@pytest.mark.parametrize("ssm", sorted(SSMS))
@pytest.mark.parametrize("activation", s5_layer.ACTIVATIONS)
@pytest.mark.parametrize("norm, prenorm", [("batch", True), ("layer", True), ("layer", False)])
def test_layer_matches_composition(ssm, activation, norm, prenorm):
    lc = s5_layer.Config(SSMS[ssm], activation=activation, norm=norm, prenorm=prenorm)
    p, u = _perturbed(lc), _u()
    np.testing.assert_allclose(s5_layer.forward(lc, p, u), _layer_reference(lc, p, u),
                               rtol=1e-11, atol=1e-11)


def test_exact_gelu_and_array_api_strict():
    lc = s5_layer.Config(SSMS["liquid_s5"], activation="full_glu", approximate_gelu=False)
    p, u = _perturbed(lc), _u()
    y = s5_layer.forward(lc, p, u)
    np.testing.assert_allclose(y, _layer_reference(lc, p, u), rtol=1e-11, atol=1e-11)
    ys = s5_layer.forward(lc, {k: xps.asarray(v) for k, v in p.items()}, xps.asarray(u))
    np.testing.assert_allclose(np.asarray(ys), y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ssm", sorted(SSMS))
@pytest.mark.parametrize("activation, norm", [("full_glu", "batch"), ("half_glu2", "layer"),
                                              ("gelu", "layer")])
def test_param_shapes_and_init(ssm, activation, norm):
    lc = s5_layer.Config(SSMS[ssm], activation=activation, norm=norm)
    p = s5_layer.init(lc, seed=4)
    assert {k: v.shape for k, v in p.items()} == s5_layer.param_shapes(lc)
    module = MODULES[type(lc.ssm)]
    own = {"norm_weight", "norm_bias"} | ({"norm_mean", "norm_var"} if norm == "batch" else set())
    own |= {"out1_weight", "out1_bias"} if activation == "full_glu" else set()
    own |= {"out2_weight", "out2_bias"} if activation != "gelu" else set()
    ssm_init = module.init(lc.ssm, 4)  # the SSM's weights: the variant's init, same seed
    assert set(p) == own | set(ssm_init)
    for k, v in ssm_init.items():
        np.testing.assert_array_equal(p[k], v)
    for k in own:
        expected = 1.0 if k in ("norm_weight", "norm_var") else 0.0
        if not k.endswith("_weight") or k == "norm_weight":
            np.testing.assert_array_equal(p[k], expected)
    # Dense weights: lecun-normal (out, in) drawn in name order from child_seed(seed, 1)
    rng = np.random.default_rng(child_seed(4, 1))
    for k in ("out1_weight", "out2_weight"):
        if k in p:
            np.testing.assert_array_equal(p[k], s5._lecun(rng, (H, H)).T)
            assert np.abs(p[k]).max() <= 2 / math.sqrt(H) / 0.8796 + 1e-12  # truncated at 2 std
    other = s5_layer.init(lc, seed=5)
    assert all(np.array_equal(p[k], v) for k, v in s5_layer.init(lc, seed=4).items())
    assert not np.array_equal(p["B_re"], other["B_re"])
    if "out2_weight" in p:
        assert not np.array_equal(p["out2_weight"], other["out2_weight"])


@pytest.mark.parametrize("ssm", sorted(SSMS))
def test_step_and_chunks_equal_forward(ssm):
    lc = s5_layer.Config(SSMS[ssm], activation="full_glu", norm="layer")
    p, u = _perturbed(lc), _u()
    y = s5_layer.forward(lc, p, u)
    y1, st = s5_layer.forward(lc, p, u[:, :2], return_state=True)
    y2, final = s5_layer.forward(lc, p, u[:, 2:], state=st, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=1e-12, atol=1e-12)
    state, ys = s5_layer.initial_state(lc, 2), []
    for t in range(u.shape[1]):
        y_t, state = s5_layer.step(lc, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state["x"], final["x"], rtol=1e-12, atol=1e-12)


def test_timesteps_reach_the_ssm():
    lc = s5_layer.Config(SSMS["s5"], norm="layer")
    p, u = _perturbed(lc), _u()
    tau = np.random.default_rng(3).uniform(0.5, 2.0, u.shape[:2])
    y = s5_layer.forward(lc, p, u, timesteps=tau)
    assert not np.allclose(y, s5_layer.forward(lc, p, u))
    state, ys = s5_layer.initial_state(lc, 2), []
    for t in range(u.shape[1]):
        y_t, state = s5_layer.step(lc, p, state, u[:, t], timesteps=tau[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=1e-12, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="activation: expected one of"):
        s5_layer.Config(SSMS["s5"], activation="relu")
    with pytest.raises(ValueError, match="norm: expected one of"):
        s5_layer.Config(SSMS["s5"], norm="rms")
    with pytest.raises(TypeError, match="prenorm: expected a bool"):
        s5_layer.Config(SSMS["s5"], prenorm=1)
    from liquidssm.spec import s4d

    with pytest.raises(TypeError, match=r"ssm: expected liquidssm.spec.s5.Config or "
                                        r"liquidssm.spec.liquid_s5.Config, got"):
        s5_layer.Config(s4d.Config(H, 4))
    lc = s5_layer.Config(SSMS["s5"], activation="full_glu", norm="layer")
    p, u = s5_layer.init(lc), _u()
    with pytest.raises(ValueError, match=r"missing \['norm_bias'\] and unexpected \[\]"):
        s5_layer.forward(lc, {k: v for k, v in p.items() if k != "norm_bias"}, u)
    with pytest.raises(ValueError, match=r"missing \[\] and unexpected \['norm_mean'\]"):
        s5_layer.forward(lc, {**p, "norm_mean": np.zeros(H)}, u)
    with pytest.raises(TypeError, match=r"config: expected liquidssm.spec.s5_layer.Config"):
        s5_layer.forward(SSMS["s5"], p, u)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 3\)"):
        s5_layer.forward(lc, p, u[..., :2])
    with pytest.raises(ValueError, match="bidirectional"):
        bi = s5_layer.Config(s5.Config(H, 4, blocks=1, bidirectional=True))
        s5_layer.forward(bi, s5_layer.init(bi), u, return_state=True)
