"""The S4 block (liquidssm.spec.s4_block): NumPy and torch.nn oracles, init and seeds, streaming."""

import math

import array_api_strict as xps
import numpy as np
import pytest
from liquidssm.spec import liquid_s4, s4, s4_block, s4d
from liquidssm.spec._common import child_seed, strip_prefix

H, B, L = 4, 2, 6
SSMS = {
    "s4d": s4d.Config(H, 4),
    "s4d_recurrent": s4d.Config(H, 4, mode="recurrent"),
    "s4": s4.Config(H, 4, l_max=16),
    "liquid_s4": liquid_s4.Config(H, 4, liquid_degree=2),
}


def _numpy_block(params, u, mixer, prenorm, approximate_gelu=False):
    """The S4 block written out in plain NumPy from docs/spec/s4.md (independent of spec/):
    prenorm y = u + FF(mixer(LN(u))), postnorm y = LN(u + FF(mixer(u))),
    FF(z) = GLU(z W^T + b) applied after GELU, GLU([a, b]) = a / (1 + exp(-b)), LN eps 1e-5."""

    def ln(x):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * params["norm.weight"] + params["norm.bias"]

    def gelu(x):
        if approximate_gelu:
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    def ff(z):
        a = gelu(z) @ params["output_linear.weight"].T + params["output_linear.bias"]
        return a[..., :H] / (1 + np.exp(-a[..., H:]))

    return u + ff(mixer(ln(u))) if prenorm else ln(u + ff(mixer(u)))


def _torch_block(params, u, mixer, prenorm):
    """The same block from torch.nn modules (LayerNorm, GELU, Linear, GLU)."""
    torch = pytest.importorskip("torch")
    norm = torch.nn.LayerNorm(H, eps=1e-5, dtype=torch.float64)
    lin = torch.nn.Linear(H, 2 * H, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(params["norm.weight"]))
        norm.bias.copy_(torch.from_numpy(params["norm.bias"]))
        lin.weight.copy_(torch.from_numpy(params["output_linear.weight"]))
        lin.bias.copy_(torch.from_numpy(params["output_linear.bias"]))
        x = torch.from_numpy(u)
        ff = lambda z: torch.nn.functional.glu(lin(torch.nn.functional.gelu(z)), dim=-1)  # noqa: E731
        mix = lambda z: torch.from_numpy(mixer(z.numpy()))  # noqa: E731
        y = x + ff(mix(norm(x))) if prenorm else norm(x + ff(mix(x)))
    return y.numpy()


def _config(ssm="s4d", **kw):
    return s4_block.Config(SSMS[ssm], **kw)


def _params(config, seed=0):
    """init, with the LayerNorm moved off 1 / 0 so that its weight and bias are exercised."""
    p = s4_block.init(config, seed)
    rng = np.random.default_rng(seed + 100)
    p["norm.weight"] = rng.uniform(0.5, 1.5, H)
    p["norm.bias"] = rng.normal(size=H)
    return p


def _u(seed=2, length=L):
    return 2 * np.random.default_rng(seed).normal(size=(B, length, H))


def _variant(config, params):
    """The variant alone, as a sequence map: x -> ssm.forward(x)."""
    module = {s4d.Config: s4d, s4.Config: s4, liquid_s4.Config: liquid_s4}[type(config.ssm)]
    ssm = strip_prefix(params, "ssm.")
    return lambda x: module.forward(config.ssm, ssm, x)


# ---------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("ssm", sorted(SSMS))
@pytest.mark.parametrize("approximate_gelu", [False, True])
@pytest.mark.parametrize("prenorm", [True, False])
def test_forward_matches_numpy_oracle(ssm, prenorm, approximate_gelu):
    c = _config(ssm, prenorm=prenorm, approximate_gelu=approximate_gelu)
    p, u = _params(c), _u()
    y = s4_block.forward(c, p, u)
    ref = _numpy_block(p, u, _variant(c, p), prenorm, approximate_gelu)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("approximate_gelu", [False, True])
@pytest.mark.parametrize("prenorm", [True, False])
def test_residual_and_feedforward_wrap_any_map(prenorm, approximate_gelu):
    """The public pieces: residual(feedforward o mixer) on sequences and on single steps."""
    p = _params(_config())
    u = _u()

    def run(x, mixer):
        return s4_block.residual(p, x, lambda z: s4_block.feedforward(
            p, mixer(z), approximate_gelu=approximate_gelu), prenorm=prenorm)

    mixer = lambda x: np.cumsum(x, axis=1) * 0.7  # noqa: E731  (any sequence map)
    np.testing.assert_allclose(run(u, mixer), _numpy_block(p, u, mixer, prenorm,
                                                           approximate_gelu), rtol=0, atol=1e-12)
    step_map = lambda x: 0.7 * x  # noqa: E731
    np.testing.assert_allclose(run(u[:, 0], step_map),
                               _numpy_block(p, u[:, 0], step_map, prenorm, approximate_gelu),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("prenorm", [True, False])
def test_forward_matches_torch_modules(prenorm):
    c = _config("s4d", prenorm=prenorm)
    p, u = _params(c), _u()
    ref = _torch_block(p, u, _variant(c, p), prenorm)
    np.testing.assert_allclose(s4_block.forward(c, p, u), ref, rtol=0, atol=1e-12)


def test_array_api_strict_matches_numpy():
    c = _config("s4d", approximate_gelu=True)
    p, u = _params(c, 2), _u(5)
    ys = s4_block.forward(c, {k: xps.asarray(v) for k, v in p.items()}, xps.asarray(u))
    np.testing.assert_allclose(np.asarray(ys), s4_block.forward(c, p, u), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------- init


@pytest.mark.parametrize("ssm", sorted(SSMS))
def test_param_shapes_and_init(ssm):
    c = _config(ssm)
    p = s4_block.init(c, seed=3)
    assert {k: v.shape for k, v in p.items()} == s4_block.param_shapes(c)
    variant = {s4d.Config: s4d, s4.Config: s4, liquid_s4.Config: liquid_s4}[type(c.ssm)]
    own = {"norm.weight": (H,), "norm.bias": (H,), "output_linear.weight": (2 * H, H),
           "output_linear.bias": (2 * H,)}
    assert {k: p[k].shape for k in own} == own
    # the SSM's weights are the variant's own init with the same seed
    ssm_init = variant.init(c.ssm, 3)
    assert set(strip_prefix(p, "ssm.")) == set(ssm_init) and len(p) == len(own) + len(ssm_init)
    for k, v in ssm_init.items():
        np.testing.assert_array_equal(p["ssm." + k], v)
    # own params: LN 1 / 0; the Linear's weight then bias ~ U(+-1/sqrt(H)) from child_seed(3, 1)
    np.testing.assert_array_equal(p["norm.weight"], 1.0)
    np.testing.assert_array_equal(p["norm.bias"], 0.0)
    rng, bound = np.random.default_rng(child_seed(3, 1)), 1 / math.sqrt(H)
    np.testing.assert_array_equal(p["output_linear.weight"], rng.uniform(-bound, bound, (2 * H, H)))
    np.testing.assert_array_equal(p["output_linear.bias"], rng.uniform(-bound, bound, 2 * H))
    assert all(v.dtype == np.float64 for v in p.values())


def test_init_deterministic_and_seeds_differ():
    c = _config()
    a, b, other = s4_block.init(c, 7), s4_block.init(c, 7), s4_block.init(c, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["output_linear.weight"], other["output_linear.weight"])
    assert not np.array_equal(a["ssm.log_dt"], other["ssm.log_dt"])
    for bad in (-1, 1.5, None, True):
        with pytest.raises((TypeError, ValueError), match="seed"):
            s4_block.init(c, bad)


# ---------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("ssm", sorted(SSMS))
@pytest.mark.parametrize("prenorm", [True, False])
def test_step_and_chunks_equal_forward(ssm, prenorm):
    c = _config(ssm, prenorm=prenorm)
    p, u = _params(c, 1), _u(4)
    y, final = s4_block.forward(c, p, u, return_state=True)
    np.testing.assert_allclose(y, s4_block.forward(c, p, u), rtol=0, atol=1e-12)
    y1, s1 = s4_block.forward(c, p, u[:, :2], return_state=True)
    y2, s2 = s4_block.forward(c, p, u[:, 2:], state=s1, return_state=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), y, rtol=0, atol=1e-12)
    state, ys = s4_block.initial_state(c, B), []
    assert set(state) == set(final)
    for t in range(L):
        y_t, state = s4_block.step(c, p, state, u[:, t])
        ys.append(y_t)
    np.testing.assert_allclose(np.stack(ys, 1), y, rtol=0, atol=1e-12)
    for k in final:
        np.testing.assert_allclose(state[k], final[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(s2[k], final[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel", ["pb", "kb"])
def test_whole_sequence_liquid_kernels_refuse_state(kernel):
    c = s4_block.Config(liquid_s4.Config(H, 4, liquid_kernel=kernel))
    p, u = s4_block.init(c), _u()
    assert s4_block.forward(c, p, u).shape == (B, L, H)
    with pytest.raises(ValueError, match="initial_state: liquid_kernel"):
        s4_block.initial_state(c, B)
    with pytest.raises(ValueError, match="return_state: liquid_kernel"):
        s4_block.forward(c, p, u, return_state=True)
    with pytest.raises(ValueError, match="step: liquid_kernel"):
        s4_block.step(c, p, {}, u[:, 0])


# ---------------------------------------------------------------------------------- errors


def test_config_errors():
    for bad in (1, 0, None, "yes", np.True_):
        with pytest.raises(TypeError, match=r"prenorm: expected a bool, got"):
            s4_block.Config(SSMS["s4d"], prenorm=bad)
        with pytest.raises(TypeError, match=r"approximate_gelu: expected a bool, got"):
            s4_block.Config(SSMS["s4d"], approximate_gelu=bad)
    p, u = _params(_config()), _u()
    with pytest.raises(TypeError, match=r"prenorm: expected a bool, got 1"):
        s4_block.residual(p, u, lambda x: x, prenorm=1)
    with pytest.raises(TypeError, match=r"approximate_gelu: expected a bool, got 1"):
        s4_block.feedforward(p, u, approximate_gelu=1)
    from liquidssm.spec import mamba, s5

    for ssm in (s5.Config(H, 4, blocks=1), mamba.Config(H), {"d_model": H}):
        with pytest.raises(TypeError, match=r"ssm: expected liquidssm.spec.s4d.Config or "
                                            r"liquidssm.spec.s4.Config or"):
            s4_block.Config(ssm)
    with pytest.raises(TypeError, match=r"config: expected liquidssm.spec.s4_block.Config"):
        s4_block.forward(SSMS["s4d"], p, u)
    with pytest.raises(TypeError, match="return_state: expected a bool"):
        s4_block.forward(_config(), p, u, return_state=None)


def test_bad_params_and_inputs_are_named():
    c = _config()
    p, u = _params(c), _u()
    missing = {k: v for k, v in p.items() if k != "norm.bias"}
    with pytest.raises(ValueError, match=r"missing \['norm.bias'\] and unexpected \[\]"):
        s4_block.forward(c, missing, u)
    with pytest.raises(ValueError, match=r"missing \['ssm.D'\] and unexpected \['D'\]"):
        s4_block.forward(c, {**{k: v for k, v in p.items() if k != "ssm.D"}, "D": p["ssm.D"]},
                         u)
    with pytest.raises(ValueError, match=r"params\['output_linear.weight'\]: expected shape"):
        s4_block.forward(c, {**p, "output_linear.weight": np.zeros((H, H))}, u)
    with pytest.raises(TypeError, match="params: expected a dict"):
        s4_block.step(c, list(p.values()), s4_block.initial_state(c, B), u[:, 0])
    with pytest.raises(TypeError, match="u: expected an array"):
        s4_block.forward(c, p, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, length, 4\)"):
        s4_block.forward(c, p, np.zeros((B, L, H + 1)))
    with pytest.raises(ValueError, match=r"u_t: expected shape \(batch, 4\)"):
        s4_block.step(c, p, s4_block.initial_state(c, B), u)
    with pytest.raises(ValueError, match="batch"):
        s4_block.initial_state(c, 0)
